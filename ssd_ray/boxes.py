"""Box formats, IoU, SSD target encoding and prior matching.

Formats: "point form" is `[...,4]` xyxy; "center-size" is `[...,4]` (cx, cy, w, h). Everything here is
relative to the image (0..1). Priors are center-size `[P,4]`.

`match` is ssd.pytorch's `box_utils.match` for one image; `match_batch` gives the same results for a
padded batch with no Python loop over images and no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_iou

Variance = Sequence[float]

__all__ = ["point_form", "center_size", "box_iou", "encode", "decode", "match", "match_batch"]


def point_form(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """`[...,4]` (cx, cy, w, h) -> `[...,4]` xyxy."""
    c, wh = boxes_cxcywh[..., :2], boxes_cxcywh[..., 2:]
    return torch.cat((c - wh / 2, c + wh / 2), dim=-1)


def center_size(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """`[...,4]` xyxy -> `[...,4]` (cx, cy, w, h)."""
    lo, hi = boxes_xyxy[..., :2], boxes_xyxy[..., 2:]
    return torch.cat(((lo + hi) / 2, hi - lo), dim=-1)


def encode(matched_xyxy: torch.Tensor, priors: torch.Tensor, variance: Variance = (0.1, 0.2)) -> torch.Tensor:
    """Regression targets for boxes `[...,P,4]` xyxy matched to priors `[P,4]` center-size.

    `((g_c - p_c) / (v0 * p_wh), log(g_wh / p_wh) / v1)`, with the reference's operation order so
    the float32 results agree with it bit for bit in practice.
    """
    g_cxcy = (matched_xyxy[..., :2] + matched_xyxy[..., 2:]) / 2 - priors[..., :2]
    g_cxcy = g_cxcy / (variance[0] * priors[..., 2:])
    g_wh = (matched_xyxy[..., 2:] - matched_xyxy[..., :2]) / priors[..., 2:]
    g_wh = torch.log(g_wh) / variance[1]
    return torch.cat((g_cxcy, g_wh), dim=-1)


def decode(loc: torch.Tensor, priors: torch.Tensor, variance: Variance = (0.1, 0.2)) -> torch.Tensor:
    """Inverse of `encode`: offsets `[...,P,4]` + priors `[P,4]` center-size -> boxes `[...,P,4]` xyxy."""
    centers = priors[..., :2] + loc[..., :2] * variance[0] * priors[..., 2:]
    sizes = priors[..., 2:] * torch.exp(loc[..., 2:] * variance[1])
    lo = centers - sizes / 2
    return torch.cat((lo, lo + sizes), dim=-1)


def _iou_gt_priors(gt_xyxy: torch.Tensor, prior_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU `[B,M,P]` of GT boxes `[B,M,4]` and priors `[P,4]`, both xyxy.

    Same arithmetic, in the same order, as `torchvision.ops.box_iou` and the reference's `jaccard`
    (so the same float32 bits), but on one coordinate plane at a time: box_iou builds `[N,P,2]`
    corner tensors and reads them back strided, which made it ~4x slower here (bench/loss.py).
    """
    gx1, gy1, gx2, gy2 = gt_xyxy[..., None].unbind(-2)  # each [B,M,1]
    px1, py1, px2, py2 = prior_xyxy.T.contiguous()  # each [P]
    inter = (torch.minimum(gx2, px2) - torch.maximum(gx1, px1)).clamp_(min=0)
    inter.mul_((torch.minimum(gy2, py2) - torch.maximum(gy1, py1)).clamp_(min=0))
    union = ((gx2 - gx1) * (gy2 - gy1) + (px2 - px1) * (py2 - py1)).sub_(inter)
    return inter.div_(union)


