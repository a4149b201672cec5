"""Pascal VOC reader: a VOCdevkit folder (local, or a bucket prefix: `ssd_ray.storage`) -> `DetectionDataset`.

Layout read (one folder per year under `root`):

    root/VOC<year>/ImageSets/Main/<split>.txt   one image id per line (first token of the line)
    root/VOC<year>/Annotations/<id>.xml
    root/VOC<year>/JPEGImages/<id>.jpg          (.jpg/.jpeg/.png; the XML <filename> wins if it exists)

Coordinates: VOC XML pixel boxes are **1-based and inclusive** (`xmin=1` is the first pixel column,
`xmax=W` the last). They become relative xyxy with

    x1 = (xmin - 1) / W     y1 = (ymin - 1) / H     x2 = xmax / W     y2 = ymax / H

so a box covering the whole image is exactly `[0, 0, 1, 1]` and a one-pixel box has width `1/W`.
`W, H` come from the XML `<size>`; when that is missing or zero the image header is read instead
(counted as `size_from_image`).

Bad records never stop a run; each is counted in `dataset.skipped` and logged with its file:
`bad_xml` (malformed/truncated XML: image skipped), `missing_annotation`, `missing_image`,
`bad_image` (unreadable header when the size is needed), `unknown_class` (box skipped; with
`class_subset`, `excluded_class`: left out on purpose, not logged), `bad_box`
(missing/non-numeric coordinates: box skipped), `box_clipped` (box outside the image: clipped, kept),
`empty_box` (zero/negative area after clipping: box dropped), `duplicate_id` (image listed twice).
An image whose boxes were all dropped stays as a negative (zero boxes). Structural problems -- a
missing root, a missing split file, an empty split -- raise one error naming the path.

`image_id` is always `"VOC<year>/<id>"`; `annotation_path(root, image_id)` maps it back to the XML.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

import numpy as np

from ssd_ray import storage
from ssd_ray.data.records import DetectionDataset, ImageRecord, SkipCounter

log = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

DEFAULT_IMAGE_SETS: tuple[tuple[str, str], ...] = (("2007", "trainval"), ("2012", "trainval"))
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def check_class_names(class_names: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """None -> `default`; otherwise a non-empty list of distinct, non-empty strings (ValueError if not)."""
    names = list(default if class_names is None else class_names)
    if not names:
        raise ValueError("class_names is empty: a detector needs at least one class")
    for n in names:
        if not isinstance(n, str) or not n.strip():
            raise ValueError(f"class_names contains an invalid name: {n!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"class_names has duplicates: {dupes}")
    return names


def annotation_path(root: str, image_id: str) -> str:
    """`"VOC2007/000005"` -> `root/VOC2007/Annotations/000005.xml` (the evaluator's ground truth file)."""
    year_dir, sep, name = image_id.partition("/")
    if not sep or not year_dir.startswith("VOC") or not name or "/" in name:
        raise ValueError(f"not a VOC image_id (expected 'VOC<year>/<id>'): {image_id!r}")
    return os.path.join(root, year_dir, "Annotations", name + ".xml")


def read_split_ids(root: str, year: str, split: str) -> list[str]:
    """Ids listed in `root/VOC<year>/ImageSets/Main/<split>.txt` (first token of each non-empty line)."""
    path = os.path.join(root, f"VOC{year}", "ImageSets", "Main", f"{split}.txt")
    if not storage.is_file(path):
        raise FileNotFoundError(f"VOC split file not found: {path}")
    # Class-specific files ("000005 -1") carry a second column; the id is always the first token.
    ids = [line.split()[0] for line in storage.read_text(path).splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"VOC split file lists no images: {path}")
    return ids


def read_voc(
    root: str,
    image_sets: Iterable[tuple[str, str]] = DEFAULT_IMAGE_SETS,
    class_names: Sequence[str] | None = None,
    keep_difficult: bool = True,
    class_subset: bool = False,
) -> DetectionDataset:
    """Read the listed `(year, split)` image sets of a VOCdevkit folder into one dataset.

    Returns a `DetectionDataset` whose records hold boxes `[n,4]` float32 xyxy relative 0..1, labels
    `[n]` int64 indexes into `class_names` (default `VOC_CLASSES`), and difficult flags `[n]` bool.
    `keep_difficult=False` drops difficult boxes here (the training default); evaluation reads with
    True and ignores them when matching.

    `class_subset=True`: `class_names` is a chosen subset (`data.classes`), so objects of other classes
    are left out on purpose: counted as `excluded_class` (per name in `skipped.keys`), not logged one
    by one. Otherwise they are `unknown_class` (also counted per name), a sign that the data and the
    class list disagree.
    """
    root = storage.absolute(root)  # a local folder or a bucket URI (ssd_ray/storage.py)
    if not storage.is_dir(root):
        raise FileNotFoundError(f"VOC root folder not found: {root}")
    names = check_class_names(class_names, VOC_CLASSES)
    class_index = {n: i for i, n in enumerate(names)}
    image_sets = [(str(y), str(s)) for y, s in image_sets]
    if not image_sets:
        raise ValueError("read_voc: image_sets is empty")

    skipped = SkipCounter()
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for year, split in image_sets:
        ids = read_split_ids(root, year, split)  # raises before any per-image work
        year_dir = os.path.join(root, f"VOC{year}")
        image_dir = os.path.join(year_dir, "JPEGImages")
        # One listing instead of a stat per image: VOC07+12 is 16k files (16 requests on S3, not 16k).
        image_files = ({e.name for e in storage.list_dir(image_dir) if not e.is_dir}
                       if storage.is_dir(image_dir) else set())
        todo = []
        for name in ids:
            image_id = f"VOC{year}/{name}"
            if image_id in seen:
                skipped.skip("duplicate_id", image_id, f"listed again in {split}.txt")
                continue
            seen.add(image_id)
            todo.append(image_id)
        # Annotation files are fetched concurrently from a bucket (latency, not bandwidth, is their cost).
        xml_paths = [annotation_path(root, image_id) for image_id in todo]
        for image_id, (xml_path, data) in zip(todo, storage.read_many(xml_paths)):
            rec = _read_record(image_id, xml_path, image_dir, image_files,
                               class_index, keep_difficult, skipped, class_subset, data)
            if rec is not None:
                records.append(rec)
    if skipped:
        log.warning("read_voc %s %s: %d images, skipped %s", root, image_sets, len(records), skipped.summary())
    return DetectionDataset(class_names=names, records=records, skipped=skipped)


def _find_image(name: str, xml_filename: str | None, image_dir: str, image_files: set[str]) -> str | None:
    candidates = ([xml_filename] if xml_filename else []) + [name + ext for ext in _IMAGE_EXTENSIONS]
    for c in candidates:
        if c in image_files:
            return os.path.join(image_dir, c)
    return None


def _int_text(node: ET.Element | None, tag: str) -> int:
    """Integer value of a child element, 0 if missing or unparsable (VOC writes sizes as '500' or '500.0')."""
    text = node.findtext(tag) if node is not None else None
    try:
        return int(float(text)) if text is not None else 0
    except ValueError:
        return 0


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image  # header only: PIL reads the size without decoding pixels

    with storage.open_input(path) as f, Image.open(f) as im:
        return im.size


def _read_record(
    image_id: str,
    xml_path: str,
    image_dir: str,
    image_files: set[str],
    class_index: dict[str, int],
    keep_difficult: bool,
    skipped: SkipCounter,
    class_subset: bool = False,
    data: bytes | BaseException | None = None,
) -> ImageRecord | None:
    # data: the XML file's bytes, or the error reading it gave (`storage.read_many`); None: read it here.
    if data is None:
        try:
            data = storage.read_bytes(xml_path)
        except OSError as e:
            data = e
    if isinstance(data, storage.StorageError):  # a refused read or a missing bucket: no record can be read
        raise data
    if isinstance(data, (FileNotFoundError, IsADirectoryError)):
        skipped.skip("missing_annotation", xml_path)
        return None
    if isinstance(data, BaseException):  # still unreadable after the storage layer's retries
        skipped.skip("bad_xml", xml_path, f"unreadable: {data}")
        return None
    try:
        tree = ET.fromstring(data)
    except ET.ParseError as e:
        skipped.skip("bad_xml", xml_path, str(e))
        return None

    name = image_id.split("/", 1)[1]
    xml_filename = (tree.findtext("filename") or "").strip() or None
    image_path = _find_image(name, xml_filename, image_dir, image_files)
    if image_path is None:
        skipped.skip("missing_image", xml_path, f"no image for id {name!r} in {image_dir}")
        return None

    size = tree.find("size")
    width, height = _int_text(size, "width"), _int_text(size, "height")
    if width <= 0 or height <= 0:
        try:
            width, height = _image_size(image_path)
        except Exception as e:  # PIL raises several types for unreadable files
            skipped.skip("bad_image", image_path, f"XML has no <size> and the header is unreadable: {e}")
            return None
        # Not a skip: the record is kept; counted so a dataset with many of these is noticed.
        skipped["size_from_image"] += 1
        log.warning("%s: <size> missing or zero; using image header %dx%d", xml_path, width, height)

    boxes, labels, difficult = [], [], []
    for obj in tree.iter("object"):
        cls = (obj.findtext("name") or "").strip()
        if cls not in class_index:
            if class_subset:
                skipped.skip("excluded_class", xml_path, f"class {cls!r}", key=cls, log_it=False)
            else:
                skipped.skip("unknown_class", xml_path, f"class {cls!r}", key=cls)
            continue
        is_difficult = _int_text(obj, "difficult") == 1
        if is_difficult and not keep_difficult:
            continue
        bb = obj.find("bndbox")
        try:
            # float(): some VOC-format exports write fractional pixel coordinates.
            xmin, ymin, xmax, ymax = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            skipped.skip("bad_box", xml_path, f"{cls}: missing or non-numeric <bndbox>")
            continue
        # Plain floats, not numpy: per-box numpy calls made reading VOC07+12 twice as slow.
        box = ((xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height)
        if not all(math.isfinite(v) for v in box):
            skipped.skip("bad_box", xml_path, f"{cls}: non-finite <bndbox> {xmin},{ymin},{xmax},{ymax}")
            continue
        clipped = tuple(min(max(v, 0.0), 1.0) for v in box)
        if clipped != box:
            skipped.skip("box_clipped", xml_path,
                         f"{cls}: ({xmin},{ymin},{xmax},{ymax}) outside {width}x{height}")
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            skipped.skip("empty_box", xml_path, f"{cls}: ({xmin},{ymin},{xmax},{ymax}) has no area")
            continue
        boxes.append(clipped)
        labels.append(class_index[cls])
        difficult.append(is_difficult)

    return ImageRecord(image_id=image_id, path=image_path, width=width, height=height,
                       boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                       labels=np.array(labels, dtype=np.int64), difficult=np.array(difficult, dtype=bool))
