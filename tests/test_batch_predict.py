"""Batch prediction (`ssd_ray.inference`, `pipelines.predict`): listing, sinks and resume, progress,
the in-process path against `Predictor`, and (slow) the Ray Data path with 2 workers against both."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssd_ray.inference.progress import Progress, format_duration
from ssd_ray.inference.results import ImageResult, pixel_boxes
from ssd_ray.inference.run import fit_cpus, source_blocks
from ssd_ray.inference.sinks import JsonlSink, ParquetSink, PerImageSink, check_out_dir
from ssd_ray.inference.sources import NOT_AN_IMAGE, SourceError, list_images, output_keys
from test_predict import save_tiny_checkpoint  # noqa: E402  (tests/ is on sys.path under pytest)


def _jpeg(path: Path, h: int = 40, w: int = 50, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", seed=3)


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    """10 shapes val images (96 px JPEGs) in a folder of their own."""
    from ssd_ray.data.shapes import write_shapes

    root = write_shapes(str(tmp_path_factory.mktemp("shapes") / "s"), "voc", n_train=0, n_val=10, seed=2, size=96)
    return os.path.join(root, "VOC2007", "JPEGImages")


def _messy_folder(root: Path) -> Path:
    """2 good images, a corrupt JPEG, an empty PNG, a text file and a file without suffix."""
    src = root / "messy"
    _jpeg(src / "a.jpg", seed=1)
    _jpeg(src / "b.png", 30, 60, seed=2)
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG body")
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    (src / "README").write_text("no suffix")
    return src


# ----------------------------------------------------------------------------------------- listing
def test_list_folder_recursive_and_not(tmp_path):
    _jpeg(tmp_path / "b.jpg")
    _jpeg(tmp_path / "a.JPG")  # suffixes compare case-insensitively
    _jpeg(tmp_path / "sub" / "c.png")
    (tmp_path / "x.txt").write_text("x")
    flat = list_images(str(tmp_path))
    assert flat.paths == [str(tmp_path / "a.JPG"), str(tmp_path / "b.jpg")]
    assert flat.keys == ["a", "b"] and flat.not_images == {".txt": 1}
    deep = list_images(str(tmp_path), recursive=True)
    assert deep.paths[-1] == str(tmp_path / "sub" / "c.png") and deep.keys == ["a", "b", "sub/c"]


def test_list_file_of_paths_and_single_image(tmp_path):
    a, b = _jpeg(tmp_path / "imgs" / "a.jpg"), _jpeg(tmp_path / "other" / "b.png")
    lst = tmp_path / "list.txt"
    # Relative entries are relative to the list's folder; comments, blanks and repeats are dropped.
    lst.write_text(f"# my images\nimgs/a.jpg\n\n{b}\n{a}\nimgs/readme.md\n")
    listing = list_images(str(lst))
    assert listing.paths == [a, b]
    assert listing.keys == ["imgs/a", "other/b"]  # relative to the common folder of the entries
    assert listing.not_images == {".md": 1}
    single = list_images(a)
    assert single.paths == [a] and single.keys == ["a"]


def test_output_keys_keep_same_stems_apart():
    assert output_keys(["/r/a.jpg", "/r/a.png", "/r/b.jpg", "/r/s/a.jpg"], "/r") == ["a_jpg", "a_png", "b", "s/a"]


def test_empty_and_missing_sources_are_errors_naming_them(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=f"{empty}.*no image to predict \\(nothing\\)"):
        list_images(str(empty))
    (empty / "n.txt").write_text("")
    reason = NOT_AN_IMAGE.replace("(", ".").replace(")", ".")
    with pytest.raises(SourceError, match=rf"1 file\(s\) left out as {reason}"):
        list_images(str(empty))
    with pytest.raises(SourceError, match="no such file"):
        list_images(str(tmp_path / "missing"))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(SourceError, match="neither an image"):
        list_images(str(tmp_path / "x.csv"))


def test_drawings_may_not_land_among_the_sources(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    listing = list_images(str(tmp_path))
    with pytest.raises(ValueError, match="source folder"):
        check_out_dir(str(tmp_path), listing, recursive=False, draws=True)
    check_out_dir(str(tmp_path), listing, recursive=False, draws=False)  # JSON only: nothing to mix up
    check_out_dir(str(tmp_path / "preds"), listing, recursive=False, draws=True)  # not listed next time
    with pytest.raises(ValueError, match="inside the source folder"):
        check_out_dir(str(tmp_path / "preds"), listing, recursive=True, draws=True)


# ------------------------------------------------------------------------------ results and sinks
def _result(path="/x/a.jpg", key="a", k=2) -> ImageResult:
    boxes = np.array([[1.5, 2.25, 10.0, 20.0], [0.0, 0.0, 5.0, 5.0]][:k], np.float32).reshape(-1, 4)
    return ImageResult(path, key, 50, 40, boxes, np.array([0.9, 0.6][:k], np.float32), np.array([3, 1][:k]),
                       ["triangle", "circle"][:k])


def test_pixel_boxes_hand_worked():
    rel = np.array([[[0.5, 0.25, 1.0, 1.0]], [[-0.1, 0.5, 0.5, 1.2]]], np.float32)  # [2,1,4]; the 2nd leaves the image
    got = pixel_boxes(rel, np.array([200, 10]), np.array([100, 20]))
    np.testing.assert_array_equal(got, [[[100, 25, 200, 100]], [[0, 10, 5, 20]]])  # clipped to 10 x 20
    assert got.dtype == np.float32


def test_jsonl_sink_resumes_and_repairs_a_cut_last_line(tmp_path, caplog):
    sink = JsonlSink(tmp_path)
    sink.write([_result("/x/a.jpg"), _result("/x/b.jpg", "b", 0)])
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert rows[0] == {"image": "/x/a.jpg", "width": 50, "height": 40, "detections": [
        {"box": [1.5, 2.25, 10.0, 20.0], "score": 0.9, "label": "triangle", "label_id": 3},
        {"box": [0.0, 0.0, 5.0, 5.0], "score": 0.6, "label": "circle", "label_id": 1}]}
    assert rows[1]["detections"] == []
    with open(tmp_path / "predictions.jsonl", "a") as f:
        f.write('{"image": "/x/c.jpg", "wid')  # a run killed mid-write
    listing = type("L", (), {"paths": ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"]})()
    with caplog.at_level(logging.WARNING):
        again = JsonlSink(tmp_path)
    assert again.done_mask(listing) == [True, True, False]
    assert any("half-written" in r.getMessage() for r in caplog.records)
    again.write([_result("/x/c.jpg", "c", 1)])
    again.close()
    assert [json.loads(x)["image"] for x in (tmp_path / "predictions.jsonl").read_text().splitlines()] == \
        ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"]
    assert JsonlSink(tmp_path, overwrite=True).done_mask(listing) == [False] * 3
    # A broken line that is not the last is not ours to cut: refuse.
    (tmp_path / "predictions.jsonl").write_text('garbage\n{"image": "/x/a.jpg"}\n')
    with pytest.raises(ValueError, match="line 1 is not a prediction row"):
        JsonlSink(tmp_path)


def test_parquet_sink_round_trip_parts_and_resume(tmp_path):
    import pyarrow.parquet as pq

    sink = ParquetSink(tmp_path, rows_per_part=2)
    sink.write([_result("/x/a.jpg"), _result("/x/b.jpg", "b", 0), _result("/x/c.jpg", "c", 1)])
    (tmp_path / "predictions" / "part-00009.parquet.tmp").write_bytes(b"unfinished")
    sink.close()
    parts = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00009.parquet.tmp"]
    table = pq.read_table(tmp_path / "predictions" / "part-00000.parquet")
    rows = table.to_pylist()
    assert [r["image"] for r in rows] == ["/x/a.jpg", "/x/b.jpg"] and rows[1]["detections"] == []
    d = rows[0]["detections"][0]
    assert d["box"] == [1.5, 2.25, 10.0, 20.0] and d["label"] == "triangle" and d["label_id"] == 3
    assert abs(d["score"] - 0.9) < 1e-7  # float32, not rounded
    resumed = ParquetSink(tmp_path)  # removes the unfinished part, numbers on after the last one
    listing = type("L", (), {"paths": ["/x/a.jpg", "/x/c.jpg", "/x/d.jpg"]})()
    assert resumed.done_mask(listing) == [True, True, False]
    resumed.write([_result("/x/d.jpg", "d")])
    resumed.close()
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert pq.read_table(tmp_path / "predictions").num_rows == 4


def test_per_image_sink_keys_with_subfolders(tmp_path):
    sink = PerImageSink(tmp_path, draw=True)
    r = _result("/src/sub/a.png", "sub/a")
    r.drawn = b"png bytes"
    sink.write([r])
    assert (tmp_path / "sub" / "a.png").read_bytes() == b"png bytes"
    assert json.loads((tmp_path / "sub" / "a.json").read_text())["image"] == "/src/sub/a.png"
    listing = type("L", (), {"keys": ["sub/a", "b"], "__len__": lambda s: 2})()
    assert sink.done_mask(listing) == [True, False]
    assert PerImageSink(tmp_path, overwrite=True).done_mask(listing) == [False, False]


# ---------------------------------------------------------------------------------------- progress
def test_progress_rate_and_eta_hand_worked(caplog):
    now = [100.0]
    p = Progress(total=100, every_s=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="ssd_ray.predict"):
        now[0] = 112.0
        p.update(10)  # first batch after 12 s of start-up: not part of the rate; logged (>= 5 s)
        assert p.first_result_s == 12.0 and p.rate() != p.rate()  # nan
        first = p.line()
        assert first == "10/100 images (10.0 %), 0.8 images/s, ETA 1 min 48 s"  # overall 10/12 s until a 2nd batch
        now[0] = 116.0
        p.update(20)  # 20 images in 4 s since the first batch: 5 images/s, 70 left: 14 s; 4 s since a log: quiet
        assert p.rate() == 5.0
        assert p.line() == "30/100 images (30.0 %), 5.0 images/s, ETA 14 s"
        now[0] = 118.0
        p.update(10)  # 30 in 6 s: 5 images/s, 60 left: 12 s; 6 s since the last line: logged
    assert [r.getMessage() for r in caplog.records] == [first, "40/100 images (40.0 %), 5.0 images/s, ETA 12 s"]
    assert format_duration(3700) == "1 h 01 min" and format_duration(float("nan")) == "?"


def test_fit_cpus_leaves_room_for_a_read_task():
    assert fit_cpus(64, 4) == (1.0, 0.5)  # plenty: a CPU per actor, half per read task
    assert fit_cpus(2, 2) == (0.66, 0.33)  # 2 actors + one share for reading on 2 CPUs: 2 x 0.66 + 2 x 0.33 <= 2
    assert fit_cpus(2, 1) == (1.0, 0.5)
    assert fit_cpus(3, 2) == (1.0, 0.5)
    assert fit_cpus(0, 2) == (1.0, 0.5)  # a head without CPUs: autoscaled workers bring them


def test_source_blocks_hold_whole_batches_and_are_capped(monkeypatch):
    import ssd_ray.inference.run as run
    from ssd_ray.inference.sources import ImageListing

    listing = ImageListing("src", [f"/x/{i}.jpg" for i in range(70)], [str(i) for i in range(70)], "/x")
    # 70 images, batch 4: 18 batches; 1 worker: 4 batches (16 rows) per block -> 5 blocks, the last 6 rows.
    blocks = source_blocks(listing, 4, num_workers=1)
    assert [b.num_rows for b in blocks] == [16, 16, 16, 16, 6]
    assert sum((b["path"].to_pylist() for b in blocks), []) == listing.paths
    assert blocks[1]["key"].to_pylist()[0] == "16"
    # 4 workers want 16 blocks: ceil(18 / 16) = 2 batches (8 rows) per block -> 9 blocks.
    assert [b.num_rows for b in source_blocks(listing, 4, num_workers=4)] == [8] * 8 + [6]
    monkeypatch.setattr(run, "MAX_SOURCE_BLOCKS", 2)  # 18 batches in at most 2 blocks: 9 batches = 36 rows
    assert [b.num_rows for b in source_blocks(listing, 4, num_workers=1)] == [36, 34]


# --------------------------------------------------------------------------- the in-process path
def _rows(out: Path) -> dict[str, dict]:
    return {r["image"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def test_in_process_matches_predictor_on_shapes(checkpoint, shapes_val, tmp_path):
    from pipelines.predict import main
    from ssd_ray.predict import Predictor

    import pyarrow.parquet as pq

    out = tmp_path / "out"
    assert main(["--checkpoint", checkpoint, "--images", shapes_val, "--out", str(out), "--score", "0.2",
                 "--batch-size", "4", "--format", "parquet"]) == 0
    rows = {r["image"]: r for r in pq.read_table(out / "predictions").to_pylist()}
    paths = sorted(str(p) for p in Path(shapes_val).glob("*.jpg"))
    assert sorted(rows) == paths
    ref = Predictor.from_checkpoint(checkpoint, score_thresh=0.2, batch_size=4)(paths)
    total = 0
    for path, det in zip(paths, ref):
        row = rows[path]
        assert (row["width"], row["height"]) == (96, 96)
        got = row["detections"]
        total += len(got)
        assert [d["label_id"] for d in got] == det["labels"].tolist()
        assert [d["label"] for d in got] == det["names"]
        np.testing.assert_allclose([d["score"] for d in got], det["scores"], atol=1e-5)
        np.testing.assert_allclose(np.array([d["box"] for d in got]).reshape(-1, 4), det["boxes"], atol=1e-3)
    assert total > 0


def test_cli_reports_bad_files_and_resumes(checkpoint, tmp_path, caplog):
    """A corrupt JPEG, an empty file, a text file: the run completes and reports them; a re-run
    skips written images and retries the unreadable ones; --overwrite redoes everything."""
    from pipelines.predict import main

    src, out = _messy_folder(tmp_path), tmp_path / "out"
    args = ["--checkpoint", checkpoint, "--images", str(src), "--out", str(out), "--score", "0.1"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "b.json", "b.png", "runs.jsonl",
                                                     "skipped.jsonl"]
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    size = (src / "corrupt.jpg").stat().st_size
    assert {s["image"]: s["reason"] for s in skipped} == {
        str(src / "corrupt.jpg"): f"cannot decode {size} bytes: not an image format cv2 reads",
        str(src / "empty.png"): "empty file (0 bytes)"}
    run = json.loads((out / "runs.jsonl").read_text())
    assert run["listed"] == 4 and run["predicted"] == 2 and run["already_done"] == 0
    assert run["skipped"] == {NOT_AN_IMAGE: 2, "unreadable": 2}
    assert any("2 images read" in r.getMessage() and "2 unreadable skipped" in r.getMessage()
               and "2 files not an image (suffix)" in r.getMessage() for r in caplog.records)

    stamp = (out / "a.json").stat().st_mtime_ns
    assert main(args) == 0  # resume: a and b are done, the two unreadable files are tried again
    run = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert run["already_done"] == 2 and run["predicted"] == 0 and run["skipped"]["unreadable"] == 2
    assert (out / "a.json").stat().st_mtime_ns == stamp
    assert len((out / "skipped.jsonl").read_text().splitlines()) == 2  # this run's report, not appended

    assert main(args + ["--overwrite"]) == 0
    run = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert run["already_done"] == 0 and run["predicted"] == 2


def test_bucket_prefix_source_reads_like_the_local_folder(checkpoint, s3_env, tmp_path):
    """SRC in S3 (a local moto server): the same listing, reports and detections as the local copy,
    rows naming the objects by URI; the Ray read task (`read_resize`) reads the bucket the same way."""
    import uuid

    from pipelines.predict import main
    from ssd_ray.inference.read import read_resize

    src = _messy_folder(tmp_path)
    _jpeg(src / "deep" / "c.jpg", seed=4)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_env.make_bucket(bucket)
    s3_env.upload_dir(src, bucket, "cam/day1")
    uri = f"s3://{bucket}/cam/day1"

    listing = list_images(uri + "/", recursive=True)
    assert listing.paths == [f"{uri}/{n}" for n in ("a.jpg", "b.png", "corrupt.jpg", "deep/c.jpg", "empty.png")]
    assert listing.keys == ["a", "b", "corrupt", "deep/c", "empty"] and listing.not_images == {".txt": 1, "": 1}
    # A list in the bucket: relative entries are relative to its prefix.
    s3_env.client().put_object(Bucket=bucket, Key="cam/lists/sel.txt", Body=b"../day1/a.jpg\n# x\n../day1/deep/c.jpg\n")
    selected = list_images(f"s3://{bucket}/cam/lists/sel.txt")
    assert selected.paths == [f"{uri}/a.jpg", f"{uri}/deep/c.jpg"] and selected.keys == ["a", "deep/c"]
    with pytest.raises(SourceError, match="no such file"):
        list_images(f"s3://{bucket}/nothing/here")

    local_out, bucket_out = tmp_path / "local", tmp_path / "bucket"
    common = ["--checkpoint", checkpoint, "--score", "0.1", "--recursive", "--format", "jsonl"]
    assert main(common + ["--images", str(src), "--out", str(local_out)]) == 0
    assert main(common + ["--images", uri, "--out", str(bucket_out)]) == 0
    local, remote = _rows(local_out), _rows(bucket_out)
    assert sorted(remote) == [f"{uri}/a.jpg", f"{uri}/b.png", f"{uri}/deep/c.jpg"]
    for path, row in remote.items():
        assert row == {**local[str(src / path[len(uri) + 1:])], "image": path}
    skipped = {json.loads(x)["image"]: json.loads(x)["reason"] for x in (bucket_out / "skipped.jsonl").read_text().splitlines()}
    assert skipped[f"{uri}/empty.png"] == "empty file (0 bytes)" and f"{uri}/corrupt.jpg" in skipped
    assert json.loads((bucket_out / "runs.jsonl").read_text())["skipped"] == {NOT_AN_IMAGE: 2, "unreadable": 2}
    assert main(common + ["--images", uri, "--out", str(bucket_out)]) == 0  # resume: the bucket's rows are done
    assert json.loads((bucket_out / "runs.jsonl").read_text().splitlines()[-1])["already_done"] == 3

    batch = read_resize({"path": np.array([f"{uri}/a.jpg", f"{uri}/empty.png"], dtype=object)}, image_size=32)
    assert batch["image"].shape == (2, 32, 32, 3) and (batch["width"][0], batch["height"][0]) == (50, 40)
    assert list(batch["error"]) == ["", "empty file (0 bytes)"]


def test_cli_exit_codes(checkpoint, tmp_path, capsys):
    from pipelines.predict import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--checkpoint", checkpoint, "--images", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert str(empty) in capsys.readouterr().err
    _jpeg(tmp_path / "ok" / "a.jpg")
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"not torch")
    assert main(["--checkpoint", str(bad_ckpt), "--images", str(tmp_path / "ok"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert main(["--checkpoint", checkpoint, "--images", str(tmp_path / "ok"), "--out", str(tmp_path / "o"),
                 "--num-workers", "0"]) == 2
    assert main(["--checkpoint", checkpoint, "--images", str(tmp_path / "ok"), "--out", str(tmp_path / "ok")]) == 2
    assert "source folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written on bad input


# ------------------------------------------------------------------------------ the Ray Data path
@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_two_workers_equal_in_process_and_predictor(checkpoint, shapes_val, tmp_path, ray_two_cpus):
    """The key correctness test: read tasks + 2 model actors + driver writes == in-process == Predictor."""
    import pyarrow.parquet as pq

    from pipelines.predict import main
    from ssd_ray.predict import Predictor

    common = ["--checkpoint", checkpoint, "--images", shapes_val, "--score", "0.2", "--batch-size", "4",
              "--format", "parquet"]
    assert main(common + ["--out", str(tmp_path / "local")]) == 0
    assert main(common + ["--out", str(tmp_path / "ray"), "--num-workers", "2"]) == 0
    local = {r["image"]: r for r in pq.read_table(tmp_path / "local" / "predictions").to_pylist()}
    ray_rows = {r["image"]: r for r in pq.read_table(tmp_path / "ray" / "predictions").to_pylist()}
    paths = sorted(str(p) for p in Path(shapes_val).glob("*.jpg"))
    assert sorted(ray_rows) == sorted(local) == paths
    ref = Predictor.from_checkpoint(checkpoint, score_thresh=0.2, batch_size=4)(paths)
    total = 0
    for path, det in zip(paths, ref):
        for row in (local[path], ray_rows[path]):
            assert (row["width"], row["height"]) == (96, 96)
            got = row["detections"]
            assert [d["label_id"] for d in got] == det["labels"].tolist()
            assert [d["label"] for d in got] == det["names"]
            np.testing.assert_allclose([d["score"] for d in got], det["scores"], atol=1e-5)
            np.testing.assert_allclose(np.array([d["box"] for d in got]).reshape(-1, 4), det["boxes"], atol=1e-3)
        total += len(det["scores"])
    assert total > 0
    run = json.loads((tmp_path / "ray" / "runs.jsonl").read_text())
    assert run["mode"] == "ray, 2 worker(s) (cpu)" and run["predicted"] == 10
    assert "first_result" in run["startup_s"]


@pytest.mark.slow
def test_ray_reports_bad_files_draws_and_resumes(checkpoint, tmp_path, ray_two_cpus):
    """The messy folder through Ray with drawn copies (drawn in tasks, written by the driver): same
    files and JSON as in-process; a re-run with one result removed predicts only that image."""
    from pipelines.predict import main

    src = _messy_folder(tmp_path)
    common = ["--checkpoint", checkpoint, "--images", str(src), "--score", "0.1"]
    assert main(common + ["--out", str(tmp_path / "local")]) == 0
    out = tmp_path / "ray"
    assert main(common + ["--out", str(out), "--num-workers", "2"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.jpg", "a.json", "b.json", "b.png", "runs.jsonl", "skipped.jsonl"]
    for name in ("a.json", "b.json"):
        assert json.loads((out / name).read_text()) == json.loads((tmp_path / "local" / name).read_text())
    # Same drawing: the PNG is lossless, so identical pixels; the JPEG decodes to the same size.
    assert np.array_equal(cv2.imread(str(out / "b.png")), cv2.imread(str(tmp_path / "local" / "b.png")))
    assert cv2.imread(str(out / "a.jpg")).shape == (40, 50, 3)
    assert (out / "skipped.jsonl").read_text().count("\n") == 2
    assert json.loads((out / "runs.jsonl").read_text())["skipped"] == {NOT_AN_IMAGE: 2, "unreadable": 2}

    (out / "b.json").unlink()
    assert main(common + ["--out", str(out), "--num-workers", "2"]) == 0
    run = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert run["already_done"] == 1 and run["predicted"] == 1 and run["skipped"]["unreadable"] == 2
    assert json.loads((out / "b.json").read_text()) == json.loads((tmp_path / "local" / "b.json").read_text())
