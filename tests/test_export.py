"""ONNX export: onnxruntime outputs equal PyTorch's within 1e-4 (dynamic batch), detect on them gives
the same detections, and the priors/meta side files describe the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssd_ray.checkpoint import load_model
from ssd_ray.data.shapes import SHAPE_CLASSES
from ssd_ray.export import export_onnx, sidecar_paths
from ssd_ray.postprocess import detect
from test_predict import save_tiny_checkpoint  # noqa: E402  (tests/ is on sys.path under pytest)

C = len(SHAPE_CLASSES) + 1  # the tiny checkpoint's conf channels: the shape classes + background

ort = pytest.importorskip("onnxruntime", reason="the 'export' extra (onnx, onnxscript, onnxruntime) is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    ckpt = save_tiny_checkpoint(d / "model.pt", seed=3)
    paths = export_onnx(ckpt, d / "tiny.onnx")
    return ckpt, paths


def test_sidecar_names():
    assert sidecar_paths("out/model.onnx") == {"onnx": "out/model.onnx", "priors": "out/model.priors.npy",
                                               "meta": "out/model.meta.json"}


def test_files_and_meta(exported):
    ckpt, paths = exported
    m = load_model(ckpt)
    priors = m.priors
    assert sorted(paths) == ["meta", "onnx", "priors"]
    np.testing.assert_array_equal(np.load(paths["priors"]), priors.numpy())  # [772,4] cxcywh
    meta = json.loads(open(paths["meta"]).read())
    assert meta["class_names"] == m.class_names and meta["num_classes"] == C
    assert meta["input"]["shape"] == ["batch", 3, 96, 96] and meta["input"]["image_size"] == 96
    assert meta["input"]["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["variance"] == [0.1, 0.2]
    assert meta["postprocess"] == {"conf_thresh": 0.05, "nms_thresh": 0.45, "top_k": 20, "nms_top_k": 50,
                                   "clip_before_nms": False}
    # 12*12*6 + 6*6*6 + 3*3*6 + 2*2*6 priors (6 boxes per location with aspect ratio [2])
    assert meta["outputs"] == {"loc": ["batch", 772, 4], "conf": ["batch", 772, C]}


def test_onnxruntime_matches_torch_and_detections_agree(exported):
    ckpt, paths = exported
    m = load_model(ckpt)
    model, priors = m.model, m.priors
    sess = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["loc", "conf"]
    g = torch.Generator().manual_seed(0)
    for batch in (2, 3):  # 3: the batch axis is dynamic (the export example had 2)
        x = torch.randn(batch, 3, 96, 96, generator=g)
        with torch.no_grad():
            loc_t, conf_t = model(x)
        loc_o, conf_o = sess.run(["loc", "conf"], {"images": x.numpy()})
        assert loc_o.shape == (batch, 772, 4) and conf_o.shape == (batch, 772, C)
        np.testing.assert_allclose(loc_o, loc_t.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(conf_o, conf_t.numpy(), atol=1e-4, rtol=0)

    # The documented post-processing on ORT outputs gives the PyTorch detections.
    meta = json.loads(open(paths["meta"]).read())
    pri = torch.from_numpy(np.load(paths["priors"]))
    d_torch = detect(loc_t, conf_t, priors, variance=meta["variance"], **meta["postprocess"])
    d_ort = detect(torch.from_numpy(loc_o), torch.from_numpy(conf_o), pri, variance=meta["variance"],
                   **meta["postprocess"])
    assert sum(len(d["scores"]) for d in d_torch) > 0
    for a, b in zip(d_torch, d_ort):
        torch.testing.assert_close(a["labels"], b["labels"])
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-4, rtol=0)


# ------------------------------------------------------------------ with decoding and NMS in the graph
def _readme_preprocess(images: list[np.ndarray], meta: dict) -> np.ndarray:
    """The README's numpy pre-processing: cv2 bilinear resize to S x S, (pixel * scale - mean) / std, NCHW."""
    import cv2

    size, norm = meta["input"]["image_size"], meta["input"]["normalization"]
    mean, std = np.float32(norm["mean"]), np.float32(norm["std"])
    return np.stack([((cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
                       * np.float32(norm["scale"]) - mean) / std).transpose(2, 0, 1) for im in images])


@pytest.fixture(scope="module")
def exported_detect(tmp_path_factory):
    d = tmp_path_factory.mktemp("export_detect")
    ckpt = save_tiny_checkpoint(d / "model.pt", seed=3)
    return ckpt, export_onnx(ckpt, d / "det.onnx", with_postprocess=True)


