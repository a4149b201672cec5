"""Small building blocks shared by the backbones."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels with a learnable per-channel scale (ParseNet).

    SSD applies it to conv4_3 because that layer's activations are much larger than the deeper
    sources'. `x [B,C,H,W] -> weight[c] * x / (||x||_2 over C + eps)`, weight initialised to `scale`.
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True) + self.eps
        # Cast the weight to the activation dtype so bf16 autocast stays bf16 (no silent upcast).
        return x / norm * self.weight.to(x.dtype).view(1, -1, 1, 1)


def _first(v: int | tuple[int, ...]) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ValueError(f"non-square layer parameter {v}: feature map sizes assume square maps")
        return v[0]
    return v


def spatial_size(modules: Iterable[nn.Module], n: int) -> int:
    """Side of a square map of side `n` after running `modules` in order (Conv2d / MaxPool2d only
    change it; containers are walked depth-first, which is execution order for Sequential)."""
    for top in modules:
        for m in top.modules():
            if not isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                continue
            if isinstance(m.padding, str):
                raise ValueError(f"string padding {m.padding!r} is not supported in {m}")
            k, s, p, d = (_first(m.kernel_size), _first(m.stride), _first(m.padding), _first(m.dilation))
            span = n + 2 * p - d * (k - 1) - 1
            if isinstance(m, nn.MaxPool2d) and m.ceil_mode:
                out = math.ceil(span / s) + 1
                if (out - 1) * s >= n + p:  # PyTorch: the last window must start inside the input
                    out -= 1
            else:
                out = span // s + 1
            if out < 1:
                raise ValueError(f"a {n}x{n} map is too small for {m}")
            n = out
    return n
