"""Data fingerprints: change with any annotation, not with listing order, paths or the hashing machine."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from ssd_ray.data.coco import read_coco
from ssd_ray.data.fingerprint import FORMAT, DataFingerprint, fingerprint
from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.data.shapes import write_shapes
from ssd_ray.data.voc import read_voc


def _dataset(n: int = 20, seed: int = 0) -> DetectionDataset:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        k = int(rng.integers(0, 4))
        xy = rng.uniform(0, 0.5, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.5, (k, 2))], axis=1)
        records.append(ImageRecord(f"img{i:03d}", f"/data/img{i:03d}.jpg", 100 + i, 80 + i, boxes,
                                   rng.integers(0, 3, k), rng.uniform(size=k) < 0.2))
    return DetectionDataset(["a", "b", "c"], records)


def _copy(ds: DetectionDataset, records=None, class_names=None) -> DetectionDataset:
    recs = [ImageRecord(r.image_id, r.path, r.width, r.height, r.boxes.copy(), r.labels.copy(), r.difficult.copy())
            for r in (records if records is not None else ds.records)]
    return DetectionDataset(list(class_names or ds.class_names), recs)


def test_digest_format_counts_and_tags():
    ds = _dataset()
    fp = fingerprint(ds)
    assert fp.digest.startswith("sha256:") and len(fp.digest) == 7 + 64
    assert fp.images == 20 and fp.objects == sum(len(r.labels) for r in ds.records)
    assert fp.class_names == ["a", "b", "c"] and fp.mode == "records"
    tags = fp.tags("train")
    assert tags["ssd_ray.data.train.fingerprint"] == fp.digest
    assert tags["ssd_ray.data.train.images"] == "20"
    assert json.loads(tags["ssd_ray.data.train.classes"]) == ["a", "b", "c"]
    assert fingerprint(_copy(ds)) == fp  # deterministic


def test_relisting_and_moving_files_keep_the_fingerprint():
    ds = _dataset()
    shuffled = list(ds.records)
    random.Random(1).shuffle(shuffled)
    assert fingerprint(_copy(ds, shuffled)).digest == fingerprint(ds).digest
    moved = _copy(ds)
    for r in moved.records:
        r.path = r.path.replace("/data/", "/mnt/elsewhere/")
    assert fingerprint(moved).digest == fingerprint(ds).digest


@pytest.mark.parametrize("edit", ["box", "label", "difficult", "width", "image_id", "drop_object", "drop_image",
                                  "class_names"])
def test_any_annotation_change_changes_the_fingerprint(edit):
    ds = _dataset()
    changed = _copy(ds)
    r = next(r for r in changed.records if len(r.labels) >= 2)
    if edit == "box":
        r.boxes[1, 2] = np.nextafter(r.boxes[1, 2], np.float32(1))  # one ulp
    elif edit == "label":
        r.labels[0] = (r.labels[0] + 1) % 3
    elif edit == "difficult":
        r.difficult[0] = ~r.difficult[0]
    elif edit == "width":
        r.width += 1
    elif edit == "image_id":
        r.image_id += "x"
    elif edit == "drop_object":
        changed.records[changed.records.index(r)] = ImageRecord(r.image_id, r.path, r.width, r.height, r.boxes[:-1],
                                                                r.labels[:-1], r.difficult[:-1])
    elif edit == "drop_image":
        changed.records.remove(r)
    elif edit == "class_names":
        changed.class_names = ["a", "c", "b"]
    assert fingerprint(changed).digest != fingerprint(ds).digest


def test_boxes_moving_between_images_changes_the_fingerprint():
    # Same flat box list, different split per image: the per-image counts are hashed too.
    one = ImageRecord("a", "", 10, 10, [[0, 0, 1, 1], [0, 0, .5, .5]], [0, 1], [False, False])
    two = ImageRecord("b", "", 10, 10, np.zeros((0, 4)), [], [])
    three = ImageRecord("a", "", 10, 10, [[0, 0, 1, 1]], [0], [False])
    four = ImageRecord("b", "", 10, 10, [[0, 0, .5, .5]], [1], [False])
    assert fingerprint(DetectionDataset(["x", "y"], [one, two])).digest != \
        fingerprint(DetectionDataset(["x", "y"], [three, four])).digest


def test_duplicate_ids_ordered_by_content():
    a = ImageRecord("same", "/p1", 10, 10, [[0, 0, 1, 1]], [0], [False])
    b = ImageRecord("same", "/p2", 20, 10, [[0, 0, .5, 1]], [1], [False])
    assert fingerprint(DetectionDataset(["x", "y"], [a, b])).digest == \
        fingerprint(DetectionDataset(["x", "y"], [b, a])).digest


def test_digest_matches_the_documented_byte_stream():
    # Two records hashed by hand (struct, not numpy): sorted by id, explicit little-endian fields,
    # each part length-prefixed. The digest must not change across machines or refactors (bump
    # fingerprint.FORMAT when what is hashed changes on purpose).
    recs = [ImageRecord("2", "/x", 640, 480, [[0.25, 0.5, 0.75, 1.0]], [1], [True]),
            ImageRecord("1", "/y", 32, 16, np.zeros((0, 4)), [], [])]
    fp = fingerprint(DetectionDataset(["cat", "dog"], recs))
    parts = [json.dumps({"format": FORMAT, "class_names": ["cat", "dog"]}, sort_keys=True).encode(),
             struct.pack("<qq", 1, 1), b"12",                      # id lengths, ids "1" then "2"
             struct.pack("<qqqq", 32, 16, 640, 480),               # (width, height) per image
             struct.pack("<qq", 0, 1),                             # objects per image
             struct.pack("<ffff", 0.25, 0.5, 0.75, 1.0),           # boxes
             struct.pack("<q", 1), b"\x01"]                        # labels, difficult
    h = hashlib.sha256()
    for part in parts:
        h.update(struct.pack("<Q", len(part)) + part)
    assert fp.digest == "sha256:" + h.hexdigest()
    assert (fp.images, fp.objects) == (2, 1)


def test_voc_reader_relisted_folder_same_fingerprint_edited_xml_differs(tmp_path):
    root = Path(write_shapes(str(tmp_path / "a"), "voc", n_train=6, n_val=2, seed=5, size=64, workers=1))
    names = ["circle", "square", "triangle", "star", "cross", "ellipse"]
    base = fingerprint(read_voc(root, [("2007", "train")], class_names=names))
    # Another folder, the image set listed in reverse order: same records, same fingerprint.
    moved = Path(shutil.copytree(root, tmp_path / "b"))
    listing = moved / "VOC2007" / "ImageSets" / "Main" / "train.txt"
    listing.write_text("".join(reversed(listing.read_text().splitlines(keepends=True))))
    assert fingerprint(read_voc(moved, [("2007", "train")], class_names=names)) == base
    # One coordinate of one object in one XML changes it.
    xml = sorted((moved / "VOC2007" / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    end = text.index("</xmin>")
    xml.write_text(text[:start] + str(int(text[start:end]) + 1) + text[end:])
    assert fingerprint(read_voc(moved, [("2007", "train")], class_names=names)).digest != base.digest


def test_coco_reader_reordered_json_same_fingerprint(tmp_path):
    root = Path(write_shapes(str(tmp_path), "coco", n_train=5, n_val=1, seed=2, size=64, workers=1))
    base = fingerprint(read_coco(str(root), "train"))
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    data["images"].reverse()
    data["annotations"].reverse()  # objects of an image keep their relative order: reverse back per image
    by_image: dict = {}
    for a in reversed(data["annotations"]):
        by_image.setdefault(a["image_id"], []).append(a)
    data["annotations"] = [a for img in reversed(list(by_image)) for a in by_image[img]]
    ann.write_text(json.dumps(data))
    assert fingerprint(read_coco(str(root), "train")).digest == base.digest


def test_image_bytes_mode_sees_image_edits(tmp_path):
    root = Path(write_shapes(str(tmp_path), "voc", n_train=3, n_val=1, seed=1, size=64, workers=1))
    names = ["circle", "square", "triangle", "star", "cross", "ellipse"]
    ds = read_voc(root, [("2007", "train")], class_names=names)
    before, before_bytes = fingerprint(ds), fingerprint(ds, image_bytes=True)
    assert before_bytes.mode == "records+image_bytes" and before_bytes.digest != before.digest
    img = Path(ds.records[0].path)
    img.write_bytes(img.read_bytes() + b"\0")  # same annotation, different file
    assert fingerprint(ds).digest == before.digest
    assert fingerprint(ds, image_bytes=True).digest != before_bytes.digest


def test_dataclass_round_trip():
    fp = fingerprint(_dataset(3))
    assert DataFingerprint(**fp.to_dict()) == fp
