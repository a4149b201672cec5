"""Baselines written the way ssd.pytorch (amdegroot/ssd.pytorch, layers/box_utils.py,
layers/modules/multibox_loss.py, layers/functions/detection.py) does the work, for the benches only.

These reproduce the reference's algorithms and operation order (per-image Python loops, the
while-loop NMS, boolean-mask gathers) on current torch API: `reduction="sum"` instead of
`size_average=False`, no `Variable`, and the community's `loss_c[pos.view(-1)] = 0` fix for the
mining mask. They are what ssd-ray's batched code is measured against, not library code.

Formats as in the reference: targets are a list of `[n,5]` rows `(x1, y1, x2, y2, label)`, xyxy
0..1, label 0-based; priors `[P,4]` center-size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_form(priors: torch.Tensor) -> torch.Tensor:
    """`[P,4]` (cx, cy, w, h) -> `[P,4]` xyxy."""
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def intersect(box_a: torch.Tensor, box_b: torch.Tensor) -> torch.Tensor:
    """Intersection areas `[A,B]` of xyxy boxes `[A,4]` and `[B,4]`."""
    A, B = box_a.size(0), box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(A, B, 2), box_b[:, 2:].unsqueeze(0).expand(A, B, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(A, B, 2), box_b[:, :2].unsqueeze(0).expand(A, B, 2))
    inter = torch.clamp(max_xy - min_xy, min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def jaccard(box_a: torch.Tensor, box_b: torch.Tensor) -> torch.Tensor:
    """IoU `[A,B]` of xyxy boxes `[A,4]` and `[B,4]`."""
    inter = intersect(box_a, box_b)
    area_a = ((box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    return inter / (area_a + area_b - inter)


def encode(matched: torch.Tensor, priors: torch.Tensor, variances) -> torch.Tensor:
    """Offsets `[P,4]` of matched xyxy boxes `[P,4]` against center-size priors `[P,4]`."""
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= variances[0] * priors[:, 2:]
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def decode(loc: torch.Tensor, priors: torch.Tensor, variances) -> torch.Tensor:
    """Boxes `[P,4]` xyxy from offsets `[P,4]` and center-size priors `[P,4]`."""
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def match(threshold, truths, priors, variances, labels, loc_t, conf_t, idx) -> None:
    """Writes image `idx`'s targets into `loc_t [B,P,4]` and `conf_t [B,P]` (the reference's `match`)."""
    overlaps = jaccard(truths, point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_overlap.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)  # every GT keeps its best prior
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx] + 1
    conf[best_truth_overlap < threshold] = 0
    loc_t[idx] = encode(matches, priors, variances)
    conf_t[idx] = conf


def log_sum_exp(x: torch.Tensor) -> torch.Tensor:
    """`[R,C]` -> `[R,1]` log-sum-exp, stabilised by the global max as the reference does."""
    x_max = x.data.max()
    return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max


def multibox_loss(loc_data, conf_data, priors, targets, threshold=0.5, negpos_ratio=3,
                  variance=(0.1, 0.2)):
    """The reference `MultiBoxLoss.forward`: `loc_data [B,P,4]`, `conf_data [B,P,C]` logits,
    `targets` list of `[n,5]` -> `(loss_l, loss_c)`, both divided by the batch's positives."""
    num, num_priors, num_classes = conf_data.shape
    loc_t = torch.empty(num, num_priors, 4)
    conf_t = torch.empty(num, num_priors, dtype=torch.long)
    for idx in range(num):
        truths = targets[idx][:, :-1].data
        labels = targets[idx][:, -1].data
        match(threshold, truths, priors.data, variance, labels, loc_t, conf_t, idx)

    pos = conf_t > 0
    pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
    loc_p = loc_data[pos_idx].view(-1, 4)
    loc_t = loc_t[pos_idx].view(-1, 4)
    loss_l = F.smooth_l1_loss(loc_p, loc_t, reduction="sum")

    # Hard negative mining on the per-prior background loss.
    batch_conf = conf_data.view(-1, num_classes)
    loss_c = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))
    loss_c[pos.view(-1, 1)] = 0
    loss_c = loss_c.view(num, -1)
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_pos = pos.long().sum(1, keepdim=True)
    num_neg = torch.clamp(negpos_ratio * num_pos, max=pos.size(1) - 1)
    neg = idx_rank < num_neg.expand_as(idx_rank)

    pos_idx = pos.unsqueeze(2).expand_as(conf_data)
    neg_idx = neg.unsqueeze(2).expand_as(conf_data)
    conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, num_classes)
    targets_weighted = conf_t[(pos + neg).gt(0)]
    loss_c = F.cross_entropy(conf_p, targets_weighted, reduction="sum")

    N = num_pos.data.sum()
    return loss_l / N, loss_c / N


