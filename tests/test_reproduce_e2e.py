"""A short CPU run's reproducibility record and MLflow models, end to end (slow: Ray Train runs).

- the run's tags/artifacts/dataset inputs hold code version, data fingerprints, environment, cluster;
- in a new process, without the run folder, `mlflow.pyfunc.load_model("runs:/<id>/model")` predicts
  what `Predictor` predicts from the same model file;
- `pipelines.train --from-run` re-runs the recorded config, refuses a changed dataset under --strict
  and warns about it otherwise; the best model is registered as version 1, then 2;
- the same against an MLflow tracking server.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_train_e2e import tiny_config  # noqa: E402  (tests/ is on sys.path under pytest)

from ssd_ray import provenance  # noqa: E402
from ssd_ray.data.fingerprint import fingerprint  # noqa: E402
from ssd_ray.data.shapes import write_shapes  # noqa: E402
from ssd_ray.data.sources import load_split  # noqa: E402
from ssd_ray.predict import Predictor  # noqa: E402
from ssd_ray.train.launch import run_training  # noqa: E402
from ssd_ray.train.tracking import tracking_uri  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
REGISTERED = "tiny-ssd"


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


def _config(root: Path, storage: Path, **mlflow):
    cfg = tiny_config(str(root), storage, max_iter=4, checkpoint_every=4, eval_every=4, log_every=2)
    cfg.postprocess.conf_thresh = 0.0  # 4 iterations leave foreground scores tiny: keep every candidate
    for k, v in mlflow.items():
        setattr(cfg.mlflow, k, v)
    return cfg


@pytest.fixture(scope="module")
def first_run(ray_local, tmp_path_factory):
    root = Path(write_shapes(str(tmp_path_factory.mktemp("data")), "voc", n_train=16, n_val=6, seed=3, size=96))
    cfg = _config(root, tmp_path_factory.mktemp("runs"), registered_model_name=REGISTERED)
    summary = run_training(cfg)
    return {"cfg": cfg, "summary": summary, "root": root, "uri": tracking_uri(cfg)}


def _run_tags(uri: str, run_id: str) -> dict:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id).data.tags


def test_run_records_code_data_environment_cluster(first_run, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg, summary, uri = first_run["cfg"], first_run["summary"], first_run["uri"]
    client = MlflowClient(uri)
    run = client.get_run(summary.mlflow_run_id)
    tags = run.data.tags
    # Code: the package version and sources digest always; the commit and dirty flag from a checkout.
    # (Sources and dirty state are compared with the record, not recomputed: a shared checkout may
    # change while the run trains; test_provenance checks how they are computed.)
    assert tags["ssd_ray.code.version"] == provenance.package_version()
    record = json.loads((Path(summary.run_dir) / "outputs" / "provenance.json").read_text())
    assert tags["ssd_ray.code.source_digest"] == record["code"]["source_digest"]
    cv = provenance.code_version()
    if cv.git_commit:
        assert tags["ssd_ray.code.git_commit"] == tags["mlflow.source.git.commit"] == cv.git_commit
        assert tags["ssd_ray.code.git_dirty"] == str(record["code"]["git_dirty"]).lower()
    # Data: the fingerprints of the records the run read, per split.
    for split in ("train", "val"):
        fp = fingerprint(load_split(cfg.data, split))
        assert tags[f"ssd_ray.data.{split}.fingerprint"] == fp.digest
        assert tags[f"ssd_ray.data.{split}.images"] == str(fp.images)
    assert json.loads(tags["ssd_ray.data.train.classes"])[0] == "circle"
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"}
    assert inputs["training"].digest == tags["ssd_ray.data.train.fingerprint"].split(":")[1][:32]
    # Environment, cluster, seeds.
    assert tags["ssd_ray.env.torch"] == torch.__version__ and tags["ssd_ray.env.python"] == sys.version.split()[0]
    assert tags["ssd_ray.cluster.nodes"] == "1" and tags["ssd_ray.cluster.workers"] == "1"
    assert float(tags["ssd_ray.cluster.cluster_cpus"]) == 4.0 and tags["ssd_ray.cluster.gpus_per_worker"] == "0"
    assert json.loads(tags["ssd_ray.seeds"]) == {"train.seed": 1}
    # Artifacts: the package list, the record, and the patch when the checkout is dirty.
    local = Path(client.download_artifacts(run.info.run_id, "provenance", str(tmp_path)))
    assert f"torch=={importlib.metadata.version('torch')}" in (local / "packages.txt").read_text().splitlines()
    assert json.loads((local / "provenance.json").read_text())["data"]["train"]["digest"] == \
        tags["ssd_ray.data.train.fingerprint"]
    assert (local / "code.diff").is_file() == bool(record["code"]["git_dirty"])
    # Final and best models, the best registered.
    models = {m.name: m for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
              if m.source_run_id == run.info.run_id}
    assert set(models) == {"model", "best_model"}
    [version] = client.search_model_versions(f"name = '{REGISTERED}' and run_id = '{run.info.run_id}'")
    assert int(version.version) == 1 and version.source == f"models:/{models['best_model'].model_id}"
    assert tags["ssd_ray.registered_model"] == f"models:/{REGISTERED}/1"


_LOAD_AND_PREDICT = """
import json, sys
import mlflow, pandas as pd
run_id, images, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
result = {}
for name in ("model", "best_model"):
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{name}")
    result[name] = model.predict(pd.DataFrame({"image": images}), params={"score_thresh": 0.0}).to_dict("list")
