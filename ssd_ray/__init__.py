"""ssd-ray: train SSD object detectors on VOC, COCO and custom data as a Ray pipeline."""

from .predict import Predictor

__all__ = ["Predictor"]
__version__ = "0.1.0"
