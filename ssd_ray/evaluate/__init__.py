"""Detection evaluation: VOC AP (07 11-point and area), COCO mAP via pycocotools, reports.

    voc_ap(rec, prec, use_07_metric)            AP from a PR curve (ap.py)
    voc_eval(annotations_dir, image_ids, ...)   py-faster-rcnn contract on VOC XML (voc_xml.py)
    evaluate_detections(records, dets, names)   VOC AP of in-memory detections (voc.py)
    coco_evaluate / coco_evaluate_dataset       COCOeval bbox (coco_metrics.py)
    predict_records -> score_detections         model on records, then scoring (predict.py, run.py)
    evaluate_model                              both in one call -> EvalResult (result.py)
    protocols: ssd_ray / voc07 / coco           post-processing + scoring of published numbers (protocol.py)
    voc07_ssd_pytorch                           ssd.pytorch eval.py's VOC07 scoring (voc07.py)
    official_coco_gt / coco_ground_truth        a COCO-format dataset's own annotation file (coco_metrics.py)

`voc_eval` and `evaluate_detections` share one greedy matching core (matching.py).
`predict_records` imports `ssd_ray.model` and `ssd_ray.postprocess` when called, so scoring alone
does not load model code.
"""

from ssd_ray.evaluate.ap import VOC07_RECALL_THRESHOLDS, voc_ap
from ssd_ray.evaluate.coco_metrics import (
    COCO_STAT_NAMES,
    coco_evaluate,
    coco_evaluate_dataset,
    coco_ground_truth,
    dataset_to_coco,
    detections_to_coco_results,
    official_coco_gt,
)
from ssd_ray.evaluate.matching import (
    ClassMatch,
    best_overlaps,
    greedy_assign,
    iou_matrix,
    match_class,
    precision_recall,
)
from ssd_ray.evaluate.predict import load_image_resized, predict_records
from ssd_ray.evaluate.protocol import PROTOCOLS, evaluation_postprocess
from ssd_ray.evaluate.result import EvalResult
from ssd_ray.evaluate.run import IOU_TYPES, evaluate_model, score_detections
from ssd_ray.evaluate.voc import ClassAP, VocMetrics, evaluate_detections
from ssd_ray.evaluate.voc07 import voc07_ssd_pytorch
from ssd_ray.evaluate.voc_xml import parse_voc_xml, voc_eval

__all__ = [
    "COCO_STAT_NAMES", "IOU_TYPES", "PROTOCOLS", "VOC07_RECALL_THRESHOLDS",
    "ClassAP", "ClassMatch", "EvalResult", "VocMetrics",
    "best_overlaps", "coco_evaluate", "coco_evaluate_dataset", "coco_ground_truth", "dataset_to_coco",
    "detections_to_coco_results", "evaluate_detections", "evaluate_model", "evaluation_postprocess",
    "greedy_assign", "iou_matrix", "load_image_resized", "match_class", "official_coco_gt", "parse_voc_xml",
    "precision_recall", "predict_records", "score_detections", "voc07_ssd_pytorch", "voc_ap", "voc_eval",
]

