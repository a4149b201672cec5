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
    overlaps = box_iou(safe_boxes.reshape(-1, 4), prior_xyxy).view(B, M, P)
    overlaps = overlaps.masked_fill(~valid[..., None], -1.0)

    best_prior_idx = overlaps.argmax(dim=2)  # [B,M] best prior of each GT (first index on ties)
    best_truth_overlap, best_truth_idx = overlaps.max(dim=1)  # [B,P] best GT of each prior

    # Force each valid GT's best prior onto it; "amax" over GT indices = the later GT wins.
    gt_index = torch.arange(M, device=gt_labels.device).expand(B, M)
    claims = torch.where(valid, gt_index, torch.full_like(gt_index, -1))
    forced = torch.full((B, P), -1, dtype=torch.long, device=gt_labels.device)
    forced.scatter_reduce_(1, best_prior_idx, claims, reduce="amax", include_self=True)
    is_forced = forced >= 0
    best_truth_idx = torch.where(is_forced, forced, best_truth_idx)
    best_truth_overlap = torch.where(is_forced, torch.full_like(best_truth_overlap, 2.0), best_truth_overlap)

    labels = torch.gather(gt_labels, 1, best_truth_idx)  # [B,P]
    positive = best_truth_overlap >= threshold
    conf_t = torch.where(positive, labels + 1, torch.zeros_like(labels)).long()

    matched = torch.gather(safe_boxes, 1, best_truth_idx[..., None].expand(B, P, 4))  # [B,P,4]
    # Background rows would encode whatever GT won the argmax (or log(0) for padding): zero them.
    matched = torch.where(positive[..., None], matched, prior_xyxy.expand(B, P, 4))
    loc_t = encode(matched, priors, variance)
    loc_t = torch.where(positive[..., None], loc_t, torch.zeros_like(loc_t))
    return loc_t, conf_t
