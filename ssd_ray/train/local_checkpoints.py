"""Checkpoints that the training loop persists itself: Ray Train's local mode (`ray.num_workers: 0`).

In local mode the loop runs in the driver process and `ray.train.report(checkpoint=...)` keeps the
checkpoint only in memory, for the `Result`: nothing reaches the run folder, so a crash would lose
the run. There the loop writes `<run_dir>/checkpoint_<iteration:08d>/checkpoint.pt` itself (the same
layout as Ray Train's, so `--resume`, `predict` and `evaluate` read both alike), then records it in
`local_checkpoint.json` (one atomic write, after the checkpoint is complete: a crash mid-write leaves
the previous record), and keeps the newest `KEEP_CHECKPOINTS` as Ray's `CheckpointConfig` does.
`stream.registered_iteration` reads this record beside Ray's checkpoint-manager snapshot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import checkpoint as ckpt_io
from .. import storage

RECORD_FILE = "local_checkpoint.json"
KEEP_CHECKPOINTS = 2  # the newest checkpoints a run keeps, in either mode (launch.py's CheckpointConfig too)
# A run's checkpoint folders, in either mode: `checkpoint_<iteration:08d>` (launch.py, stream.py, loop.py).
CHECKPOINT_DIR_RE = re.compile(r"^checkpoint_(\d{8})$")


def checkpoint_dir_name(iteration: int) -> str:
    return f"checkpoint_{iteration:08d}"


def checkpoint_dir(run_dir: str | Path, iteration: int) -> str:
    return storage.join(str(run_dir), checkpoint_dir_name(iteration))


def local_checkpoint_iteration(run_dir: str | Path) -> int | None:
    """Iteration of the newest checkpoint the loop persisted itself, or None."""
    record = storage.join(str(run_dir), RECORD_FILE)
    if not storage.is_file(record):
        return None
    return int(json.loads(storage.read_text(record))["iteration"])


def persist(run_dir: str | Path, state: dict, iteration: int, keep_also: int | None = None) -> str:
    """Write `state` as the run's checkpoint of `iteration`, record it, and delete older checkpoints
    beyond the newest `KEEP_CHECKPOINTS` (never `keep_also`: the one Ray's snapshot names, which a
    resume in Ray mode restores). Returns the checkpoint folder."""
    folder = checkpoint_dir(run_dir, iteration)
    storage.makedirs(folder)
    ckpt_io.save(state, storage.join(folder, ckpt_io.CHECKPOINT_FILE))
    storage.write_text(storage.join(str(run_dir), RECORD_FILE), json.dumps({"iteration": int(iteration)}))
    older = sorted(int(m.group(1)) for e in storage.list_dir(str(run_dir))
                   if e.is_dir and (m := CHECKPOINT_DIR_RE.match(e.name)) and int(m.group(1)) < iteration)
    older = [it for it in older if it != keep_also]
    for it in older[:max(0, len(older) - (KEEP_CHECKPOINTS - 1))]:
        storage.remove_dir(checkpoint_dir(run_dir, it))
    return folder
