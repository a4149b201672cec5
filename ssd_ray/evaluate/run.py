"""Scoring detections on a dataset, and the one-call `evaluate_model`."""

from __future__ import annotations

from typing import Sequence

import torch

from ssd_ray.data.records import DetectionDataset
from ssd_ray.evaluate.coco_metrics import coco_evaluate, coco_ground_truth, detections_to_coco_results
from ssd_ray.evaluate.predict import predict_records
from ssd_ray.evaluate.protocol import check_protocol
from ssd_ray.evaluate.result import EvalResult
from ssd_ray.evaluate.voc import evaluate_detections
from ssd_ray.evaluate.voc07 import voc07_ssd_pytorch
from ssd_ray.postprocess import DetectArgs

IOU_TYPES = ("voc", "coco")


def score_detections(
    dataset: DetectionDataset,
    detections,
    iou_types: Sequence[str] = IOU_TYPES,
    coco_gt=None,
    ovthresh: float = 0.5,
    protocol: str = "ssd_ray",
    detect_args: DetectArgs | None = None,
) -> EvalResult:
    """Score per-record detections (list aligned with dataset.records, or mapping image_id -> dict).

    protocol (see `protocol.py`):
    "ssd_ray": the `iou_types` asked for. "voc": per-class VOC07 11-point and area AP at IoU >
    ovthresh, means over present classes. "coco": pycocotools COCOeval bbox against `coco_gt`, else
    the dataset's own annotation file (COCO-format data: the official numbers), else ground truth
    built from the records. Difficult ground truth is ignored by both.
    "voc07": ssd.pytorch eval.py's VOC07 scoring (`voc07.py`); iou_types is not used.
    "coco": the official COCO numbers only; ValueError unless there is a COCO ground truth.
    detect_args: the post-processing that produced `detections`, recorded in `result.protocol`.
    """
    check_protocol(protocol)
    unknown = set(iou_types) - set(IOU_TYPES)
    if unknown:
        raise ValueError(f"iou_types must be among {IOU_TYPES}, got {sorted(unknown)}")
    result = EvalResult(class_names=list(dataset.class_names), num_images=len(dataset.records))
    info: dict = {"name": protocol}
    voc = None
    if protocol == "voc07":
        voc = voc07_ssd_pytorch(dataset.records, detections, dataset.class_names, ovthresh)
        info["voc_ground_truth"] = "records, ssd.pytorch eval.py pixel conventions"
    elif protocol == "ssd_ray" and "voc" in iou_types:
        voc = evaluate_detections(dataset.records, detections, dataset.class_names, ovthresh)
        info["voc_ground_truth"] = "records"
    if voc is not None:
        result.per_class, result.absent = voc.classes, voc.absent
        result.mAP_07, result.mAP_area = voc.mAP_07, voc.mAP_area
    if protocol == "coco" or (protocol == "ssd_ray" and "coco" in iou_types):
        gt = coco_ground_truth(dataset, coco_gt)
        if protocol == "coco" and gt.source == "records":
            raise ValueError("evaluation protocol 'coco' scores against a COCO annotation file: the dataset is "
                             "not COCO-format (data.format coco); use protocol ssd_ray or voc07")
        results = detections_to_coco_results(dataset.records, detections, gt.image_ids, gt.category_ids)
        result.coco = coco_evaluate(gt.coco, results, gt.image_ids, gt.category_ids)
        info["coco_ground_truth"] = gt.source
    if detect_args is not None:
        info["postprocess"] = detect_args.to_json()
    result.protocol = info
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
    protocol: str = "ssd_ray",
    normalization=None,
) -> EvalResult:
    """Predict on every record of `dataset` (see `predict_records`) and score (see `score_detections`).

    normalization: the model's input normalisation (`LoadedModel.input_normalization`; None: ssd-ray's)."""
    detect_args = detect_args or DetectArgs()
    detections = predict_records(model, priors, dataset.records, image_size, batch_size, device, detect_args,
                                 normalization=normalization)
    return score_detections(dataset, detections, iou_types, coco_gt, protocol=protocol, detect_args=detect_args)
