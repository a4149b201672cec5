"""ssd-ray: train SSD object detectors on VOC, COCO and custom data as a Ray pipeline."""

from __future__ import annotations

__all__ = ["Predictor"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `ssd_ray.Predictor` needs torch, but the data actors and the shapes renderer import
    # `ssd_ray.data...` only, and importing torch costs each of those processes ~2 s of CPU.
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    raise AttributeError(f"module 'ssd_ray' has no attribute {name!r}")
