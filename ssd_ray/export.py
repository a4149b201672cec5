"""ONNX export of a trained SSD network, with the priors and metadata its consumers need.

    paths = export_onnx("runs/<run>/outputs/model.pt", "model.onnx")
    # {"onnx": "model.onnx", "priors": "model.priors.npy", "meta": "model.meta.json"}

What the ONNX graph is (the network only, `torch.onnx.export` with the dynamo exporter):

* input  `images` float32 `[B,3,S,S]`, **already normalised**: RGB, resized to S x S (cv2
  INTER_LINEAR), `(pixel * scale - mean) / std` with the model's own scale/mean/std written in the
  meta file (`input.normalization`: ssd-ray's ImageNet statistics, or ssd.pytorch's / torchvision's
  for imported models; what `ssd_ray.model.normalize` does); B is dynamic, S is the checkpoint's
  `model.min_dim`;
* output `loc`  float32 `[B,P,4]`: encoded offsets against the priors;
* output `conf` float32 `[B,P,C]`: raw class logits (no softmax), C counts the background (index 0).

Post-processing is NOT in that graph. It is `ssd_ray.postprocess.detect(loc, conf, priors,
variance=meta["variance"], **meta["postprocess"])` (numpy arrays are accepted) -- softmax, decode
against `<name>.priors.npy` (`[P,4]` float32 cx,cy,w,h relative), per-class threshold, NMS, top-k --
giving relative xyxy boxes; multiply by the original width/height for pixels. Labels are
model-space: class `meta["class_names"][label - 1]`.

`with_postprocess=True` (`pipelines.export --with-postprocess`) puts decoding and NMS inside the
graph (`ssd_ray.export_detect.DetectionModel`; NMS becomes ONNX NonMaxSuppression), so onnxruntime
alone gives detections: same input; outputs `boxes [B,K,4]` xyxy in pixels of the S x S input,
`scores [B,K]`, `labels [B,K]` (padding -1) and `num_detections [B]`, K = top_k. Only the meta file
goes beside it (the priors are in the graph). Resizing stays outside the graph: ONNX Resize is not
cv2's bilinear, and the model was trained on cv2's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ssd_ray import storage

log = logging.getLogger(__name__)

META_FORMAT = "ssd-ray/onnx-meta/1"
DEFAULT_OPSET = 18


def sidecar_paths(out_path: str | os.PathLike) -> dict[str, str]:
    """`model.onnx` -> the priors and meta files written beside it (`model.priors.npy`, `model.meta.json`)."""
    out = Path(out_path)
    base = out.with_suffix("") if out.suffix.lower() == ".onnx" else out
    return {"onnx": str(out), "priors": f"{base}.priors.npy", "meta": f"{base}.meta.json"}


def export_onnx(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, opset: int | None = None,
                with_postprocess: bool = False) -> dict[str, str]:
    """Export the checkpoint's network to ONNX plus `<name>.priors.npy` and `<name>.meta.json`.

    Returns `{"onnx", "priors", "meta"}` -> written paths. opset None: DEFAULT_OPSET (18).
    Weights are embedded in the .onnx file (no external data file). `with_postprocess`: decoding and
    NMS in the graph (see the module docstring); returns `{"onnx", "meta"}`.
    """
    from ssd_ray.checkpoint import load_model

    m = load_model(checkpoint_path, "cpu")
    model, priors, cfg, size = m.model, m.priors, m.config, m.image_size
    opset = DEFAULT_OPSET if opset is None else int(opset)
    paths = sidecar_paths(out_path)
    Path(paths["onnx"]).parent.mkdir(parents=True, exist_ok=True)

    example = torch.zeros(2, 3, size, size)
    if with_postprocess:
        return _export_with_postprocess(m, checkpoint_path, paths, opset, example)
    torch.onnx.export(
        model, (example,), paths["onnx"], input_names=["images"], output_names=["loc", "conf"],
        opset_version=opset, dynamic_shapes={"x": {0: torch.export.Dim("batch")}},  # "x": SSD.forward's argument
        external_data=False, verbose=False)
    np.save(paths["priors"], priors.cpu().numpy().astype(np.float32))

    norm = m.normalization
    meta = {
        "format": META_FORMAT,
        "source_checkpoint": storage.absolute(checkpoint_path),  # a path or a bucket URI
        "opset": opset,
        "class_names": list(m.class_names),
        "num_classes": int(cfg.model.num_classes),
        "input": {"name": "images", "dtype": "float32", "shape": ["batch", 3, size, size], "layout": "NCHW",
                  "image_size": size, "normalization": norm,
                  "note": "RGB resized to image_size x image_size, then (pixel * scale - mean) / std per channel"},
        "outputs": {"loc": ["batch", int(priors.shape[0]), 4], "conf": ["batch", int(priors.shape[0]),
                                                                      int(cfg.model.num_classes)]},
        "priors": {"file": os.path.basename(paths["priors"]), "shape": list(priors.shape), "format": "cxcywh, relative"},
        "variance": list(m.detect_args.variance),
        "postprocess": {k: v for k, v in m.detect_args.kwargs().items() if k != "variance"},
        "clip_output": m.detect_args.clips_output,  # clamp the returned boxes to 0..1
        "postprocessing": "ssd_ray.postprocess.detect(loc, conf, priors, variance=variance, **postprocess): "
                          "softmax, decode, per-class threshold, NMS, top-k -> relative xyxy boxes, "
                          "labels 1..C-1 (class_names[label - 1])",
    }
    Path(paths["meta"]).write_text(json.dumps(meta, indent=2))
    log.info("exported %s (opset %d, input [B,3,%d,%d], %d priors)", paths["onnx"], opset, size, size, len(priors))
    return paths


def _export_with_postprocess(m, checkpoint_path, paths: dict[str, str], opset: int, example: torch.Tensor) -> dict[str, str]:
    """The network + decoding + NMS (`DetectionModel`) as one ONNX graph, and its meta file."""
    from ssd_ray.export_detect import ONNX_TRANSLATIONS, DetectionModel

    size, n_cls = m.image_size, int(m.config.model.num_classes)
    det = DetectionModel(m.model, m.priors, m.detect_args, size, n_cls).eval()
    names = ["boxes", "scores", "labels", "num_detections"]
    torch.onnx.export(
        det, (example,), paths["onnx"], input_names=["images"], output_names=names, opset_version=opset,
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, custom_translation_table=ONNX_TRANSLATIONS,
        external_data=False, verbose=False)
    k = det.top_k
    meta = {
        "format": META_FORMAT,
        "source_checkpoint": storage.absolute(checkpoint_path),  # a path or a bucket URI
        "opset": opset,
        "with_postprocess": True,
        "class_names": list(m.class_names),
        "num_classes": n_cls,
        "input": {"name": "images", "dtype": "float32", "shape": ["batch", 3, size, size], "layout": "NCHW",
                  "image_size": size, "normalization": m.normalization,
                  "note": "RGB resized to image_size x image_size (cv2.INTER_LINEAR), then "
                          "(pixel * scale - mean) / std per channel"},
        "outputs": {"boxes": ["batch", k, 4], "scores": ["batch", k], "labels": ["batch", k],
                    "num_detections": ["batch"]},
        "note": "row b: its num_detections[b] detections first, highest score first, then padding (boxes 0, "
                "scores 0, labels -1); boxes xyxy in pixels of the image_size x image_size input (multiply x by "
                "W / image_size and y by H / image_size for the original image); class_names[label - 1]",
        "variance": list(m.detect_args.variance),
        "postprocess": m.detect_args.to_json(),
    }
    Path(paths["meta"]).write_text(json.dumps(meta, indent=2))
    log.info("exported %s with decoding and NMS (opset %d, input [B,3,%d,%d], up to %d detections per image)",
             paths["onnx"], opset, size, size, k)
    return {"onnx": paths["onnx"], "meta": paths["meta"]}
