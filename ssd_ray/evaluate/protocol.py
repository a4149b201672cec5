"""Evaluation protocols: which post-processing and which scoring a published number was made with.

`evaluation.protocol` (config) or `--protocol` (pipelines.evaluate) picks one; the name, the
post-processing settings and the ground truth used are recorded in every metrics JSON
(`EvalResult.protocol`), so a number always says how it was obtained.

| protocol  | post-processing                          | scoring                                         |
|-----------|------------------------------------------|-------------------------------------------------|
| `ssd_ray` | the config's `postprocess` (and preset)  | VOC area mAP@0.5 (headline) and VOC07 from the records; COCO AP, official on COCO-format data |
| `voc07`   | ssd.pytorch eval.py's, whatever the config says: conf 0.01, NMS 0.45, 200 candidates per class, no per-image cap, boxes not clipped | ssd.pytorch eval.py's VOC07 11-point mAP (`voc07.py`) |
| `coco`    | the config's `postprocess` (the `torchvision` preset reproduces torchvision's) | official COCOeval on the dataset's annotation file (COCO-format data only) |
"""

from __future__ import annotations

from ssd_ray.config import PostprocessConfig

PROTOCOLS: tuple[str, ...] = ("ssd_ray", "voc07", "coco")

# ssd.pytorch eval.py: `Detect(num_classes, 0, 200, 0.01, 0.45)`, whose `nms(..., top_k=200)` keeps the
# 200 best candidates per class; Detect's per-image cap fills a copy of its output, so it never takes
# effect; eval.py scales the boxes as decoded, without clipping.
VOC07_POSTPROCESS = {"preset": "reference", "conf_thresh": 0.01, "nms_thresh": 0.45, "top_k": None,
                     "nms_top_k": 200, "clip": "none"}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    return protocol


def evaluation_postprocess(protocol: str, postprocess: PostprocessConfig) -> PostprocessConfig:
    """The post-processing a protocol evaluates with: its own for `voc07`, else the config's."""
    if check_protocol(protocol) == "voc07":
        return PostprocessConfig(**VOC07_POSTPROCESS)
    return postprocess
