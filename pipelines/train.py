"""Train an SSD with Ray Train: `python -m pipelines.train --config configs/shapes.yaml [--set k=v ...]`.

Also a Ray job entrypoint: `ray job submit --working-dir . -- python -m pipelines.train --config ...`.
"""

from __future__ import annotations

import argparse

from ssd_ray.cli import add_config_args, load_config_or_exit, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--num-workers", type=int, help="Ray Train workers (overrides ray.num_workers)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL, autocast)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_NAME",
                   help="continue the latest run of this config, or the named run, from its last checkpoint")
    p.add_argument("--init-from", metavar="CKPT", help="start a new run from a checkpoint's weights")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    overrides = list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"ray.num_workers={args.num_workers}")
    if args.use_gpu:
        overrides.append("ray.use_gpu=true")
    cfg = load_config_or_exit(args.config, overrides)

    from ssd_ray.train import format_summary, run_training

    summary = run_training(cfg, resume=args.resume, init_from=args.init_from, address=args.address)
    print(format_summary(summary))
    if summary.final_map is not None:
        print(f"mAP@0.5 = {summary.final_map:.3f}")


if __name__ == "__main__":
    main()
