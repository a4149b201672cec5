"""Train an SSD with Ray Train: `python -m pipelines.train --config configs/shapes.yaml [--set k=v ...]`.

Also a Ray job entrypoint: `ray job submit --working-dir . -- python -m pipelines.train --config ...`.

Re-run a recorded run: `python -m pipelines.train --from-run <run id | runs:/<run id>> [--strict] [--set k=v]`
trains again with that run's resolved config (`--set` applies on top, e.g. paths that differ on this
machine), after saying how code, environment and data fingerprints differ from its record; a
different data fingerprint is a warning, or with --strict an error (exit 2). The run is looked up in
MLFLOW_TRACKING_URI, else in the default store ./runs/mlflow.db.
"""

from __future__ import annotations

import argparse
import sys

from ssd_ray.cli import EXIT_CONFIG_ERROR, add_config_args, exits_on_user_error, load_config_or_exit, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, required=False)
    p.add_argument("--from-run", metavar="RUN", help="re-run an MLflow run (id or runs:/<id>) with its recorded config")
    p.add_argument("--strict", action="store_true", help="with --from-run: a different data fingerprint is an error")
    p.add_argument("--num-workers", metavar="N|MIN-MAX",
                   help="Ray Train workers (overrides ray.num_workers): 8, or 4-8 for an elastic group")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL, autocast)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_NAME",
                   help="continue the latest run of this config, or the named run, from its last checkpoint")
    p.add_argument("--init-from", metavar="CKPT", help="start a new run from a checkpoint's weights")
    args = p.parse_args(argv)
    if bool(args.config) == bool(args.from_run):
        p.error("give either --config or --from-run")
    if args.from_run and (args.resume or args.init_from):
        p.error("--from-run starts a new run: it does not combine with --resume or --init-from")
    if args.strict and not args.from_run:
        p.error("--strict applies to --from-run")
    return args


@exits_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    overrides = list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"ray.num_workers={args.num_workers}")
    if args.use_gpu:
        overrides.append("ray.use_gpu=true")
    from_run = None
    if args.from_run:
        from ssd_ray.train.reproduce import FromRun

        try:
            from_run = FromRun.load(args.from_run, strict=args.strict)
            cfg = from_run.config_with(overrides)
        except ValueError as e:  # ConfigError included
            print(f"--from-run: {e}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG_ERROR) from None
    else:
        cfg = load_config_or_exit(args.config, overrides)

    from ssd_ray.train import format_summary, run_training
    from ssd_ray.train.reproduce import DataMismatchError

    try:
        summary = run_training(cfg, resume=args.resume, init_from=args.init_from, address=args.address,
                               from_run=from_run)
    except DataMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    print(format_summary(summary))
    if summary.final_map is not None:
        print(f"mAP@0.5 = {summary.final_map:.3f}")


if __name__ == "__main__":
    main()
