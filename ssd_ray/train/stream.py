"""A run's training stream, rebuilt at every worker-group start from the checkpoint Ray restores.

Ray Train V2 calls a dataset *factory* (`TrainerDatasets` may hold callables) each time it starts a
worker group: at the run's start, after a killed worker, after a node preemption and after an elastic
resize. `TrainStream` is that factory: it reads which checkpoint Ray Train will hand the workers
(`registered_iteration`) and builds the stream of sample positions from that iteration on, so a
restart continues the data exactly where the restored weights stopped instead of replaying the run
from its first position. Every row carries the stream's first iteration (`start_iter`), and the
loop checks it against the checkpoint it restored (`check_stream_start`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("ssd_ray.train")

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's checkpoint manager state, in the run folder


def registered_iteration(run_dir: str | Path) -> int | None:
    """Iteration of the checkpoint a run in `run_dir` continues from, or None when there is none.

    Ray's checkpoint manager writes its state (the latest *registered* checkpoint) to the run folder
    each time it registers one, and restores exactly that. A checkpoint folder uploaded by a worker
    that died before the controller registered its report is on disk but is never restored, so the
    folders themselves do not decide (tests/test_train_e2e.py kills a worker right after an upload).
    `run_dir` may be a bucket URI (ssd_ray/storage.py).

    A run (or part of one) trained in local mode has no snapshot of Ray's: there the loop's own record
    (ssd_ray/train/local_checkpoints.py, written after the checkpoint is complete) names the
    checkpoint, and when both exist (a run resumed in the other mode) the newer one is where the run
    continues.
    """
    from .local_checkpoints import local_checkpoint_iteration

    found = [it for it in (ray_registered_iteration(run_dir), local_checkpoint_iteration(run_dir)) if it is not None]
    return max(found) if found else None


def ray_registered_iteration(run_dir: str | Path) -> int | None:
    """Iteration of the checkpoint that Ray Train's checkpoint manager snapshot in `run_dir` names."""
    from .. import storage

    snap = storage.join(str(run_dir), SNAPSHOT_FILE)
    if not storage.is_file(snap):
        return None
    latest = (json.loads(storage.read_text(snap)) or {}).get("latest_checkpoint_result")
    if not latest:
        return None
    it = (latest.get("metrics") or {}).get("iteration")
    if it is not None:
        return int(it)
    from .local_checkpoints import CHECKPOINT_DIR_RE

    m = CHECKPOINT_DIR_RE.match(latest.get("checkpoint_dir_name", ""))
    return int(m.group(1)) if m else None


class TrainStream:
    """Callable dataset factory for `TorchTrainer(datasets={"train": TrainStream(...)})`.

    run_dir: the run's folder under `ray.storage_path`; expected_start: the iteration the driver
    starts (0, or the checkpoint `--resume` found). Picklable: it travels to Ray's controller.
    """

    def __init__(self, dataset, cfg, run_dir: str | Path, expected_start: int):
        self.dataset, self.cfg = dataset, cfg
        self.run_dir, self.expected_start = str(run_dir), int(expected_start)

    def start_iteration(self) -> int:
        found = registered_iteration(self.run_dir)
        return self.expected_start if found is None else max(found, self.expected_start)

    def __call__(self):
        from ..data.pipeline import build_train_dataset

        start = self.start_iteration()
        if start != self.expected_start:
            log.info("training stream restarts at iteration %d (image %d), where the restored checkpoint stopped",
                     start, start * self.cfg.train.batch_size)
        return build_train_dataset(self.dataset, self.cfg, start)


class StreamPositionError(RuntimeError):
    """The data stream and the restored weights disagree on where the run is."""


def check_stream_start(stream_start: int, restored: int, expected_start: int, batch_size: int) -> None:
    """The loop's check on its first batch: weights restored at iteration `restored` must be fed the
    stream that starts there. On the first attempt `restored` is what the driver expected; a restart
    may only have moved forward."""
    if restored < expected_start:
        raise StreamPositionError(
            f"Ray restored the checkpoint of iteration {restored}, but the driver started this run at "
            f"iteration {expected_start}: the run folder's checkpoints changed under the run")
    if stream_start != restored:
        raise StreamPositionError(
            f"the data stream starts at iteration {stream_start} (image {stream_start * batch_size}) but "
            f"the restored weights are at iteration {restored}: refusing to train on the wrong samples")
