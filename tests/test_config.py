import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_ray.config import ConfigError, config_from_dict, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def _raw(name="voc300"):
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


def _write(tmp_path, raw):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize("name", ["voc300", "coco300", "voc512"])
def test_shipped_configs_load_and_round_trip(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_reference_values():
    voc, coco = load_config(ROOT / "configs/voc300.yaml"), load_config(ROOT / "configs/coco300.yaml")
    assert voc.model.num_classes == 21 and coco.model.num_classes == 81  # not the reference's 201
    assert voc.train.lr_steps == [80000, 100000, 120000] and voc.train.max_iter == 120000
    assert coco.train.lr_steps == [280000, 360000, 400000] and coco.train.max_iter == 400000
    assert coco.priors.min_sizes == [21, 45, 99, 153, 207, 261]
    for c in (voc, coco):
        assert (c.train.batch_size, c.train.lr, c.train.momentum, c.train.weight_decay, c.train.gamma) == \
            (32, 1e-3, 0.9, 5e-4, 0.1)
        assert c.priors.variance == (0.1, 0.2) and c.priors.clip


@pytest.mark.parametrize("key,value,needle", [
    ("train.lr", 0, "train.lr"),
    ("train.lr", -1e-3, "train.lr"),
    ("loss.neg_pos", 0.5, "loss.neg_pos"),
    ("loss.overlap_thresh", 1.0, "loss.overlap_thresh"),
    ("loss.overlap_thresh", 0, "loss.overlap_thresh"),
    ("priors.variance", [0.1, 0], "priors.variance"),
    ("train.batch_size", "many", "train.batch_size"),
    ("train.bogus", 1, "train.bogus: unknown key"),
    ("priors.steps", [8, 16, 32], "lengths"),
    ("train.lr_steps", [100, 50], "train.lr_steps"),
])
def test_bad_values_name_key_and_value(tmp_path, key, value, needle):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, _raw()), overrides=[f"{key}={yaml.safe_dump(value).strip()}"])
    msg = str(e.value)
    assert needle in msg and str(tmp_path / "c.yaml") in msg
    if "lengths" not in needle and "unknown" not in needle:
        assert repr(value) in msg or str(value) in msg


def test_overrides_apply_with_yaml_types():
    cfg = load_config(ROOT / "configs/voc300.yaml", ["train.lr=2e-3", "loss.neg_pos=4", "data.classes=[a, b]"])
    assert cfg.train.lr == 2e-3 and cfg.loss.neg_pos == 4 and cfg.data.classes == ["a", "b"]
    with pytest.raises(ConfigError, match="key=value"):
        load_config(ROOT / "configs/voc300.yaml", ["train.lr"])


def test_batch_must_divide_by_workers(tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size=32 must divide by every worker count in ray.num_workers=3 "
                                          r"\(it is the global batch\); it does not divide by \[3\]"):
        load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=3"])


def test_elastic_worker_range_from_yaml_or_cli_and_checked_against_the_batch():
    cfg = load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=[1, 2]"])
    assert cfg.ray.num_workers == (1, 2) and cfg.ray.elastic and (cfg.ray.min_workers, cfg.ray.max_workers) == (1, 2)
    # --num-workers 4-8; 840 = lcm(4..8): every count in the range gets an equal share.
    wide = load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=4-8", "train.batch_size=840"])
    assert wide.ray.num_workers == (4, 8)
    assert load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=2-2"]).ray.num_workers == 2  # not elastic
    fixed = load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=8"]).ray
    assert not fixed.elastic and fixed.min_workers == fixed.max_workers == 8
    # 32 images split over 1..8 workers: 3, 5, 6 and 7 leave remainders.
    with pytest.raises(ConfigError, match=r"does not divide by \[3, 5, 6, 7\]"):
        load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=[1, 8]"])
    for bad, why in (("[3, 2]", "1 <= min <= max"), ("[0, 2]", "1 <= min <= max"), ("[1, 2, 4]", "int or \\[min, max\\]")):
        with pytest.raises(ConfigError, match=why):
            load_config(ROOT / "configs/voc300.yaml", [f"ray.num_workers={bad}"])
    from ssd_ray.config import config_from_dict, config_to_dict

    assert config_from_dict(config_to_dict(cfg)) == cfg  # [min, max] round-trips through the resolved YAML


def test_worker_resources_are_custom_and_positive():
    from ssd_ray.train.launch import _scaling_config

    cfg = load_config(ROOT / "configs/voc300.yaml", ["ray.num_workers=[1, 2]", "ray.worker_resources={train_slot: 1}"])
    assert _scaling_config(cfg).resources_per_worker == {"CPU": cfg.ray.cpus_per_worker, "train_slot": 1.0}
    with pytest.raises(ConfigError, match="CPU comes from cpus_per_worker"):
        load_config(ROOT / "configs/voc300.yaml", ["ray.worker_resources={CPU: 2}"])
    with pytest.raises(ConfigError, match=r"worker_resources.train_slot must be > 0, got 0"):
        load_config(ROOT / "configs/voc300.yaml", ["ray.worker_resources={train_slot: 0}"])


def test_num_classes_derived_or_checked():
    cfg = load_config(ROOT / "configs/voc300.yaml", ["model.num_classes=null"])
    assert cfg.with_num_classes(["cat", "dog"]).model.num_classes == 3
    with pytest.raises(ConfigError, match="num_classes=21 disagrees"):
        load_config(ROOT / "configs/voc300.yaml").with_num_classes(["cat", "dog"])


def test_relative_paths_resolve_to_absolute():
    cfg = load_config(ROOT / "configs/voc300.yaml")
    assert Path(cfg.data.root).is_absolute() and Path(cfg.ray.storage_path).is_absolute()


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_cli_exits_2_on_config_error(tmp_path):
    code = "from ssd_ray.cli import load_config_or_exit; load_config_or_exit(%r, ['train.lr=-1'])" % str(
        ROOT / "configs/voc300.yaml")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "train.lr" in r.stderr
