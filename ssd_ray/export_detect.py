"""The network plus SSD post-processing as one exportable module: `DetectionModel`.

`ssd_ray.postprocess.detect` returns a variable number of detections per image, which a graph with
a dynamic batch cannot; this module computes the same detections with fixed-size outputs:

    images [B,3,S,S] float32 (resized + normalised)
    -> boxes [B,K,4] float32 xyxy in pixels of the S x S input, scores [B,K] float32, labels [B,K] int64
       (model space 1..C-1, class_names[label - 1]), num_detections [B] int64

Row b holds its `num_detections[b]` detections first, highest score first; the rest is padding
(boxes 0, scores 0, labels -1). K = top_k (or every candidate when the model has no top_k).

The steps are `detect`'s: softmax, decode against the priors (constants in the graph), per class the
`nms_top_k` best priors above `conf_thresh`, NMS per image and class, then the `top_k` best per image;
boxes clamped to the image as the model's `clip` says. NMS is the custom op `ssd_ray::nms_keep`:
in PyTorch it is torchvision's `batched_nms`; exported, it becomes ONNX `NonMaxSuppression` with one
"batch" entry per (image, class) pair (`nms_keep_onnx`), so the graph runs in onnxruntime alone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from .boxes import decode
from .postprocess import DetectArgs


@torch.library.custom_op("ssd_ray::nms_keep", mutates_args=())
def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float) -> torch.Tensor:
    """NMS within each row: boxes `[N,k,4]` xyxy, scores `[N,k]` -> keep `[N,k]` bool.

    Rows never suppress each other; entries scoring <= `score_threshold` are dropped before NMS; a
    box is suppressed by a higher-scoring kept box of its row whose IoU with it exceeds `iou_threshold`.
    """
    n, k, _ = boxes.shape
    rows, cols = (scores > score_threshold).nonzero(as_tuple=True)
    keep = batched_nms(boxes[rows, cols], scores[rows, cols], rows, iou_threshold)
    out = torch.zeros(n * k, dtype=torch.bool, device=boxes.device)
    out[rows[keep] * k + cols[keep]] = True
    return out.view(n, k)


@nms_keep.register_fake
def _nms_keep_fake(boxes, scores, iou_threshold, score_threshold):
    return scores.new_empty(scores.shape, dtype=torch.bool)


def nms_keep_onnx(boxes, scores, iou_threshold: float, score_threshold: float):
    """ONNX translation of `nms_keep` (onnxscript): NonMaxSuppression, then its selected (row, box)
    indices scattered into a `[N,k]` mask."""
    import onnxscript
    from onnxscript import opset18 as op

    axis1 = op.Constant(value_ints=[1])
    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, axis1), op.Constant(value_ints=[1 << 30]),
                                    op.Constant(value_floats=[iou_threshold]),
                                    op.Constant(value_floats=[score_threshold]))  # [M,3]: row, class 0, box
    shape = op.Shape(scores)
    k = op.Gather(shape, axis1)
    row = op.Gather(selected, op.Constant(value_ints=[0]), axis=1)  # [M,1]
    col = op.Gather(selected, op.Constant(value_ints=[2]), axis=1)
    flat = op.Add(op.Mul(row, k), col)  # [M,1] indices into the flattened [N*k] mask
    mask = op.ConstantOfShape(op.ReduceProd(shape, keepdims=1), value=onnxscript.ir.tensor(np.array([False])))
    ones = op.Expand(op.Constant(value=onnxscript.ir.tensor(np.array([True]))), op.Shape(row, end=1))
    return op.Reshape(op.ScatterND(mask, flat, ones), shape)


ONNX_TRANSLATIONS = {torch.ops.ssd_ray.nms_keep.default: nms_keep_onnx}


class DetectionModel(nn.Module):
    """`model` + decoding + NMS: images `[B,3,S,S]` -> (boxes px, scores, labels, num_detections)."""

    def __init__(self, model: nn.Module, priors: torch.Tensor, detect_args: DetectArgs, image_size: int,
                 num_classes: int):
        super().__init__()
        self.model = model
        self.register_buffer("priors", priors.detach().float().clone())
        self.args = detect_args
        self.image_size = int(image_size)
        c = int(num_classes) - 1  # foreground classes
        self.k = min(int(detect_args.nms_top_k), int(priors.shape[0]))
        self.top_k = c * self.k if detect_args.top_k is None else min(int(detect_args.top_k), c * self.k)

    def forward(self, images: torch.Tensor):
        a = self.args
        loc, conf = self.model(images)
        b, p, c1 = conf.shape[0], conf.shape[1], conf.shape[2] - 1
        scores = torch.softmax(conf.float(), dim=-1)[..., 1:].transpose(1, 2)  # [B,C-1,P]
        boxes = decode(loc.float(), self.priors, a.variance)  # [B,P,4] relative
        if a.clip == "before_nms":
            boxes = boxes.clamp(0.0, 1.0)
        top_s, top_i = scores.topk(self.k, dim=2)  # [B,C-1,k]: per class the nms_top_k best priors
        cand = boxes.unsqueeze(1).expand(b, c1, p, 4).gather(2, top_i.unsqueeze(-1).expand(b, c1, self.k, 4))
        valid = top_s > a.conf_thresh
        masked = torch.where(valid, top_s, torch.full_like(top_s, -1.0))
        keep = nms_keep(cand.reshape(-1, self.k, 4), masked.reshape(-1, self.k), float(a.nms_thresh),
                        float(a.conf_thresh)).reshape(b, c1, self.k) & valid
        final = torch.where(keep, top_s, torch.full_like(top_s, -1.0)).reshape(b, c1 * self.k)
        out_s, out_i = final.topk(self.top_k, dim=1)  # [B,K], highest first
        ok = out_s >= 0
        out_boxes = cand.reshape(b, c1 * self.k, 4).gather(1, out_i.unsqueeze(-1).expand(b, self.top_k, 4))
        if a.clips_output:
            out_boxes = out_boxes.clamp(0.0, 1.0)
        out_boxes = torch.where(ok.unsqueeze(-1), out_boxes * self.image_size, torch.zeros_like(out_boxes))
        labels = torch.where(ok, torch.div(out_i, self.k, rounding_mode="floor") + 1, torch.full_like(out_i, -1))
        return out_boxes, torch.where(ok, out_s, torch.zeros_like(out_s)), labels, ok.sum(dim=1)
