"""Cluster set-up: cluster.yaml against Ray's schema, the documented placement, a simulated multi-node
run with placement read back from Ray's state API, `ray job submit` to a token-protected head, and the
GPU check script's CPU smoke run without Ray/MLflow/pydantic.

The slow tests start their own Ray (a `ray.cluster_utils.Cluster`, a `ray start --head --block`) with a
private temp dir and RAY_TMPDIR, so nothing else on the machine connects to them by accident, and stop
only what they started.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
CLUSTER_DOC = REPO / "docs" / "cluster.md"
BLOCKED = ("ray", "mlflow", "pydantic", "albumentations", "pycocotools")
# Run a script with the packages the GPU box lacks made unimportable (None in sys.modules -> ImportError).
BLOCKING_PRELUDE = "import sys\nfor _m in %r: sys.modules[_m] = None\n" % (BLOCKED,)


def _cluster_cfg() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _node_type(cfg: dict, role: str, spot: bool = False) -> tuple[str, dict]:
    """The node type labelled `role`: the on-demand one, or with `spot` the spot one."""
    found = [(k, v) for k, v in cfg["available_node_types"].items() if v.get("labels", {}).get("role") == role
             and ("InstanceMarketOptions" in v["node_config"]) == spot]
    assert len(found) == 1, f"expected one {'spot' if spot else 'on-demand'} node type labelled role={role}, " \
                            f"got {[k for k, _ in found]}"
    return found[0]


# ------------------------------------------------------------------------------------ cluster.yaml
def test_cluster_yaml_passes_rays_own_schema_check():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(_cluster_cfg()))  # raises jsonschema.ValidationError / ValueError


@pytest.mark.parametrize("breakage", ["label_not_string", "negative_cpu", "unknown_key", "head_type_missing"])
def test_schema_check_rejects_broken_copies(breakage):
    # The check above can fail: each of these edits of cluster.yaml must be refused.
    import jsonschema
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    cfg = copy.deepcopy(_cluster_cfg())
    data_type, _ = _node_type(cfg, "data")
    if breakage == "label_not_string":
        cfg["available_node_types"][data_type]["labels"] = {"role": 1}
    elif breakage == "negative_cpu":
        cfg["available_node_types"][data_type]["resources"] = {"CPU": -1}
    elif breakage == "unknown_key":
        cfg["available_node_types"][data_type]["label"] = {"role": "data"}  # typo of `labels`
    else:
        cfg["head_node_type"] = "no_such_type"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(fillout_defaults(cfg))


def test_cluster_yaml_layout():
    cfg = _cluster_cfg()
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head must run no tasks"
    assert "labels" not in head
    _, data = _node_type(cfg, "data")
    _, train = _node_type(cfg, "train")
    assert data["resources"].get("GPU", 0) == 0 and data["resources"]["CPU"] > 0
    assert train["resources"]["GPU"] >= 1
    for t in (data, train):
        assert t["min_workers"] == 0 and t["max_workers"] >= 1  # autoscaled
    assert cfg["max_workers"] >= data["max_workers"] + train["max_workers"]

    setup = "\n".join(cfg["setup_commands"])
    assert "pip install -q -c constraints.txt -e ." in setup  # the install CI and `make` do
    assert "/mnt/efs" in setup and "mount -t nfs4" in setup
    head_start = "\n".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert "--host 0.0.0.0 --port 5000" in head_start  # MLflow for the workers (see docs/cluster.md)
    worker_start = "\n".join(cfg["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in worker_start and "RAY_AUTH_TOKEN_PATH=/mnt/efs/" in worker_start
    # Spot GPU nodes beside the on-demand ones: same resources and role (the train label selector
    # places workers on both), marked as spot, and their start commands run the spot watcher.
    _, spot = _node_type(cfg, "train", spot=True)
    assert spot["resources"] == train["resources"] and spot["labels"] == {"role": "train", "market": "spot"}
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert spot["min_workers"] == 0 and cfg["max_workers"] >= data["max_workers"] + train["max_workers"]
    assert "instance-life-cycle" in worker_start and "python -m pipelines.spot_watcher --address=$RAY_HEAD_IP:6379" \
        in worker_start
    # The security group gets Ray's defaults only: no ingress rule opening 5000/8265/6379.
    assert "IpPermissions" not in cfg["provider"].get("security_group", {})


def test_placeholder_efs_id_stops_setup_with_a_message():
    # The first setup command refuses to run with the placeholder id instead of hanging on a mount.
    cmd = _cluster_cfg()["setup_commands"][0]
    script = cmd.split("sudo apt-get")[0]  # up to the placeholder check; nothing privileged
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "put your EFS file system id" in r.stderr


# ------------------------------------------------------------------------- documented placement
def _documented_train_commands(bucket: bool = False) -> list[list[str]]:
    """The `ray job submit ... -- python -m pipelines.train ...` commands of docs/cluster.md, as argv
    after `--`; the first is section 5's, the second the resume example (`bucket`: section 1b's)."""
    text = CLUSTER_DOC.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = [shlex.split(b.replace("\\\n", " ")) for b in blocks if "ray job submit" in b and "pipelines.train" in b
            and ("s3://" in b) == bucket]
    assert len(cmds) == (1 if bucket else 2), \
        "docs/cluster.md should show a train and a resume `ray job submit` command, and one for the bucket variant"
    return [argv[argv.index("--") + 1:] for argv in cmds]


def _load_documented(entry: list[str]):
    from pipelines.train import parse_args
    from ssd_ray.config import load_config

    assert entry[:3] == ["python", "-m", "pipelines.train"]
    args = parse_args(entry[3:])
    overrides = list(args.overrides) + [f"ray.num_workers={args.num_workers}"] + (
        ["ray.use_gpu=true"] if args.use_gpu else [])
    # pydantic-validated, as the job would load it
    return args, load_config(REPO / args.config, overrides)


def test_documented_cluster_command_gives_a_valid_config_matching_the_node_labels():
    train_cmd, resume_cmd = _documented_train_commands()
    _, cfg = _load_documented(train_cmd)
    labels = {role: _node_type(_cluster_cfg(), role)[1]["labels"] for role in ("data", "train")}
    assert cfg.ray.data_label_selector == labels["data"]
    assert cfg.ray.train_label_selector == labels["train"]
    assert cfg.ray.use_gpu and cfg.ray.num_workers == 8
    # Shared, absolute paths: the job runs in a temporary copy of the working directory.
    assert cfg.ray.storage_path.startswith("/mnt/efs/")
    assert cfg.data.root.startswith("/mnt/efs/") and cfg.model.pretrained.startswith("/mnt/efs/")
    assert cfg.mlflow.tracking_uri.startswith("http://") and cfg.mlflow.tracking_uri.endswith(":5000")
    # 8 g5.xlarge workers fit the train node type: one GPU and cpus_per_worker CPUs each.
    _, train = _node_type(_cluster_cfg(), "train")
    assert cfg.ray.cpus_per_worker <= train["resources"]["CPU"]
    assert cfg.ray.num_workers <= train["max_workers"] * train["resources"]["GPU"]

    # The resume example: a run name, and the same storage, placement and config as the first run.
    args, resumed = _load_documented(resume_cmd)
    assert isinstance(args.resume, str) and args.resume.startswith(f"{resumed.name}-")
    from ssd_ray.config import config_to_dict

    assert config_to_dict(resumed) == config_to_dict(cfg)


def test_bucket_variant_command_config_and_setup(tmp_path):
    # Section 1b's command: data and runs in S3, MLflow on the head's server, same placement.
    (cmd,) = _documented_train_commands(bucket=True)
    _, cfg = _load_documented(cmd)
    assert cfg.data.root.startswith("s3://") and cfg.ray.storage_path.startswith("s3://")
    assert cfg.mlflow.tracking_uri.startswith("http://")
    assert cfg.ray.data_label_selector == _node_type(_cluster_cfg(), "data")[1]["labels"]
    # cluster.yaml: EFS_ID=none needs a bucket, then records the variant for the start commands.
    cmd0 = _cluster_cfg()["setup_commands"][0]
    script = cmd0.split("sudo apt-get")[0].replace("EFS_ID=fs-REPLACE_ME", "EFS_ID=none")
    env = {**os.environ, "HOME": str(tmp_path)}
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 1 and "put your bucket" in r.stderr
    r = subprocess.run(["bash", "-c", script.replace("s3://REPLACE_ME/ssd-ray", "s3://my-bucket/ssd-ray")],
                       capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ssd-ray.env").read_text().strip() == "SSD_RAY_BUCKET=s3://my-bucket/ssd-ray"
    # The documented edit (uncommenting the instance profile lines) keeps the file valid for Ray, and
    # no credentials are written in it.
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    text = CLUSTER_YAML.read_text()
    assert text.count("# IamInstanceProfile: {Name: ssd-ray-node}") == 3
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text
    variant = yaml.safe_load(text.replace("# IamInstanceProfile:", "IamInstanceProfile:"))
    for role, spot in (("data", False), ("train", False), ("train", True)):
        assert _node_type(variant, role, spot)[1]["node_config"]["IamInstanceProfile"] == {"Name": "ssd-ray-node"}
    validate_config(fillout_defaults(variant))


def test_single_machine_config_sets_no_placement_and_overrides_switch_it_on():
    from ssd_ray.config import load_config
    from ssd_ray.data.pipeline import data_execution_options, data_remote_args
    from ssd_ray.train.launch import _scaling_config

    local = load_config(REPO / "configs" / "shapes.yaml")
    assert local.ray.data_label_selector is None and local.ray.train_label_selector is None
    assert data_remote_args(local) == {"num_cpus": local.ray.data_cpus}  # no label_selector key at all
    assert data_execution_options(local, preserve_order=False).label_selector is None
    assert not _scaling_config(local).label_selector

    placed = load_config(REPO / "configs" / "shapes.yaml",
                         ["ray.data_label_selector={role: data}", "ray.train_label_selector={role: train}"])
    assert data_remote_args(placed) == {"num_cpus": placed.ray.data_cpus, "label_selector": {"role": "data"}}
    assert data_execution_options(placed, preserve_order=False).label_selector == {"role": "data"}
    assert _scaling_config(placed).label_selector == {"role": "train"}


# ------------------------------------------------------------------------------------ GPU check
def _run_blocked(code: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", BLOCKING_PRELUDE + code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_gpu_check_smoke_runs_every_section_without_ray_mlflow_pydantic(tmp_path):
    # One process (torch imports are slow here): the GPU box's imports, then the smoke run.
    out = tmp_path / "gpu_check.json"
    r = _run_blocked("import ssd_ray.model, ssd_ray.loss, ssd_ray.boxes, ssd_ray.priors, ssd_ray.postprocess, "
                     "ssd_ray.data.augment, ssd_ray.data.shapes, ssd_ray.train.step, ssd_ray.train.optim\n"
                     "try:\n    import ray\nexcept ImportError:\n    print('ray blocked')\n"
                     "import runpy\nsys.argv = ['gpu_check.py'] + sys.argv[1:]\n"
                     "runpy.run_path('bench/gpu_check.py', run_name='__main__')\n",
                     "--smoke", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ray blocked" in r.stdout  # the blocking itself works
    res = json.loads(out.read_text())
    for section in ("augment_images_per_s_per_core", "pipeline", "resident", "split", "correct"):
        assert section in res, section
    assert res["pipeline"]["images_per_s"] > 0 and res["resident"][0]["images_per_s"] > 0
    assert set(res["split"]["phases_ms"]) == {"forward", "match", "loss", "backward", "optimizer"}
    assert 0.0 < res["split"]["loss_share"] < 1.0
    eager = res["correct"]["eager"]  # --smoke measures the eager step only (compiling costs minutes on CPU)
    assert eager["ok"] and eager["loss_last"] < eager["loss_first"]
    assert "PASS" in r.stdout


def test_gpu_check_fails_when_the_loss_does_not_fall_and_survives_a_broken_section():
    # --fall 0.0 demands last < 0 x first: impossible, so the correctness gate must fail the run (exit 1).
    # --resident-batches 0 makes the resident section raise: it is reported and `correct` still runs.
    r = _run_blocked("import runpy\nsys.argv = ['gpu_check.py'] + sys.argv[1:]\n"
                     "runpy.run_path('bench/gpu_check.py', run_name='__main__')\n",
                     "--smoke", "--sections", "resident,correct", "--resident-batches", "0", "--fall", "0.0",
                     timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[resident] ERROR" in r.stdout
    assert re.search(r"\[correct\].*FAILED", r.stdout)
    assert r.stdout.splitlines()[-1].endswith("FAIL (errors in: resident)")


def test_gpu_check_voc300_config_has_ssd300_priors():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    model_cfg, priors_cfg, _ = gpu_check.voc300_config()
    assert (model_cfg.backbone, model_cfg.min_dim, model_cfg.num_classes) == ("vgg16", 300, 21)
    # 38²·4 + 19²·6 + 10²·6 + 5²·6 + 3²·4 + 1²·4 = 5776 + 2166 + 600 + 150 + 36 + 4 = 8732
    assert gpu_check.make_priors(model_cfg, priors_cfg).shape == (8732, 4)
    # build_ssd refuses priors whose maps the network does not produce; SSD300's are these.
    assert gpu_check.build_ssd(model_cfg, priors_cfg).feature_map_sizes(300) == [38, 19, 10, 5, 3, 1]


# ------------------------------------------------------------------------- simulated cluster runs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_config(root: str, storage: str) -> dict:
    """A few iterations of the light SSD at 96 px on the shapes data (feature maps 12/6/3 at 96 px)."""
    from ssd_ray.data.shapes import SHAPE_CLASSES

    return {
        "name": "tiny",
        "data": {"format": "voc", "root": root, "train_sets": ["2007/train"], "val_sets": ["2007/val"],
                 "classes": list(SHAPE_CLASSES), "max_boxes": 8,
                 "augment": {"expand": True, "max_expand_ratio": 2.0}},
        "model": {"backbone": "light", "min_dim": 96, "width": 8},
        "priors": {"feature_maps": [12, 6, 3], "steps": [8, 16, 32], "min_sizes": [10, 30, 60],
                   "max_sizes": [30, 60, 96], "aspect_ratios": [[2], [2], [2]]},
        "postprocess": {"top_k": 20},
        "train": {"batch_size": 4, "optimizer": "adamw", "schedule": "cosine", "lr": 1e-3, "max_iter": 4,
                  "warmup_iters": 1, "checkpoint_every": 4, "eval_every": 4, "log_every": 2},
        "ray": {"num_workers": 1, "cpus_per_worker": 1, "torch_threads": 1, "data_cpus": 1,
                "storage_path": storage, "max_failures": 0},
    }


@pytest.fixture
def ray_tmp(monkeypatch):
    """A short private temp dir (unix socket paths are limited to 107 bytes) used as RAY_TMPDIR.

    RAY_TMPDIR moves Ray's `ray_current_cluster` file there: processes that look for "the local
    cluster" (ours, and other people's `ray.init()` on this machine) never find the wrong one.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()  # another test's local Ray: run_training would otherwise reuse it
    d = tempfile.mkdtemp(prefix="ssdc-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", d)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def three_node_cluster(ray_tmp, monkeypatch):
    """Head with 0 CPUs, a `role=data` node (1 CPU) and a `role=train` node (2 CPUs).

    The train node keeps a CPU free next to its worker, so the augmentation task could land there if
    the data selector were lost: only the selector keeps it on the data node.
    """
    import ray
    from ray.cluster_utils import Cluster

    dash = _free_port()
    # Every Ray process started below inherits this: the state API (Train's placement-group cleaner,
    # our list_actors) goes to this cluster's dashboard instead of scanning the machine for one.
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{dash}")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dash,
        "ray_client_server_port": _free_port(), "dashboard_agent_listen_port": _free_port()})
    try:
        data = cluster.add_node(num_cpus=1, labels={"role": "data"})
        train = cluster.add_node(num_cpus=2, labels={"role": "train"})
        yield cluster, data.node_id, train.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()


