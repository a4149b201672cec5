"""Training: the Ray Train worker loop (`loop`), the driver (`launch`), the step, optimiser and tracking.

`TrainSummary`, `format_summary` and `run_training` load lazily: `ssd_ray.train.step` (and the EMA
and optimiser modules it is used with) must import on machines without Ray, pydantic or MLflow
(the GPU check).
"""

from __future__ import annotations

__all__ = ["TrainSummary", "format_summary", "run_training"]


def __getattr__(name: str):
    if name in __all__:
        from . import launch

        return getattr(launch, name)
    raise AttributeError(f"module 'ssd_ray.train' has no attribute {name!r}")
