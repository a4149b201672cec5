"""The run's data stream across restarts (ssd_ray/train/stream.py): which checkpoint Ray restores, and
the loop's check that the stream and the restored weights agree."""

from __future__ import annotations

import json

import pytest

from ssd_ray.train.stream import SNAPSHOT_FILE, StreamPositionError, check_stream_start, registered_iteration


def _snapshot(run_dir, latest):
    (run_dir / SNAPSHOT_FILE).write_text(json.dumps({"ray_version": "2.60.0", "checkpoint_results": [],
                                                     "latest_checkpoint_result": latest}))


def test_registered_iteration_reads_rays_checkpoint_record(tmp_path):
    (tmp_path / "checkpoint_00000040").mkdir()  # uploaded, never registered: not what Ray restores
    (tmp_path / "checkpoint_00000040" / "checkpoint.pt").write_bytes(b"x")
    assert registered_iteration(tmp_path) is None  # no record yet: Ray restores nothing
    _snapshot(tmp_path, None)
    assert registered_iteration(tmp_path) is None
    _snapshot(tmp_path, {"checkpoint_dir_name": "checkpoint_00000020", "metrics": {"iteration": 20}})
    assert registered_iteration(tmp_path) == 20
    # Reported without our metrics: the folder name says the iteration.
    _snapshot(tmp_path, {"checkpoint_dir_name": "checkpoint_00000030", "metrics": {}})
    assert registered_iteration(tmp_path) == 30


def test_stream_start_must_match_the_restored_checkpoint():
    check_stream_start(0, 0, 0, batch_size=32)  # a fresh run
    check_stream_start(60, 60, 0, batch_size=32)  # a restart that moved forward
    with pytest.raises(StreamPositionError, match=r"starts at iteration 20 \(image 640\) but the restored weights "
                                                  r"are at iteration 0"):
        check_stream_start(20, 0, 0, batch_size=32)
    with pytest.raises(StreamPositionError, match="restored the checkpoint of iteration 10, but the driver started "
                                                  "this run at iteration 40"):
        check_stream_start(10, 10, 40, batch_size=32)


def test_local_mode_checkpoints_are_recorded_kept_and_pruned(tmp_path):
    from ssd_ray import checkpoint as ckpt_io
    from ssd_ray.train import local_checkpoints

    assert local_checkpoints.local_checkpoint_iteration(tmp_path) is None
    for it in (10, 20):
        local_checkpoints.persist(tmp_path, {"iteration": it}, it)
    assert registered_iteration(tmp_path) == 20  # no snapshot of Ray's: the loop's own record decides
    assert sorted(p.name for p in tmp_path.glob("checkpoint_0*")) == ["checkpoint_00000010", "checkpoint_00000020"]
    # A third: the oldest goes (two kept, as Ray Train keeps them) unless Ray's snapshot names it.
    _snapshot(tmp_path, {"checkpoint_dir_name": "checkpoint_00000010", "metrics": {"iteration": 10}})
    local_checkpoints.persist(tmp_path, {"iteration": 30}, 30, keep_also=10)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_0*")) == [
        "checkpoint_00000010", "checkpoint_00000020", "checkpoint_00000030"]
    local_checkpoints.persist(tmp_path, {"iteration": 40}, 40)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_0*")) == ["checkpoint_00000030", "checkpoint_00000040"]
    assert ckpt_io.load(tmp_path / "checkpoint_00000040")["iteration"] == 40
    # Ray's snapshot and the local record both exist (a run resumed in the other mode): the newer wins.
    assert registered_iteration(tmp_path) == 40
    _snapshot(tmp_path, {"checkpoint_dir_name": "checkpoint_00000050", "metrics": {"iteration": 50}})
    assert registered_iteration(tmp_path) == 50


def test_local_dashboard_is_off_only_in_local_mode_by_default():
    from types import SimpleNamespace

    from ssd_ray.runtime import local_dashboard

    def cfg(workers, dashboard=None):
        return SimpleNamespace(ray=SimpleNamespace(max_workers=workers, dashboard=dashboard))

    assert local_dashboard(None)  # evaluation, prediction and tests without a config: as before
    assert local_dashboard(cfg(2)) and local_dashboard(cfg(1))  # Train's placement-group cleaner needs it
    assert not local_dashboard(cfg(0))  # local mode: no controller, nothing asks its state API
    assert local_dashboard(cfg(0, dashboard=True)) and not local_dashboard(cfg(2, dashboard=False))
