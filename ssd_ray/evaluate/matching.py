"""The one greedy matching step shared by every VOC-style evaluation in ssd_ray.

`voc_eval` (XML on disk) and `evaluate_detections` (records in memory) both reduce to: per image,
ground-truth boxes with difficult flags; detections as (image index, score, box). This module
implements the py-faster-rcnn rule on that input:

* detections are visited by score, highest first (stable sort: ties keep input order);
* each takes the ground truth with the highest IoU in its image (first one on ties);
* IoU > ovthresh and that ground truth is difficult -> ignored (neither TP nor FP, but the row
  stays in the curve, as in the reference);
* IoU > ovthresh and the ground truth is not yet taken -> TP, and the ground truth is taken;
* otherwise (already taken, IoU <= ovthresh, or no ground truth in the image) -> FP.

The reference walks detections in a Python loop; here the per-detection best match does not depend
on the order (it ignores "taken"), so it is computed per image with numpy and only "first detection
on each ground truth wins" remains, which `np.unique(..., return_index=True)` answers in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class ClassMatch:
    """Greedy matching of one class, rows in score order (highest first)."""

    tp: np.ndarray  # [D] float64 0/1
    fp: np.ndarray  # [D] float64 0/1 (ignored rows are 0 in both)
    scores: np.ndarray  # [D] float64, descending
    npos: int  # non-difficult ground-truth boxes


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray, plus_one: float = 0.0) -> np.ndarray:
    """IoU of [A,4] x [B,4] xyxy pixel boxes -> [A,B] float64.

    plus_one=1 is the VOC devkit's inclusive-pixel rule (width = x2 - x1 + 1); 0 treats boxes as
    continuous. A zero-area pair (union 0) has IoU 0 rather than NaN.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + plus_one, 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + plus_one, 0.0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + plus_one) * (a[..., 3] - a[..., 1] + plus_one)
    area_b = (b[..., 2] - b[..., 0] + plus_one) * (b[..., 3] - b[..., 1] + plus_one)
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(union > 0, iou, 0.0)


def match_class(
    gt_boxes: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray],
    det_image: np.ndarray,
    det_scores: np.ndarray,
    det_boxes: np.ndarray,
    ovthresh: float = 0.5,
    plus_one: float = 0.0,
) -> ClassMatch:
    """Greedy VOC matching of one class's detections against its ground truth.

    gt_boxes[i]: [n_i,4] xyxy pixel boxes of this class in image i; gt_difficult[i]: [n_i] bool.
    det_image: [D] int index into gt_boxes; det_scores: [D]; det_boxes: [D,4] xyxy pixels, in the
    same pixel convention as the ground truth (see `plus_one` in `iou_matrix`).
    """
    if len(gt_boxes) != len(gt_difficult):
        raise ValueError(f"gt_boxes has {len(gt_boxes)} images but gt_difficult has {len(gt_difficult)}")
    det_image = np.asarray(det_image, dtype=np.int64).reshape(-1)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    if not (len(det_image) == len(det_scores) == len(det_boxes)):
        raise ValueError(
            f"detection arrays differ in length: image {len(det_image)}, scores {len(det_scores)}, "
            f"boxes {len(det_boxes)}")
    if len(det_image) and (det_image.min() < 0 or det_image.max() >= len(gt_boxes)):
        raise ValueError(f"detection image index out of range 0..{len(gt_boxes) - 1}")
    if np.isnan(det_scores).any():
        raise ValueError("detection scores contain NaN")
    npos = int(sum(int((~np.asarray(d, dtype=bool)).sum()) for d in gt_difficult))

    order = np.argsort(-det_scores, kind="stable")
    det_image, det_scores, det_boxes = det_image[order], det_scores[order], det_boxes[order]
    n = len(det_scores)

    # Best ground truth of each detection (order-independent), grouped by image.
    gt_sizes = np.array([len(b) for b in gt_boxes], dtype=np.int64)
    gt_offset = np.concatenate(([0], np.cumsum(gt_sizes)[:-1])) if len(gt_sizes) else np.zeros(0, np.int64)
    ovmax = np.full(n, -np.inf)
    gt_global = np.full(n, -1, dtype=np.int64)  # index of the best GT over all images
    best_difficult = np.zeros(n, dtype=bool)
    for img in np.unique(det_image):
        rows = np.nonzero(det_image == img)[0]
        boxes = np.asarray(gt_boxes[img], dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            continue
        iou = iou_matrix(det_boxes[rows], boxes, plus_one)
        jmax = np.argmax(iou, axis=1)  # first maximum on ties, like the reference
        ovmax[rows] = iou[np.arange(len(rows)), jmax]
        gt_global[rows] = gt_offset[img] + jmax
        best_difficult[rows] = np.asarray(gt_difficult[img], dtype=bool).reshape(-1)[jmax]

    above = ovmax > ovthresh
    candidate = np.nonzero(above & ~best_difficult)[0]
    # np.unique returns the first occurrence of each GT among candidates: that detection is the TP.
    _, first = np.unique(gt_global[candidate], return_index=True)
    tp = np.zeros(n)
    tp[candidate[first]] = 1.0
    fp = np.zeros(n)
    fp[~above] = 1.0
    fp[candidate] = 1.0 - tp[candidate]
    return ClassMatch(tp=tp, fp=fp, scores=det_scores, npos=npos)


def precision_recall(match: ClassMatch) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision, [D] float64 each, exactly as py-faster-rcnn computes them.

    With npos == 0 (no non-difficult ground truth) recall is undefined: it is returned as NaN.
    """
    tp = np.cumsum(match.tp)
    fp = np.cumsum(match.fp)
    if match.npos > 0:
        rec = tp / float(match.npos)
    else:
        rec = np.full(len(tp), np.nan)
    # eps guards the first rows when they only hit difficult ground truth (tp + fp == 0).
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec
