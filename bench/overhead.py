"""Bench: what Ray costs a single machine -- the demo's training through the full Ray pipeline vs the
same step with the same data work in one plain process.

    python bench/overhead.py [--config configs/shapes.yaml] [--iters 200] [--rounds 2]

* `ray`: `run_training` on the config (Ray Data decode + augmentation actors, a TorchTrainer with the
  config's workers), `--iters` iterations; its rate is the loop's own training images/s (first step
  and evaluation/checkpoint time excluded: `TrainSummary.images_per_s`).
* `in-process`: one Python process, no Ray: the same `TrainSampleMaker` (decode + the config's
  augmentation) feeding the same `TrainStep`, with as many torch threads as the machine has cores.

Variants alternate (in-process, ray, ray, in-process, ...) so machine drift hits both alike; the
ratio ray / in-process is printed per round and as the median (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/overhead.py`
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, median  # noqa: E402

from ssd_ray.config import load_config  # noqa: E402
from ssd_ray.data.pipeline import SSDCollate, TrainSampleMaker, make_augmentation, sample_schedule  # noqa: E402
from ssd_ray.data.sources import load_split  # noqa: E402
from ssd_ray.loss import MultiBoxLoss  # noqa: E402
from ssd_ray.model import build_ssd  # noqa: E402
from ssd_ray.priors import priors_from_config  # noqa: E402
from ssd_ray.train.ema import WeightEMA  # noqa: E402
from ssd_ray.train.optim import build_optimizer, build_scheduler  # noqa: E402
from ssd_ray.train.step import StepSettings, TrainStep  # noqa: E402


def in_process(cfg, train, iters: int) -> float:
    """Training images/s of `iters` steps fed by TrainSampleMaker in this process (first step excluded)."""
    t = cfg.train
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(t.seed)
    model = build_ssd(cfg.model, cfg.priors)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    step = TrainStep(model, priors_from_config(cfg.model, cfg.priors), optimizer,
                     StepSettings.from_config(cfg, torch.device("cpu")), criterion=MultiBoxLoss(cfg.loss.neg_pos),
                     ema=WeightEMA(model, t.ema_decay) if t.ema_decay > 0 else None)
    maker = TrainSampleMaker(train.records, make_augmentation(cfg), t.seed, cfg.data.max_boxes,
                             cache_mb=cfg.data.decode_cache_mb)
    collate = SSDCollate()
    epochs, index = sample_schedule(len(train.records), t.seed, 0, iters * t.batch_size)
    t0 = None
    for k in range(iters):
        sl = slice(k * t.batch_size, (k + 1) * t.batch_size)
        batch = collate(maker({"epoch": epochs[sl], "index": index[sl]}))
        step(batch["image"], batch["boxes"], batch["labels"])
        scheduler.step()
        if k == 0:
            t0 = time.perf_counter()
    return (iters - 1) * t.batch_size / (time.perf_counter() - t0)


def through_ray(cfg, iters: int, storage: str) -> float:
    from ssd_ray.train.launch import run_training

    c = cfg.model_copy(deep=True)
    c.train.max_iter = iters
    c.train.warmup_iters = min(c.train.warmup_iters, iters - 1)
    c.train.eval_every = c.train.checkpoint_every = iters
    c.ray.storage_path = storage
    c.mlflow.enabled = False
    return run_training(c).images_per_s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/shapes.yaml")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    train = load_split(cfg.data, "train")
    cfg = cfg.with_num_classes(train.class_names)
    print(f"{cfg.name}: {args.iters} iterations of batch {cfg.train.batch_size}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as storage:
        for r in range(args.rounds):
            order = ("in-process", "ray") if r % 2 == 0 else ("ray", "in-process")
            rates = {}
            for name in order:
                rates[name] = in_process(cfg, train, args.iters) if name == "in-process" else \
                    through_ray(cfg, args.iters, storage)
                print(f"round {r + 1}: {name} {rates[name]:.1f} img/s", flush=True)
            ratios.append(rates["ray"] / rates["in-process"])
            rows.append([f"round {r + 1}", rates["in-process"], rates["ray"], f"{ratios[-1]:.2f}"])
    print(format_table(["", "in-process img/s", "Ray img/s", "ratio"], rows))
    print(f"ray / in-process: median {median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}; goal >= 0.8)")
    print(f"load average after: {np.round(os.getloadavg(), 2).tolist()}")


if __name__ == "__main__":
    main()
