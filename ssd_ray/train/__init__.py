"""Training: the Ray Train worker loop (`loop`), the driver (`launch`), optimiser and tracking."""

from .launch import TrainSummary, format_summary, run_training

__all__ = ["TrainSummary", "format_summary", "run_training"]
