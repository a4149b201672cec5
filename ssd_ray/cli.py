"""Command-line plumbing shared by the `pipelines/` entry points: config flags, exit codes, user errors.

Exit status 2 means "fix the input": a bad config, a data folder or file that does not fit, a file
that is not a checkpoint. Every entry point's `main` is wrapped in `exits_on_user_error`, which
prints such an error as one message (no traceback) and exits 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from .config import Config, ConfigError, load_config
from .errors import UserError

EXIT_CONFIG_ERROR = 2  # every error the user can fix (config, data, checkpoint, run choice)


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
    """Log lines for the console; and, for entry points, Ray's known-harmless messages kept off it
    (`ssd_ray.ray_console`: the driver's own stderr is filtered while Ray runs)."""
    from .ray_console import enable_driver_stderr_filter

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Only when an entry point is the program (`python -m pipelines.X`): a test or a notebook calling
    # its main keeps its own stderr.
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("pipelines."):
        enable_driver_stderr_filter()


def user_error_message(e: BaseException) -> str | None:
    """`"<label>: <message>"` for an error the user can fix, else None. Errors raised in a Ray task
    arrive wrapped (RayTaskError subclasses the original class); the original's message is used."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, (ConfigError, UserError)):
        e = cause
    if isinstance(e, ConfigError):
        return f"config error: {e}"
    if isinstance(e, UserError):
        return f"{e.label}: {e}"
    return None


def exits_on_user_error(main):
    """Decorator for an entry point's `main`: a `ConfigError` or `UserError` prints its message on
    stderr and exits with status 2, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (ConfigError, UserError) as e:
            print(user_error_message(e), file=sys.stderr)
            raise SystemExit(EXIT_CONFIG_ERROR) from None

    return wrapper