def _wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1.0)


@pytest.mark.slow
def test_augmentation_runs_on_data_nodes_and_workers_on_train_nodes(three_node_cluster, ray_tmp):
    from ray.util.state import list_actors, list_nodes

    from ssd_ray.config import config_from_dict, resolve_paths
    from ssd_ray.data.shapes import write_shapes
    from ssd_ray.train import run_training

    cluster, data_id, train_id = three_node_cluster
    root = write_shapes(str(ray_tmp / "shapes"), "voc", 16, 4, 0, size=96)
    raw = _tiny_config(root, str(ray_tmp / "runs"))
    raw["ray"]["data_label_selector"] = {"role": "data"}
    raw["ray"]["train_label_selector"] = {"role": "train"}
    cfg = resolve_paths(config_from_dict(raw))
    assert cfg.mlflow.enabled

    summary = run_training(cfg, address=cluster.address)

    assert summary.iterations == 4
    assert Path(summary.model_file).is_file() and Path(summary.checkpoint).is_dir()
    assert (ray_tmp / "runs" / "mlflow.db").is_file() and summary.mlflow_run_id

    addr = cluster.address
    nodes = {n.node_id: n.labels for n in list_nodes(address=addr, detail=True)}
    assert nodes[data_id].get("role") == "data" and nodes[train_id].get("role") == "train"

    def map_actors():  # augmentation runs on a pool of Ray Data actors
        return list_actors(address=addr, detail=True, limit=10_000,
                           filters=[("class_name", "=", "MapWorker(MapBatches(TrainSampleMaker))")])

    actors = _wait_for(map_actors, 30, "the augmentation actors in Ray's actor table")
    assert {a.node_id for a in actors} == {data_id}, [(a.class_name, a.node_id) for a in actors]
    assert all(a.label_selector == {"role": "data"} for a in actors), [a.label_selector for a in actors]

    workers = list_actors(address=addr, detail=True, limit=10_000, filters=[("class_name", "=", "RayTrainWorker")])
    assert len(workers) == cfg.ray.num_workers
    assert {a.node_id for a in workers} == {train_id}, [(a.class_name, a.node_id) for a in workers]


