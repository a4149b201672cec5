"""Spot and elastic training on a simulated multi-node cluster (slow): a train node is drained for
preemption mid-run, the loop answers with a just-in-time checkpoint, the node goes, the run carries
on with one worker from exactly that iteration (stream and weights agreeing), and grows back to two
workers when a train node returns. Everything asserted is read from the run's own checkpoints.
"""

from __future__ import annotations

import threading
import time

import pytest

from test_cluster import _free_port, _wait_for, ray_tmp  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def elastic_cluster(ray_tmp, monkeypatch):  # noqa: F811
    """Head (0 CPUs, dashboard), a data node and two train nodes with one CPU and one `train_slot` each.

    Train workers ask for a `train_slot` (`ray.worker_resources`), which only train nodes have: Ray
    2.60's elastic sizing asks Ray Data's autoscaling coordinator how many worker bundles fit, and the
    coordinator counts resources on every node, label selectors aside (docs/cluster.md, "Spot
    instances"). Without the slot the data node's CPU would count as room for a second worker, and the
    shrunken group would be sized 2 and wait for a placement that never comes.
    """
    import ray
    from ray.cluster_utils import Cluster

    dash = _free_port()
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{dash}")
    # Ray Train reads these in the driver and hands them to its controller. The notice is seen within a
    # second (default 5 s); a group start sized with a node already gone gives up after 20 s (default
    # 60 s): right after a removal the elastic policy may still count the lost node.
    monkeypatch.setenv("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "1")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dash,
        "ray_client_server_port": _free_port(), "dashboard_agent_listen_port": _free_port()})
    try:
        cluster.add_node(num_cpus=1, labels={"role": "data"})
        nodes = [cluster.add_node(num_cpus=1, resources={"train_slot": 1}, labels={"role": "train"}) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


def _state(run_dir):
    from ssd_ray import checkpoint as ckpt_io
    from ssd_ray.train.launch import latest_checkpoint

    found = latest_checkpoint(run_dir)
    if not found:
        return None
    try:
        return ckpt_io.load(found[1])
    except ValueError:  # being written
        return None


def test_preemption_checkpoint_shrink_and_grow(elastic_cluster, tmp_path):
    from ssd_ray.config import config_from_dict
    from ssd_ray.data.shapes import write_shapes
    from ssd_ray.spot import drain_for_preemption
    from ssd_ray.train.launch import run_training
    from ssd_ray.train.stream import registered_iteration

    cluster, (node_a, node_b) = elastic_cluster
    root = write_shapes(str(tmp_path / "shapes"), "voc", n_train=16, n_val=4, seed=3, size=64)
    cfg = config_from_dict({
        "name": "elastic",
        "data": {"format": "voc", "root": root, "train_sets": ["2007/train"], "val_sets": ["2007/val"],
                 "classes": ["circle", "square", "triangle", "star", "cross", "ellipse"], "max_boxes": 8,
                 "augment": {"expand": False, "crop": False, "photometric": False}},
        "model": {"backbone": "light", "min_dim": 64, "width": 4},
        "priors": {"feature_maps": [8, 4, 2, 1], "steps": [8, 16, 32, 64], "min_sizes": [8, 20, 36, 52],
                   "max_sizes": [20, 36, 52, 64], "aspect_ratios": [[2], [2], [2], [2]]},
        # 0.1 s per step stands in for a GPU step, so the run is still going when the test acts.
        "train": {"batch_size": 4, "optimizer": "adamw", "lr_steps": [], "lr": 1e-3, "warmup_iters": 1,
                  "max_iter": 500, "checkpoint_every": 50, "eval_every": 500, "log_every": 50,
                  "inject_step_delay_s": 0.1},
        "ray": {"num_workers": [1, 2], "cpus_per_worker": 1, "worker_resources": {"train_slot": 1}, "torch_threads": 1,
                "data_cpus": 1,
                "data_concurrency": 1, "storage_path": str(tmp_path / "runs"), "max_failures": 1,
                "preemption_check_every": 2, "elastic_resize_interval_s": 3,
                "data_label_selector": {"role": "data"}, "train_label_selector": {"role": "train"}},
        "mlflow": {"enabled": False},
    })
    result: dict = {}

    def train():
        try:
            result["summary"] = run_training(cfg, address=cluster.address)
        except BaseException as e:  # noqa: BLE001 - reported by the assertions below
            result["error"] = e

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    runs = tmp_path / "runs"
    run_dir = _wait_for(lambda: next((p for p in runs.glob("elastic-*") if p.is_dir()), None), 120, "the run folder")
    first = _wait_for(lambda: (s := _state(run_dir)) is not None and s, 180, "the first periodic checkpoint")
    assert first["counters"]["attempts"] == [[0, 2, 0]]  # two workers, the stream from position 0

    # The spot notice: drain train node B for preemption with a deadline, as the spot watcher does.
    t_notice = time.monotonic()
    drain_for_preemption(cluster.address, node_b.node_id, 60, "test: spot reclaim")
    jit = _wait_for(lambda: (s := _state(run_dir)) is not None and s["counters"]["preemptions"] == 1 and s,
                    90, "the just-in-time checkpoint")
    k = jit["iteration"]
    assert k > first["iteration"] and k % cfg.train.checkpoint_every, "a checkpoint at the notice, not a periodic one"
    # A reclaim comes at the notice's deadline, not the moment the checkpoint is on disk: the node stays
    # until Ray Train has registered the checkpoint (its controller collects reports as it polls the
    # workers); taken away before that, the restart would restore the periodic checkpoint before it.
    _wait_for(lambda: registered_iteration(run_dir) == k, 60, "Ray Train to register the just-in-time checkpoint")
    # The reclaim itself. Graceful, so GCS learns at once that the node is gone (a killed raylet is
    # only noticed after health checks time out, and the elastic controller would meanwhile still
    # count its CPU); the loss then reaches Ray Train as a worker error, hence max_failures 1 below.
    cluster.remove_node(node_b)

    shrunk = _wait_for(lambda: (s := _state(run_dir)) is not None and len(s["counters"]["attempts"]) >= 2 and s,
                       180, "training again on one worker")
    t_resumed = time.monotonic()
    assert shrunk["counters"]["attempts"][1] == [k, 1, k], "one worker, from the checkpoint, stream at its position"

    cluster.add_node(num_cpus=1, resources={"train_slot": 1}, labels={"role": "train"})  # capacity is back
    grown = _wait_for(lambda: (s := _state(run_dir)) is not None and len(s["counters"]["attempts"]) >= 3 and s,
                      180, "the group growing back to two workers")
    restored, world, stream = grown["counters"]["attempts"][2]
    assert world == 2 and stream == restored >= k

    thread.join(timeout=300)
    assert "error" not in result, repr(result.get("error"))
    summary = result["summary"]
    assert summary.iterations == cfg.train.max_iter
    final = _state(run_dir)
    assert final["iteration"] == cfg.train.max_iter and final["counters"]["preemptions"] == 1
    print(f"\npreemption: checkpoint at {k}, training again after {t_resumed - t_notice:.0f} s; "
          f"attempts {final['counters']['attempts']}")
