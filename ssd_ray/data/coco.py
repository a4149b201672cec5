"""COCO-format reader: `root/annotations/instances_<split>.json` + images -> `DetectionDataset`.

Images are looked up in `root/images/<split>/` or, failing that, `root/<split>/` (both layouts are
common). Class names come from the JSON's `categories` sorted by id, so custom COCO-format data works;
category ids map to contiguous 0-based labels (`label = index in the sorted ids`) and
`dataset.category_ids[label]` gives the original id back for results files.

Coordinates: COCO `bbox = [x, y, w, h]` is 0-based pixels with exclusive extent, so
`x1 = x / W`, `y1 = y / H`, `x2 = (x + w) / W`, `y2 = (y + h) / H`, then clipped to 0..1.

Dropped without complaint: `iscrowd` annotations (not detection targets), and with `class_names`
(a `data.classes` subset) the other categories' annotations (counted as `excluded_class`). Counted in
`dataset.skipped` and logged: `bad_annotation` (entry without id/image_id/category_id or a bbox that
is not 4 finite numbers), `unknown_category`, `empty_box` (w<=0 or h<=0 after clipping),
`unknown_image` (annotation for an image id not in `images`), `bad_image_entry` (image without
id/file_name), `missing_image`, `bad_image` (unreadable header when the size is needed),
`size_from_image` (width/height missing: read from the header). An unreadable or malformed annotation
file as a whole is fatal (ValueError naming the file).

The dicts held by a pycocotools `COCO` object are only read, never modified.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np

from ssd_ray import storage
from ssd_ray.data.records import DetectionDataset, ImageRecord, SkipCounter
from ssd_ray.errors import DataError

log = logging.getLogger(__name__)

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


def annotation_file(root: str, split: str) -> str:
    return os.path.join(os.fspath(root), "annotations", f"instances_{split}.json")


def image_dir(root: str, split: str) -> str:
    """`root/images/<split>` if it exists, else `root/<split>`; FileNotFoundError naming both if neither."""
    root = os.fspath(root)
    candidates = [os.path.join(root, "images", split), os.path.join(root, split)]
    for c in candidates:
        if storage.is_dir(c):
            return c
    raise FileNotFoundError(f"COCO image folder for split {split!r} not found: tried {candidates}")


def coco_api(root: str, split: str, skipped: SkipCounter | None = None):
    """The pycocotools `COCO` object for `instances_<split>.json` (ground truth for COCOeval).

    Annotation or image entries that would crash pycocotools' index (no `id`, `image_id`,
    `category_id`) are left out of the index and counted in `skipped`. Raises FileNotFoundError /
    ValueError naming the file when the file is missing or is not a COCO annotation object.
    """
    from pycocotools.coco import COCO  # imported here: `ssd_ray.data` users that never read COCO skip it

    path = annotation_file(root, split)
    if not storage.is_file(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(storage.read_bytes(path).decode("utf-8"))  # a local file or an object in a bucket
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'images' and 'categories', got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing or non-list {key!r}")
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{path}: 'annotations' is not a list")
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise ValueError(f"{path}: malformed category entry {c!r} (needs int 'id' and str 'name')")

    skipped = SkipCounter() if skipped is None else skipped
    images = []
    for img in data["images"]:
        if (not isinstance(img, dict) or not isinstance(img.get("id"), (int, str))
                or not isinstance(img.get("file_name"), str)):
            skipped.skip("bad_image_entry", path, f"{img!r:.200}")
            continue
        images.append(img)
    anns = []
    for ann in data.get("annotations", []):
        # Hashable ids are what pycocotools' index needs; anything else would crash createIndex.
        if not isinstance(ann, dict) or not all(
                isinstance(ann.get(k), (int, str)) for k in ("id", "image_id", "category_id")):
            skipped.skip("bad_annotation", path, f"missing id/image_id/category_id: {ann!r:.200}")
            continue
        anns.append(ann)
    # New top-level lists only; the entry dicts are shared, never edited.
    data = {**data, "images": images, "annotations": anns}

    api = COCO()
    api.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        api.createIndex()
    return api


def read_coco(root: str, split: str = "train2017", keep_empty: bool = True, api=None,
              class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Read one COCO split into a `DetectionDataset`.

    Records: `image_id = str(coco image id)`, boxes `[n,4]` float32 xyxy relative 0..1, labels `[n]`
    int64 contiguous 0-based, difficult all False. `keep_empty=False` drops images left without a
    box (a training option). `api` reuses an already loaded `coco_api(root, split)` (it is not changed).

    `class_names` (`data.classes`): train on these categories only, labelled in this order; each must
    be a category name of the file (`DataError` listing the file's names otherwise). Annotations of
    the other categories are left out on purpose: counted as `excluded_class` per name, not logged.
    None: every category, in id order.
    """
    root = storage.absolute(root)  # a local folder or a bucket URI (ssd_ray/storage.py)
    if not storage.is_dir(root):
        raise FileNotFoundError(f"COCO root folder not found: {root}")
    skipped = SkipCounter()
    path = annotation_file(root, split)
    if api is None:
        api = coco_api(root, split, skipped)
    img_dir = image_dir(root, split)

    cat_ids = sorted(api.cats)
    if not cat_ids:
        raise ValueError(f"{path}: no categories")
    if class_names is not None:
        cat_ids = select_categories(api.cats, class_names, path)
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    excluded = {cid: str(c["name"]) for cid, c in api.cats.items() if cid not in label_of}
    class_names = [str(api.cats[cid]["name"]) for cid in cat_ids]

    known_images = set(api.imgs)
    for img_id in api.imgToAnns:
        if img_id not in known_images:
            n = len(api.imgToAnns[img_id])
            skipped.skip("unknown_image", path, f"{n} annotation(s) for image id {img_id!r} not in 'images'")

    image_files = {e.name for e in storage.list_dir(img_dir) if not e.is_dir}  # one listing, not a stat per image
    records: list[ImageRecord] = []
    for img_id, img in api.imgs.items():
        rec = _read_record(img_id, img, api.imgToAnns.get(img_id, ()), img_dir, image_files,
                           label_of, path, skipped, excluded)
        if rec is None or (not keep_empty and len(rec.boxes) == 0):
            continue
        records.append(rec)
    if skipped:
        log.warning("read_coco %s %s: %d images, skipped %s", root, split, len(records), skipped.summary())
    return DetectionDataset(class_names=class_names, records=records, skipped=skipped, category_ids=cat_ids,
                            coco_sources=[(root, split)])


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image  # header only

    with storage.open_input(path) as f, Image.open(f) as im:
        return im.size


