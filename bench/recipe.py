"""Bench: how fast a training recipe learns -- mAP@0.5 on the val set against images seen.

The demo's recipe (width, augmentation, lr, schedule) was chosen with this script. It trains in this
process with the library's own pieces (model, optimizer and schedule, the training step
`ssd_ray.train.step.TrainStep` that the Ray loop runs, `SSDAugmentation`, `predict_records` +
`score_detections`), without Ray, so recipes compare on learning per image alone; images are decoded
once up front and augmented per sample as the Ray pipeline does. `step img/s` times the training
step only (normalise, match, forward, loss, backward, clip, step), the part that a recipe's
model changes; with `--set train.compile=true` the first (compiling) step is left out of it.

    python bench/recipe.py --config configs/shapes.yaml --images 24000 --every 6000 \
        --set model.width=32 --set train.lr=0.01 [--threads 1] [--ema 0.99,0.995] [--save model.pt]

Runs are deterministic for a given config (seeded sampling and initialisation), so two recipes can
run side by side (one thread each) and still compare point for point; their `step img/s` then
measures a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/recipe.py`

from ssd_ray.config import load_config  # noqa: E402
from ssd_ray.data.augment import decode_image  # noqa: E402
from ssd_ray.data.pipeline import make_augmentation  # noqa: E402
from ssd_ray.data.sources import ensure_synthetic, load_split  # noqa: E402
from ssd_ray.evaluate.predict import predict_records  # noqa: E402
from ssd_ray.evaluate.run import score_detections  # noqa: E402
from ssd_ray.loss import MultiBoxLoss  # noqa: E402
from ssd_ray.model import build_ssd  # noqa: E402
from ssd_ray.priors import priors_from_config  # noqa: E402
from ssd_ray.postprocess import DetectArgs  # noqa: E402
from ssd_ray.train.ema import WeightEMA  # noqa: E402
from ssd_ray.train.optim import build_optimizer, build_scheduler  # noqa: E402
from ssd_ray.train.step import StepSettings, TrainStep  # noqa: E402


def evaluate(model, priors, val, cfg) -> float:
    dets = predict_records(model, priors, val.records, cfg.model.min_dim, cfg.train.eval_batch_size, "cpu",
                           DetectArgs.from_config(cfg.postprocess, cfg.priors.variance))
    return score_detections(val, dets, iou_types=("voc",)).mAP_area


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/shapes.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--images", type=int, default=24000, help="stop after this many training images")
    ap.add_argument("--every", type=int, default=6000, help="evaluate every this many images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", help="write the final weights (state dict) here")
    ap.add_argument("--ema", default="", help="comma list of EMA decays: also evaluate those weight averages")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, args.set)
    ensure_synthetic(cfg.data)
    train, val = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    cfg = cfg.with_num_classes(train.class_names)
    t = cfg.train
    torch.set_num_threads(args.threads)
    torch.manual_seed(t.seed)
    model = build_ssd(cfg.model, cfg.priors)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    priors = priors_from_config(cfg.model, cfg.priors)
    optimizer, params = build_optimizer(model, t), list(model.parameters())
    scheduler = build_scheduler(optimizer, t)
    decays = [float(d) for d in args.ema.split(",") if d]
    emas = [WeightEMA(model, d) for d in decays]
    step = TrainStep(model, priors, optimizer, StepSettings.from_config(cfg, torch.device("cpu")),
                     criterion=MultiBoxLoss(cfg.loss.neg_pos))
    augment = make_augmentation(cfg)
    images = [decode_image(r.path) for r in train.records]
    print(f"{cfg.name}: {sum(p.numel() for p in params) / 1e6:.2f}M parameters, {len(images)} train images, "
          f"overrides {args.set or 'none'}", flush=True)

    rng = np.random.default_rng(t.seed)
    order, pos = rng.permutation(len(images)), 0
    b, m, size = t.batch_size, cfg.data.max_boxes, cfg.model.min_dim
    seen, timed, step_time, next_eval = 0, 0, 0.0, args.every
    print(f"{'images':>7} {'iter':>5} {'loss':>7} {'mAP@0.5':>8} {'step img/s':>10}")
    while seen < args.images:
        batch = np.empty((b, size, size, 3), np.uint8)
        boxes, labels = torch.zeros(b, m, 4), torch.full((b, m), -1, dtype=torch.long)
        for i in range(b):
            if pos == len(order):
                order, pos = rng.permutation(len(images)), 0
            j, pos = order[pos], pos + 1
            rec = train.records[j]
            img, bx, lb = augment(images[j], rec.boxes, rec.labels, rng)
            k = min(len(bx), m)
            batch[i], boxes[i, :k], labels[i, :k] = img, torch.from_numpy(bx[:k]), torch.from_numpy(lb[:k])
        t0 = time.perf_counter()
        out = step(torch.from_numpy(batch), boxes, labels)
        scheduler.step()
        for ema in emas:  # the extra averages compared here; the config's own EMA is not used by the bench
            if out.finite:
                ema.update(model)
        if step.calls > 1:  # the first step allocates (and compiles): not the recipe's speed
            step_time += time.perf_counter() - t0
            timed += b
        seen += b
        if seen >= next_eval or seen >= args.images:
            next_eval += args.every
            mAP = evaluate(model, priors, val, cfg)
            ema_maps = "".join(f"  ema {d}: {evaluate(ema.module, priors, val, cfg):.3f}" for d, ema in zip(decays, emas))
            print(f"{seen:7d} {seen // b:5d} {out.loss.item():7.3f} {mAP:8.3f} {timed / max(step_time, 1e-9):10.1f}{ema_maps}", flush=True)
    if args.save:
        torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
