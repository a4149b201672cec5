"""Evaluation split across Ray: prediction on an actor pool, scoring once on the driver.

    result = evaluate_distributed("runs/.../checkpoint_00001500", val_ds, cfg, num_workers=4)

`predict_distributed` turns the records into a Ray dataset of `(index, path)` rows and runs
`map_batches` with `_DetectActor` on an `ActorPoolStrategy(size=num_workers)`: each actor loads the
checkpoint once (`ssd_ray.checkpoint.load_model`), then per batch decodes + resizes exactly as
`predict_records` does (`load_image_resized`), runs the model and `ssd_ray.postprocess.detect`, and
returns detections as fixed-width padded arrays (width `top_k`, label -1 = padding). The driver
gathers the rows, restores record order by index and unpads; `score_detections` then runs once, so
the result is the same as the in-process `predict_records` + `score_detections` on the same weights.
The same actor stage (`detect_stage`) serves batch prediction (`ssd_ray.inference`), where read
tasks decode and resize upstream and the actors receive the images.
Training's periodic evaluation on several workers splits the val set over the train workers instead
(`shard_indices`, no model reload) and gathers with the same `assemble_detections`.

With `num_workers <= 1` everything runs in-process through `predict_records` (no Ray).
Post-processing settings and data-operator placement come from the evaluation config
(`cfg.postprocess`, `ssd_ray.data.pipeline.data_remote_args`); the input size and class names come
from the checkpoint, which is checked against the dataset's classes.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.evaluate.gather import assemble_detections
from ssd_ray.evaluate.protocol import evaluation_postprocess
from ssd_ray.postprocess import DetectArgs
from ssd_ray.evaluate.result import EvalResult

BLOCKS_PER_WORKER = 4  # a few blocks per actor so a slow actor does not hold the tail of the run


def checkpoint_classes(checkpoint_path: str | os.PathLike) -> list[str]:
    """Class names of a model file or training checkpoint, without building the model."""
    from ssd_ray.checkpoint import load

    state = load(checkpoint_path)
    if "config" not in state or "class_names" not in state:
        raise ValueError(f"{checkpoint_path} is not an ssd-ray checkpoint or model file (no config/class_names)")
    return list(state["class_names"])


def check_classes(checkpoint_path, model_classes: Sequence[str], dataset: DetectionDataset) -> None:
    """DataError (a ValueError; exit 2 from the CLIs) unless the checkpoint predicts exactly the dataset's
    classes, in the same order."""
    from ssd_ray.errors import DataError

    if list(dataset.class_names) != list(model_classes):
        raise DataError(f"{checkpoint_path} predicts classes {list(model_classes)}, but the dataset has "
                        f"{list(dataset.class_names)}: scores would be meaningless (set data.classes to the "
                        f"model's classes, in its order)")


class _DetectActor:
    """`map_batches` callable on an actor pool: the model loaded once per actor, detections per batch.

    Input, one of:
    - `path` `[b]` image files the actor decodes and resizes itself (`load_image_resized`; evaluation:
      an unreadable file fails the run, since every image must be scored), or
    - `image` uint8 `[b,S,S,3]` RGB already resized by an upstream read task (batch prediction,
      `ssd_ray.inference`), with an optional `error` str column: rows whose error is not "" were not
      readable and pass through with no detections.
    Output: every input column but `image`, plus `count` int32 `[b]`, `boxes` float32 `[b,K,4]` xyxy
    relative clipped to 0..1 (unless the post-processing's `clip` is "none"), `scores` float32 `[b,K]`,
    `labels` int64 `[b,K]` (model space 1..C-1, -1 = padding), with K = `top_k` (detect never returns
    more per image; with no cap, every class's `nms_top_k`). Inputs are normalised as the model's file says.
    """

    def __init__(self, checkpoint_path: str, postprocess: dict | None = None, device: str = "cpu",
                 torch_threads: int | None = None, score_thresh: float | None = None):
        """postprocess: `PostprocessConfig` fields of the evaluation config (None: the model's own);
        score_thresh: keep only detections scoring above it (prediction's `--score`; applied before
        NMS, which keeps exactly what applying it after would)."""
        import torch

        from ssd_ray.checkpoint import load_model
        from ssd_ray.config import PostprocessConfig

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.loaded = load_model(checkpoint_path, torch.device(device))
        self.norm = self.loaded.input_normalization  # the model's own input normalisation
        self.args = (self.loaded.detect_args if postprocess is None
                     else self.loaded.detect_args_for(PostprocessConfig(**postprocess)))
        if score_thresh is not None:
            self.args = self.args.replace(conf_thresh=max(self.args.conf_thresh, float(score_thresh)))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from ssd_ray.evaluate.predict import load_image_resized
        from ssd_ray.model import normalize
        from ssd_ray.postprocess import detect

        m = self.loaded
        if "image" in batch:
            b = len(batch["image"])
            ok = (np.flatnonzero(np.asarray(batch["error"]).astype(str) == "") if "error" in batch
                  else np.arange(b))
            images = np.asarray(batch["image"])[ok]
        else:
            paths = [str(p) for p in batch["path"]]
            b, ok = len(paths), np.arange(len(paths))
            images = np.stack([load_image_resized(p, m.image_size) for p in paths])
        dets = []
        if len(ok):
            with torch.inference_mode():
                x = normalize(torch.from_numpy(np.ascontiguousarray(images)).to(m.device), spec=self.norm)
                loc, conf = m.model(x)
                dets = detect(loc, conf, m.priors, **self.args.kwargs())
        # Per-image maximum: top_k, or with no cap every class's NMS survivors (<= nms_top_k each).
        k = self.args.top_k or (int(m.config.model.num_classes) - 1) * self.args.nms_top_k
        boxes = np.zeros((b, k, 4), np.float32)
        scores = np.zeros((b, k), np.float32)
        labels = np.full((b, k), -1, np.int64)
        count = np.zeros(b, np.int32)
        for i, det in zip(ok, dets):
            n = len(det["scores"])
            count[i] = n
            # Same clip as predict_records: boxes leaving the image would distort IoU and COCO areas.
            boxes[i, :n] = (det["boxes"].clamp(0.0, 1.0) if self.args.clips_output else det["boxes"]).float().cpu().numpy()
            scores[i, :n] = det["scores"].float().cpu().numpy()
            labels[i, :n] = det["labels"].long().cpu().numpy()
        out = {name: col for name, col in batch.items() if name != "image"}
        out.update(count=count, boxes=boxes, scores=scores, labels=labels)
        return out


def detect_stage(ds, checkpoint_path: str, num_workers: int, batch_size: int, device: str = "cpu",
                 torch_threads: int | None = None, postprocess: dict | None = None,
                 score_thresh: float | None = None, **remote_args):
    """`ds` followed by `_DetectActor` on an `ActorPoolStrategy(size=num_workers)`: the one actor path
    of distributed evaluation and batch prediction. remote_args: Ray resources/placement per actor
    (`num_cpus`, `label_selector`, ...); `device="cuda"` adds one GPU per actor."""
    import ray

    if device == "cuda":
        remote_args.setdefault("num_gpus", 1)
    return ds.map_batches(
        _DetectActor,
        fn_constructor_kwargs={"checkpoint_path": str(checkpoint_path), "postprocess": postprocess,
                               "device": device, "torch_threads": torch_threads, "score_thresh": score_thresh},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_workers),
        **remote_args)


def _source_blocks(records: Sequence[ImageRecord], num_workers: int, batch_size: int):
    """`(index, path)` rows in blocks of whole batches, about BLOCKS_PER_WORKER blocks per actor."""
    import pyarrow as pa

    n = len(records)
    num_batches = math.ceil(n / batch_size)
    blocks = max(1, min(num_batches, BLOCKS_PER_WORKER * num_workers))
    rows = math.ceil(num_batches / blocks) * batch_size  # whole batches: no ragged batch per block
    index = np.arange(n, dtype=np.int64)
    paths = [r.path for r in records]
    return [pa.table({"index": index[i:i + rows], "path": paths[i:i + rows]}) for i in range(0, n, rows)]


def predict_distributed(
    checkpoint_path: str | os.PathLike,
    dataset: DetectionDataset,
    cfg,
    num_workers: int,
    batch_size: int | None = None,
    use_gpu: bool | None = None,
    address: str | None = None,
) -> list[dict]:
    """Detections of every record of `dataset`, in record order, as `predict_records` returns them.

    Each dict: `image_id`, `boxes` float32 `[K,4]` xyxy relative clipped to 0..1, `scores` float32
    `[K]`, `labels` int64 `[K]` in 1..C-1. batch_size: images per forward (default
    `cfg.train.eval_batch_size`). use_gpu (default `cfg.ray.use_gpu`): one GPU per actor.
    The checkpoint's class names must equal `dataset.class_names` (ValueError otherwise). An
    unreadable image fails the run with an error naming the file (evaluation must see every image).
    num_workers <= 1 runs in this process (`predict_records`, no Ray); more runs `predict_ray`.
    """
    if num_workers > 1:
        return predict_ray(checkpoint_path, dataset, cfg, num_workers, batch_size, use_gpu, address)
    from ssd_ray.checkpoint import load_model
    from ssd_ray.evaluate.predict import predict_records

    use_gpu = cfg.ray.use_gpu if use_gpu is None else use_gpu
    device = "cuda" if use_gpu else "cpu"
    m = load_model(checkpoint_path, device)
    check_classes(checkpoint_path, m.class_names, dataset)
    # Image size and box variance belong to the weights (as on the actors), the thresholds to the eval config.
    return predict_records(m.model, m.priors, dataset.records, m.image_size,
                           int(batch_size or cfg.train.eval_batch_size), device,
                           m.detect_args_for(evaluation_postprocess(cfg.evaluation.protocol, cfg.postprocess)),
                           normalization=m.input_normalization)


def predict_ray(
    checkpoint_path: str | os.PathLike,
    dataset: DetectionDataset,
    cfg,
    num_workers: int,
    batch_size: int | None = None,
    use_gpu: bool | None = None,
    address: str | None = None,
) -> list[dict]:
    """`predict_distributed` on a Ray actor pool of `num_workers` (>= 1) actors, even for one (benchmarks)."""
    import ray

    from ssd_ray.data.pipeline import data_remote_args

    if num_workers < 1:
        raise ValueError(f"predict_ray needs num_workers >= 1, got {num_workers}")
    checkpoint_path = str(checkpoint_path)
    records = list(dataset.records)
    batch_size = int(batch_size or cfg.train.eval_batch_size)
    use_gpu = cfg.ray.use_gpu if use_gpu is None else use_gpu
    check_classes(checkpoint_path, checkpoint_classes(checkpoint_path), dataset)
    if not records:
        return []
    from ssd_ray.runtime import init_ray  # the project's one Ray start-up (local or cluster)

    init_ray(address, cfg)
    remote = data_remote_args(cfg)
    torch_threads = max(1, int(remote.get("num_cpus", 1)))
    ds = detect_stage(ray.data.from_arrow(_source_blocks(records, num_workers, batch_size)), checkpoint_path,
                      num_workers, batch_size, "cuda" if use_gpu else "cpu", torch_threads,
                      evaluation_postprocess(cfg.evaluation.protocol, cfg.postprocess).model_dump(), **remote)

    def parts():
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            dets = [{"image_id": records[int(i)].image_id, "boxes": np.array(boxes[:n], np.float32).reshape(-1, 4),
                     "scores": np.array(scores[:n], np.float32), "labels": np.array(labels[:n], np.int64)}
                    for i, n, boxes, scores, labels in zip(batch["index"], batch["count"], batch["boxes"],
                                                           batch["scores"], batch["labels"])]
            yield batch["index"], dets

    return assemble_detections(records, parts())


def evaluate_distributed(
    checkpoint_path: str | os.PathLike,
    dataset: DetectionDataset,
    cfg,
    num_workers: int,
    batch_size: int | None = None,
    iou_types: Sequence[str] = ("voc", "coco"),
    coco_gt=None,
    use_gpu: bool | None = None,
    address: str | None = None,
) -> EvalResult:
    """`predict_distributed` on `dataset`, then `score_detections` once on the driver -> `EvalResult`.

    cfg: the evaluation config (`postprocess`, `train.eval_batch_size`, `ray` placement); the
    network itself, its input size and classes come from the checkpoint.
    """
    from ssd_ray.evaluate.run import score_detections

    detections = predict_distributed(checkpoint_path, dataset, cfg, num_workers, batch_size, use_gpu, address)
    detect_args = DetectArgs.from_config(evaluation_postprocess(cfg.evaluation.protocol, cfg.postprocess),
                                         cfg.priors.variance)
    return score_detections(dataset, detections, iou_types, coco_gt, protocol=cfg.evaluation.protocol,
                            detect_args=detect_args)
