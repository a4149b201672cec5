"""Predictor (pixel boxes, hand-worked case, parity with predict_records), the predict CLI, and drawing.

Also home of `tiny_config` / `save_tiny_checkpoint`: a light SSD at 96 px with random weights, the
checkpoint test_export.py and test_distributed_eval.py use too (no training needed).
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from ssd_ray.checkpoint import model_state, save
from ssd_ray.config import config_from_dict, config_to_dict
from ssd_ray.data.shapes import SHAPE_CLASSES
from ssd_ray.evaluate.visualize import detection_grid, draw_detections
from ssd_ray.model import build_ssd
from ssd_ray.postprocess import DetectArgs
from ssd_ray.predict import Predictor


def tiny_config(root: str = "/nonexistent", **postprocess) -> dict:
    """Light backbone at 96 px: maps 12, 6, 3, 2 (strides 8, 16, 32, 48) -> 772 priors, 7 shapes + background."""
    return {
        "name": "tiny",
        "data": {"format": "voc", "root": str(root), "train_sets": ["2007/val"], "val_sets": ["2007/val"],
                 "classes": list(SHAPE_CLASSES)},
        "model": {"backbone": "light", "min_dim": 96, "width": 8, "num_classes": len(SHAPE_CLASSES) + 1},
        "priors": {"feature_maps": [12, 6, 3, 2], "steps": [8, 16, 32, 48], "min_sizes": [10, 24, 45, 70],
                   "max_sizes": [24, 45, 70, 96], "aspect_ratios": [[2], [2], [2], [2]]},
        "postprocess": {"conf_thresh": 0.05, "nms_thresh": 0.45, "top_k": 20, "nms_top_k": 50, **postprocess},
        "train": {"max_iter": 10, "warmup_iters": 0, "lr_steps": [5], "eval_batch_size": 3},
        "ray": {"num_workers": 1, "data_cpus": 1},
        "mlflow": {"enabled": False},
    }


def save_tiny_checkpoint(path, seed: int = 0) -> str:
    """Random-weight model file. Heads get zero bias instead of the 0.99 background prior, so class
    scores sit near 1/8 and vary across priors: plenty of detections above conf_thresh 0.05."""
    cfg = config_from_dict(tiny_config())
    torch.manual_seed(seed)
    model = build_ssd(cfg.model, cfg.priors)
    model.reset_head_parameters(None)
    save(model_state(model, config_to_dict(cfg), list(SHAPE_CLASSES)), path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------- Predictor
class _FixedOutputs(nn.Module):
    """Stand-in network: the same `loc [B,P,4]`, `conf [B,P,C]` for every image."""

    def __init__(self, loc, conf):
        super().__init__()
        self.loc, self.conf = loc, conf

    def forward(self, x):
        b = x.shape[0]
        return self.loc.expand(b, -1, -1), self.conf.expand(b, -1, -1)


def test_predictor_hand_worked_pixel_boxes():
    # Two priors (cx, cy, w, h), zero offsets: decoded boxes are the priors themselves.
    priors = torch.tensor([[0.5, 0.5, 0.5, 0.25],    # xyxy [0.25, 0.375, 0.75, 0.625]
                           [0.95, 0.1, 0.2, 0.4]])   # xyxy [0.85, -0.1, 1.05, 0.3]: leaves the image
    loc = torch.zeros(1, 2, 4)
    # 3 classes (background, a, b). Prior 0: class a with logit 5 -> softmax [1, e^5, 1]/(e^5+2) = 0.98670.
    # Prior 1: class b with logit 3 -> e^3/(e^3+2) = 0.90940. Other scores <= 0.05, below the threshold.
    conf = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 0.0, 3.0]]])
    args = DetectArgs(conf_thresh=0.01, nms_thresh=0.45, top_k=10, nms_top_k=10)
    pred = Predictor(_FixedOutputs(loc, conf), priors, ["a", "b"], image_size=32, detect_args=args, score_thresh=0.5)
    [det] = pred(_image(100, 200))  # H=100, W=200
    assert det["boxes"].dtype == np.float32 and det["boxes"].shape == (2, 4)
    assert det["scores"].dtype == np.float32 and det["labels"].dtype == np.int64
    np.testing.assert_allclose(det["scores"], [np.exp(5) / (np.exp(5) + 2), np.exp(3) / (np.exp(3) + 2)], rtol=1e-5)
    np.testing.assert_array_equal(det["labels"], [1, 2])
    assert det["names"] == ["a", "b"]
    # [0.25, 0.375, 0.75, 0.625] * [200, 100, 200, 100] = [50, 37.5, 150, 62.5]
    # [0.85, -0.1, 1.05, 0.3] clipped to [0.85, 0, 1, 0.3] * scale = [170, 0, 200, 30]
    np.testing.assert_allclose(det["boxes"], [[50, 37.5, 150, 62.5], [170, 0, 200, 30]], atol=1e-4)

    # score_thresh 0.95 keeps only the 0.9867 detection.
    pred.score_thresh = 0.95
    [det] = pred(_image(100, 200))
    np.testing.assert_array_equal(det["labels"], [1])


def test_predictor_on_checkpoint_shapes_and_bounds(checkpoint):
    pred = Predictor.from_checkpoint(checkpoint, score_thresh=0.1, batch_size=2)
    assert pred.image_size == 96 and pred.class_names == list(SHAPE_CLASSES)
    images = [_image(80, 120, 1), _image(150, 60, 2), _image(96, 96, 3)]  # 3 images: batches of 2 and 1
    dets = pred(images)
    assert len(dets) == 3
    total = 0
    for img, det in zip(images, dets):
        h, w = img.shape[:2]
        k = len(det["scores"])
        total += k
        assert det["boxes"].shape == (k, 4) and det["boxes"].dtype == np.float32
        assert det["labels"].shape == (k,) and det["labels"].dtype == np.int64
        assert len(det["names"]) == k
        assert np.all(det["scores"] > 0.1) and np.all(np.diff(det["scores"]) <= 0)  # highest first
        assert np.all((det["labels"] >= 1) & (det["labels"] <= len(SHAPE_CLASSES)))
        assert np.all(det["boxes"] >= 0) and np.all(det["boxes"][:, [0, 2]] <= w) and np.all(det["boxes"][:, [1, 3]] <= h)
        assert np.all(det["boxes"][:, 2:] >= det["boxes"][:, :2])
    assert total > 0  # the random model does detect something, so the checks above bite
    # A single image (not in a list) gives a one-element list, the same as in a list.
    [single] = pred(images[0])
    np.testing.assert_allclose(single["boxes"], dets[0]["boxes"], atol=1e-3)  # batch of 1 vs 2: float noise


def test_predictor_matches_predict_records(checkpoint, tmp_path):
    """Same file through Predictor (pixels) and evaluation's predict_records (relative): same boxes."""
    from ssd_ray.checkpoint import load_model
    from ssd_ray.data.records import ImageRecord
    from ssd_ray.evaluate.predict import predict_records

    path = tmp_path / "a.png"  # PNG: lossless, both read identical pixels
    cv2.imwrite(str(path), _image(70, 130, 5))
    m = load_model(checkpoint)
    rec = ImageRecord("a", str(path), 130, 70, np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    # The checkpoint's post-processing settings (tiny_config) with its conf_thresh 0.05.
    assert m.detect_args == DetectArgs(conf_thresh=0.05, nms_thresh=0.45, top_k=20, nms_top_k=50)
    [ref] = predict_records(m.model, m.priors, [rec], 96, detect_args=m.detect_args)
    assert len(ref["scores"]) == 20
    # A threshold halfway between the 10th and 11th score keeps exactly the first 10.
    thresh = float(ref["scores"][9] + ref["scores"][10]) / 2
    pred = Predictor.from_checkpoint(checkpoint, score_thresh=thresh)
    [det] = pred(str(path))
    assert len(det["scores"]) == 10
    np.testing.assert_allclose(det["boxes"], ref["boxes"][:10] * [130, 70, 130, 70], atol=1e-3)
    np.testing.assert_allclose(det["scores"], ref["scores"][:10], rtol=1e-6)
    np.testing.assert_array_equal(det["labels"], ref["labels"][:10])


def test_predictor_rejects_bad_input(checkpoint, tmp_path):
    pred = Predictor.from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="uint8"):
        pred(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H,W,3\]"):
        pred(np.zeros((10, 10), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        pred([str(bad)])
    with pytest.raises(TypeError, match="image 0"):
        pred([42])


def test_predict_paths_keeps_order_and_reports_errors(checkpoint, tmp_path):
    good = []
    for i in range(3):
        p = tmp_path / f"g{i}.png"
        cv2.imwrite(str(p), _image(50, 40, i))
        good.append(str(p))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    pred = Predictor.from_checkpoint(checkpoint, score_thresh=0.1, batch_size=2)
    results = list(pred.predict_paths([good[0], str(bad), good[1], good[2]]))
    assert [r.path for r in results] == [good[0], str(bad), good[1], good[2]]
    assert results[1].error is not None and "bad.jpg" in results[1].error and results[1].detections is None
    for r in (results[0], results[2], results[3]):
        assert r.error is None and r.image.shape == (50, 40, 3)
    # Same detections as predicting the good images directly.
    direct = pred(good)
    for r, d in zip([results[0], results[2], results[3]], direct):
        np.testing.assert_array_equal(r.detections["boxes"], d["boxes"])


# ----------------------------------------------------------------------------------- predict CLI
def test_predict_cli_writes_json_and_images_and_skips_corrupt(checkpoint, tmp_path, caplog):
    from pipelines.predict import main

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "one.jpg"), cv2.cvtColor(_image(60, 90, 1), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "two.png"), _image(100, 80, 2))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (src / "notes.txt").write_text("not an image: ignored")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = main(["--checkpoint", checkpoint, "--images", str(src), "--out", str(out), "--score", "0.1",
                   "--batch-size", "4"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.jpg", "one.json", "runs.jsonl", "skipped.jsonl",
                                                     "two.json", "two.png"]
    assert json.loads((out / "skipped.jsonl").read_text())["image"] == str(src / "broken.jpg")
    data = json.loads((out / "one.json").read_text())
    assert data["image"] == str(src / "one.jpg") and (data["width"], data["height"]) == (90, 60)
    assert data["detections"], "random weights at score 0.1 still give detections"
    for d in data["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 90 and 0 <= y1 <= y2 <= 60
        assert d["score"] > 0.1 and d["label"] == SHAPE_CLASSES[d["label_id"] - 1]
    drawn = cv2.imread(str(out / "two.png"))
    assert drawn.shape == (100, 80, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("broken.jpg" in m for m in warnings)
    summary = [r.getMessage() for r in caplog.records if "done:" in r.getMessage()]
    assert summary and "2 images read" in summary[0] and "1 unreadable skipped" in summary[0]


def test_predict_cli_fails_only_when_nothing_reads(checkpoint, tmp_path):
    from pipelines.predict import main

    bad = tmp_path / "only.jpg"
    bad.write_bytes(b"nope")
    assert main(["--checkpoint", checkpoint, "--images", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert main(["--checkpoint", checkpoint, "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


# ------------------------------------------------------------------------------------- drawing
def test_draw_detections_changes_pixels_only_near_boxes():
    img = np.full((60, 80, 3), 128, np.uint8)
    out = draw_detections(img, [[10, 10, 40, 30]], ["circle"], [0.9], gt_boxes_px=[[50, 35, 70, 55]])
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, np.full((60, 80, 3), 128, np.uint8))  # input untouched
    assert not np.array_equal(out[10, 10:40], img[10, 10:40])  # top edge of the prediction
    assert tuple(out[45, 50]) == (0, 200, 0)  # left edge of the ground truth: green
    assert np.array_equal(out[20, 60], img[20, 60])  # far from both boxes: unchanged
    # Nothing to draw: an identical copy.
    assert np.array_equal(draw_detections(img, np.zeros((0, 4)), [], []), img)
    with pytest.raises(ValueError, match="lengths must agree"):
        draw_detections(img, [[0, 0, 5, 5]], [], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        draw_detections(img, [[0, 0, np.nan, 5]], ["a"], [0.5])


def test_detection_grid_layout():
    imgs = [np.full((30, 50, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)]
    boxes = [np.array([[5, 5, 20, 20]], np.float32)] + [np.zeros((0, 4), np.float32)] * 4
    grid = detection_grid(imgs, boxes, [["a"]] + [[]] * 4, [[0.5]] + [[]] * 4, tile=32, nrow=4)
    # 4 tiles per row, 2 rows; make_grid pads 2 px around every tile: (32+2)*4+2 = 138 wide, (32+2)*2+2 = 70 high.
    assert grid.shape == (70, 138, 3) and grid.dtype == np.uint8
    assert tuple(grid[2 + 16, 34 + 2 + 16]) == (20, 20, 20)  # centre of tile 2: untouched fill
