"""Draw training samples as the augmentation makes them, boxes included (extras and the SSD recipe).

    python -m pipelines.preview_augment --config configs/my_data.yaml --n 16 --out grid.png \\
        [--epoch 0] [--set data.augment.extra=[] ...]

The samples are the first `--n` positions of the training stream's epoch `--epoch`: the same records,
seeds `(train.seed, epoch, index)` and code (`TrainSampleMaker`) as training, so the grid shows
exactly what those training samples will be. Boxes are drawn green on `model.min_dim` tiles. A bad
config or data set exits with status 2 before any work.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ssd_ray.cli import EXIT_CONFIG_ERROR, add_config_args, exits_on_user_error, load_config_or_exit, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--n", type=int, default=16, help="samples to draw (default 16)")
    p.add_argument("--out", required=True, help="image file to write (.png or .jpg)")
    p.add_argument("--epoch", type=int, default=0, help="training epoch whose first samples are drawn")
    args = p.parse_args(argv)
    if args.n < 1 or args.epoch < 0:
        p.error("--n must be >= 1 and --epoch >= 0")
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        p.error(f"--out must end in .png or .jpg, got {args.out}")
    return args


@exits_on_user_error
def main(argv=None) -> Path:
    args = parse_args(argv)
    setup_logging()
    cfg = load_config_or_exit(args.config, args.overrides)

    from ssd_ray.data.pipeline import TrainSampleMaker, make_augmentation, sample_schedule
    from ssd_ray.data.sources import load_split
    from ssd_ray.evaluate.visualize import detection_grid, write_image

    try:
        train = load_split(cfg.data, "train")
    except (ValueError, OSError) as e:
        print(f"data error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    n_records = len(train.records)
    epochs, index = sample_schedule(n_records, cfg.train.seed, args.epoch * n_records, args.n)
    maker = TrainSampleMaker(train.records, make_augmentation(cfg), cfg.train.seed, cfg.data.max_boxes)
    batch = maker({"epoch": epochs, "index": index})

    size = cfg.model.min_dim
    scale = np.array([size, size, size, size], np.float32)
    keep = [batch["labels"][i] >= 0 for i in range(args.n)]
    gts = [batch["boxes"][i][k] * scale for i, k in enumerate(keep)]
    empty = [np.zeros((0, 4), np.float32)] * args.n
    grid = detection_grid(list(batch["image"]), empty, [[]] * args.n, [np.zeros(0)] * args.n,
                          gt_boxes_px=gts, tile=size, nrow=math.ceil(math.sqrt(args.n)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(grid, str(out))

    a = cfg.data.augment
    shown = sum(int(k.sum()) for k in keep)
    extra = f"{len(a.extra)} extra transform(s), {int(batch['extra_dropped'].sum())} box(es) dropped by them" \
        if a.extra else "no extra transforms"
    print(f"wrote {out}: {args.n} samples of epoch {args.epoch} ({n_records} train images), {shown} boxes; "
          f"{extra}; {int(batch['skipped'].sum())} unreadable image(s) replaced")
    return out


if __name__ == "__main__":
    main()
