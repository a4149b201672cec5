"""Training, resuming and evaluating with the data and the runs in a bucket (a local S3 server).

The pipelines run as a user runs them (`python -m pipelines.train ...`), in a subprocess whose
environment points the standard AWS variables at the test server: pyarrow's S3 client in the driver,
in Ray Train's workers and in the Ray Data actors talks to it over HTTP exactly as to AWS. Slow:
each run starts Ray.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_ray.data.shapes import write_shapes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle", "star", "cross", "ellipse"]


def tiny_config(path: Path, root: str, storage: str, tracking_uri: str, max_iter: int) -> Path:
    raw = {
        "name": "tinys3",
        "data": {"format": "voc", "root": root, "train_sets": ["2007/train"], "val_sets": ["2007/val"],
                 "classes": CLASSES, "max_boxes": 8, "augment": {"expand": False}},
        "model": {"backbone": "light", "min_dim": 64, "width": 8},
        "priors": {"feature_maps": [8, 4, 2, 1], "steps": [8, 16, 32, 64], "min_sizes": [8, 20, 36, 52],
                   "max_sizes": [20, 36, 52, 64], "aspect_ratios": [[2], [2], [2], [2]]},
        "train": {"batch_size": 4, "optimizer": "adamw", "lr_steps": [], "lr": 3e-3, "weight_decay": 0.0,
                  "warmup_iters": 1, "max_iter": max_iter, "checkpoint_every": 4, "eval_every": 4,
                  "log_every": 2, "seed": 1},
        "ray": {"num_workers": 1, "cpus_per_worker": 1, "torch_threads": 1, "data_cpus": 0.5,
                "data_concurrency": 1, "storage_path": storage, "max_failures": 0},
        "mlflow": {"tracking_uri": tracking_uri, "log_models": False},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def run(args: list[str], env: dict, cwd: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    """`python -m <args>` in its own process group; on a timeout the group is interrupted (the driver
    shuts its local Ray down), then killed, so no Ray process outlives the test."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(args[:1])} did not finish in {timeout} s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_train_resume_evaluate_with_data_and_runs_in_a_bucket(s3_server, tmp_path):
    local = tmp_path / "shapes"
    write_shapes(str(local), "voc", n_train=16, n_val=6, seed=3, size=96)
    s3_server.make_bucket("e2e-data")
    s3_server.make_bucket("e2e-runs")
    s3_server.upload_dir(local, "e2e-data", "shapes")
    data_keys = s3_server.keys("e2e-data")
    env = s3_server.env()
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"

    # 1. Train 4 iterations: data read from the bucket, checkpoints and outputs written to it.
    cfg = tiny_config(tmp_path / "c4.yaml", "s3://e2e-data/shapes", "s3://e2e-runs/runs", tracking, 4)
    p = run(["pipelines.train", "--config", str(cfg)], env, tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "data index built" in p.stderr
    run_name = re.search(r"run (tinys3-\d{8}-\d{6}):", p.stdout).group(1)
    keys = s3_server.keys("e2e-runs", "runs/")
    prefix = f"runs/{run_name}"
    assert f"{prefix}/checkpoint_00000004/checkpoint.pt" in keys
    for name in ("config.yaml", "started_by.json", "provenance.json", "model.pt", "curves.png", "best_model.pt"):
        assert f"{prefix}/outputs/{name}" in keys, name
    assert any(k.startswith("runs/index/voc-") and k.endswith(".parquet") for k in keys)
    assert s3_server.keys("e2e-data") == data_keys  # nothing written into data.root
    assert not (tmp_path / "s3:").exists()  # the URI never became a local folder

    # 2. --resume finds the run in the bucket and continues from its checkpoint to 8; the index is reused.
    cfg8 = tiny_config(tmp_path / "c8.yaml", "s3://e2e-data/shapes", "s3://e2e-runs/runs", tracking, 8)
    p = run(["pipelines.train", "--config", str(cfg8), "--resume"], env, tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "data index reused" in p.stderr and "data index built" not in p.stderr
    assert f"resuming {run_name} from iteration 4" in p.stderr
    assert f"run {run_name}: 8 iterations" in p.stdout
    keys = s3_server.keys("e2e-runs", "runs/")
    assert f"{prefix}/checkpoint_00000008/checkpoint.pt" in keys
    owner = yaml.safe_load(s3_server.client().get_object(
        Bucket="e2e-runs", Key=f"{prefix}/outputs/started_by.json")["Body"].read())
    assert len(owner["resumed"]) == 1  # the first attempt's record came back from the bucket, and grew

    # 3. Evaluate the model file in the bucket; the report goes beside it.
    p = run(["pipelines.evaluate", "--config", str(cfg8), "--checkpoint", f"s3://e2e-runs/{prefix}/outputs/model.pt",
             "--num-workers", "1"], env, tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "mAP" in p.stdout
    keys = s3_server.keys("e2e-runs", f"{prefix}/outputs/eval/")
    assert {f"{prefix}/outputs/eval/{n}" for n in ("metrics.json", "ap_table.txt", "detections.png")} <= set(keys)