def _kill_group(proc: subprocess.Popen, tmp: Path) -> None:
    """Stop the `ray start --block` we started: its process group, then any process of ours left in tmp."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # Ray processes that left the group still name our private temp dir on their command line.
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in cmd and int(pid_dir.name) != os.getpid():
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _get(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0  # not listening yet


@pytest.mark.slow
def test_job_submit_to_token_protected_loopback_head(ray_tmp):
    from ssd_ray.data.shapes import write_shapes

    root = write_shapes(str(ray_tmp / "shapes"), "voc", 16, 4, 0, size=96)
    storage = ray_tmp / "runs"
    config = ray_tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(_tiny_config(root, str(storage))))
    token = secrets.token_hex(32)
    dash = _free_port()
    bin_dir = Path(sys.executable).parent
    url = f"http://127.0.0.1:{dash}"
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_API_SERVER_ADDRESS": url, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    head_log = open(ray_tmp / "head.log", "w")
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={_free_port()}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={ray_tmp / 'ray'}", "--disable-usage-stats"],
        env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: _get(f"{url}/api/jobs/", token) == 200 or head.poll() is not None, 120,
                  "the head's job API")
        assert head.poll() is None, (ray_tmp / "head.log").read_text()[-3000:]
        assert _get(f"{url}/api/jobs/", None) == 401  # token auth is on: no token, no access
        assert _get(f"{url}/api/jobs/", "0" * 64) == 403

        r = subprocess.run(
            [str(bin_dir / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO), "--",
             "python", "-m", "pipelines.train", "--config", str(config),
             "--set", "ray.num_workers=1", "--set", "ray.cpus_per_worker=0.5"],
            env=env, capture_output=True, text=True, timeout=420)
        log = r.stdout + r.stderr
        assert r.returncode == 0, log[-4000:]  # `ray job submit` exits 1 when the job FAILED
        assert re.search(r"Job 'raysubmit_\w+' succeeded", log), log[-4000:]
        runs = [p for p in storage.glob("tiny-*") if p.is_dir()]
        assert len(runs) == 1, runs
        assert (runs[0] / "outputs" / "model.pt").is_file()
        assert (runs[0] / "checkpoint_00000004" / "checkpoint.pt").is_file()
        assert (storage / "mlflow.db").is_file()
    finally:
        _kill_group(head, ray_tmp)
        head_log.close()
