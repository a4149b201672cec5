"""Detections from raw SSD outputs: softmax, decode, per-class threshold, NMS, top-k.

Shared by evaluation, prediction and export consumers, so every path scores the same boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torchvision.ops import batched_nms

from .boxes import decode

CLIP_MODES = ("after_nms", "before_nms", "none")


@dataclass(frozen=True)
class DetectArgs:
    """Everything `detect` needs besides the network outputs and priors: a model's post-processing.

    `variance` belongs to the weights (the offsets were trained to be encoded with it); the
    thresholds come from the `postprocess` config section. Built in one place (`from_config`) and
    carried by `ssd_ray.checkpoint.LoadedModel`, so prediction, evaluation, validation and export all
    decode the same way.
    """

    conf_thresh: float = 0.01
    nms_thresh: float = 0.45
    top_k: int | None = 200  # detections per image; None: no cap
    nms_top_k: int = 200  # candidates per class before NMS
    variance: tuple[float, float] = (0.1, 0.2)
    # Boxes clipped to the image (0..1): "after_nms" (the output; callers clip, `clips_output`),
    # "before_nms" (torchvision: decoded boxes clipped before NMS, so the output is clipped too) or
    # "none" (ssd.pytorch's eval.py scores the boxes as decoded).
    clip: str = "after_nms"

    def __post_init__(self) -> None:
        if self.clip not in CLIP_MODES:
            raise ValueError(f"DetectArgs.clip must be one of {CLIP_MODES}, got {self.clip!r}")

    @classmethod
    def from_config(cls, postprocess, variance: Sequence[float]) -> "DetectArgs":
        """From a `PostprocessConfig` and the priors' `variance` (of the weights being decoded)."""
        top_k = getattr(postprocess, "top_k", 200)
        return cls(conf_thresh=float(postprocess.conf_thresh), nms_thresh=float(postprocess.nms_thresh),
                   top_k=None if top_k is None else int(top_k), nms_top_k=int(postprocess.nms_top_k),
                   variance=(float(variance[0]), float(variance[1])),
                   clip=str(getattr(postprocess, "clip", "after_nms")))

    def replace(self, **changes) -> "DetectArgs":
        return replace(self, **changes)

    @property
    def clips_output(self) -> bool:
        """Whether the detections callers keep are clipped to 0..1."""
        return self.clip != "none"

    def kwargs(self) -> dict:
        """Keyword arguments of `detect` (JSON-safe: also the export metadata's `postprocess`).

        `clip="after_nms"` is the caller's clamp of the output, so it is not a `detect` argument.
        """
        d = asdict(self)
        d["variance"] = list(self.variance)
        d["clip_before_nms"] = d.pop("clip") == "before_nms"
        return d

    def to_json(self) -> dict:
        """Every setting, named as in the `postprocess` config section (what metrics JSON records)."""
        d = asdict(self)
        d["variance"] = list(self.variance)
        return d


@torch.no_grad()
def detect(
    loc: torch.Tensor | np.ndarray,
    conf_logits: torch.Tensor | np.ndarray,
    priors: torch.Tensor | np.ndarray,
    conf_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    top_k: int | None = 200,
    nms_top_k: int = 200,
    variance: Sequence[float] = (0.1, 0.2),
    clip_before_nms: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Per-image detections from `loc [B,P,4]` offsets and `conf_logits [B,P,C]`.

    For every foreground class: scores above `conf_thresh`, at most the `nms_top_k` highest, NMS at
    `nms_thresh` (torchvision's `batched_nms`, one call for all images and classes); then at most
    `top_k` detections per image across classes (None: all), highest score first.
    `clip_before_nms`: clamp the decoded boxes to 0..1 before NMS (torchvision's SSD does).

    Returns one dict per image: `boxes [K,4]` xyxy relative (not clipped unless `clip_before_nms`:
    callers clip to the image), `scores [K]` float32 and `labels [K]` int64 in `1..C-1` (0 is background).
    numpy inputs (e.g. onnxruntime's outputs of an exported network) give numpy arrays back.
    """
    as_numpy = any(isinstance(a, np.ndarray) for a in (loc, conf_logits, priors))
    if as_numpy:
        loc, conf_logits, priors = (torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
                                    for a in (loc, conf_logits, priors))
    B, P, C = conf_logits.shape
    scores = torch.softmax(conf_logits.float(), dim=-1)[..., 1:]  # [B,P,C-1]
    boxes = decode(loc.float(), priors.to(loc.device).float(), variance)  # [B,P,4]
    if clip_before_nms:
        boxes = boxes.clamp(0.0, 1.0)

    k = min(nms_top_k, P)
    top_scores, top_idx = scores.topk(k, dim=1)  # [B,k,C-1]: the nms_top_k best priors per class
    keep_mask = top_scores > conf_thresh
    img, _, cls = keep_mask.nonzero(as_tuple=True)
    cand_scores = top_scores[keep_mask]
    cand_boxes = boxes[img, top_idx[keep_mask]]
    labels = cls + 1
    # One NMS for everything: boxes of different images or classes never suppress each other.
    keep = batched_nms(cand_boxes, cand_scores, img * C + labels, nms_thresh)  # sorted by score

    kept_img = img[keep]
    out = []
    for b in range(B):
        sel = keep[kept_img == b][:top_k]
        out.append({"boxes": cand_boxes[sel], "scores": cand_scores[sel], "labels": labels[sel]})
    if as_numpy:
        return [{k: v.cpu().numpy() for k, v in d.items()} for d in out]
    return out
