"""Hyperparameter sweep: `python -m pipelines.tune --config configs/tune_shapes.yaml [--set k=v ...]`.

Each trial is a full Ray Train run of the sweep's base config; ASHA stops weak trials early. `--set`
keys under a training-config section (train., loss., ray., ...) override the base config, the others
(num_samples, asha.grace_period, ...) the sweep YAML. `--resume` restores the newest sweep of this
name after the driver died (or `--resume NAME` a given one) and finishes its unfinished trials.
"""

from __future__ import annotations

import argparse
import sys

from ssd_ray.cli import EXIT_CONFIG_ERROR, add_config_args, exits_on_user_error, setup_logging
from ssd_ray.config import ConfigError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="SWEEP",
                   help="restore the newest sweep of this name (or the named folder under <storage>/tune)")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    from ssd_ray.tune import load_sweep

    try:
        loaded = load_sweep(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None

    from ssd_ray.tune.sweep import format_sweep, run_sweep

    try:
        summary = run_sweep(loaded, address=args.address, resume=args.resume)
    except ConfigError as e:  # a sweep the cluster cannot hold
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except FileNotFoundError as e:  # --resume with nothing to restore
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(format_sweep(summary))


if __name__ == "__main__":
    main()
