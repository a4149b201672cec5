"""Who started a run, and where: `<run>/outputs/started_by.json`.

Several people may share one `runs/` folder (a team's storage path on a cluster). Plain `--resume`
takes the latest run of a config; when that run was started by someone else (another user, or the
same user on another host), continuing it would write into their run, so `find_run` stops and asks
for the run's name instead. The file is JSON:

    {"user": "alice", "host": "gpu-3", "started_at": "2026-12-01T23:48:54+00:00",
     "command": "python -m pipelines.train --config ...", "resumed": [{"user", "host", "at"}, ...]}
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import time
from pathlib import Path

OWNER_FILE = "started_by.json"


def current() -> dict[str, str]:
    """This process's user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers) and no USER/LOGNAME variable
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return {"user": user, "host": socket.gethostname()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read(run_dir: str | os.PathLike) -> dict | None:
    """The run's owner record, or None for runs made before it existed (or an unreadable file).
    `run_dir` may be a bucket URI (ssd_ray/storage.py)."""
    from .. import storage

    try:
        data = json.loads(storage.read_text(storage.join(os.fspath(run_dir), "outputs", OWNER_FILE)))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "user" in data and "host" in data else None


def record(out_dir: str | os.PathLike, resumed: bool) -> dict:
    """Write the owner record of a new run, or add this resume to an existing run's record."""
    path = Path(out_dir) / OWNER_FILE
    me = current()
    data = read(Path(out_dir).parent) if resumed else None
    if data is None:
        data = {**me, "started_at": _now(), "command": " ".join(sys.argv),
                "resumed": []}
        if resumed:  # a run from before owner records: say it was not recorded at its start
            data["note"] = "owner recorded at the first resume; the run was started earlier"
    if resumed:
        data.setdefault("resumed", []).append({**me, "at": _now()})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return data


def is_mine(owner: dict | None) -> bool:
    """True when `owner` is this user on this host (None: unknown, counted as not someone else's)."""
    if owner is None:
        return True
    me = current()
    return owner.get("user") == me["user"] and owner.get("host") == me["host"]


def describe(owner: dict | None) -> str:
    if owner is None:
        return "owner not recorded"
    at = f" at {owner['started_at']}" if owner.get("started_at") else ""
    return f"started by {owner['user']} on {owner['host']}{at}"
