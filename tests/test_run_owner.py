"""Plain `--resume` on a shared storage path: it says which run it took, and refuses someone else's."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ssd_ray.errors import RunSelectionError
from ssd_ray.train import owner
from ssd_ray.train.launch import find_run


def _run(storage: Path, name: str, who: dict | None) -> Path:
    run = storage / name
    (run / "checkpoint_00000010").mkdir(parents=True)
    (run / "checkpoint_00000010" / "checkpoint.pt").write_bytes(b"")
    (run / "outputs").mkdir()
    if who is not None:
        (run / "outputs" / owner.OWNER_FILE).write_text(json.dumps({**who, "started_at": "2026-12-01T10:00:00"}))
    return run


def test_record_and_resume_entries(tmp_path):
    out = tmp_path / "r" / "outputs"
    out.mkdir(parents=True)
    first = owner.record(out, resumed=False)
    assert {k: first[k] for k in ("user", "host")} == owner.current() and first["resumed"] == []
    again = owner.record(out, resumed=True)
    assert again["started_at"] == first["started_at"] and len(again["resumed"]) == 1
    assert owner.read(tmp_path / "r") == again
    assert owner.is_mine(again)


def test_plain_resume_takes_my_latest_and_says_so(tmp_path, caplog):
    me = owner.current()
    _run(tmp_path, "cfg-20261201-100000", me)
    _run(tmp_path, "cfg-20261201-110000", me)
    _run(tmp_path, "cfg-extra-20261201-120000", {"user": "bob", "host": "x"})  # another config's run
    (tmp_path / "cfg-20261201-130000").mkdir()  # no checkpoint: not resumable
    with caplog.at_level(logging.INFO, logger="ssd_ray.train"):
        assert find_run(str(tmp_path), "cfg") == "cfg-20261201-110000"
    assert "continuing cfg-20261201-110000" in caplog.text and f"started by {me['user']} on {me['host']}" in caplog.text


def test_plain_resume_refuses_someone_elses_latest_run(tmp_path):
    me = owner.current()
    _run(tmp_path, "cfg-20261201-100000", me)
    _run(tmp_path, "cfg-20261201-110000", {"user": "bob", "host": "gpu-7"})
    with pytest.raises(RunSelectionError) as e:
        find_run(str(tmp_path), "cfg")
    msg = str(e.value)
    assert "cfg-20261201-110000" in msg and "started by bob on gpu-7" in msg
    assert "--resume RUN_NAME" in msg and "yours, newest first: cfg-20261201-100000" in msg
    # Naming the run is always allowed.
    assert find_run(str(tmp_path), "cfg", "cfg-20261201-110000") == "cfg-20261201-110000"
    # Same user on another host is someone else too (another machine's run of a shared folder).
    _run(tmp_path, "cfg-20261201-120000", {"user": me["user"], "host": me["host"] + "-other"})
    with pytest.raises(RunSelectionError, match="cfg-20261201-120000"):
        find_run(str(tmp_path), "cfg")


def test_no_run(tmp_path):
    with pytest.raises(RunSelectionError, match="no run of config 'cfg' with a checkpoint"):
        find_run(str(tmp_path), "cfg")
    with pytest.raises(RunSelectionError, match="no run named 'x'"):
        find_run(str(tmp_path), "cfg", "x")
