"""VOC AP of in-memory detections against `ImageRecord` ground truth (both VOC metrics).

Ground truth and detections are both turned into continuous pixel boxes (relative * width/height)
and matched without the +1: for records read from VOC XML this is exactly the devkit's IoU (see
`voc_xml`), and it needs no per-dataset convention for COCO or custom data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ssd_ray.data.records import ImageRecord
from ssd_ray.evaluate.ap import voc_ap
from ssd_ray.evaluate.detections import align_detections, detection_arrays, to_pixels
from ssd_ray.evaluate.matching import ClassMatch, best_overlaps, greedy_assign, precision_recall


@dataclass
class ClassAP:
    name: str
    npos: int  # non-difficult ground-truth boxes
    num_detections: int
    ap_07: float | None  # None when the class is absent (npos == 0)
    ap_area: float | None
    rec: np.ndarray = field(repr=False)  # [D] float64, detections in score order (NaN when absent)
    prec: np.ndarray = field(repr=False)  # [D] float64

    @property
    def absent(self) -> bool:
        return self.npos == 0


@dataclass
class VocMetrics:
    classes: list[ClassAP]  # in class_names order
    mAP_07: float | None  # mean over present classes; None when no class is present
    mAP_area: float | None
    absent: list[str]  # classes with no non-difficult ground truth: excluded from the means

    @classmethod
    def from_classes(cls, classes: list[ClassAP]) -> "VocMetrics":
        """Means over the classes that have ground truth; the others are listed as absent."""
        present = [c for c in classes if not c.absent]
        return cls(classes=classes,
                   mAP_07=float(np.mean([c.ap_07 for c in present])) if present else None,
                   mAP_area=float(np.mean([c.ap_area for c in present])) if present else None,
                   absent=[c.name for c in classes if c.absent])


def evaluate_detections(
    records: Sequence[ImageRecord],
    detections,
    class_names: Sequence[str],
    ovthresh: float = 0.5,
) -> VocMetrics:
    """VOC07 11-point and area AP per class, and their means over classes present in the ground truth.

    records: ground truth (relative xyxy boxes, 0-based labels, difficult flags, width/height).
    detections: one dict per record (list aligned with records, or mapping image_id -> dict), see
    `ssd_ray.evaluate.detections`; boxes relative xyxy, labels in model space 1..C-1.
    Difficult ground truth is ignored (see `matching`). Classes without non-difficult ground truth
    are listed in `absent`, have AP None, and do not enter the means.
    """
    records = list(records)
    detections = align_detections(records, detections)
    num_classes = len(class_names) + 1
    gt_boxes, gt_labels, gt_difficult = [], [], []
    det_img, det_cls, det_scores, det_boxes = [], [], [], []
    for i, (rec, det) in enumerate(zip(records, detections)):
        bad = (rec.labels < 0) | (rec.labels >= len(class_names))
        if bad.any():
            raise ValueError(f"record {rec.image_id}: label {int(rec.labels[bad][0])} "
                             f"outside 0..{len(class_names) - 1}")
        gt_boxes.append(to_pixels(rec.boxes, rec.width, rec.height))
        gt_labels.append(rec.labels)
        gt_difficult.append(rec.difficult)
        boxes, scores, cls = detection_arrays(det, num_classes, f"detections for {rec.image_id}")
        det_img.append(np.full(len(cls), i, dtype=np.int64))
        det_cls.append(cls)
        det_scores.append(scores)
        det_boxes.append(to_pixels(boxes, rec.width, rec.height))
    det_img = np.concatenate(det_img + [np.zeros(0, np.int64)])
    det_cls = np.concatenate(det_cls + [np.zeros(0, np.int64)])
    det_scores = np.concatenate(det_scores + [np.zeros(0)])
    det_boxes = np.concatenate(det_boxes + [np.zeros((0, 4))])
    all_labels = np.concatenate(gt_labels + [np.zeros(0, np.int64)])
    all_difficult = np.concatenate(gt_difficult + [np.zeros(0, bool)])

    # One IoU pass per image for all classes (a detection only sees ground truth of its class),
    # then the greedy assignment per class: the same rule as `match_class`, without a per-class
    # loop over images.
    ovmax, gt_index = best_overlaps(gt_boxes, det_img, det_boxes, 0.0, gt_labels, det_cls)
    classes = []
    for c, name in enumerate(class_names):
        sel = det_cls == c
        tp, fp, order = greedy_assign(det_scores[sel], ovmax[sel], gt_index[sel], all_difficult, ovthresh)
        npos = int(((all_labels == c) & ~all_difficult).sum())
        rec, prec = precision_recall(ClassMatch(tp=tp, fp=fp, scores=det_scores[sel][order], npos=npos))
        present = npos > 0
        classes.append(ClassAP(
            name=name, npos=npos, num_detections=int(sel.sum()),
            ap_07=voc_ap(rec, prec, True) if present else None,
            ap_area=voc_ap(rec, prec, False) if present else None,
            rec=rec, prec=prec))
    return VocMetrics.from_classes(classes)
