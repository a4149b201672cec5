"""Scoring detections on a dataset, and the one-call `evaluate_model`."""

from __future__ import annotations

from typing import Sequence

import torch

from ssd_ray.data.records import DetectionDataset
from ssd_ray.evaluate.coco_metrics import coco_evaluate_dataset
from ssd_ray.evaluate.predict import predict_records
from ssd_ray.evaluate.result import EvalResult
from ssd_ray.evaluate.voc import evaluate_detections
from ssd_ray.postprocess import DetectArgs

IOU_TYPES = ("voc", "coco")


def score_detections(
    dataset: DetectionDataset,
    detections,
    iou_types: Sequence[str] = IOU_TYPES,
    coco_gt=None,
    ovthresh: float = 0.5,
) -> EvalResult:
    """Score per-record detections (list aligned with dataset.records, or mapping image_id -> dict).

    "voc": per-class VOC07 11-point and area AP at IoU > ovthresh, means over present classes.
    "coco": pycocotools COCOeval bbox; coco_gt is the real COCO ground truth when there is one
    (else it is built from the records). Difficult ground truth is ignored by both.
    """
    unknown = set(iou_types) - set(IOU_TYPES)
    if unknown:
        raise ValueError(f"iou_types must be among {IOU_TYPES}, got {sorted(unknown)}")
    result = EvalResult(class_names=list(dataset.class_names), num_images=len(dataset.records))
    if "voc" in iou_types:
        voc = evaluate_detections(dataset.records, detections, dataset.class_names, ovthresh)
        result.per_class, result.absent = voc.classes, voc.absent
        result.mAP_07, result.mAP_area = voc.mAP_07, voc.mAP_area
    if "coco" in iou_types:
        result.coco = coco_evaluate_dataset(dataset, detections, coco_gt)
    return result


def evaluate_model(
    model: torch.nn.Module,
    priors,
    dataset: DetectionDataset,
    image_size: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    detect_args: DetectArgs | None = None,
    iou_types: Sequence[str] = IOU_TYPES,
    coco_gt=None,
) -> EvalResult:
    """Predict on every record of `dataset` (see `predict_records`) and score (see `score_detections`)."""
    detections = predict_records(model, priors, dataset.records, image_size, batch_size, device, detect_args)
    return score_detections(dataset, detections, iou_types, coco_gt)
