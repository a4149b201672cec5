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
