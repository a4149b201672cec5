"""Periodic validation during training: mAP (the evaluation core) and the val loss in one pass.

On several workers the val set is split over the train workers (the distributed evaluation path:
`shard_indices` -> each rank predicts its shard with the live weights -> detections gathered to
rank 0 -> `assemble_detections` -> `score_detections` once). No checkpoint is written or reloaded and
no extra actors start; prediction, the bulk of the time, is split world ways.
"""

from __future__ import annotations

import torch
from torch import nn

from ..boxes import match_batch
from ..checkpoint import unwrap
from ..evaluate.gather import assemble_detections, shard_indices
from ..evaluate.predict import predict_records
from ..evaluate.protocol import evaluation_postprocess
from ..evaluate.run import score_detections
from ..postprocess import DetectArgs


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
        self.total = torch.zeros((), device=priors.device)  # sum over images of the batch loss
        self.images = 0

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
        # Weighted by images, so the mean over shards equals one rank's mean over the whole set.
        self.total += (loss_l + loss_c).detach() * len(x)
        self.images += len(x)
        return loc, conf


def validation_iou_types(cfg) -> tuple[str, ...]:
    """What periodic validation scores: VOC metrics always, COCO AP on COCO-format data."""
    return ("voc", "coco") if cfg.data.format == "coco" else ("voc",)


def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Overwrite every rank's parameters and buffers with rank `src`'s (a collective: all ranks call it).

    DDP keeps the parameters equal, but each rank's BatchNorm running statistics follow its own
    batches between DDP's buffer broadcasts, and a weight EMA blends them further apart; a val set
    split over the ranks must be predicted by one network.
    """
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)


def run_validation(model, priors, dataset, cfg, device, criterion, rank: int = 0, world_size: int = 1):
    """`(EvalResult, mean val loss)` on `dataset` with the evaluation protocol's post-processing and
    scoring (`cfg.evaluation.protocol`) and the model's input normalisation (`cfg.model.normalization`).

    Every rank calls it (it holds collectives when world_size > 1); the ranks first take rank 0's
    weights and BatchNorm statistics (`broadcast_state`), then rank `r` predicts the records
    `shard_indices(n, r, world_size)`. Rank 0 returns the scored result of all ranks' detections; the
    other ranks return `(None, val loss)`. The val loss is the mean over all images on every rank.
    """
    records = dataset.records
    indices = shard_indices(len(records), rank, world_size)
    shard = [records[i] for i in indices]
    bare = unwrap(model)
    if world_size > 1:
        broadcast_state(bare)
    bs = cfg.train.eval_batch_size
    tap = _LossTap(bare, priors, shard, bs, criterion, cfg)
    protocol = cfg.evaluation.protocol
    args = DetectArgs.from_config(evaluation_postprocess(protocol, cfg.postprocess), cfg.priors.variance)
    norm = cfg.model.normalization  # resolved by the driver; "auto" only in configs older than it: ssd-ray's
    was_training = bare.training
    try:
        detections = (predict_records(tap, priors, shard, cfg.model.min_dim, bs, device, args,
                                      normalization=None if norm == "auto" else norm) if shard else [])
    finally:
        bare.train(was_training)
    loss_sum = torch.stack([tap.total.float(), torch.tensor(float(tap.images), device=tap.total.device)])
    parts = [(indices, detections)]
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(loss_sum)
        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object((indices, detections), gathered, dst=0)  # numpy arrays: small, picklable
        parts = gathered
    val_loss = float(loss_sum[0] / loss_sum[1].clamp(min=1))
    if rank != 0:
        return None, val_loss
    # The evaluation protocol's scoring: on COCO-format data the COCO numbers are the official ones.
    # On VOC-format data COCO AP is not part of the protocol; computed from the records it cost ~4.5 s
    # of every validation of the 300-image demo (pycocotools), against 0.2 s for the VOC metrics.
    result = score_detections(dataset, assemble_detections(records, parts), iou_types=validation_iou_types(cfg),
                              protocol=protocol, detect_args=args)
    return result, val_loss
