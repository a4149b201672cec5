"""The pyfunc MLflow model around Predictor: same detections, inputs it takes, what it holds, registry.

Uses the random-weight model file of test_predict.py (no training); the end-to-end path (a trained
run, a fresh process without the run folder) is in test_reproduce_e2e.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_predict import save_tiny_checkpoint  # noqa: E402  (tests/ is on sys.path under pytest)

from ssd_ray.mlflow_model import OUTPUT_COLUMNS, images_from_input, log_pyfunc_model  # noqa: E402
from ssd_ray.predict import Predictor  # noqa: E402

THRESH = 0.1  # the random model's class scores sit near 1/8: a threshold that keeps some


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("pyfunc", artifact_location=(root / "artifacts").as_uri())
    model_file = save_tiny_checkpoint(root / "model.pt")
    images = []
    for i, (h, w) in enumerate([(120, 160), (200, 90)]):
        path = root / f"img{i}.png"
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append(str(path))
    run = client.create_run(exp)
    info = log_pyfunc_model(model_file, run_id=run.info.run_id, tracking_uri=uri, name="model",
                            example_image=images[0], registered_model_name="tiny-ssd", step=7)
    return {"uri": uri, "client": client, "run_id": run.info.run_id, "model_file": model_file,
            "images": images, "info": info, "experiment": exp, "root": root}


@pytest.fixture(scope="module")
def loaded(store):
    import mlflow

    mlflow.set_tracking_uri(store["uri"])
    try:
        return mlflow.pyfunc.load_model(f"runs:/{store['run_id']}/model")
    finally:
        mlflow.set_tracking_uri(None)


def _as_frame(dets: list[dict]) -> pd.DataFrame:
    rows = [(i, *box, s, n) for i, d in enumerate(dets) for box, s, n in zip(d["boxes"], d["scores"], d["names"])]
    return pd.DataFrame(rows, columns=["image_index", "xmin", "ymin", "xmax", "ymax", "score", "label"])


def assert_same_detections(df: pd.DataFrame, dets: list[dict]) -> None:
    expected = _as_frame(dets)
    assert len(df) == len(expected) > 0
    np.testing.assert_array_equal(df["image_index"].to_numpy(), expected["image_index"].to_numpy())
    np.testing.assert_allclose(df[["xmin", "ymin", "xmax", "ymax", "score"]].to_numpy(dtype=np.float64),
                               expected[["xmin", "ymin", "xmax", "ymax", "score"]].to_numpy(dtype=np.float64),
                               rtol=0, atol=1e-5)
    assert df["label"].tolist() == expected["label"].tolist()


def test_paths_and_base64_give_predictor_detections(store, loaded):
    paths = store["images"]
    b64 = base64.b64encode(Path(paths[1]).read_bytes()).decode()
    df = loaded.predict(pd.DataFrame({"image": [paths[0], b64]}), params={"score_thresh": THRESH})
    assert list(df.columns) == list(OUTPUT_COLUMNS)
    expected = Predictor.from_checkpoint(store["model_file"], score_thresh=THRESH)(paths)
    assert_same_detections(df, expected)
    assert set(df["image_index"]) == {0, 1}
    # class_id is the 0-based index of the label name; boxes lie inside each original image.
    names = Predictor.from_checkpoint(store["model_file"]).class_names
    assert [names[c] for c in df["class_id"]] == df["label"].tolist()
    sizes = {0: (160, 120), 1: (90, 200)}
    for _, r in df.iterrows():
        w, h = sizes[r["image_index"]]
        assert 0 <= r["xmin"] <= r["xmax"] <= w and 0 <= r["ymin"] <= r["ymax"] <= h


def test_default_threshold_is_predictors(store, loaded):
    # No params: the signature's default 0.5, Predictor's default too.
    df = loaded.predict(pd.DataFrame({"image": store["images"]}))
    expected = Predictor.from_checkpoint(store["model_file"])(store["images"])
    assert len(df) == sum(len(d["scores"]) for d in expected)
    assert (df["score"] > 0.5).all()


def test_arrays_through_the_python_model(store, loaded):
    arrays = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in store["images"]]
    df = loaded.unwrap_python_model().predict_images(arrays, score_thresh=THRESH)
    assert_same_detections(df, Predictor.from_checkpoint(store["model_file"], score_thresh=THRESH)(arrays))
    empty = loaded.unwrap_python_model().predict_images([])
    assert list(empty.columns) == list(OUTPUT_COLUMNS) and len(empty) == 0


def test_bad_rows_are_named(store, loaded, tmp_path):
    with pytest.raises(ValueError, match=r"image row 1: 'missing\.jpg' is neither an existing image file"):
        loaded.predict(pd.DataFrame({"image": [store["images"][0], "missing.jpg"]}))
    not_an_image = base64.b64encode(b"hello world!").decode()
    with pytest.raises(ValueError, match="image row 0: cannot decode image"):
        loaded.predict(pd.DataFrame({"image": [not_an_image]}))
    with pytest.raises(ValueError, match="expected a uint8"):
        images_from_input([np.zeros((4, 4), np.uint8)])


def test_model_holds_file_signature_example_and_pinned_requirements(store, tmp_path):
    import mlflow
    import yaml

    mlflow.set_tracking_uri(store["uri"])
    try:
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{store['run_id']}/model", dst_path=str(tmp_path)))
    finally:
        mlflow.set_tracking_uri(None)
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["signature"]["inputs"] == json.dumps([{"type": "string", "name": "image", "required": True}])
    assert json.loads(mlmodel["signature"]["params"]) == [
        {"name": "score_thresh", "default": 0.5, "shape": None, "type": "double"}]
    assert "python_function" in mlmodel["flavors"]
    # The ssd-ray model file itself, byte for byte: everything loading needs is inside the MLflow model.
    inside = list(local.glob("artifacts/*.pt"))
    assert len(inside) == 1 and inside[0].read_bytes() == Path(store["model_file"]).read_bytes()
    state = torch.load(inside[0], weights_only=True)
    assert state["class_names"][0] == "circle"
    reqs = (local / "requirements.txt").read_text().splitlines()
    import importlib.metadata as md

    for dist in ("ssd-ray", "torch", "torchvision", "mlflow"):
        assert f"{dist}=={md.version(dist)}" in reqs, (dist, reqs)
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == ["image"] and len(example["data"]) == 1
    assert not list(local.rglob("*.pkl"))  # models from code: nothing pickled


def test_registry_versions_and_run_link(store, loaded):
    import mlflow

    client = store["client"]
    assert store["info"].registered_model_version == 1
    run2 = client.create_run(store["experiment"])
    info = log_pyfunc_model(store["model_file"], run_id=run2.info.run_id, tracking_uri=store["uri"], name="model",
                            registered_model_name="tiny-ssd")
    assert info.registered_model_version == 2
    versions = sorted((v.version, v.run_id) for v in client.search_model_versions("name = 'tiny-ssd'"))
    assert versions == [(1, store["run_id"]), (2, run2.info.run_id)]
    # The logged model lives in the run's experiment and is linked to the run (step = iteration).
    run = client.get_run(store["run_id"])
    assert [o.step for o in run.outputs.model_outputs] == [7]
    mlflow.set_tracking_uri(store["uri"])
    try:
        by_registry = mlflow.pyfunc.load_model("models:/tiny-ssd/2")
    finally:
        mlflow.set_tracking_uri(None)
    frame = pd.DataFrame({"image": store["images"]})
    pd.testing.assert_frame_equal(by_registry.predict(frame, params={"score_thresh": THRESH}),
                                  loaded.predict(frame, params={"score_thresh": THRESH}))


@pytest.mark.slow
def test_mlflow_models_predict_cli_offline(store, tmp_path):
    """`mlflow models predict -m runs:/<id>/model --env-manager local` on a small JSON input file."""
    request = {"dataframe_split": {"columns": ["image"], "data": [[p] for p in store["images"]]},
               "params": {"score_thresh": THRESH}}
    (tmp_path / "input.json").write_text(json.dumps(request))
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "HF_HUB_OFFLINE": "1", "NO_PROXY": "*",
           "PIP_NO_INDEX": "1"}
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.run([mlflow_bin, "models", "predict", "-m", f"runs:/{store['run_id']}/model",
                           "-i", str(tmp_path / "input.json"), "-t", "json", "--env-manager", "local",
                           "-o", str(tmp_path / "out.json")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pd.DataFrame(json.loads((tmp_path / "out.json").read_text())["predictions"])
    assert_same_detections(out, Predictor.from_checkpoint(store["model_file"], score_thresh=THRESH)(store["images"]))
