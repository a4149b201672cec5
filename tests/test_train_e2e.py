"""End-to-end training through Ray Train on tiny shapes data (slow: each fit starts a worker group)."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from ssd_ray import checkpoint as ckpt_io
from ssd_ray.config import Config, config_from_dict
from ssd_ray.data.shapes import write_shapes
from ssd_ray.train.launch import latest_checkpoint, run_training
from ssd_ray.train.stream import registered_iteration

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    # The dashboard brings the state API, which Train V2 uses to clean up and the kill test to find workers.
    ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_shapes(str(root), "voc", n_train=16, n_val=6, seed=3, size=96)
    return str(root)


def tiny_config(root: str, storage: Path, **train) -> Config:
    raw = {
        "name": "tiny",
        "data": {"format": "voc", "root": root, "train_sets": ["2007/train"], "val_sets": ["2007/val"],
                 "classes": ["circle", "square", "triangle", "star", "cross", "ellipse"],
                 "max_boxes": 8, "augment": {"expand": False}},
        "model": {"backbone": "light", "min_dim": 64, "width": 8},
        "priors": {"feature_maps": [8, 4, 2, 1], "steps": [8, 16, 32, 64], "min_sizes": [8, 20, 36, 52],
                   "max_sizes": [20, 36, 52, 64], "aspect_ratios": [[2], [2], [2], [2]]},
        "train": {"batch_size": 4, "optimizer": "adamw", "schedule": "steps", "lr_steps": [], "lr": 3e-3,
                  "weight_decay": 0.0, "warmup_iters": 2, "max_iter": 8, "checkpoint_every": 4,
                  "eval_every": 4, "log_every": 2, "seed": 1, **train},
        "ray": {"num_workers": 1, "cpus_per_worker": 1, "torch_threads": 1, "data_cpus": 0.5,
                "storage_path": str(storage), "max_failures": 1},
    }
    return config_from_dict(raw)


def same_final_weights(run_a, run_b, updates: int) -> tuple[dict, dict]:
    """The latest checkpoints of two runs, after checking that their weights are bit-identical and
    their EMAs saw `updates` steps each."""
    a = ckpt_io.load(latest_checkpoint(run_a)[1])
    b = ckpt_io.load(latest_checkpoint(run_b)[1])
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["ema"]["updates"] == b["ema"]["updates"] == updates
    return a, b


def test_two_workers_checkpoint_mlflow_and_nan_skip(ray_local, shapes_root, tmp_path):
    from mlflow.tracking import MlflowClient

    from ssd_ray.train.tracking import tracking_uri

    cfg = tiny_config(shapes_root, tmp_path, max_iter=24, checkpoint_every=12, eval_every=12, log_every=4,
                      inject_nan_at=[5])
    cfg.ray.num_workers = 2
    cfg.ray.cpus_per_worker = 1
    summary = run_training(cfg)
    assert summary.iterations == 24
    assert summary.skipped_steps == 1  # the injected NaN step was skipped, counted, and training went on

    it, folder = latest_checkpoint(summary.run_dir)
    assert it == 24
    state = ckpt_io.load(folder)
    for key in ("model", "optimizer", "scheduler", "iteration", "rng", "config", "class_names",
                "normalization", "mlflow_run_id", "counters"):
        assert key in state, key
    assert state["scheduler"]["last_epoch"] == 24 and state["mlflow_run_id"] == summary.mlflow_run_id
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    client = MlflowClient(tracking_uri(cfg))
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.params["train.lr"] == "0.003" and run.info.status == "FINISHED"
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)]
    # Logged every 4 iterations; training lowers it. One window's loss on 16 augmented images moves by
    # ~0.2 from run to run (two ranks fed by one stream are not bit-reproducible), as much as 24
    # iterations lower it, so compare the mean of the last three windows with the first three
    # (measured 9.5 vs 10.0).
    assert len(losses) == 6 and sum(losses[3:]) < sum(losses[:3])
    assert client.get_metric_history(run.info.run_id, "skipped_steps")[-1].value == 1
    assert client.get_metric_history(run.info.run_id, "val_mAP")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "curves.png", "eval", "provenance"} <= artifacts
    # Final and best weights are MLflow models of the run (logged once, by the driver).
    models = {m.name: m for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
              if m.source_run_id == run.info.run_id}
    assert set(models) == {"model", "best_model"} and all(m.status == "READY" for m in models.values())
    # The model file loads with weights_only and rebuilds the network.
    loaded = ckpt_io.load_model(summary.model_file)
    assert loaded.priors.shape[0] == sum(f * f * 4 for f in (8, 4, 2, 1)) and loaded.class_names[0] == "circle"


def test_resume_is_bit_identical_on_one_worker(ray_local, shapes_root, tmp_path):
    # 16 images, batch 4: an epoch is 4 iterations; 4 + 4 iterations must equal 8 straight, the
    # weight average (EMA) and the lr schedule (a step at 6, after the resume) included.
    def cfg(folder, **train):
        return tiny_config(shapes_root, tmp_path / folder, preserve_order=True, ema_decay=0.9, lr_steps=[6],
                           gamma=0.1, **train)

    straight = run_training(cfg("a"))
    first = run_training(cfg("b", max_iter=4))
    resumed = run_training(cfg("b"), resume=True)  # by config name: the latest run of config "tiny" there
    assert resumed.run_name == first.run_name and resumed.iterations == 8
    a, b = same_final_weights(straight.run_dir, resumed.run_dir, updates=8)
    for k, v in a["ema"]["model"].items():
        assert torch.equal(v, b["ema"]["model"][k]), k
    # The exported model file holds the average, not the last raw weights.
    exported = ckpt_io.load(resumed.model_file)["model"]
    key = next(k for k, v in b["model"].items() if v.is_floating_point() and not torch.equal(v, b["ema"]["model"][k]))
    assert torch.equal(exported[key], b["ema"]["model"][key])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8
    assert b["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)  # stepped at 6, after the resume
    assert b["mlflow_run_id"] == first.mlflow_run_id  # the resumed run re-attached to its MLflow run


def test_local_mode_persists_its_checkpoints_and_resumes_in_either_mode(ray_local, shapes_root, tmp_path):
    # ray.num_workers 0: the loop runs in this process (Ray Train's local mode), where Ray keeps no
    # checkpoint; the loop writes them to the run folder itself and a resume continues from there.
    def cfg(folder, workers, **train):
        c = tiny_config(shapes_root, tmp_path / folder, preserve_order=True, ema_decay=0.9, lr_steps=[6],
                        gamma=0.1, checkpoint_every=2, **train)
        c.ray.num_workers = workers
        return c

    threads = torch.get_num_threads()
    local = run_training(cfg("local", 0))
    assert torch.get_num_threads() == threads  # the loop's torch_threads do not outlive the run here
    assert local.iterations == 8 and local.model_file and local.final_map is not None
    # Checkpoints every 2 iterations; the newest two are kept, as Ray Train keeps them in worker mode.
    run = Path(local.run_dir)
    assert sorted(p.name for p in run.glob("checkpoint_*")) == ["checkpoint_00000006", "checkpoint_00000008"]
    assert registered_iteration(run) == 8

    # Half in local mode, then --resume with a Ray Train worker: the same weights as 8 straight.
    first = run_training(cfg("mixed", 0, max_iter=4))
    assert registered_iteration(first.run_dir) == 4
    resumed = run_training(cfg("mixed", 1), resume=True)
    assert resumed.run_name == first.run_name and resumed.iterations == 8
    _, b = same_final_weights(local.run_dir, resumed.run_dir, updates=8)
    assert b["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)  # stepped at 6, after the resume
    assert b["counters"]["attempts"] == [[0, 1, 0], [4, 1, 4]]  # [restored iteration, world, stream start]


def test_killed_worker_restarts_from_checkpoint(ray_local, shapes_root, tmp_path):
    import ray
    from ray.util.state import list_actors

    cfg = tiny_config(shapes_root, tmp_path, max_iter=400, checkpoint_every=20, eval_every=400, log_every=50)
    killed = {}

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline:
            # A checkpoint Ray has registered (an uploaded folder whose report was not processed yet
            # is not what a restart restores).
            runs = [p for p in tmp_path.glob("tiny-*") if registered_iteration(p) is not None]
            if runs:
                break
            time.sleep(0.2)
        # This test's own cluster, by its dashboard: other Ray instances on the machine must not confuse it.
        dashboard = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]
        for a in list_actors(address=dashboard,
                             filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
            os.kill(a.pid, signal.SIGKILL)
            killed["at"] = registered_iteration(runs[0])
            return

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run_training(cfg)
    t.join(timeout=5)
    assert "at" in killed and killed["at"] < 400, "the worker was not killed mid-run"
    assert summary.iterations == 400
    it, folder = latest_checkpoint(summary.run_dir)
    assert it == 400
    # The restart began at the restored checkpoint's iteration, and so did its data stream (each
    # attempt: [restored iteration, workers, stream start]); the run's first attempt started at 0.
    attempts = ckpt_io.load(folder)["counters"]["attempts"]
    assert attempts[0] == [0, 1, 0] and len(attempts) >= 2
    restored, workers, stream_start = attempts[1]
    assert restored >= killed["at"] and restored % 20 == 0 and stream_start == restored and workers == 1
