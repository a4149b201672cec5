"""Synthetic shapes: determinism, readability by both readers, statistics, and tight boxes."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pipelines.make_shapes import main as make_shapes_main
from ssd_ray.data.coco import read_coco
from ssd_ray.data.shapes import (_MIN_CONTRAST, SHAPE_CLASSES, _contrasting_colour, find_existing, render_image,
                                 write_shapes)
from ssd_ray.data.voc import read_voc

N_TRAIN, N_VAL, SEED = 24, 6, 3


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> str:
    return write_shapes(tmp_path_factory.mktemp("voc"), "voc", N_TRAIN, N_VAL, SEED)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> str:
    return write_shapes(tmp_path_factory.mktemp("coco"), "coco", N_TRAIN, N_VAL, SEED)


@pytest.fixture(scope="module")
def rendered() -> list:
    return [render_image(SEED, 0, i) for i in range(200)]


def test_same_seed_same_bytes_and_independent_of_count(tmp_path, voc_root):
    again = write_shapes(tmp_path / "again", "voc", N_TRAIN, N_VAL, SEED)
    a, b = _files(Path(voc_root)), _files(Path(again))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    fewer = _files(Path(write_shapes(tmp_path / "fewer", "voc", 5, 2, SEED)))
    for k in ("VOC2007/JPEGImages/train_000004.jpg", "VOC2007/Annotations/val_000001.xml"):
        assert fewer[k] == a[k]  # image i does not depend on how many images are written
    other = _files(Path(write_shapes(tmp_path / "other", "voc", 5, 0, SEED + 1)))
    assert other["VOC2007/JPEGImages/train_000000.jpg"] != a["VOC2007/JPEGImages/train_000000.jpg"]


def test_voc_layout_loads_with_reader(voc_root):
    train = read_voc(voc_root, [("2007", "train")], class_names=SHAPE_CLASSES)
    val = read_voc(voc_root, [("2007", "val")], class_names=SHAPE_CLASSES)
    both = read_voc(voc_root, [("2007", "trainval")], class_names=SHAPE_CLASSES)
    assert (len(train), len(val), len(both)) == (N_TRAIN, N_VAL, N_TRAIN + N_VAL)
    assert not train.skipped and not val.skipped
    for r in both.records:
        assert (r.width, r.height) == (256, 256) and os.path.isfile(r.path)
        assert np.all((r.boxes >= 0) & (r.boxes <= 1))
        assert np.all(r.boxes[:, 2:] > r.boxes[:, :2])
    # The written boxes are the rendered ones: 1-based inclusive XML read back = px / 256.
    for i in (0, 1, 2):
        ren = render_image(SEED, 0, i)
        np.testing.assert_allclose(train.records[i].boxes, ren.boxes_px / 256, rtol=1e-6)
        np.testing.assert_array_equal(train.records[i].labels, ren.labels)


def test_voc_xml_is_complete(voc_root):
    root = ET.parse(os.path.join(voc_root, "VOC2007", "Annotations", "train_000000.xml")).getroot()
    assert root.findtext("filename") == "train_000000.jpg"
    assert (root.findtext("size/width"), root.findtext("size/height"), root.findtext("size/depth")) == ("256", "256", "3")
    objs = root.findall("object")
    assert objs, "pick a seed whose first image has objects"
    for o in objs:
        assert o.findtext("name") in SHAPE_CLASSES
        assert (o.findtext("pose"), o.findtext("truncated"), o.findtext("difficult")) == ("Unspecified", "0", "0")
        x1, y1, x2, y2 = (int(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        assert 1 <= x1 <= x2 <= 256 and 1 <= y1 <= y2 <= 256


def test_coco_layout_loads_with_reader(coco_root, voc_root):
    json_files = sorted(str(p.relative_to(coco_root)) for p in Path(coco_root).rglob("*.json"))
    # the annotation files are the only JSON besides the root's hidden stamp
    assert json_files == [".shapes_meta.json", "annotations/instances_train.json", "annotations/instances_val.json"]
    train, val = read_coco(coco_root, "train"), read_coco(coco_root, "val")
    assert (len(train), len(val)) == (N_TRAIN, N_VAL)
    assert train.class_names == list(SHAPE_CLASSES) and train.category_ids == list(range(1, len(SHAPE_CLASSES) + 1))
    assert not train.skipped and not val.skipped
    assert all(os.path.isfile(r.path) for r in train.records + val.records)
    assert train.records[0].image_id == "1" and val.records[0].image_id == "1000001"  # unique across splits
    # same seed -> the COCO boxes equal the VOC boxes (two encodings of the same pixels)
    voc = read_voc(voc_root, [("2007", "val")], class_names=SHAPE_CLASSES)
    for c, v in zip(val.records, voc.records):
        np.testing.assert_allclose(c.boxes, v.boxes, rtol=1e-6)
        np.testing.assert_array_equal(c.labels, v.labels)


def test_statistics(rendered):
    counts = [len(r.labels) for r in rendered]
    assert max(counts) <= 6
    n_empty = sum(c == 0 for c in counts)
    assert 1 <= n_empty <= 30  # ~5% of 200 = 10
    labels = np.concatenate([r.labels for r in rendered])
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))  # every class appears
    boxes = np.concatenate([r.boxes_px for r in rendered])
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert (side < 32).mean() > 0.1 and (side > 128).sum() >= 10  # many small, some large
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 256)


def test_boxes_are_tight_around_visible_pixels(rendered):
    for r in rendered[:40]:
        for i, (x0, y0, x1, y1) in enumerate(r.boxes_px):
            ys, xs = np.nonzero(r.owner == i)
            # the box is exactly the bounding box of the object's visible pixels
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
            diff = np.abs(r.image.astype(int) - r.background.astype(int)).sum(axis=2)
            inside = (r.owner == i) & (diff > 0)
            # each edge of the box touches drawn pixels that differ from the background
            assert inside[y0, x0:x1].any() and inside[y1 - 1, x0:x1].any()
            assert inside[y0:y1, x0].any() and inside[y0:y1, x1 - 1].any()
            assert r.areas[i] == (r.owner == i).sum() > 0


def test_contrast_against_what_is_underneath(rendered):
    rng = np.random.default_rng(0)
    for under in [np.array([127.5, 127.5, 127.5]), np.zeros(3), np.full(3, 255.0), *rng.uniform(0, 255, (50, 3))]:
        assert np.linalg.norm(_contrasting_colour(rng, under) - under) >= _MIN_CONTRAST
    dist = []
    for r in rendered[:40]:
        for i in range(len(r.labels)):
            m = r.owner == i
            assert np.all(r.image[m] == r.image[m][0])  # flat fill, no anti-aliased edge pixels
            dist.append(np.linalg.norm(r.image[m][0].astype(float) - r.background[m].mean(axis=0)))
    # Painted over earlier shapes the distance to the *background* can be lower; typically it is large.
    assert np.median(dist) > _MIN_CONTRAST


def test_find_existing_and_cli_skip(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["--out", str(out), "--format", "coco", "--train", "4", "--val", "2", "--seed", "1"]
    assert make_shapes_main(args) == str(out)
    assert "wrote shapes dataset" in capsys.readouterr().out
    assert find_existing(out, "coco", 4, 2, 1) == str(out)
    assert find_existing(out, "coco", 4, 2, 2) is None  # other seed
    stamp = json.loads((out / ".shapes_meta.json").read_text())
    assert stamp["n_train"] == 4 and stamp["format"] == "coco"
    make_shapes_main(args)
    assert "not regenerating" in capsys.readouterr().out
    (out / "images" / "train" / "000003.jpg").unlink()  # incomplete -> regenerate
    assert find_existing(out, "coco", 4, 2, 1) is None
    make_shapes_main(args)
    assert "wrote shapes dataset" in capsys.readouterr().out
    assert (out / "images" / "train" / "000003.jpg").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_shapes(tmp_path, "yolo", 1, 1, 0)
    with pytest.raises(ValueError, match="counts"):
        write_shapes(tmp_path, "voc", -1, 1, 0)


def test_parallel_rendering_writes_the_same_files(tmp_path, monkeypatch):
    import ssd_ray.data.shapes as shapes

    serial = write_shapes(str(tmp_path / "serial"), "voc", n_train=12, n_val=4, seed=5, size=64, workers=1)
    monkeypatch.setattr(shapes, "_PARALLEL_MIN_IMAGES", 0)  # use the process pool even for 16 images
    pooled = write_shapes(str(tmp_path / "pooled"), "voc", n_train=12, n_val=4, seed=5, size=64, workers=2)
    files = sorted(p.relative_to(serial) for p in Path(serial).rglob("*") if p.is_file())
    assert len(files) == 16 * 2 + 3 + 1  # jpg + xml per image, train/val/trainval lists, the stamp
    assert files == sorted(p.relative_to(pooled) for p in Path(pooled).rglob("*") if p.is_file())
    for f in files:
        assert (Path(serial) / f).read_bytes() == (Path(pooled) / f).read_bytes(), f


# ------------------------------------------------------------------ where the generator may write
def test_generator_refuses_a_folder_it_did_not_write(tmp_path):
    from ssd_ray.data.shapes import NotGeneratorFolderError, target_problem

    user = tmp_path / "mine"
    (user / "VOC2007" / "JPEGImages").mkdir(parents=True)
    (user / "VOC2007" / "JPEGImages" / "train_000000.jpg").write_bytes(b"my own photo")  # a generator-like name
    (user / "notes.txt").write_text("keep me")
    before = _files(user)
    assert "no .shapes_meta.json stamp" in target_problem(user)
    with pytest.raises(NotGeneratorFolderError, match=str(user)):
        write_shapes(user, "voc", 4, 2, SEED)
    assert _files(user) == before  # not one byte written, renamed or removed
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotGeneratorFolderError, match="not a folder"):
        write_shapes(tmp_path / "a_file", "voc", 4, 2, SEED)
    # Missing and empty folders are fine.
    assert target_problem(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert target_problem(tmp_path / "empty") is None


def test_stamp_in_progress_first_complete_last(tmp_path, monkeypatch):
    """An interrupted generation leaves an "in_progress" stamp: not complete for find_existing, but the
    generator's own folder, so the next run redoes it."""
    import ssd_ray.data.shapes as shapes

    out = tmp_path / "s"
    seen = []
    real = shapes._write_voc

    def interrupted(o, *args, **kwargs):
        seen.append(json.loads((out / ".shapes_meta.json").read_text())["status"])  # stamp exists before any image
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_write_voc", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_shapes(out, "voc", 3, 1, SEED)
    assert seen == ["in_progress"]
    assert json.loads((out / ".shapes_meta.json").read_text())["status"] == "in_progress"
    assert find_existing(out, "voc", 3, 1, SEED) is None
    monkeypatch.setattr(shapes, "_write_voc", real)
    write_shapes(out, "voc", 3, 1, SEED)  # allowed: the folder carries the generator's stamp
    assert json.loads((out / ".shapes_meta.json").read_text())["status"] == "complete"
    assert find_existing(out, "voc", 3, 1, SEED) == str(out)


def test_stamp_without_status_reads_as_complete(tmp_path):
    """Folders written before the in-progress stamp (stamp written last, no status) stay usable."""
    out = Path(write_shapes(tmp_path / "old", "voc", 3, 1, SEED))
    stamp = json.loads((out / ".shapes_meta.json").read_text())
    del stamp["status"]
    (out / ".shapes_meta.json").write_text(json.dumps(stamp))
    assert find_existing(out, "voc", 3, 1, SEED) == str(out)


def test_make_shapes_cli_refuses_a_user_folder(tmp_path, capsys):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(SystemExit) as e:
        make_shapes_main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--force"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "missing or empty folder" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["photo.jpg"]
