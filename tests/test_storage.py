"""Object storage: the storage layer, the bucket dataset index, checkpoints and run folders in a bucket,
and the errors a user gets for a missing bucket, missing credentials or a refused permission.

The S3 tests talk to a real S3-compatible server on 127.0.0.1 (moto, `s3_server` in conftest.py)
through pyarrow's S3 client, configured only by the standard AWS variables (`s3_env`).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem

from ssd_ray import checkpoint as ckpt_io
from ssd_ray import storage
from ssd_ray.config import ConfigError, DataConfig, load_config
from ssd_ray.data.records import ImageRecord
from ssd_ray.data.shapes import write_shapes
from ssd_ray.data.sources import load_split
from ssd_ray.errors import CheckpointError, CheckpointNotFoundError

CLASSES = ["circle", "square", "triangle", "star", "cross", "ellipse"]
SHAPES_YAML = Path(__file__).resolve().parents[1] / "configs" / "shapes.yaml"


def _bucket(s3, local_dir=None, prefix="data") -> str:
    """A fresh bucket (tests share one server), with `local_dir` uploaded under `prefix` when given."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(name)
    if local_dir is not None:
        s3.upload_dir(local_dir, name, prefix)
    return name


@pytest.fixture(scope="module")
def shapes_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_voc")
    write_shapes(str(root), "voc", n_train=12, n_val=4, seed=5, size=64)
    return root


# ------------------------------------------------------------------------------- names and config
def test_uri_names_and_local_paths(tmp_path):
    assert storage.is_uri("s3://b/x") and storage.is_uri("gs://b") and not storage.is_uri("/x")
    assert not storage.is_uri("file:///x") and not storage.is_uri("runs") and not storage.is_uri(None)
    assert storage.absolute("s3://b/VOCdevkit/") == "s3://b/VOCdevkit"
    assert storage.absolute("file:///tmp/x") == "/tmp/x"
    assert storage.join("s3://b/runs", "r1", "outputs") == "s3://b/runs/r1/outputs"
    assert storage.join("s3://b/runs/", "/r1/") == "s3://b/runs/r1"
    assert storage.parent("s3://b/runs/r1/model.pt") == "s3://b/runs/r1" and storage.parent("s3://b/x") == "s3://b"
    assert storage.basename("s3://b/runs/model.pt") == "model.pt"
    assert storage.join(str(tmp_path), "a") == str(tmp_path / "a")


