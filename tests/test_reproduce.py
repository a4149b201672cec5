"""The run record in MLflow and `FromRun`, on a local SQLite store without Ray or training."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from ssd_ray.config import ConfigError, config_from_dict, config_to_dict
from ssd_ray.data.fingerprint import fingerprint
from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.train import reproduce
from ssd_ray.train.tracking import RunLogger, start_run, tracking_uri


def _cfg(tmp_path) -> dict:
    return {"name": "rec", "data": {"root": str(tmp_path / "data"), "classes": ["a", "b"]},
            "priors": {"feature_maps": [2], "steps": [32], "min_sizes": [16], "max_sizes": [32],
                       "aspect_ratios": [[2]]},
            "model": {"backbone": "light", "min_dim": 64, "width": 8},
            "train": {"seed": 5, "max_iter": 10, "warmup_iters": 1},
            "ray": {"storage_path": str(tmp_path / "runs")}}


def _ds(shift: float = 0.0) -> DetectionDataset:
    recs = [ImageRecord(str(i), f"/d/{i}.jpg", 64, 48, [[0.1 + shift, 0.1, 0.5, 0.5]], [i % 2], [False])
            for i in range(4)]
    return DetectionDataset(["a", "b"], recs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); each test makes its own run."""
    return config_from_dict(_cfg(tmp_path_factory.mktemp("store")))


@pytest.fixture
def recorded(store, tmp_path):
    cfg = store
    resolved = config_to_dict(cfg)
    run_id = start_run(cfg, "rec-1", resolved)
    tracker = RunLogger(tracking_uri(cfg), run_id)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    tracker.artifact(tmp_path / "out" / "config.yaml")
    fps = {"train": fingerprint(_ds()), "val": fingerprint(_ds())}
    record = reproduce.record_start(tracker, cfg, resolved, fps, tmp_path / "out")
    return {"cfg": cfg, "tracker": tracker, "run_id": run_id, "fps": fps, "record": record, "tmp": tmp_path}


def test_record_start_tags_artifacts_inputs(recorded, tmp_path):
    client, run_id = recorded["tracker"].client, recorded["run_id"]
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["ssd_ray.data.train.fingerprint"] == recorded["fps"]["train"].digest
    assert json.loads(tags["ssd_ray.seeds"]) == {"train.seed": 5}
    assert tags["ssd_ray.code.source_digest"].startswith("sha256:") and "ssd_ray.env.torch" in tags
    arts = {a.path for a in client.list_artifacts(run_id, "provenance")}
    assert {"provenance/provenance.json", "provenance/packages.txt"} <= arts
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["data"]["val"]["images"] == 4
    assert sorted(i.tags[0].value for i in run.inputs.dataset_inputs) == ["training", "validation"]


def test_resumed_run_keeps_its_first_record(recorded, tmp_path, caplog):
    tracker, cfg = recorded["tracker"], recorded["cfg"]
    changed = {"train": fingerprint(_ds(shift=0.01)), "val": recorded["fps"]["val"]}
    with caplog.at_level(logging.WARNING):
        reproduce.record_start(tracker, cfg, config_to_dict(cfg), changed, tmp_path / "out", resumed=True)
    tags = tracker.client.get_run(recorded["run_id"]).data.tags
    assert tags["ssd_ray.data.train.fingerprint"] == recorded["fps"]["train"].digest  # the first attempt's
    assert "data: train fingerprint" in tags["ssd_ray.resume_differs"]
    assert "resuming a run recorded with different inputs" in caplog.text
    resumed = [a.path for a in tracker.client.list_artifacts(recorded["run_id"], "provenance") if a.is_dir]
    assert len(resumed) == 1 and resumed[0].startswith("provenance/resumed-")
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["data"]["train"]["digest"] == \
        recorded["fps"]["train"].digest


def test_from_run_loads_config_and_compares(recorded, monkeypatch, caplog):
    uri = tracking_uri(recorded["cfg"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    fr = reproduce.FromRun.load(f"runs:/{recorded['run_id']}/model")
    assert fr.config == config_to_dict(recorded["cfg"])
    cfg = fr.config_with(["train.max_iter=20"])
    assert cfg.train.max_iter == 20 and cfg.train.seed == 5
    with pytest.raises(ConfigError, match="train.max_iter"):
        fr.config_with(["train.max_iter=0"])
    with caplog.at_level(logging.INFO):
        assert fr.check(recorded["fps"]) == []  # same data, same code in this process
    changed = {"train": fingerprint(_ds(shift=0.01)), "val": recorded["fps"]["val"]}
    caplog.clear()
    differs = fr.check(changed)
    assert len(differs) == 1 and differs[0].startswith("data: train fingerprint")
    assert "differences from its record" in caplog.text
    strict = reproduce.FromRun.load(recorded["run_id"], strict=True)
    with pytest.raises(reproduce.DataMismatchError, match="--strict: the data differs"):
        strict.check(changed)


def test_from_run_errors_name_the_problem(recorded, tmp_path):
    uri = tracking_uri(recorded["cfg"])
    with pytest.raises(ValueError, match="not found in the MLflow store"):
        reproduce.FromRun.load("0" * 32, tracking_uri=uri)
    with pytest.raises(ValueError, match="no MLflow store at"):
        reproduce.FromRun.load("abc", tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()  # looking did not create a store
    bare = recorded["tracker"].client.create_run(
        recorded["tracker"].client.get_run(recorded["run_id"]).info.experiment_id).info.run_id
    with pytest.raises(ValueError, match="no config.yaml artifact"):
        reproduce.FromRun.load(bare, tracking_uri=uri)
    # A run logged before fingerprints existed: a warning, or under --strict an error.
    recorded["tracker"].client.log_artifact(bare, str(tmp_path / "out" / "config.yaml"))
    old = reproduce.FromRun.load(bare, tracking_uri=uri)
    assert old.check(recorded["fps"])[0] == "code: the recorded run has no code version"
    with pytest.raises(reproduce.DataMismatchError, match="no data fingerprint recorded"):
        reproduce.FromRun.load(bare, tracking_uri=uri, strict=True).check(recorded["fps"])


def test_cli_refuses_bad_combinations(capsys):
    from pipelines.train import parse_args

    for argv in (["--from-run", "x", "--config", "c.yaml"], [], ["--config", "c.yaml", "--strict"],
                 ["--from-run", "x", "--resume"]):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2
    assert parse_args(["--from-run", "runs:/x", "--strict", "--set", "a=1"]).strict


def test_from_run_missing_run_exits_2(tmp_path, monkeypatch, capsys):
    from pipelines.train import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'nothing.db'}")
    with pytest.raises(SystemExit) as e:
        main(["--from-run", "abc"])
    assert e.value.code == 2 and "no MLflow store at" in capsys.readouterr().err
