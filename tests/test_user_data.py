"""A user's own data: nothing in their folder is written, classes are chosen on purpose, a run whose
data and config disagree stops before training (exit 2) with counts, examples and the way out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.train import main as train_main
from ssd_ray.config import config_from_dict
from ssd_ray.data.checks import classes_line
from ssd_ray.data.sources import load_split
from ssd_ray.errors import DataError
from test_coco import _ann, _write  # noqa: E402  (tests/ is on sys.path under pytest)
from test_voc import _add, _split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under root: bytes and mtime (ns) for files, None for folders."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
    return out


def _voc_dataset(root: Path, names: list[str], objects_per_image=(("widget", 1, 1, 40, 40),), extra=None) -> Path:
    for n in names:
        _add(root, "2007", n, list(objects_per_image), w=64, h=48)
    _split(root, "2007", "train", names)
    _split(root, "2007", "val", names[:2])
    (extra or (lambda r: None))(root)
    return root


def _data_cfg(root: Path, **data) -> object:
    raw = {"name": "t", "data": {"format": "voc", "root": str(root), "train_sets": ["2007/train"],
                                 "val_sets": ["2007/val"], **data},
           "priors": {"feature_maps": [1], "steps": [64], "min_sizes": [16], "max_sizes": [32],
                      "aspect_ratios": [[]]}}
    return config_from_dict(raw).data


# ------------------------------------------------------------------ the generator never touches user data
def test_shapes_config_pointed_at_a_user_dataset_changes_nothing(tmp_path, capsys):
    """The reported data loss: configs/shapes.yaml (with data.synthetic) and data.root = a VOC dataset
    whose files have generator-like names. The run stops with exit 2 before any work; the folder is
    byte-identical (same files, bytes and mtimes) and no run folder is created."""
    user = _voc_dataset(tmp_path / "my_voc", ["train_000000", "train_000001", "val_000000"])
    (user / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("train_000000\n")
    before = _snapshot(user)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        train_main(["--config", str(REPO / "configs" / "shapes.yaml"), "--set", f"data.root={user}",
                    "--set", f"ray.storage_path={runs}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(user) in err and "remove the `synthetic:` entry" in err
    assert "Traceback" not in err and "data.root to a missing or empty folder" in err
    assert _snapshot(user) == before
    assert not runs.exists()


# ------------------------------------------------------------------ classes
def test_voc_without_classes_and_non_pascal_names_stops_listing_them(tmp_path, capsys):
    """Unknown-classes case: every object would be dropped as unknown_class; instead exit 2 with the
    names found and the config line, nothing written."""
    user = _voc_dataset(tmp_path / "data", ["a", "b", "c"],
                        objects_per_image=[("widget", 1, 1, 40, 40), ("gadget", 5, 5, 30, 30), ("person", 2, 2, 9, 9)])
    before = _snapshot(user)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text((REPO / "configs" / "shapes.yaml").read_text().replace(
        "  synthetic: {train: 4000, val: 300, seed: 0, size: 256}\n", ""))
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        train_main(["--config", str(cfg), "--set", f"data.root={user}", "--set", f"ray.storage_path={runs}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "gadget (3), widget (3)" in err  # the non-Pascal names, with object counts
    assert "classes: [gadget, person, widget]" in err  # the line to put in the config
    assert "Traceback" not in err
    assert _snapshot(user) == before and not runs.exists()

    # The suggested line works as given.
    data = _data_cfg(user, classes=["gadget", "person", "widget"])
    ds = load_split(data, "train")
    assert ds.class_names == ["gadget", "person", "widget"] and not ds.skipped


def test_voc_pascal_names_use_the_pascal_classes(tmp_path):
    user = _voc_dataset(tmp_path, ["a", "b"], objects_per_image=[("dog", 1, 1, 40, 40), ("person", 2, 2, 9, 9)])
    ds = load_split(_data_cfg(user), "train")
    assert len(ds.class_names) == 20 and ds.class_names[11] == "dog"


def test_classes_line_quotes_what_yaml_needs():
    assert classes_line(["car", "traffic light", "yes", "a: b"]) == "classes: [car, traffic light, 'yes', 'a: b']"


def test_voc_subset_leaves_other_classes_out_on_purpose(tmp_path):
    """data.classes as a subset: other names are excluded_class (not bad records), even when they are
    most of the objects; a listed name that no object carries stops the run."""
    user = _voc_dataset(tmp_path, ["a", "b", "c"], objects_per_image=[
        ("dog", 1, 1, 40, 40), ("cat", 2, 2, 30, 30), ("bird", 3, 3, 20, 20), ("person", 2, 2, 9, 9)])
    ds = load_split(_data_cfg(user, classes=["person"]), "train")
    assert ds.skipped.summary() == {"excluded_class": 9}
    assert dict(ds.skipped.keys["excluded_class"]) == {"dog": 3, "cat": 3, "bird": 3}
    with pytest.raises(DataError, match=r"lists \['Person'\].*person \(3\)"):
        load_split(_data_cfg(user, classes=["Person", "dog"]), "train")  # a spelling that matches nothing
    ds = load_split(_data_cfg(user, classes=["Person", "dog"], accept_bad_records=True), "train")
    assert ds.class_names == ["Person", "dog"]


def test_coco_classes_select_a_subset_in_config_order(tmp_path):
    data = {
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "images": [{"id": 7, "file_name": "a.jpg", "width": 640, "height": 480},
                   {"id": 8, "file_name": "b.jpg", "width": 100, "height": 100}],
        "annotations": [_ann(1, 7, 3, [64, 48, 320, 240]), _ann(2, 7, 90, [0, 0, 640, 480]),
                        _ann(3, 7, 1, [6, 4, 10, 10]), _ann(4, 8, 90, [1, 1, 5, 5])],
    }
    _write(tmp_path, data, split="train")
    _write(tmp_path, data, split="val")
    base = {"format": "coco", "train_sets": ["train"], "val_sets": ["val"]}
    cfg = _data_cfg(tmp_path, **base, classes=["car", "person"])
    ds = load_split(cfg, "train")
    assert ds.class_names == ["car", "person"] and ds.category_ids == [3, 1]
    rec = {r.image_id: r for r in ds.records}
    assert rec["7"].labels.tolist() == [0, 1] and len(rec["8"].boxes) == 0  # toothbrush left out
    assert ds.skipped.summary() == {"excluded_class": 2}
    # Without data.classes: every category, by id.
    assert load_split(_data_cfg(tmp_path, **base), "train").class_names == ["person", "car", "toothbrush"]
    with pytest.raises(DataError, match=r"(?s)\[.bus.\].*car, person, toothbrush"):
        load_split(_data_cfg(tmp_path, **base, classes=["car", "bus"]), "train")


# ------------------------------------------------------------------ the bad-records gate
def _with_bad_xml(n_bad: int):
    def extra(root: Path):
        for i in range(n_bad):
            (root / "VOC2007" / "Annotations" / f"bad{i}.xml").write_text("<annotation><size>")  # truncated
        split = root / "VOC2007" / "ImageSets" / "Main" / "train.txt"
        split.write_text(split.read_text() + "".join(f"bad{i}\n" for i in range(n_bad)))
    return extra


def test_gate_stops_with_counts_by_reason_and_examples(tmp_path):
    user = _voc_dataset(tmp_path, [f"ok{i}" for i in range(9)], objects_per_image=[("widget", 1, 1, 40, 40)],
                        extra=_with_bad_xml(2))  # 2 of 11 images unreadable: 18 %
    cfg = _data_cfg(user, classes=["widget"])
    with pytest.raises(DataError) as e:
        load_split(cfg, "train")
    msg = str(e.value)
    assert "2 of 11 images (18.2 %)" in msg and "bad_xml: 2 images" in msg and "bad0.xml" in msg
    assert "data.accept_bad_records: true" in msg
    # The flag: go on without them.
    ds = load_split(_data_cfg(user, classes=["widget"], accept_bad_records=True), "train")
    assert len(ds) == 9
    # A looser limit.
    assert len(load_split(_data_cfg(user, classes=["widget"], bad_records_limit=0.2), "train")) == 9


def test_gate_ignores_clipped_boxes_and_counts_malformed_ones(tmp_path):
    user = _voc_dataset(tmp_path, [f"i{i}" for i in range(4)], objects_per_image=[
        ("widget", 30, 30, 90, 90),  # past the 64x48 image: clipped and kept, not a bad record
        ("widget", 1, 1, 20, 20)])
    ds = load_split(_data_cfg(user, classes=["widget"]), "train")
    assert ds.skipped["box_clipped"] == 4 and sum(len(r.boxes) for r in ds.records) == 8
    _add(user, "2007", "i0", [("widget", 1, 1, 20, 20), ("widget", "x", 1, 5, 5)], w=64, h=48)  # 1 of 8 malformed
    with pytest.raises(DataError, match=r"(?s)1 of 8 objects \(12.5 %\).*bad_box: 1 object"):
        load_split(_data_cfg(user, classes=["widget"]), "train")


def test_no_object_left_is_always_an_error(tmp_path):
    user = _voc_dataset(tmp_path, ["a", "b"], objects_per_image=[("widget", 1, 1, 40, 40)])
    with pytest.raises(DataError, match="no object is left to train on"):
        load_split(_data_cfg(user, classes=["gizmo"], accept_bad_records=True), "train")


def test_storage_path_inside_data_root_is_refused(tmp_path):
    from ssd_ray.config import ConfigError, load_config

    data = tmp_path / "data"
    with pytest.raises(ConfigError, match="lies inside data.root"):
        load_config(REPO / "configs" / "shapes.yaml", [f"data.root={data}", f"ray.storage_path={data / 'runs'}"])
    cfg = load_config(REPO / "configs" / "shapes.yaml", [f"data.root={data}", f"ray.storage_path={tmp_path / 'data_runs'}"])
    assert cfg.ray.storage_path == str(tmp_path / "data_runs")  # a sibling whose name starts the same is fine