@pytest.fixture(scope="module")
def val_images(tmp_path_factory):
    """Shapes val images at assorted non-square sizes (boxes map back with different x and y scales)."""
    import cv2

    from ssd_ray.data.augment import decode_image
    from ssd_ray.data.shapes import write_shapes

    root = write_shapes(tmp_path_factory.mktemp("val"), "voc", 0, 10, seed=2, size=128)
    return [cv2.resize(decode_image(f"{root}/VOC2007/JPEGImages/val_{i:06d}.jpg"), (150 + 13 * i, 110 + 9 * i))
            for i in range(10)]


def test_with_postprocess_graph_and_meta(exported_detect):
    import onnx

    _, paths = exported_detect
    assert sorted(paths) == ["meta", "onnx"]
    graph = onnx.load(paths["onnx"]).graph
    ops = {n.op_type for n in graph.node}
    assert "NonMaxSuppression" in ops and "TopK" in ops
    # Plain ONNX: no custom domain, so onnxruntime (or any runtime) needs nothing from ssd-ray.
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)
    meta = json.loads(open(paths["meta"]).read())
    assert meta["with_postprocess"] and meta["outputs"]["boxes"] == ["batch", 20, 4]  # top_k 20
    sess = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels", "num_detections"]


@pytest.mark.parametrize("score", [0.05, 0.25])
def test_with_postprocess_parity_with_predictor(exported_detect, val_images, score):
    """onnxruntime alone + the README's numpy pre-processing and box mapping = Predictor: the same
    detections (labels, order), boxes within 0.5 px and scores within 1e-4 in original pixels."""
    from ssd_ray.predict import Predictor

    ckpt, paths = exported_detect
    meta = json.loads(open(paths["meta"]).read())
    size = meta["input"]["image_size"]
    sess = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    boxes, scores, labels, num = sess.run(None, {"images": _readme_preprocess(val_images, meta)})
    expected = Predictor.from_checkpoint(ckpt, score_thresh=score, batch_size=4)(val_images)
    counts = []
    for i, (img, exp) in enumerate(zip(val_images, expected)):
        h, w = img.shape[:2]
        n = int(num[i])
        assert np.all(labels[i, n:] == -1) and np.all(scores[i, n:] == 0)  # padding
        keep = scores[i, :n] > score
        got_boxes = boxes[i, :n][keep] * np.float32([w / size, h / size, w / size, h / size])
        counts.append(int(keep.sum()))
        assert keep.sum() == len(exp["scores"]), i
        np.testing.assert_array_equal(labels[i, :n][keep], exp["labels"])
        np.testing.assert_allclose(scores[i, :n][keep], exp["scores"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_boxes, exp["boxes"], atol=0.5, rtol=0)
        assert np.all(got_boxes >= 0) and np.all(got_boxes[:, [0, 2]] <= w) and np.all(got_boxes[:, [1, 3]] <= h)
    assert sum(counts) > 0
    if score > 0.1:  # the higher threshold leaves fewer than top_k on some images: the count matters too
        assert min(counts) < 20


def test_detection_model_matches_detect_in_torch(exported_detect):
    """The exportable module (custom NMS op, eager) gives `detect`'s detections for a random batch."""
    from ssd_ray.export_detect import DetectionModel

    ckpt, _ = exported_detect
    m = load_model(ckpt)
    det = DetectionModel(m.model, m.priors, m.detect_args, m.image_size, m.config.model.num_classes).eval()
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        boxes, scores, labels, num = det(x)
        ref = detect(*m.model(x), m.priors, **m.detect_args.kwargs())
    for i, r in enumerate(ref):
        n = int(num[i])
        assert n == len(r["scores"])
        torch.testing.assert_close(labels[i, :n], r["labels"])
        torch.testing.assert_close(scores[i, :n], r["scores"])
        torch.testing.assert_close(boxes[i, :n], r["boxes"].clamp(0, 1) * 96)


def test_detect_accepts_numpy(exported):
    """ORT outputs straight into detect: numpy in, numpy out, the same detections as with tensors."""
    ckpt, paths = exported
    m = load_model(ckpt)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        loc, conf = m.model(x)
    priors = np.load(paths["priors"])
    from_numpy = detect(loc.numpy(), conf.numpy(), priors, **m.detect_args.kwargs())
    from_torch = detect(loc, conf, m.priors, **m.detect_args.kwargs())
    for a, b in zip(from_numpy, from_torch):
        assert all(isinstance(v, np.ndarray) for v in a.values())
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(a[key], b[key].numpy())
