"""Bench: SSD target matching + MultiBoxLoss, forward and backward, ssd-ray vs the ssd.pytorch way.

Baseline (`bench/_reference.py`) reproduces the reference's `MultiBoxLoss.forward`: a Python loop
over images calling `match` (jaccard, best prior / best truth, `index_fill_`, the forcing for-loop,
encode), then boolean-mask gathers, Smooth-L1, `log_sum_exp` mining with two sorts and a
cross-entropy over the gathered rows. Ours is `ssd_ray.boxes.match_batch` + `ssd_ray.loss.MultiBoxLoss`.

Setup: batch 32, VOC300 priors (8732), 21 classes, 1-5 GT boxes per image (fixed seed), predictions
drawn from a normal distribution, `torch.set_num_threads(1)`. The script first asserts that both give
the same losses (1e-5 relative) and gradients, then times them in alternating rounds in one process
and prints medians.

    python bench/loss.py [--rounds 15] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/loss.py`

from bench import _reference as ref  # noqa: E402
from bench._common import alternating_rounds, format_table, median  # noqa: E402
from ssd_ray.boxes import match_batch  # noqa: E402
from ssd_ray.loss import MultiBoxLoss  # noqa: E402
from ssd_ray.priors import prior_boxes  # noqa: E402

NUM_CLASSES = 21
VOC300 = dict(min_dim=300, feature_maps=[38, 19, 10, 5, 3, 1], steps=[8, 16, 32, 64, 100, 300],
              min_sizes=[30, 60, 111, 162, 213, 264], max_sizes=[60, 111, 162, 213, 264, 315],
              aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]])


def make_inputs(batch: int, seed: int):
    """Priors `[P,4]`, reference targets (list of `[n,5]`), padded `gt_boxes [B,5,4]` / `gt_labels [B,5]`,
    and leaf predictions `loc [B,P,4]`, `conf [B,P,C]`."""
    g = torch.Generator().manual_seed(seed)
    priors = prior_boxes(**VOC300)
    targets = []
    gt_boxes = torch.zeros(batch, 5, 4)
    gt_labels = torch.full((batch, 5), -1, dtype=torch.long)
    for b in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=g))
        wh = 0.05 + 0.75 * torch.rand(n, 2, generator=g)  # VOC-like: small objects to most of the image
        lo = torch.rand(n, 2, generator=g) * (1 - wh)
        boxes = torch.cat([lo, lo + wh], 1)
        labels = torch.randint(0, NUM_CLASSES - 1, (n,), generator=g)
        targets.append(torch.cat([boxes, labels[:, None].float()], 1))
        gt_boxes[b, :n], gt_labels[b, :n] = boxes, labels
    loc = torch.randn(batch, len(priors), 4, generator=g).requires_grad_()
    conf = torch.randn(batch, len(priors), NUM_CLASSES, generator=g).requires_grad_()
    return priors, targets, gt_boxes, gt_labels, loc, conf


def run_baseline(loc, conf, priors, targets):
    loc.grad = conf.grad = None
    loss_l, loss_c = ref.multibox_loss(loc, conf, priors, targets)
    (loss_l + loss_c).backward()
    return loss_l.detach(), loss_c.detach()


def run_ours(loc, conf, priors, gt_boxes, gt_labels, criterion):
    loc.grad = conf.grad = None
    loc_t, conf_t = match_batch(gt_boxes, gt_labels, priors)
    loss_l, loss_c = criterion(loc, conf, loc_t, conf_t)
    (loss_l + loss_c).backward()
    return loss_l.detach(), loss_c.detach()


def check_parity(loc, conf, priors, targets, gt_boxes, gt_labels, criterion) -> None:
    """Both sides must compute the same losses and gradients, or the timing compares different work."""
    bl, bc = run_baseline(loc, conf, priors, targets)
    b_grads = loc.grad.clone(), conf.grad.clone()
    ol, oc = run_ours(loc, conf, priors, gt_boxes, gt_labels, criterion)
    torch.testing.assert_close(ol, bl, rtol=1e-5, atol=0)
    torch.testing.assert_close(oc, bc, rtol=1e-5, atol=0)
    torch.testing.assert_close(loc.grad, b_grads[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(conf.grad, b_grads[1], rtol=1e-5, atol=1e-7)
    print(f"parity: loss_l {ol.item():.6f} vs {bl.item():.6f}, loss_c {oc.item():.6f} vs {bc.item():.6f}; "
          "gradients equal")


def breakdown(loc, conf, priors, gt_boxes, gt_labels, criterion, reps: int) -> dict[str, float]:
    """Median ms of ours' three steps, timed back to back inside one call."""
    steps: dict[str, list[float]] = {"match_batch": [], "loss forward": [], "loss backward": []}
    for _ in range(reps):
        loc.grad = conf.grad = None
        t0 = time.perf_counter()
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, priors)
        t1 = time.perf_counter()
        loss_l, loss_c = criterion(loc, conf, loc_t, conf_t)
        t2 = time.perf_counter()
        (loss_l + loss_c).backward()
        t3 = time.perf_counter()
        for name, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2)):
            steps[name].append(dt * 1000)
    return {k: statistics.median(v) for k, v in steps.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="alternating timing rounds (median reported)")
    ap.add_argument("--reps", type=int, default=3, help="calls of each variant per round")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    priors, targets, gt_boxes, gt_labels, loc, conf = make_inputs(args.batch, args.seed)
    criterion = MultiBoxLoss(neg_pos=3)
    n_pos = int((match_batch(gt_boxes, gt_labels, priors)[1] > 0).sum())
    print(f"batch {args.batch}, priors {len(priors)}, classes {NUM_CLASSES}, "
          f"GT boxes {int((gt_labels >= 0).sum())}, positives {n_pos}, threads {torch.get_num_threads()}")
    check_parity(loc, conf, priors, targets, gt_boxes, gt_labels, criterion)

    def baseline(_r: int) -> int:
        for _ in range(args.reps):
            run_baseline(loc, conf, priors, targets)
        return args.reps

    def ours(_r: int) -> int:
        for _ in range(args.reps):
            run_ours(loc, conf, priors, gt_boxes, gt_labels, criterion)
        return args.reps

    rates = alternating_rounds({"baseline (ssd.pytorch way)": baseline, "ssd-ray": ours}, args.rounds)
    ms = {name: 1000.0 / median(r) for name, r in rates.items()}
    base_ms, ours_ms = ms.values()
    print(f"\nmatch + loss forward + backward, median of {args.rounds} alternating rounds x {args.reps} calls")
    print(format_table(["variant", "ms / batch", "ratio to baseline"],
                       [["baseline (ssd.pytorch way)", base_ms, "1.00"],
                        ["ssd-ray", ours_ms, f"{ours_ms / base_ms:.2f}"]]))

    steps = breakdown(loc, conf, priors, gt_boxes, gt_labels, criterion, reps=max(5, args.rounds))
    print("\nssd-ray breakdown (median ms)")
    print(format_table(["step", "ms"], [[k, v] for k, v in steps.items()]))


if __name__ == "__main__":
    main()