def match(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    priors: torch.Tensor,
    threshold: float = 0.5,
    variance: Variance = (0.1, 0.2),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for one image: `gt_boxes [n,4]` xyxy 0..1, `gt_labels [n]` 0-based -> `(loc_t [P,4], conf_t [P])`.

    The reference's rules: a prior takes the GT it overlaps most; it is positive when that IoU is at
    least `threshold`; every GT's best prior is forced positive for that GT, and when two GTs share
    a best prior the later GT takes it. `conf_t = label + 1`, 0 = background. With n = 0 every prior
    is background. Background rows of `loc_t` are 0.
    """
    if gt_boxes.ndim != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be [n,4], got {tuple(gt_boxes.shape)}")
    if gt_labels.shape != gt_boxes.shape[:1]:
        raise ValueError(f"gt_labels must be [n]={gt_boxes.shape[0]}, got {tuple(gt_labels.shape)}")
    if not torch.isfinite(gt_boxes).all():
        raise ValueError("gt_boxes contains NaN or inf")
    loc_t, conf_t = match_batch(gt_boxes[None], gt_labels[None], priors, threshold, variance)
    return loc_t[0], conf_t[0]


def match_batch(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    priors: torch.Tensor,
    threshold: float = 0.5,
    variance: Variance = (0.1, 0.2),
) -> tuple[torch.Tensor, torch.Tensor]:
    """`match` for a padded batch: `gt_boxes [B,M,4]`, `gt_labels [B,M]` (-1 = padding).

    Returns `loc_t [B,P,4]` float32 and `conf_t [B,P]` int64. Rows with a negative label or a
    non-finite box are padding. No Python loop over images, no host synchronisation.
    """
    if gt_labels.shape[1] == 0:  # no image has an object: one padding column keeps the maths uniform
        gt_boxes = gt_boxes.new_zeros(gt_boxes.shape[0], 1, 4)
        gt_labels = gt_labels.new_full((gt_labels.shape[0], 1), -1)
    B, M = gt_labels.shape
    P = priors.shape[0]
    valid = (gt_labels >= 0) & torch.isfinite(gt_boxes).all(dim=-1)  # [B,M]
    safe_boxes = torch.where(valid[..., None], gt_boxes, torch.zeros((), dtype=gt_boxes.dtype,
                                                                    device=gt_boxes.device))
    prior_xyxy = point_form(priors)
    # IoU [B,M,P]; padding rows get -1 so they never win the argmax over GTs.
    overlaps = _iou_gt_priors(safe_boxes, prior_xyxy)
    overlaps = overlaps.masked_fill_(~valid[..., None], -1.0)

    best_prior_idx = overlaps.argmax(dim=2)  # [B,M] best prior of each GT (first index on ties)
    best_truth_overlap, best_truth_idx = overlaps.max(dim=1)  # [B,P] best GT of each prior

    # Force each valid GT's best prior onto it; "amax" over GT indices = the later GT wins.
    gt_index = torch.arange(M, device=gt_labels.device).expand(B, M)
    claims = torch.where(valid, gt_index, torch.full_like(gt_index, -1))
    forced = torch.full((B, P), -1, dtype=torch.long, device=gt_labels.device)
    forced.scatter_reduce_(1, best_prior_idx, claims, reduce="amax", include_self=True)
    is_forced = forced >= 0
    best_truth_idx = torch.where(is_forced, forced, best_truth_idx)
    # A forced prior counts as overlap 2 in the reference (index_fill_): always positive.
    positive = is_forced | (best_truth_overlap >= threshold)  # [B,P]

    labels = torch.gather(gt_labels, 1, best_truth_idx)  # [B,P]
    conf_t = (labels + 1).masked_fill_(~positive, 0).long()

    matched = torch.gather(safe_boxes, 1, best_truth_idx[..., None].expand(B, P, 4))  # [B,P,4]
    # Background rows encode whatever GT won the argmax (-inf for a padding row's zero box): zero them.
    loc_t = encode(matched, priors, variance).masked_fill_(~positive[..., None], 0.0)
    return loc_t, conf_t
