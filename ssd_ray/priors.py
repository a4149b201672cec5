"""SSD default boxes ("priors"), in the order ssd.pytorch's PriorBox produces them.

Order: feature map k first; within a map, rows i (cy) outer and columns j (cx) inner; at each location
(s_k, s_k), then (s'_k, s'_k) with s'_k = sqrt(s_k * max_k / min_dim), then for every aspect ratio
ar the pair (s_k*sqrt(ar), s_k/sqrt(ar)), (s_k/sqrt(ar), s_k*sqrt(ar)). The centre of cell j is
(j + 0.5) / f_k with f_k = min_dim / steps[k] (a float, not the feature-map size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def boxes_per_location(aspect_ratios: Sequence[Sequence[float]]) -> list[int]:
    """Boxes at each location of each map: the two squares plus a pair per aspect ratio."""
    return [2 + 2 * len(ars) for ars in aspect_ratios]


def prior_boxes(
    min_dim: int,
    feature_maps: Sequence[int],
    steps: Sequence[float],
    min_sizes: Sequence[float],
    max_sizes: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    clip: bool | str = True,
) -> torch.Tensor:
    """Default boxes `[P,4]` float32 center-size `(cx, cy, w, h)`, relative to the image (0..1).

    Computed in float64 and stored as float32, as the reference does. `clip` clamps the
    center-size values to [0, 1] (in practice it caps w or h at 1; corners are not clipped).
    `clip="size"` clamps only w and h, as torchvision's `DefaultBoxGenerator` does: centres of a map
    whose `min_dim / step` is below its size (10 cells of 32 px at 300) then pass 1.0.
    """
    if not (len(feature_maps) == len(steps) == len(min_sizes) == len(max_sizes) == len(aspect_ratios)):
        raise ValueError("feature_maps, steps, min_sizes, max_sizes and aspect_ratios need one entry per map")
    per_map = []
    for f, step, lo, hi, ars in zip(feature_maps, steps, min_sizes, max_sizes, aspect_ratios):
        f_k = min_dim / step
        s = lo / min_dim
        s_prime = np.sqrt(s * (hi / min_dim))
        shapes = [(s, s), (s_prime, s_prime)]
        for ar in ars:
            r = np.sqrt(ar)
            shapes += [(s * r, s / r), (s / r, s * r)]
        wh = np.asarray(shapes, dtype=np.float64)  # [A,2]
        i, j = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")  # rows outer, columns inner
        centers = np.stack([(j.ravel() + 0.5) / f_k, (i.ravel() + 0.5) / f_k], axis=1)  # [f*f,2]
        boxes = np.concatenate(
            [np.repeat(centers, len(wh), axis=0), np.tile(wh, (len(centers), 1))], axis=1)
        per_map.append(boxes)
    out = np.concatenate(per_map, axis=0)
    if clip == "size":
        out[:, 2:] = np.clip(out[:, 2:], 0.0, 1.0)
    elif clip is True:
        out = np.clip(out, 0.0, 1.0)
    elif clip is not False:
        raise ValueError(f"clip must be True, False or 'size', got {clip!r}")
    return torch.from_numpy(out.astype(np.float32))


def priors_from_config(model_cfg, priors_cfg) -> torch.Tensor:
    """`prior_boxes` for a `ModelConfig` (min_dim) and a `PriorsConfig`."""
    p = priors_cfg
    return prior_boxes(model_cfg.min_dim, p.feature_maps, p.steps, p.min_sizes, p.max_sizes,
                       p.aspect_ratios, clip=p.clip)
