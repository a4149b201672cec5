"""Bench: SSD post-processing (softmax, decode, threshold, NMS, top-k), ssd-ray vs the ssd.pytorch way.

Baseline (`bench/_reference.py`) is the reference's test-phase softmax + `Detect.forward`: per image
and per class a threshold mask, then the reference's own greedy `nms` (a Python while-loop of
index_select / clamp / IoU) on the 200 best candidates, then the cross-class sort. Ours is
`ssd_ray.postprocess.detect` (one top-k, one `torchvision.ops.batched_nms` for the whole batch).

Setup: batch 8, VOC300 priors (8732), 21 classes, conf_thresh 0.01, nms_thresh 0.45, top_k 200,
`torch.set_num_threads(1)`. Logits look like a trained model's: background dominant everywhere
(~100-250 noise candidates per class pass 0.01) plus 1-5 objects per image whose overlapping priors
score high for the object's class (clusters that NMS must thin out). The script first checks that
both give the same detections, then times them in alternating rounds in one process.

    python bench/postprocess.py [--rounds 5] [--reps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/postprocess.py`

from bench import _reference as ref  # noqa: E402
from bench._common import alternating_rounds, format_table, median  # noqa: E402
from bench.loss import NUM_CLASSES, VOC300  # noqa: E402
from ssd_ray.boxes import point_form  # noqa: E402
from ssd_ray.postprocess import detect  # noqa: E402
from ssd_ray.priors import prior_boxes  # noqa: E402

CONF_THRESH, NMS_THRESH, TOP_K = 0.01, 0.45, 200


def make_outputs(batch: int, seed: int):
    """Priors `[P,4]` and raw SSD outputs `loc [B,P,4]`, `conf_logits [B,P,C]` shaped like a trained model's."""
    g = torch.Generator().manual_seed(seed)
    priors = prior_boxes(**VOC300)
    P = len(priors)
    loc = 0.5 * torch.randn(batch, P, 4, generator=g)
    conf = 2.0 * torch.randn(batch, P, NUM_CLASSES, generator=g)
    conf[..., 0] += 10.5  # background wins almost everywhere
    prior_xyxy = point_form(priors)
    for b in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=g))
        wh = 0.1 + 0.6 * torch.rand(n, 2, generator=g)
        lo = torch.rand(n, 2, generator=g) * (1 - wh)
        objects = torch.cat([lo, lo + wh], 1)
        labels = torch.randint(1, NUM_CLASSES, (n,), generator=g)
        iou = ref.jaccard(objects, prior_xyxy)  # [n,P]
        for obj, label in enumerate(labels.tolist()):
            near = iou[obj] > 0.3  # the priors a trained model fires on for this object
            conf[b, near, label] += 12.0 + 4.0 * iou[obj, near]
    return priors, loc, conf


def check_parity(ours: list[dict], base: list[tuple]) -> int:
    """Same detections per image: (label, score) pairs and boxes, up to float rounding. Returns the count."""
    total = 0
    for b, (o, (scores, labels, boxes)) in enumerate(zip(ours, base)):
        if len(o["scores"]) != len(scores):
            raise AssertionError(f"image {b}: {len(o['scores'])} detections vs {len(scores)} in the baseline")
        oi = np.lexsort((-o["scores"].numpy(), o["labels"].numpy()))  # by label, then score descending
        bi = np.lexsort((-scores.numpy(), labels.numpy()))
        np.testing.assert_array_equal(o["labels"].numpy()[oi], labels.numpy()[bi], err_msg=f"image {b} labels")
        np.testing.assert_allclose(o["scores"].numpy()[oi], scores.numpy()[bi], rtol=1e-6, err_msg=f"image {b}")
        np.testing.assert_allclose(o["boxes"].numpy()[oi], boxes.numpy()[bi], atol=1e-6, err_msg=f"image {b}")
        total += len(scores)
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (median reported)")
    ap.add_argument("--reps", type=int, default=10, help="calls of ssd-ray per round (the baseline makes one)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    priors, loc, conf = make_outputs(args.batch, args.seed)

    def run_ours():
        return detect(loc, conf, priors, CONF_THRESH, NMS_THRESH, top_k=TOP_K, nms_top_k=TOP_K)

    def run_baseline():
        return ref.detect(loc, conf, priors, NUM_CLASSES, CONF_THRESH, NMS_THRESH, TOP_K)

    cand = (torch.softmax(conf, -1)[..., 1:] > CONF_THRESH).sum(1)  # [B,C-1] candidates per class
    print(f"batch {args.batch}, priors {len(priors)}, classes {NUM_CLASSES}, candidates per class "
          f"min {int(cand.min())} / median {int(cand.median())} / max {int(cand.max())}, "
          f"threads {torch.get_num_threads()}")
    n = check_parity(run_ours(), run_baseline())
    print(f"parity: same {n} detections ({n / args.batch:.0f} per image)")

    def baseline(_r: int) -> int:
        run_baseline()
        return 1

    def ours(_r: int) -> int:
        for _ in range(args.reps):
            run_ours()
        return args.reps

    # The parity check above already ran both once, so no warm-up round (the baseline takes seconds).
    rates = alternating_rounds({"baseline (ssd.pytorch way)": baseline, "ssd-ray": ours}, args.rounds,
                               warmup=0)
    base_ms, ours_ms = (1000.0 / median(r) for r in rates.values())
    print(f"\ndetect on a batch of {args.batch}, median of {args.rounds} alternating rounds")
    print(format_table(["variant", "ms / batch", "speed-up"],
                       [["baseline (ssd.pytorch way)", base_ms, "1.0x"],
                        ["ssd-ray", ours_ms, f"{base_ms / ours_ms:.1f}x"]]))


if __name__ == "__main__":
    main()
