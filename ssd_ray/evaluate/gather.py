"""Sharding and gathering for distributed prediction: the pieces both validation paths share.

Training's periodic validation (the train workers, `ssd_ray.train.validation`) and evaluation on a
Ray actor pool (`ssd_ray.evaluate.distributed`) split records over workers and put the detections
back in record order with the same two functions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssd_ray.data.records import ImageRecord

__all__ = ["assemble_detections", "shard_indices"]


def shard_indices(num_records: int, rank: int, world_size: int) -> np.ndarray:
    """Record indices rank `rank` of `world_size` predicts: a stride, so shards differ by at most one image."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return np.arange(rank, num_records, world_size, dtype=np.int64)


def assemble_detections(records: Sequence[ImageRecord], parts) -> list[dict]:
    """Put per-shard detections back in record order: `parts` yields `(indices [b], detections [b])`.

    The one gathering step of every distributed path (the Ray actor pool here, the train workers in
    `ssd_ray.train.validation`). RuntimeError if an image is missing or predicted twice: a dropped
    image must never be scored as all misses.
    """
    out: list[dict | None] = [None] * len(records)
    for indices, dets in parts:
        if len(indices) != len(dets):
            raise RuntimeError(f"a shard returned {len(dets)} detections for {len(indices)} images")
        for i, det in zip(indices, dets):
            if out[int(i)] is not None:
                raise RuntimeError(f"image {records[int(i)].image_id} was predicted by two shards")
            out[int(i)] = det
    missing = [records[i].image_id for i, d in enumerate(out) if d is None]
    if missing:
        raise RuntimeError(f"distributed prediction lost {len(missing)} of {len(records)} images, e.g. {missing[:3]}")
    return out  # type: ignore[return-value]
