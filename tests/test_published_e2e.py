"""The reproduction path end to end on tiny COCO-format shapes data: `pipelines.evaluate` with a
protocol and `--save-detections` (official results JSON), and fine-tuning from an imported model
(its normalisation kept, training's validation scored against the annotation file)."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_ray import checkpoint as ckpt_io
from ssd_ray.config import config_from_dict, config_to_dict
from ssd_ray.data.shapes import SHAPE_CLASSES, write_shapes
from ssd_ray.model import build_ssd


@pytest.fixture(scope="module")
def coco_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_shapes")
    write_shapes(str(root), "coco", n_train=8, n_val=6, seed=4, size=96)
    return root


def tiny_raw(root, storage) -> dict:
    return {
        "name": "tinycoco",
        "data": {"format": "coco", "root": str(root), "train_sets": ["train"], "val_sets": ["val"],
                 "classes": list(SHAPE_CLASSES), "max_boxes": 8,
                 "augment": {"expand": False, "crop": False, "photometric": False}},
        "model": {"backbone": "light", "min_dim": 64, "width": 8},
        "priors": {"feature_maps": [8, 4, 2, 1], "steps": [8, 16, 32, 64], "min_sizes": [8, 20, 36, 52],
                   "max_sizes": [20, 36, 52, 64], "aspect_ratios": [[2], [2], [2], [2]]},
        "train": {"batch_size": 4, "optimizer": "adamw", "lr_steps": [], "lr": 1e-3, "warmup_iters": 1,
                  "max_iter": 4, "checkpoint_every": 4, "eval_every": 4, "log_every": 2, "eval_batch_size": 4},
        "ray": {"num_workers": 1, "cpus_per_worker": 1, "torch_threads": 1, "data_cpus": 0.5,
                "storage_path": str(storage), "max_failures": 0},
        "mlflow": {"enabled": False},
    }


def model_file(path: Path, raw: dict, normalization: str) -> Path:
    """An untrained light model whose heads give every class a fair share (so it detects plenty)."""
    raw = {**raw, "model": {**raw["model"], "normalization": normalization, "num_classes": len(SHAPE_CLASSES) + 1}}
    cfg = config_from_dict(raw)
    torch.manual_seed(0)
    model = build_ssd(cfg.model, cfg.priors)
    model.reset_head_parameters(None)
    ckpt_io.save(ckpt_io.model_state(model, config_to_dict(cfg), list(SHAPE_CLASSES)), path)
    return path


def test_evaluate_coco_protocol_writes_the_official_results(coco_shapes, tmp_path, capsys):
    import yaml

    from pipelines.evaluate import main

    raw = tiny_raw(coco_shapes, tmp_path / "runs")
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    ckpt = model_file(tmp_path / "imported.pt", raw, "ssd_pytorch")
    out, dets = tmp_path / "eval", tmp_path / "dets.json"
    main(["--config", str(cfg_file), "--checkpoint", str(ckpt), "--num-workers", "1", "--out", str(out),
          "--protocol", "coco", "--postprocess", "torchvision", "--save-detections", str(dets)])
    metrics = json.loads((out / "metrics.json").read_text())
    ann = coco_shapes / "annotations" / "instances_val.json"
    assert metrics["protocol"]["name"] == "coco" and metrics["protocol"]["coco_ground_truth"] == str(ann)
    assert metrics["protocol"]["postprocess"]["nms_top_k"] == 400 and metrics["per_class"] == []
    results = json.loads(dets.read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert metrics["coco"]["AP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert metrics["coco"]["AR100"] == pytest.approx(ev.stats[8], abs=1e-12) and ev.stats[8] > 0
    # nothing is overwritten; VOC-style data cannot give an official results file
    with pytest.raises(SystemExit) as e:
        main(["--config", str(cfg_file), "--checkpoint", str(ckpt), "--num-workers", "1", "--out", str(out),
              "--save-detections", str(dets)])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err


@pytest.mark.slow
def test_finetuning_an_imported_model_keeps_its_normalization(coco_shapes, tmp_path, tmp_path_factory):
    import ray

    from ssd_ray.train.launch import latest_checkpoint, run_training

    raw = tiny_raw(coco_shapes, tmp_path / "runs")
    imported = model_file(tmp_path / "imported.pt", raw, "ssd_pytorch")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        summary = run_training(config_from_dict(raw), init_from=str(imported))
    finally:
        ray.shutdown()
    state = ckpt_io.load(latest_checkpoint(summary.run_dir)[1])
    assert state["normalization"]["name"] == "ssd_pytorch" and state["config"]["model"]["normalization"] == "ssd_pytorch"
    assert ckpt_io.load_model(summary.model_file).normalization["name"] == "ssd_pytorch"
    # training's periodic validation scored COCO-format data against the annotation file
    ann = coco_shapes / "annotations" / "instances_val.json"
    assert summary.final["protocol"]["coco_ground_truth"] == str(ann) and summary.final["coco"] is not None
