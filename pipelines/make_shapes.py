"""Write the synthetic shapes dataset (VOC or COCO layout); skips the work if it is already there.

    python -m pipelines.make_shapes --out data/shapes --format voc --train 2000 --val 300 --seed 0
"""

from __future__ import annotations

import argparse
import time

from ssd_ray.cli import exits_on_user_error
from ssd_ray.data.shapes import find_existing, write_shapes


@exits_on_user_error
def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (VOC devkit root or COCO root)")
    ap.add_argument("--format", choices=("voc", "coco"), default="voc")
    ap.add_argument("--train", type=int, default=2000, help="number of training images")
    ap.add_argument("--val", type=int, default=300, help="number of validation images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--year", default="2007", help="VOC folder year (VOC<year>); ignored for coco")
    ap.add_argument("--force", action="store_true", help="rewrite even if a matching dataset exists")
    a = ap.parse_args(argv)

    params = dict(fmt=a.format, n_train=a.train, n_val=a.val, seed=a.seed, size=a.size, year=a.year)
    root = None if a.force else find_existing(a.out, **params)
    if root is not None:
        print(f"shapes dataset already complete at {root} ({a.format}, train={a.train}, val={a.val}, "
              f"seed={a.seed}, size={a.size}); not regenerating")
        return root
    t0 = time.perf_counter()
    root = write_shapes(a.out, **params)
    print(f"wrote shapes dataset ({a.format}) to {root}: train={a.train} val={a.val} images of "
          f"{a.size}x{a.size}, seed={a.seed}, in {time.perf_counter() - t0:.1f}s")
    return root


if __name__ == "__main__":
    main()
