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

The reference walks detections in a Python loop. Here it is two steps: `best_overlaps` (each
detection's best ground truth, which does not depend on the order since it ignores "taken"; one
numpy IoU per image, all classes at once when given class ids) and `greedy_assign` ("first
detection on each ground truth wins", one `np.unique(..., return_index=True)`).
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


def best_overlaps(
    gt_boxes: Sequence[np.ndarray],
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    plus_one: float = 0.0,
    gt_classes: Sequence[np.ndarray] | None = None,
    det_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ground truth of every detection in its own image -> (ovmax [D] float64, gt_index [D] int64).

    gt_boxes[i]: [n_i,4] xyxy pixels of image i; det_image [D] indexes gt_boxes; det_boxes [D,4].
    gt_index counts over all images in order (image i's boxes start at sum(n_0..n_{i-1})); -1 and
    ovmax -inf where the image has no (same-class) ground truth. With gt_classes / det_classes,
    a detection only considers ground truth of its own class, so all classes are done in one pass.
    The reference takes the max over the image's ground truth whether or not it is taken already,
    so this does not depend on the score order; ties go to the first box, as np.argmax does there.
    """
    n = len(det_image)
    sizes = np.array([len(b) for b in gt_boxes], dtype=np.int64)
    offset = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    ovmax = np.full(n, -np.inf)
    gt_index = np.full(n, -1, dtype=np.int64)
    # Group detections by image with one sort (a mask per image would be quadratic).
    by_image = np.argsort(det_image, kind="stable")
    images, starts = np.unique(det_image[by_image], return_index=True)
    for img, rows in zip(images, np.split(by_image, starts[1:])):
        if sizes[img] == 0:
            continue
        iou = iou_matrix(det_boxes[rows], gt_boxes[img], plus_one)
        if gt_classes is not None:
            iou = np.where(det_classes[rows][:, None] == np.asarray(gt_classes[img])[None, :], iou, -np.inf)
        j = np.argmax(iou, axis=1)
        best = iou[np.arange(len(rows)), j]
        found = best > -np.inf
        ovmax[rows[found]] = best[found]
        gt_index[rows[found]] = offset[img] + j[found]
    return ovmax, gt_index


def greedy_assign(
    det_scores: np.ndarray,
    ovmax: np.ndarray,
    gt_index: np.ndarray,
    gt_difficult: np.ndarray,
    ovthresh: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP/FP flags in score order -> (tp [D], fp [D] float64 0/1, order [D] indices into the input).

    ovmax, gt_index: from `best_overlaps`; gt_difficult: [G] bool over the same global gt index.
    """
    order = np.argsort(-det_scores, kind="stable")
    ovmax, gt_index = ovmax[order], gt_index[order]
    above = ovmax > ovthresh
    difficult = np.zeros(len(order), dtype=bool)
    difficult[above] = gt_difficult[gt_index[above]]
    candidate = np.nonzero(above & ~difficult)[0]
    # np.unique returns the first occurrence of each GT among candidates: that detection is the TP.
    _, first = np.unique(gt_index[candidate], return_index=True)
    tp = np.zeros(len(order))
    tp[candidate[first]] = 1.0
    fp = np.zeros(len(order))
    fp[~above] = 1.0
    fp[candidate] = 1.0 - tp[candidate]
    return tp, fp, order


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
    gt_boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in gt_boxes]
    difficult = np.concatenate([np.asarray(d, dtype=bool).reshape(-1) for d in gt_difficult] + [np.zeros(0, bool)])
    ovmax, gt_index = best_overlaps(gt_boxes, det_image, det_boxes, plus_one)
    tp, fp, order = greedy_assign(det_scores, ovmax, gt_index, difficult, ovthresh)
    return ClassMatch(tp=tp, fp=fp, scores=det_scores[order], npos=int((~difficult).sum()))


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
