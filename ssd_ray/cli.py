"""Command-line plumbing shared by the `pipelines/` entry points: config flags and exit codes."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import Config, ConfigError, load_config

EXIT_CONFIG_ERROR = 2


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")


def load_config_or_exit(path: str, overrides: list[str]) -> Config:
    """Validate the config before any work starts; on error print it and exit with status 2."""
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
