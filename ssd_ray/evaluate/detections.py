"""Checking and aligning per-image detection dicts, the currency between prediction and scoring.

A detection dict for one image (what `predict_records` returns, and what `ssd_ray.postprocess.detect`
returns per image before clipping):
    {"boxes": [K,4] xyxy relative 0..1, "scores": [K], "labels": [K] int in 1..C-1 (model space:
     label - 1 is the 0-based class id), optional "image_id": str}
numpy arrays or torch tensors are both accepted.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ssd_ray.data.records import ImageRecord


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detection_arrays(det: Mapping, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> boxes [K,4] float64 relative xyxy, scores [K] float64, class ids [K] int64 (0-based = label - 1).

    num_classes counts the background (model space). Raises ValueError naming `where` on bad input.
    """
    for key in ("boxes", "scores", "labels"):
        if key not in det:
            raise ValueError(f"{where}: detection dict lacks {key!r} (has {sorted(det)})")
    boxes = _numpy(det["boxes"]).astype(np.float64)
    scores = _numpy(det["scores"]).astype(np.float64).reshape(-1)
    labels = _numpy(det["labels"])
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: detection boxes must be [K,4], got shape {boxes.shape}")
    labels = labels.reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"{where}: detection lengths differ: boxes {len(boxes)}, scores {len(scores)}, "
                         f"labels {len(labels)}")
    if len(labels) and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError(f"{where}: detection labels must be integers, got {labels[:5]}")
    labels = labels.astype(np.int64)
    bad = (labels < 1) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{where}: detection label {int(labels[bad][0])} outside 1..{num_classes - 1} "
                         "(labels are in model space: 0 is background, class id = label - 1)")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"{where}: detection boxes or scores contain NaN/inf")
    return boxes, scores, labels - 1


def align_detections(records: Sequence[ImageRecord], detections) -> list[Mapping]:
    """Detections in record order.

    detections: a sequence aligned with `records` (one dict per record; an "image_id" key, where
    present, must agree), or a mapping image_id -> dict that covers every record (what distributed
    prediction gathers). A missing image is an error, not "no detections": an image that a worker
    silently dropped would otherwise score as all misses.
    """
    if isinstance(detections, Mapping):
        missing = [r.image_id for r in records if r.image_id not in detections]
        if missing:
            raise ValueError(f"detections lack {len(missing)} of {len(records)} images, e.g. {missing[:3]}")
        return [detections[r.image_id] for r in records]
    detections = list(detections)
    if len(detections) != len(records):
        raise ValueError(f"got {len(detections)} detection dicts for {len(records)} records")
    for r, d in zip(records, detections):
        if "image_id" in d and str(d["image_id"]) != r.image_id:
            raise ValueError(f"detections out of order: record {r.image_id!r} got detections for {d['image_id']!r}")
    return detections


def to_pixels(boxes_rel: np.ndarray, width: int, height: int) -> np.ndarray:
    """[K,4] relative xyxy -> [K,4] float64 continuous pixel xyxy (0 = left edge of the first pixel)."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return np.asarray(boxes_rel, dtype=np.float64).reshape(-1, 4) * scale
