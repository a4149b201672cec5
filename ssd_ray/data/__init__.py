"""Datasets: readers (VOC, COCO-format), the synthetic shapes generator, and the record types they produce."""

from ssd_ray.data.coco import COCO_CLASSES, coco_api, read_coco
from ssd_ray.data.records import DetectionDataset, ImageRecord, SkipCounter
from ssd_ray.data.shapes import SHAPE_CLASSES, write_shapes
from ssd_ray.data.voc import VOC_CLASSES, annotation_path, read_voc

__all__ = [
    "COCO_CLASSES", "SHAPE_CLASSES", "VOC_CLASSES",
    "DetectionDataset", "ImageRecord", "SkipCounter",
    "annotation_path", "coco_api", "read_coco", "read_voc", "write_shapes",
]
