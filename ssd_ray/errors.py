"""Errors a user can fix: a folder, a file or a config value that does not fit what ssd-ray was asked to do.

Every `pipelines/*` entry point turns these into one message on stderr and exit status 2, with no
traceback (`ssd_ray.cli.exits_on_user_error`); library callers catch them like any exception. The
message always names the file or folder and the way out.
"""

from __future__ import annotations

__all__ = ["UserError", "DataError", "CheckpointError", "CheckpointNotFoundError", "RunSelectionError"]


class UserError(Exception):
    """Base class: the message is complete and meant for the user as it is."""

    label = "error"  # how the CLI prefixes the message


class DataError(UserError, ValueError):
    """The data on disk and the config disagree (unknown classes, too many bad records, a data.root
    that holds someone's files where generated data was asked for)."""

    label = "data error"


class CheckpointError(UserError, ValueError):
    """A file given as a checkpoint or model file is not one ssd-ray can load."""

    label = "checkpoint error"


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """The checkpoint or model file (or folder) does not exist."""

    label = "checkpoint error"


class RunSelectionError(UserError, FileNotFoundError):
    """`--resume` cannot tell which run to continue (none, or the latest belongs to someone else)."""

    label = "resume error"
