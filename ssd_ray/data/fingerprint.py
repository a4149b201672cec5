"""Data fingerprints: a hash of a split's parsed records, so a run states exactly which data it saw.

    fp = fingerprint(dataset)          # DataFingerprint(digest="sha256:…", images, objects, class_names)
    fp.digest == fingerprint(reread).digest   # same annotations -> same digest

What is hashed, in a canonical order (records sorted by image id, ties broken by their content):
the class names in label order, then per image its id, width and height, and per object its box
(float32 xyxy relative 0..1), label (0-based int64) and difficult flag. Everything is written with
explicit byte order and length prefixes, so the digest is the same on every machine.

Not hashed:
- file paths: a dataset moved to another disk, or listed in another order (image-set files,
  COCO `images` order), keeps its fingerprint;
- image bytes, by default: re-encoding or editing an image without touching its annotation keeps
  the fingerprint. `image_bytes=True` also hashes every image file (it reads the whole dataset: for
  COCO train2017, 18 GB); the default costs well under a second for COCO-sized record sets
  (docs/benchmarks.md).
- what the reader skipped (corrupt annotations, missing files): those records are not in the
  dataset, so they change the digest only through their absence; the counts are logged separately.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from .records import DetectionDataset, ImageRecord

FORMAT = "ssd-ray/records-fingerprint/1"  # bump when what is hashed changes


@dataclass(frozen=True)
class DataFingerprint:
    digest: str  # "sha256:<64 hex>"
    images: int
    objects: int  # boxes on the records, difficult ones included
    class_names: list[str]
    mode: str  # "records" or "records+image_bytes"

    @property
    def short(self) -> str:
        """The first 12 hex digits, for log lines."""
        return self.digest.split(":", 1)[1][:12]

    def to_dict(self) -> dict:
        return asdict(self)

    def tags(self, split: str, prefix: str = "ssd_ray.") -> dict[str, str]:
        """MLflow tags `<prefix>data.<split>.{fingerprint,images,objects,classes,fingerprint_mode}`."""
        p = f"{prefix}data.{split}."
        return {f"{p}fingerprint": self.digest, f"{p}images": str(self.images), f"{p}objects": str(self.objects),
                f"{p}classes": json.dumps(self.class_names), f"{p}fingerprint_mode": self.mode}


def canonical_order(records: list[ImageRecord]) -> list[int]:
    """Indexes of `records` sorted by image id; records sharing an id are ordered by their content,
    so the order never depends on how the files were listed."""
    ids = [r.image_id for r in records]
    order = sorted(range(len(records)), key=ids.__getitem__)
    if len(set(ids)) < len(ids):  # rare (ids are unique per reader): the full key only then
        def key(i: int):
            r = records[i]
            return (r.image_id, r.width, r.height, _le(r.boxes, "<f4"), _le(r.labels, "<i8"), _le(r.difficult, "u1"))

        order = sorted(range(len(records)), key=key)
    return order


def _le(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def _concat(parts: list[np.ndarray], dtype: str, width: int | None = None) -> bytes:
    if not parts:
        return b""
    a = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return _le(a if width is None else a.reshape(-1, width), dtype)


def _file_digest(path: str) -> bytes:
    from .. import storage  # the image may be an object in a bucket

    h = hashlib.sha256()
    with storage.open_input(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def fingerprint(dataset: DetectionDataset, image_bytes: bool = False, threads: int = 8) -> DataFingerprint:
    """The dataset's `DataFingerprint` (see the module docstring for what is hashed).

    `image_bytes=True` also hashes each image file's bytes (read on `threads` threads; hashlib
    releases the GIL); an unreadable file raises OSError naming it.
    """
    records = dataset.records
    order = canonical_order(records)
    ids, sizes, counts, boxes, labels, difficult = [], [], [], [], [], []
    for i in order:  # one pass: this loop is most of the cost (~1 us per record)
        r = records[i]
        ids.append(r.image_id.encode("utf-8"))
        sizes.append((r.width, r.height))
        counts.append(len(r.labels))
        boxes.append(r.boxes)
        labels.append(r.labels)
        difficult.append(r.difficult)
    parts = [
        json.dumps({"format": FORMAT, "class_names": list(dataset.class_names)}, sort_keys=True).encode(),
        _le(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), "<i8"),
        b"".join(ids),
        _le(np.array(sizes, dtype=np.int64).reshape(-1, 2), "<i8"),
        _le(np.array(counts, dtype=np.int64), "<i8"),
        _concat(boxes, "<f4", 4),
        _concat(labels, "<i8"),
        _concat(difficult, "u1"),
    ]
    if image_bytes:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            parts.append(b"".join(pool.map(_file_digest, [records[i].path for i in order])))
    h = hashlib.sha256()
    for part in parts:  # length-prefixed: no two different inputs concatenate to the same stream
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return DataFingerprint(digest=f"sha256:{h.hexdigest()}", images=len(ids), objects=int(sum(counts)),
                           class_names=list(dataset.class_names),
                           mode="records+image_bytes" if image_bytes else "records")
