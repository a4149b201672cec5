"""Optimizer and learning-rate schedule: linear warmup, then the reference's steps or a cosine decay.

`train.lr` belongs to `train.batch_size` (the global batch). The linear-scaling rule (Goyal et al.
2017): when the global batch changes by a factor k, multiply lr by k and keep a warmup.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over the model's trainable parameters; build it after moving the model
    to its device, so that CUDA parameters get the fused kernels."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Biases, BatchNorm and L2Norm scales: 1-D parameters, optionally free of weight decay.
        (no_decay if train_cfg.no_bias_decay and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    # Fused kernels (one launch for all parameters) on CUDA; the CPU keeps torch's default (foreach).
    fused = {"fused": True} if decay and all(p.is_cuda for g in groups for p in g["params"]) else {}
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum, **fused)
    return torch.optim.AdamW(groups, lr=train_cfg.lr, **fused)


def lr_factor(iteration: int, train_cfg) -> float:
    """Multiplier of `train.lr` at `iteration` (0-based: the step about to be taken)."""
    t = train_cfg
    if iteration < t.warmup_iters:
        alpha = iteration / t.warmup_iters
        warm = t.warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if t.schedule == "steps":
        return warm * t.gamma ** bisect.bisect_right(t.lr_steps, iteration)
    progress = min(1.0, max(0, iteration - t.warmup_iters) / max(1, t.max_iter - t.warmup_iters))
    cosine = t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return warm * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration; its state (last_epoch) travels in checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, train_cfg))