def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.5, top_k: int = 200):
    """The reference greedy NMS: `boxes [n,4]` xyxy, `scores [n]` -> `(keep [n] indices, count)`.

    Only the `top_k` highest scores are considered; `keep[:count]` is in descending score order.
    """
    keep = scores.new(scores.size(0)).zero_().long()
    if boxes.numel() == 0:
        return keep, 0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    v, idx = scores.sort(0)  # ascending
    idx = idx[-top_k:]
    count = 0
    while idx.numel() > 0:
        i = idx[-1]  # current largest score
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        # The reference reuses `out=` buffers here; current torch warns on every resize, so the
        # community fix allocates instead (same values, no measurable difference at these sizes).
        xx1 = torch.index_select(x1, 0, idx)
        yy1 = torch.index_select(y1, 0, idx)
        xx2 = torch.index_select(x2, 0, idx)
        yy2 = torch.index_select(y2, 0, idx)
        xx1 = torch.clamp(xx1, min=x1[i])
        yy1 = torch.clamp(yy1, min=y1[i])
        xx2 = torch.clamp(xx2, max=x2[i])
        yy2 = torch.clamp(yy2, max=y2[i])
        w = torch.clamp(xx2 - xx1, min=0.0)
        h = torch.clamp(yy2 - yy1, min=0.0)
        inter = w * h
        rem_areas = torch.index_select(area, 0, idx)
        union = (rem_areas - inter) + area[i]
        IoU = inter / union
        idx = idx[IoU.le(overlap)]
    return keep, count


def detect(loc_data, conf_logits, priors, num_classes, conf_thresh=0.01, nms_thresh=0.45, top_k=200,
           variance=(0.1, 0.2)):
    """The reference's test-phase softmax + `Detect.forward`: `loc_data [B,P,4]`, `conf_logits [B,P,C]`.

    Returns the reference's `output [B,C,top_k,5]` rows `(score, x1, y1, x2, y2)` per class, after
    the final cross-class sort. The reference's last step, `flt[(rank < top_k)...].fill_(0)`, fills a
    copy and so keeps nothing out; here the sort and rank are done and the per-image top_k is
    returned as intended, as lists of `(scores [K], labels [K], boxes [K,4])`, highest score first.
    """
    conf_data = torch.softmax(conf_logits, dim=-1)  # the SSD module's test phase applies softmax
    num = loc_data.size(0)
    num_priors = priors.size(0)
    output = torch.zeros(num, num_classes, top_k, 5)
    conf_preds = conf_data.view(num, num_priors, num_classes).transpose(2, 1)
    for i in range(num):
        decoded_boxes = decode(loc_data[i], priors, variance)
        conf_scores = conf_preds[i].clone()
        for cl in range(1, num_classes):
            c_mask = conf_scores[cl].gt(conf_thresh)
            scores = conf_scores[cl][c_mask]
            if scores.size(0) == 0:
                continue
            l_mask = c_mask.unsqueeze(1).expand_as(decoded_boxes)
            boxes = decoded_boxes[l_mask].view(-1, 4)
            ids, count = nms(boxes, scores, nms_thresh, top_k)
            output[i, cl, :count] = torch.cat((scores[ids[:count]].unsqueeze(1), boxes[ids[:count]]), 1)
    flt = output.contiguous().view(num, -1, 5)
    _, idx = flt[:, :, 0].sort(1, descending=True)
    _, rank = idx.sort(1)
    keep = (rank < top_k) & (flt[:, :, 0] > 0)  # empty slots hold score 0
    labels = torch.arange(num_classes).repeat_interleave(top_k)  # row r of flt belongs to class r // top_k
    result = []
    for i in range(num):
        sel = idx[i][keep[i, idx[i]]]  # kept rows, highest score first
        result.append((flt[i, sel, 0], labels[sel], flt[i, sel, 1:]))
    return result
