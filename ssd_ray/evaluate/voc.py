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
from ssd_ray.evaluate.matching import match_class, precision_recall


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
    empty = np.zeros((0, 4))
    gt_boxes = [[empty] * len(records) for _ in class_names]
    gt_difficult = [[np.zeros(0, dtype=bool)] * len(records) for _ in class_names]
    det_img, det_cls, det_scores, det_boxes = [], [], [], []
    for i, (rec, det) in enumerate(zip(records, detections)):
        bad = (rec.labels < 0) | (rec.labels >= len(class_names))
        if bad.any():
            raise ValueError(f"record {rec.image_id}: label {int(rec.labels[bad][0])} outside 0..{len(class_names) - 1}")
        boxes_px = to_pixels(rec.boxes, rec.width, rec.height)
        for c in np.unique(rec.labels):
            keep = rec.labels == c
            gt_boxes[c][i] = boxes_px[keep]
            gt_difficult[c][i] = rec.difficult[keep]
        boxes, scores, cls = detection_arrays(det, num_classes, f"detections for {rec.image_id}")
        det_img.append(np.full(len(cls), i, dtype=np.int64))
        det_cls.append(cls)
        det_scores.append(scores)
        det_boxes.append(to_pixels(boxes, rec.width, rec.height))
    det_img = np.concatenate(det_img) if det_img else np.zeros(0, np.int64)
    det_cls = np.concatenate(det_cls) if det_cls else np.zeros(0, np.int64)
    det_scores = np.concatenate(det_scores) if det_scores else np.zeros(0)
    det_boxes = np.concatenate(det_boxes) if det_boxes else empty

    classes = []
    for c, name in enumerate(class_names):
        sel = det_cls == c
        match = match_class(gt_boxes[c], gt_difficult[c], det_img[sel], det_scores[sel], det_boxes[sel],
                            ovthresh, plus_one=0.0)
        rec, prec = precision_recall(match)
        present = match.npos > 0
        classes.append(ClassAP(
            name=name, npos=match.npos, num_detections=int(sel.sum()),
            ap_07=voc_ap(rec, prec, True) if present else None,
            ap_area=voc_ap(rec, prec, False) if present else None,
            rec=rec, prec=prec))
    present = [c for c in classes if not c.absent]
    return VocMetrics(
        classes=classes,
        mAP_07=float(np.mean([c.ap_07 for c in present])) if present else None,
        mAP_area=float(np.mean([c.ap_area for c in present])) if present else None,
        absent=[c.name for c in classes if c.absent],
    )