def test_config_keeps_uris_and_checks_bucket_settings(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(SHAPES_YAML.read_text())
    # Today's bug: resolve_paths turned s3://bucket/runs into <cwd>/s3:/bucket/runs.
    cfg = load_config(cfg_file, ["data.synthetic=null", "data.root=s3://bkt/VOCdevkit",
                                 "ray.storage_path=s3://bkt/runs/", "mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert cfg.data.root == "s3://bkt/VOCdevkit" and cfg.ray.storage_path == "s3://bkt/runs"
    with pytest.raises(ConfigError, match="mlflow.tracking_uri"):
        load_config(cfg_file, ["ray.storage_path=s3://bkt/runs"])
    load_config(cfg_file, ["ray.storage_path=s3://bkt/runs", "mlflow.enabled=false"])  # no MLflow: fine
    with pytest.raises(ConfigError, match="data.synthetic .*local folder"):
        load_config(cfg_file, ["data.root=s3://bkt/shapes"])
    with pytest.raises(ValueError, match="data.synthetic"):
        DataConfig(root="s3://bkt/x", synthetic={"train": 10, "val": 5})


# ------------------------------------------------------------------------------------- retries
def test_transient_errors_are_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr(storage, "BACKOFF_S", (0.0,))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7")
        return b"ok"

    assert storage.with_retries(flaky, "x") == b"ok" and len(calls) == 3

    calls.clear()

    def always():
        calls.append(1)
        raise OSError("AWS Error SLOW_DOWN during GetObject operation")

    with pytest.raises(OSError, match="SLOW_DOWN"):
        storage.with_retries(always, "x")
    assert len(calls) == storage.RETRIES

    calls.clear()

    def denied():
        calls.append(1)
        raise OSError("AWS Error ACCESS_DENIED during HeadObject operation")

    with pytest.raises(OSError):
        storage.with_retries(denied, "x")
    assert len(calls) == 1  # a refused permission does not pass by trying again
    calls.clear()

    def missing():
        calls.append(1)
        raise FileNotFoundError("no such key")

    with pytest.raises(FileNotFoundError):
        storage.with_retries(missing, "x")
    assert len(calls) == 1


class FlakyMemoryFS(MemoryFileSystem):
    """An fsspec store whose object reads fail `fail_first` times per path (a flaky network)."""

    protocol = ("flakymem",)
    fail_first = 2
    failures: dict = {}

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            n = self.failures.get(path, 0)
            if n < self.fail_first:
                self.failures[path] = n + 1
                raise OSError(f"connection reset reading {path}")
        return super()._open(path, mode, **kwargs)


def test_other_fsspec_filesystems_go_through_the_same_code(monkeypatch):
    monkeypatch.setattr(storage, "BACKOFF_S", (0.0,))
    fsspec.register_implementation("flakymem", FlakyMemoryFS, clobber=True)
    FlakyMemoryFS.failures.clear()
    ok = np.full((8, 8, 3), 200, np.uint8)
    import cv2

    storage.write_bytes("flakymem://bkt/img/a.png", cv2.imencode(".png", ok)[1].tobytes())
    storage.write_bytes("flakymem://bkt/img/b.png", b"not an image")
    assert storage.is_dir("flakymem://bkt/img")
    assert [e.name for e in storage.list_dir("flakymem://bkt/img")] == ["a.png", "b.png"]
    # Two failed reads, then the object: retried, not skipped.
    from ssd_ray.data.augment import decode_image

    assert decode_image("flakymem://bkt/img/a.png").shape == (8, 8, 3)
    assert list(FlakyMemoryFS.failures.values()) == [2]

    # An object that stays unreadable is a bad image: the training stream skips it and counts it.
    FlakyMemoryFS.fail_first = 10**6
    try:
        with pytest.raises(ValueError, match="cannot read image flakymem://bkt/img/a.png"):
            decode_image("flakymem://bkt/img/a.png")
        from ssd_ray.data.augment import SSDAugmentation
        from ssd_ray.data.pipeline import TrainSampleMaker

        FlakyMemoryFS.failures.clear()
        storage.write_bytes("flakymem://bkt/img/c.png", cv2.imencode(".png", ok)[1].tobytes())
        FlakyMemoryFS.fail_first = 0
        recs = [ImageRecord(f"r{i}", f"flakymem://bkt/img/{n}", 8, 8, [[0.1, 0.1, 0.9, 0.9]], [0], [False])
                for i, n in enumerate(["b.png", "c.png"])]
        maker = TrainSampleMaker(recs, SSDAugmentation(32, photometric=False, expand=False, crop=False,
                                                       mirror=False), seed=0, max_boxes=4)
        out = maker({"epoch": np.array([0, 0]), "index": np.array([0, 1])})
        assert out["skipped"].tolist() == [1, 0]  # b.png (undecodable) replaced by another record, counted
    finally:
        FlakyMemoryFS.fail_first = 2


# ------------------------------------------------------------------------------------ S3 basics
def test_s3_read_write_list_round_trip(s3_env, tmp_path):
    b = _bucket(s3_env)
    storage.write_text(f"s3://{b}/runs/r1/outputs/a.txt", "hello")
    storage.write_bytes(f"s3://{b}/runs/r1/checkpoint_00000004/checkpoint.pt", b"x" * 10)
    assert storage.read_text(f"s3://{b}/runs/r1/outputs/a.txt") == "hello"
    assert storage.is_file(f"s3://{b}/runs/r1/outputs/a.txt") and storage.is_dir(f"s3://{b}/runs/r1")
    assert not storage.exists(f"s3://{b}/runs/nothing")
    entries = storage.list_dir(f"s3://{b}/runs/r1")
    assert [(e.name, e.is_dir) for e in entries] == [("checkpoint_00000004", True), ("outputs", True)]
    assert entries[0].path == f"s3://{b}/runs/r1/checkpoint_00000004"
    deep = storage.list_dir(f"s3://{b}/runs", recursive=True)
    assert {e.name: e.size for e in deep if not e.is_dir} == {"r1/outputs/a.txt": 5,
                                                            "r1/checkpoint_00000004/checkpoint.pt": 10}
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{b}/runs/nothing.txt")
    got = dict(storage.read_many([f"s3://{b}/runs/r1/outputs/a.txt", f"s3://{b}/missing"]))
    assert got[f"s3://{b}/runs/r1/outputs/a.txt"] == b"hello"
    assert isinstance(got[f"s3://{b}/missing"], FileNotFoundError)
    storage.download(f"s3://{b}/runs/r1", tmp_path / "r1")
    assert (tmp_path / "r1" / "outputs" / "a.txt").read_text() == "hello"
    storage.upload(tmp_path / "r1", f"s3://{b}/copy")
    assert storage.read_text(f"s3://{b}/copy/outputs/a.txt") == "hello"


def test_access_errors_name_the_uri(s3_env, monkeypatch):
    b = _bucket(s3_env)
    storage.write_text(f"s3://{b}/data/x.txt", "1")
    storage.check_access(f"s3://{b}/data", "data.root")  # fine
    storage.check_access(f"s3://{b}/runs", "ray.storage_path", must_exist=False)  # a new prefix is fine
    with pytest.raises(storage.StorageError, match=r"data.root s3://no-such-bucket-x/d: the bucket 'no-such-bucket-x' "
                                                   r"does not exist at http://127.0.0.1"):
        storage.check_access("s3://no-such-bucket-x/d", "data.root")
    with pytest.raises(storage.StorageError, match=rf"data.root s3://{b}/nothing: nothing there"):
        storage.check_access(f"s3://{b}/nothing", "data.root")

    s3_env.auth(True)  # the server now checks signatures: the test keys are unknown to it
    try:
        with pytest.raises(storage.StorageError, match=rf"data.root s3://{b}/data: access denied"):
            storage.check_access(f"s3://{b}/data", "data.root")
        with pytest.raises(storage.StorageError, match=rf"s3://{b}/data/x.txt: access denied"):
            storage.read_bytes(f"s3://{b}/data/x.txt")
    finally:
        s3_env.auth(False)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(storage.StorageError, match=rf"data.root s3://{b}/data: no AWS credentials found.*"
                                                   r"AWS_EC2_METADATA_DISABLED"):
        storage.check_access(f"s3://{b}/data", "data.root")


# --------------------------------------------------------------------------- datasets and the index
def _same(a, b):
    assert [r.image_id for r in a.records] == [r.image_id for r in b.records]
    for x, y in zip(a.records, b.records):
        assert (x.width, x.height) == (y.width, y.height)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.difficult, y.difficult)
    assert a.class_names == b.class_names and dict(a.skipped) == dict(b.skipped)


def test_index_round_trip_keeps_records_counts_and_metadata():
    from ssd_ray.data.index import from_parquet, to_parquet
    from ssd_ray.data.records import DetectionDataset, SkipCounter

    recs = [ImageRecord("a", "s3://b/a.jpg", 50, 40, [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]], [2, 0], [False, True]),
            ImageRecord("b", "s3://b/b.jpg", 30, 20, np.zeros((0, 4)), [], []),  # a negative image
            ImageRecord("c", "s3://b/c.jpg", 10, 10, [[0.25, 0.25, 0.75, 0.75]], [1], [False])]
    skipped = SkipCounter()
    skipped.skip("unknown_category", "x.json", "annotation 7", key=90, log_it=False)
    skipped.skip("bad_xml", "y.xml", "truncated", log_it=False)
    ds = DetectionDataset(["p", "q", "r"], recs, skipped, category_ids=[1, 5, 9], coco_sources=[("s3://b", "val")])
    back, meta = from_parquet(to_parquet(ds, {"key": "k1"}))
    assert meta["key"] == "k1"
    _same(ds, back)
    assert back.records[1].boxes.shape == (0, 4) and back.records[0].boxes.dtype == np.float32
    assert back.records[0].labels.dtype == np.int64 and back.records[0].difficult.dtype == bool
    assert back.records[0].boxes.flags.writeable  # not Arrow's read-only buffers
    assert [r.path for r in back.records] == [r.path for r in recs] and back.records[2].width == 10
    assert back.category_ids == [1, 5, 9] and back.coco_sources == [("s3://b", "val")]
    assert back.skipped.keys == {"unknown_category": {90: 1}}  # an int key stays an int
    assert back.skipped.examples == skipped.examples
    empty, _ = from_parquet(to_parquet(DetectionDataset(["p"], []), {}))
    assert empty.records == [] and empty.class_names == ["p"]


def test_voc_in_a_bucket_reads_like_local_and_the_index_is_reused(s3_env, shapes_voc, tmp_path, caplog):
    b = _bucket(s3_env, shapes_voc, "VOCdevkit")
    keys_before = s3_env.keys(b)
    local_cfg = DataConfig(format="voc", root=str(shapes_voc), train_sets=["2007/train"], val_sets=["2007/val"],
                           classes=CLASSES)
    s3_cfg = local_cfg.model_copy(update={"root": f"s3://{b}/VOCdevkit"})
    index_dir = f"s3://{b}/runs/index"
    local = load_split(local_cfg, "train")
    with caplog.at_level(logging.INFO, logger="ssd_ray.data.index"):
        built = load_split(s3_cfg, "train", index_dir=index_dir)
        assert "data index built" in caplog.text
        caplog.clear()
        reused = load_split(s3_cfg, "train", index_dir=index_dir)
        assert "data index reused" in caplog.text and "data index built" not in caplog.text
    _same(local, built)
    _same(local, reused)
    assert reused.records[0].path == f"s3://{b}/VOCdevkit/VOC2007/JPEGImages/{local.records[0].path.rsplit('/', 1)[1]}"
    # The index lives under the storage path, never in data.root.
    new_keys = sorted(set(s3_env.keys(b)) - set(keys_before))
    assert len(new_keys) == 1 and new_keys[0].startswith("runs/index/voc-") and new_keys[0].endswith(".parquet")

    # Another option (the val split keeps difficult objects) is another index.
    load_split(s3_cfg, "val", index_dir=index_dir)
    assert len(set(s3_env.keys(b, "runs/index/"))) == 2

    # A changed annotation object changes the key: rebuilt, and the change is seen.
    first = local.records[0].image_id.split("/")[1]
    xml_key = f"VOCdevkit/VOC2007/Annotations/{first}.xml"
    c = s3_env.client()
    xml = c.get_object(Bucket=b, Key=xml_key)["Body"].read().decode()
    head, sep, rest = xml.partition("<object>")
    obj_end = rest.index("</object>") + len("</object>")
    c.put_object(Bucket=b, Key=xml_key, Body=(head + rest[obj_end:]).encode())  # its first object removed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ssd_ray.data.index"):
        rebuilt = load_split(s3_cfg, "train", index_dir=index_dir)
    assert "data index built" in caplog.text
    assert len(rebuilt.records[0].boxes) == len(local.records[0].boxes) - 1


def test_bucket_dataset_skips_and_counts_missing_objects(s3_env, shapes_voc, tmp_path):
    b = _bucket(s3_env, shapes_voc, "V")
    ids = [line for line in (shapes_voc / "VOC2007/ImageSets/Main/train.txt").read_text().split() if line]
    c = s3_env.client()
    c.delete_object(Bucket=b, Key=f"V/VOC2007/Annotations/{ids[0]}.xml")
    c.put_object(Bucket=b, Key=f"V/VOC2007/Annotations/{ids[1]}.xml", Body=b"<annotation><size>")
    cfg = DataConfig(format="voc", root=f"s3://{b}/V", train_sets=["2007/train"], val_sets=["2007/val"],
                     classes=CLASSES, accept_bad_records=True)
    ds = load_split(cfg, "train", index_dir=str(tmp_path / "index"))
    assert ds.skipped["missing_annotation"] == 1 and ds.skipped["bad_xml"] == 1
    assert len(ds) == len(ids) - 2
    again = load_split(cfg, "train", index_dir=str(tmp_path / "index"))  # the counts come back from the index
    assert again.skipped["missing_annotation"] == 1 and again.skipped["bad_xml"] == 1
    assert again.skipped.examples == ds.skipped.examples


def test_coco_in_a_bucket_reads_like_local(s3_env, tmp_path):
    root = tmp_path / "coco"
    write_shapes(str(root), "coco", n_train=8, n_val=4, seed=2, size=64)
    b = _bucket(s3_env, root, "coco")
    local_cfg = DataConfig(format="coco", root=str(root), train_sets=["train"], val_sets=["val"])
    s3_cfg = local_cfg.model_copy(update={"root": f"s3://{b}/coco"})
    local = load_split(local_cfg, "val")
    remote = load_split(s3_cfg, "val", index_dir=str(tmp_path / "index"))
    reused = load_split(s3_cfg, "val", index_dir=str(tmp_path / "index"))
    _same(local, remote)
    _same(local, reused)
    assert reused.category_ids == local.category_ids and reused.coco_sources == [(f"s3://{b}/coco", "val")]


def test_missing_data_root_errors_before_reading(s3_env):
    cfg = DataConfig(format="voc", root="s3://no-such-bucket-y/VOCdevkit", classes=CLASSES)
    with pytest.raises(storage.StorageError, match="data.root s3://no-such-bucket-y/VOCdevkit: the bucket"):
        load_split(cfg, "train")


# ------------------------------------------------------------------------- checkpoints and runs
def test_checkpoints_save_and_load_from_a_bucket(s3_env):
    b = _bucket(s3_env)
    state = {"model": {"w": torch.arange(6.0)}, "config": {"name": "x"}, "class_names": ["a"], "iteration": 4}
    ckpt_io.save(state, f"s3://{b}/runs/r/checkpoint_00000004/checkpoint.pt")
    for path in (f"s3://{b}/runs/r/checkpoint_00000004", f"s3://{b}/runs/r/checkpoint_00000004/checkpoint.pt"):
        got = ckpt_io.load(path)
        assert got["iteration"] == 4 and torch.equal(got["model"]["w"], torch.arange(6.0))
    with pytest.raises(CheckpointNotFoundError, match=f"s3://{b}/runs/r/model.pt"):
        ckpt_io.load(f"s3://{b}/runs/r/model.pt")
    storage.write_text(f"s3://{b}/runs/r/notes.pt", "hello")
    with pytest.raises(CheckpointError, match=rf"s3://{b}/runs/r/notes.pt \(a 5-byte text file\)"):
        ckpt_io.load(f"s3://{b}/runs/r/notes.pt")


def test_runs_in_a_bucket_resume_lookup_snapshot_and_outputs(s3_env, tmp_path):
    from ssd_ray.train import owner
    from ssd_ray.train.launch import find_run, latest_checkpoint
    from ssd_ray.train.outputs import RunOutputs
    from ssd_ray.train.stream import SNAPSHOT_FILE, registered_iteration

    b = _bucket(s3_env)
    root = f"s3://{b}/runs"
    for run, its in (("tiny-20260101-000000", [4, 8]), ("tiny-20260102-000000", [4]),
                     ("tiny-20260103-000000", [])):
        for it in its:
            storage.write_bytes(f"{root}/{run}/checkpoint_{it:08d}/checkpoint.pt", b"x")
        storage.write_text(f"{root}/{run}/outputs/config.yaml", "name: tiny")
    assert latest_checkpoint(f"{root}/tiny-20260101-000000") == (8, f"{root}/tiny-20260101-000000/checkpoint_00000008")
    assert latest_checkpoint(f"{root}/tiny-20260103-000000") is None
    assert find_run(root, "tiny") == "tiny-20260102-000000"  # the latest with a checkpoint
    assert find_run(root, "tiny", "tiny-20260101-000000") == "tiny-20260101-000000"
    assert registered_iteration(f"{root}/tiny-20260101-000000") is None  # no snapshot: Ray restores nothing
    storage.write_text(f"{root}/tiny-20260101-000000/{SNAPSHOT_FILE}",
                       '{"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_00000004", "metrics": {}}}')
    assert registered_iteration(f"{root}/tiny-20260101-000000") == 4  # Ray's snapshot decides

    big = b"w" * (2 << 20)  # an earlier attempt's model file: stays in the bucket, untouched
    storage.write_bytes(f"{root}/tiny-20260102-000000/outputs/old_model.pt", big)
    out = RunOutputs(f"{root}/tiny-20260102-000000")
    assert out.pull() == 1 and (out.local / "config.yaml").read_text() == "name: tiny"
    assert not (out.local / "old_model.pt").exists()
    owner.record(out.local, resumed=True)
    (out.local / "model.pt").write_bytes(b"m")
    assert out.push() == 2 and out.push() == 0  # only what changed goes up
    assert owner.read(f"{root}/tiny-20260102-000000")["user"] == owner.current()["user"]
    assert out.uri("model.pt") == f"{root}/tiny-20260102-000000/outputs/model.pt"
    storage.write_bytes(out.uri("best_model.pt"), b"b")  # as a worker on another node writes it
    assert out.pull_file("best_model.pt").read_bytes() == b"b"
    local = out.local
    out.close()
    assert not local.exists() and storage.read_bytes(out.uri("model.pt")) == b"m"
    assert storage.read_bytes(out.uri("old_model.pt")) == big


# --------------------------------------------------------------- the CLI: one error before training
def _train_cli(capsys, tmp_path, root: str, storage_path: str) -> str:
    """`pipelines.train` with data and runs in buckets; returns stderr of the exit-2 error."""
    from pipelines.train import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(SHAPES_YAML.read_text())
    with pytest.raises(SystemExit) as e:
        main(["--config", str(cfg), "--set", "data.synthetic=null", "--set", f"data.root={root}",
              "--set", f"ray.storage_path={storage_path}", "--set", "mlflow.tracking_uri=http://127.0.0.1:9"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_train_cli_stops_before_training_on_bucket_errors(s3_env, shapes_voc, tmp_path, capsys, monkeypatch):
    b = _bucket(s3_env, shapes_voc, "VOCdevkit")
    err = _train_cli(capsys, tmp_path, "s3://no-such-data-bucket/VOCdevkit", f"s3://{b}/runs")
    assert "storage error: data.root s3://no-such-data-bucket/VOCdevkit: the bucket 'no-such-data-bucket' does not exist" in err
    err = _train_cli(capsys, tmp_path, f"s3://{b}/VOCdevkit", "s3://no-such-runs-bucket/runs")
    assert "storage error: ray.storage_path s3://no-such-runs-bucket/runs: the bucket" in err
    err = _train_cli(capsys, tmp_path, f"s3://{b}/VOC", f"s3://{b}/runs")
    assert f"data.root s3://{b}/VOC: nothing there" in err
    s3_env.auth(True)
    try:
        err = _train_cli(capsys, tmp_path, f"s3://{b}/VOCdevkit", f"s3://{b}/runs")
        assert f"storage error: ray.storage_path s3://{b}/runs: access denied" in err
    finally:
        s3_env.auth(False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err = _train_cli(capsys, tmp_path, f"s3://{b}/VOCdevkit", f"s3://{b}/runs")
    assert f"storage error: ray.storage_path s3://{b}/runs: no AWS credentials found" in err
    assert s3_env.keys(b, "runs/") == []  # nothing was written
