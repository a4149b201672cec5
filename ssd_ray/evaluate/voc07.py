"""ssd.pytorch's `eval.py` scoring of in-memory detections: the `voc07` protocol's metric.

What the reference does after its network, and how each step is reproduced (its post-processing,
`Detect(conf 0.01, NMS 0.45, 200 candidates per class)` with no per-image cap and no clipping, is the
protocol's `DetectArgs`, see `protocol.py`):

1. `write_voc_results_file`: relative boxes times the original width/height (float32), plus 1, written
   with one decimal (`{:.1f}`); scores with three (`{:.3f}`). One line per detection: images in dataset
   order, a class's detections of one image in score order. Here the same numbers are formatted the
   same way, so rounding and ties come out as in the file the reference reads back.
2. `voc_eval`: ground truth from the XML with every coordinate minus 1 (`parse_rec`), IoU without the
   devkit's +1, detections visited in `np.argsort(-confidence)` order (numpy's default sort, not a
   stable one: ties among the 3-decimal scores are visited in that order, so the same call is made
   here on the same array), greedy matching with difficult objects ignored, VOC07 11-point AP.
   Ground truth comes from the records: `x1 = (xmin - 1) / W` and `x2 = xmax / W` (docs/design.md)
   give back the reference's `xmin - 1` and `xmax - 1` (rounded to 1/1000 px, which restores the
   XML's integers exactly from the float32 relative boxes).
3. `Mean AP = {:.4f}`: the mean over classes.

Differences, both outside the VOC07 test set: a class without non-difficult ground truth is reported
as absent (the reference's AP would be 0 or -1 and enter the mean), and the VOC reader clips boxes
that leave the image (counted as `box_clipped`), which the reference keeps as written.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssd_ray.data.records import ImageRecord
from ssd_ray.evaluate.ap import voc_ap
from ssd_ray.evaluate.detections import align_detections, detection_arrays
from ssd_ray.evaluate.matching import ClassMatch, best_overlaps, greedy_assign, precision_recall
from ssd_ray.evaluate.voc import ClassAP, VocMetrics


def _formatted(values: np.ndarray, decimals: int) -> np.ndarray:
    """float64 of each float32 value written with `decimals` decimals and read back, as the results
    file round trip does (Python's correctly rounded formatting, not `np.round`)."""
    fmt = f"{{:.{decimals}f}}"
    return np.array([float(fmt.format(v)) for v in values.astype(np.float32).tolist()], dtype=np.float64)


def results_file_values(boxes_rel: np.ndarray, scores: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Detections of one image as the reference writes and re-reads them -> (boxes [K,4] pixels, scores [K]).

    boxes_rel: [K,4] relative xyxy (float32 as `detect` returns them); the reference multiplies the
    float32 tensor by the integer size, adds 1 (its "1-based" results), and writes `{:.1f}`.
    """
    scale = np.array([width, height, width, height], dtype=np.float32)
    px = np.asarray(boxes_rel, dtype=np.float32).reshape(-1, 4) * scale + np.float32(1)
    return _formatted(px.reshape(-1), 1).reshape(-1, 4), _formatted(np.asarray(scores).reshape(-1), 3)


def ground_truth_pixels(rec: ImageRecord) -> np.ndarray:
    """[n,4] float64: the reference's `parse_rec` boxes (every XML coordinate minus 1) from a record."""
    scale = np.array([rec.width, rec.height, rec.width, rec.height], dtype=np.float64)
    px = np.round(rec.boxes.astype(np.float64).reshape(-1, 4) * scale, 3)
    px[:, 2:] -= 1.0
    return px


def voc07_ssd_pytorch(
    records: Sequence[ImageRecord],
    detections,
    class_names: Sequence[str],
    ovthresh: float = 0.5,
) -> VocMetrics:
    """Per-class VOC07 11-point AP (and the area AP of the same curve) as ssd.pytorch's eval.py computes it.

    detections: one dict per record (or a mapping image_id -> dict), relative xyxy boxes as decoded
    (unclipped, for the reference's numbers), scores, model-space labels; see module doc.
    """
    records = list(records)
    detections = align_detections(records, detections)
    num_classes = len(class_names) + 1
    gt_px = [ground_truth_pixels(r) for r in records]
    det = []  # per record: (pixel boxes, scores, class ids) after the results-file round trip
    for rec, d in zip(records, detections):
        boxes, scores, cls = detection_arrays(d, num_classes, f"detections for {rec.image_id}")
        # A class's lines of one image follow the detections' score order (stable on ties).
        order = np.argsort(-scores, kind="stable")
        px, sc = results_file_values(boxes[order], scores[order], rec.width, rec.height)
        det.append((px, sc, cls[order]))

    classes = []
    for c, name in enumerate(class_names):
        gt_boxes = [b[r.labels == c] for b, r in zip(gt_px, records)]
        gt_difficult = np.concatenate([r.difficult[r.labels == c] for r in records] + [np.zeros(0, bool)])
        det_img, det_scores, det_boxes = [], [], []
        for i, (px, sc, cls) in enumerate(det):  # the results file's line order
            sel = cls == c
            det_img.append(np.full(int(sel.sum()), i, np.int64))
            det_scores.append(sc[sel])
            det_boxes.append(px[sel])
        det_img = np.concatenate(det_img + [np.zeros(0, np.int64)])
        confidence = np.concatenate(det_scores + [np.zeros(0)])
        bb = np.concatenate(det_boxes + [np.zeros((0, 4))])
        order = np.argsort(-confidence)  # the reference's (default, unstable) sort
        ovmax, gt_index = best_overlaps(gt_boxes, det_img[order], bb[order], 0.0)
        tp, fp, _ = greedy_assign(confidence[order], ovmax, gt_index, gt_difficult, ovthresh)
        npos = int((~gt_difficult).sum())
        rec, prec = precision_recall(ClassMatch(tp=tp, fp=fp, scores=confidence[order], npos=npos))
        present = npos > 0
        classes.append(ClassAP(
            name=name, npos=npos, num_detections=len(confidence),
            ap_07=voc_ap(rec, prec, True) if present else None,
            ap_area=voc_ap(rec, prec, False) if present else None, rec=rec, prec=prec))
    return VocMetrics.from_classes(classes)
