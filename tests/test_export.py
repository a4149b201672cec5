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
    assert meta["postprocess"] == {"conf_thresh": 0.05, "nms_thresh": 0.45, "top_k": 20, "nms_top_k": 50}
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