def _positive_int(value) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return 0
    return max(v, 0)


def select_categories(cats: dict, class_names: Sequence[str], path: str) -> list:
    """Category ids of `class_names`, in that order, from a pycocotools `cats` dict (id -> entry)."""
    by_name: dict[str, list] = {}
    for cid, c in cats.items():
        by_name.setdefault(str(c["name"]), []).append(cid)
    available = ", ".join(sorted(by_name))
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise DataError(f"data.classes names {missing} but {path} has no such category; its categories "
                        f"are: {available}")
    ambiguous = [n for n in class_names if len(by_name[n]) > 1]
    if ambiguous:
        raise DataError(f"{path}: categories {ambiguous} appear under several ids "
                        f"({ {n: sorted(by_name[n]) for n in ambiguous} }): data.classes cannot choose one")
    return [by_name[n][0] for n in class_names]


def _read_record(img_id, img: dict, anns, img_dir: str, image_files: set[str],
                 label_of: dict[int, int], path: str, skipped: SkipCounter,
                 excluded: dict | None = None) -> ImageRecord | None:
    file_name = img["file_name"]
    image_path = os.path.join(img_dir, file_name)
    # file_name may contain a sub-folder; the listdir set only covers the top level.
    if file_name not in image_files and not storage.is_file(image_path):
        skipped.skip("missing_image", image_path, f"image id {img_id!r} in {path}")
        return None
    width, height = _positive_int(img.get("width")), _positive_int(img.get("height"))
    if width == 0 or height == 0:
        try:
            width, height = _image_size(image_path)
        except Exception as e:  # PIL raises several types for unreadable files
            skipped.skip("bad_image", image_path, f"no width/height in {path} and header unreadable: {e}")
            return None
        skipped["size_from_image"] += 1
        log.warning("%s: image id %r has no width/height; using header %dx%d", path, img_id, width, height)

    boxes, labels = [], []
    for ann in anns:
        if ann.get("iscrowd", 0):
            continue
        cid = ann["category_id"]
        if excluded and cid in excluded:  # outside the data.classes subset: on purpose
            skipped.skip("excluded_class", path, f"annotation {ann['id']!r}: {excluded[cid]!r}",
                         key=excluded[cid], log_it=False)
            continue
        if not isinstance(cid, int) or cid not in label_of:
            skipped.skip("unknown_category", path, f"annotation {ann['id']!r}: category_id {cid!r}", key=cid)
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            skipped.skip("bad_annotation", path, f"annotation {ann['id']!r}: bbox {bbox!r}")
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            skipped.skip("bad_annotation", path, f"annotation {ann['id']!r}: bbox {bbox!r}")
            continue
        # COCO boxes often overshoot the border by rounding; clipping those is routine, not a skip.
        x1, y1 = min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)
        x2, y2 = min(max((x + w) / width, 0.0), 1.0), min(max((y + h) / height, 0.0), 1.0)
        if x2 <= x1 or y2 <= y1:
            skipped.skip("empty_box", path, f"annotation {ann['id']!r}: bbox {bbox!r} in {width}x{height}")
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(label_of[cid])

    n = len(boxes)
    return ImageRecord(image_id=str(img_id), path=image_path, width=width, height=height,
                       boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                       labels=np.array(labels, dtype=np.int64), difficult=np.zeros(n, dtype=bool))
