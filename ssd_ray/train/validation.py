"""Periodic validation during training: mAP (the evaluation core) and the val loss in one pass."""

from __future__ import annotations

import torch
from torch import nn

from ..boxes import match_batch
from ..checkpoint import unwrap
from ..evaluate.predict import predict_records
from ..evaluate.run import score_detections


class _LossTap(nn.Module):
    """Wraps the model for `predict_records` and adds up the MultiBoxLoss of each forward.

    `predict_records` feeds the records in order, `batch_size` at a time, so the tap knows which
    ground truth belongs to each forward without a second pass over the images.
    """

    def __init__(self, model, priors, records, batch_size, criterion, cfg):
        super().__init__()
        self.model, self.priors, self.records = model, priors, records
        self.batch_size, self.criterion, self.cfg = batch_size, criterion, cfg
        self.start = 0
        self.total = torch.zeros((), device=priors.device)
        self.batches = 0

    def forward(self, x):
        loc, conf = self.model(x)
        recs = self.records[self.start:self.start + len(x)]
        self.start += len(x)
        m = max(1, max(len(r.boxes) for r in recs))
        boxes = torch.zeros(len(recs), m, 4)
        labels = torch.full((len(recs), m), -1, dtype=torch.long)
        for i, r in enumerate(recs):
            keep = ~r.difficult  # training never sees difficult objects; neither does the val loss
            n = int(keep.sum())
            boxes[i, :n] = torch.from_numpy(r.boxes[keep])
            labels[i, :n] = torch.from_numpy(r.labels[keep])
        loc_t, conf_t = match_batch(boxes.to(x.device), labels.to(x.device), self.priors,
                                    self.cfg.loss.overlap_thresh, self.cfg.priors.variance)
        loss_l, loss_c = self.criterion(loc, conf, loc_t, conf_t)
        self.total += loss_l + loss_c
        self.batches += 1
        return loc, conf


def run_validation(model, priors, dataset, cfg, device, criterion):
    """Returns `(EvalResult, mean val loss)` on `dataset` with the model's post-processing settings."""
    bare = unwrap(model)
    bs = cfg.train.eval_batch_size
    tap = _LossTap(bare, priors, dataset.records, bs, criterion, cfg)
    p = cfg.postprocess
    was_training = bare.training
    try:
        detections = predict_records(tap, priors, dataset.records, cfg.model.min_dim, bs, device,
                                     p.conf_thresh, p.nms_thresh, p.top_k, p.nms_top_k,
                                     variance=cfg.priors.variance)
    finally:
        bare.train(was_training)
    result = score_detections(dataset, detections, iou_types=("voc", "coco"))
    return result, float(tap.total / max(1, tap.batches))
