"""The SSD training step: the one implementation the Ray loop, `bench/recipe.py` and `bench/gpu_check.py` run.

    step = TrainStep(model, priors, optimizer, StepSettings(...), criterion=MultiBoxLoss(3.0), ema=ema)
    out = step(images_u8 [B,S,S,3] uint8 RGB, gt_boxes [B,M,4] xyxy 0..1, gt_labels [B,M] (-1 = padding))
    out.finite, out.loss_l, out.loss_c, out.grad_norm

normalise (on the device) -> match priors -> forward under autocast -> MultiBoxLoss (float32) ->
backward (the DDP all-reduce, when `net` is DDP) -> unscale (fp16 GradScaler) -> clip -> one host
sync for the finiteness check -> optimizer step -> weight EMA.

With several ranks (`world_size > 1`) the loss is normalised by the *global* number of positives:
each rank's positive count is all-reduced (overlapping the forward pass) and its loss is
`(its summed loss) x world_size / N_global`, so DDP's averaged gradient equals the single-process
gradient of the whole global batch, whatever the worker count (tests/test_step.py checks 1 vs 2
ranks). Dividing by each rank's own positives would weight images by how crowded their rank's
share happened to be. A non-finite loss or gradient skips
the optimizer and the EMA: with DDP the all-reduced gradient norm is the same on every rank, so all
ranks agree on the skip. The learning-rate schedule stays with the caller (it advances whether or
not a step was skipped).

`torch.compile` (settings.compile) wraps the network that runs forward/backward (`net`, the DDP
wrapper when there is one, so DDP's optimizer splits the graph at its buckets); `model` stays the
bare module whose `state_dict()` checkpoints, the EMA and model files read, so they never carry
`_orig_mod.` or `module.` key prefixes.

Imports torch and ssd_ray's math only (no Ray, pydantic, MLflow, albumentations or pycocotools): the
GPU check runs it on machines that have nothing else.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..boxes import match_batch
from ..loss import MultiBoxLoss
from ..model.normalize import Normalization, normalize

__all__ = ["StepOutput", "StepSettings", "TrainStep", "autocast_dtype"]


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` on `device`: bf16/fp16 on CUDA, None (float32) elsewhere.

    The CPU runs float32 in training: oneDNN's bf16 convolutions are slower than float32 on CPUs
    without AMX, and the light model is small enough that precision costs nothing to keep.
    """
    if device.type != "cuda" or amp == "none":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


@dataclass(frozen=True)
class StepSettings:
    """What a step needs from the config (`train.*`, `loss.overlap_thresh`, `priors.variance`)."""

    overlap_thresh: float = 0.5
    variance: tuple[float, float] = (0.1, 0.2)
    grad_clip: float | None = None  # max gradient norm; None = measure only
    amp_dtype: torch.dtype | None = None  # autocast dtype of the forward pass; None = float32
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None  # torch.compile mode ("default", "reduce-overhead", "max-autotune")
    normalization: Normalization | None = None  # the model's input normalisation; None = ssd-ray's own

    @classmethod
    def from_config(cls, cfg, device: torch.device) -> "StepSettings":
        t = cfg.train
        norm = cfg.model.normalization  # resolved by the driver ("auto" = ssd-ray's own)
        return cls(overlap_thresh=float(cfg.loss.overlap_thresh), variance=tuple(cfg.priors.variance),
                   grad_clip=t.grad_clip, amp_dtype=autocast_dtype(t.amp, device),
                   channels_last=bool(t.channels_last), compile=bool(t.compile),
                   compile_mode=None if t.compile_mode == "default" else t.compile_mode,
                   normalization=None if norm == "auto" else Normalization.from_spec(norm))


@dataclass
class StepOutput:
    """One step's results. Tensors stay on the device (no sync beyond the finiteness check)."""

    loss_l: torch.Tensor  # [] localisation loss (Smooth-L1 / positives)
    loss_c: torch.Tensor  # [] confidence loss (cross-entropy / positives)
    grad_norm: torch.Tensor  # [] total gradient norm before clipping
    finite: bool  # False: loss or gradient was NaN/inf, the optimizer and EMA did not step
    seconds: float  # wall time of the step (including the first-call compile when there is one)

    @property
    def loss(self) -> torch.Tensor:
        return self.loss_l + self.loss_c


class TrainStep:
    """Callable training step over one worker's batch; see the module docstring."""

    def __init__(self, model: nn.Module, priors: torch.Tensor, optimizer: torch.optim.Optimizer,
                 settings: StepSettings, *, criterion: nn.Module | None = None, net: nn.Module | None = None,
                 scaler: torch.amp.GradScaler | None = None, ema=None, world_size: int = 1):
        """model: the bare SSD (what is checkpointed); net: what runs forward/backward (DDP(model) on
        several workers; default `model`); priors `[P,4]` cxcywh on the model's device; ema: a
        `WeightEMA` updated after every step taken; scaler: fp16 loss scaling on CUDA; world_size:
        ranks sharing the global batch (> 1 needs an initialised torch.distributed group)."""
        self.model = model
        self.priors = priors
        self.optimizer = optimizer
        self.settings = settings
        self.criterion = criterion or MultiBoxLoss()
        self.scaler = scaler
        self.ema = ema
        self.world_size = int(world_size)
        self.params = [p for p in model.parameters() if p.requires_grad]
        net = net if net is not None else model
        if settings.compile:
            # dynamic=False: the batch shape is fixed (drop_last), so one static graph and no guards on it.
            net = torch.compile(net, mode=settings.compile_mode, dynamic=False)
        self.net = net
        self.device_type = priors.device.type
        self.calls = 0
        self.first_call_s: float | None = None  # includes compilation when settings.compile

    def _autocast(self):
        dtype = self.settings.amp_dtype
        return torch.autocast(self.device_type, dtype=dtype) if dtype is not None else nullcontext()

    def __call__(self, images_u8: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                 inject_nan: bool = False) -> StepOutput:
        """images_u8 `[B,S,S,3]` uint8 RGB, gt_boxes `[B,M,4]` xyxy 0..1, gt_labels `[B,M]` 0-based
        class ids with -1 = padding, all on the model's device. inject_nan: fault injection (tests)."""
        t0 = time.perf_counter()
        s = self.settings
        images = normalize(images_u8, channels_last=s.channels_last, spec=s.normalization)
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, self.priors, s.overlap_thresh, s.variance)
        positives = pending = None
        if self.world_size > 1:  # N_global, reduced while the forward pass runs
            import torch.distributed as dist

            positives = (conf_t > 0).sum().to(torch.float32)
            pending = dist.all_reduce(positives, async_op=True)
        with self._autocast():
            loc, conf = self.net(images)
        normalizer = None
        if pending is not None:
            pending.wait()
            normalizer = positives.clamp(min=1) / self.world_size
        loss_l, loss_c = self.criterion(loc, conf, loc_t, conf_t, normalizer)  # float32 under autocast
        loss = loss_l + loss_c
        if inject_nan:
            loss = loss * float("nan")

        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip or math.inf)
        finite = bool(torch.isfinite(grad_norm) & torch.isfinite(loss.detach()))  # the one sync per step
        if finite:
            if self.scaler:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        if self.scaler:
            self.scaler.update()
        seconds = time.perf_counter() - t0
        self.calls += 1
        if self.calls == 1:
            self.first_call_s = seconds
        return StepOutput(loss_l.detach(), loss_c.detach(), grad_norm.detach(), finite, seconds)