json.dump(result, open(out, "w"))
"""


def _same(df: pd.DataFrame, dets: list[dict]) -> None:
    rows = [(i, *b, s, n) for i, d in enumerate(dets) for b, s, n in zip(d["boxes"], d["scores"], d["names"])]
    assert len(df) == len(rows) > 0
    for r, (i, x1, y1, x2, y2, s, n) in zip(df.itertuples(), rows):
        assert (r.image_index, r.label) == (i, n)
        assert max(abs(r.xmin - x1), abs(r.ymin - y1), abs(r.xmax - x2), abs(r.ymax - y2), abs(r.score - s)) < 1e-4


def test_models_load_in_a_fresh_process_without_the_run_folder(first_run, tmp_path):
    summary, uri = first_run["summary"], first_run["uri"]
    images = [r.path for r in load_split(first_run["cfg"].data, "val").records[:3]]
    moved = tmp_path / "moved"
    shutil.move(summary.run_dir, moved)  # the run folder is gone while the MLflow model loads
    try:
        out = tmp_path / "out.json"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        proc = subprocess.run([sys.executable, "-c", _LOAD_AND_PREDICT, summary.mlflow_run_id, json.dumps(images),
                               str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(out.read_text())
        for name, file in (("model", "model.pt"), ("best_model", "best_model.pt")):
            expected = Predictor.from_checkpoint(moved / "outputs" / file, score_thresh=0.0)(images)
            _same(pd.DataFrame(got[name]), expected)
    finally:
        shutil.move(moved, summary.run_dir)


def test_from_run_reproduces_the_config_and_checks_the_data(first_run, monkeypatch, caplog, capsys):
    from mlflow.tracking import MlflowClient

    from pipelines.train import main as train_main

    summary, uri = first_run["summary"], first_run["uri"]
    client = MlflowClient(uri)
    first = client.get_run(summary.mlflow_run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # One coordinate of one training annotation changes.
    train_ids = (first_run["root"] / "VOC2007" / "ImageSets" / "Main" / "train.txt").read_text().split()
    xml = first_run["root"] / "VOC2007" / "Annotations" / f"{train_ids[0]}.xml"
    text = xml.read_text()
    a, b = text.index("<xmin>") + 6, text.index("</xmin>")
    xml.write_text(text[:a] + str(int(text[a:b]) + 1) + text[b:])
    runs_before = len(client.search_runs([first.info.experiment_id]))

    with pytest.raises(SystemExit) as e:
        train_main(["--from-run", summary.mlflow_run_id, "--strict"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--strict" in err and f"train fingerprint {first.data.tags['ssd_ray.data.train.fingerprint']}" in err
    assert len(client.search_runs([first.info.experiment_id])) == runs_before  # refused before any run

    caplog.clear()
    train_main(["--from-run", f"runs:/{summary.mlflow_run_id}/model"])
    assert any("data: train fingerprint" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    [second] = client.search_runs([first.info.experiment_id],
                                  f"tags.ssd_ray.from_run = '{summary.mlflow_run_id}'")
    assert second.info.status == "FINISHED"
    assert second.data.params == first.data.params  # the recorded config, exactly
    t1, t2 = first.data.tags, second.data.tags
    assert t2["ssd_ray.data.train.fingerprint"] != t1["ssd_ray.data.train.fingerprint"]
    assert t2["ssd_ray.data.val.fingerprint"] == t1["ssd_ray.data.val.fingerprint"]
    versions = sorted((int(v.version), v.run_id) for v in client.search_model_versions(f"name = '{REGISTERED}'"))
    assert versions == [(1, first.info.run_id), (2, second.info.run_id)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    port = _free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_tracking_server(ray_local, tracking_server, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    root = Path(write_shapes(str(tmp_path / "data"), "voc", n_train=16, n_val=6, seed=3, size=96))
    cfg = _config(root, tmp_path / "runs", tracking_uri=tracking_server, registered_model_name="served-ssd")
    summary = run_training(cfg)
    client = MlflowClient(tracking_server)
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.tags["ssd_ray.data.train.fingerprint"].startswith("sha256:")
    assert "provenance" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert [int(v.version) for v in client.search_model_versions("name = 'served-ssd'")] == [1]
    images = [r.path for r in load_split(cfg.data, "val").records[:2]]
    moved = tmp_path / "moved"
    shutil.move(summary.run_dir, moved)
    mlflow.set_tracking_uri(tracking_server)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{summary.mlflow_run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    df = model.predict(pd.DataFrame({"image": images}), params={"score_thresh": 0.0})
    _same(df, Predictor.from_checkpoint(moved / "outputs" / "model.pt", score_thresh=0.0)(images))
