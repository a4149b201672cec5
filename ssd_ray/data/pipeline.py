"""Records -> Ray Data -> ready training batches on each worker.

The training stream is a finite dataset of *sample positions*: position `t` belongs to epoch
`t // N` and shows record `perm_e[t % N]`, where `perm_e` is a permutation seeded by `(seed, epoch)`.
A run of `max_iter` iterations consumes exactly `(max_iter - start_iter) * batch_size` positions, so
the loop reads one stream across epoch boundaries (the reference's StopIteration cannot happen) and a
resumed run starts at the position where the checkpoint stopped.

Each position is decoded and augmented by a Ray Data `map_batches` task on CPU nodes, with
randomness from `(seed, epoch, record index)`: a fresh augmentation every epoch, identical for the same
sample wherever it runs. Batches cross to the workers as uint8 images (normalised on the device) and
padded ground truth (`boxes [B,M,4]`, `labels [B,M]` with -1 padding); matching runs batched on the
worker (`ssd_ray.boxes.match_batch`), which costs milliseconds there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .augment import SSDAugmentation, decode_image
from .extra_augment import ExtraAugment, SSDWithExtra
from .records import DetectionDataset, ImageRecord

log = logging.getLogger(__name__)

ROWS_PER_BLOCK = 256  # a few blocks per data CPU per thousand samples: big enough to amortise tasks
MAP_BATCH = 32  # rows per map_batches call
SUBSTITUTE_TRIES = 8  # records tried in place of an unreadable image before giving up on the row


def sample_schedule(num_records: int, seed: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch and record index of stream positions `[start, start + count)`: each epoch a seeded permutation."""
    if num_records <= 0:
        raise ValueError("the training set is empty")
    pos = np.arange(start, start + count, dtype=np.int64)
    epochs = pos // num_records
    index = np.empty_like(pos)
    for e in np.unique(epochs):
        sel = epochs == e
        perm = np.random.default_rng([seed, int(e)]).permutation(num_records)
        index[sel] = perm[pos[sel] % num_records]
    return epochs, index


@dataclass(frozen=True)
class _Sample:
    path: str
    boxes: np.ndarray
    labels: np.ndarray


class TrainSampleMaker:
    """`map_batches` function: `{"epoch", "index", "start_iter"}` rows -> decoded, augmented, padded samples.

    Output columns: `image` uint8 `[b,S,S,3]` RGB, `boxes` float32 `[b,M,4]` xyxy 0..1, `labels` int64
    `[b,M]` (0-based, -1 = padding), `skipped` int32 `[b]` (unreadable images replaced to make this row),
    `extra_dropped` int32 `[b]` (boxes that `data.augment.extra` pushed out of the image; 0 without extras),
    `start_iter` int64 `[b]` (the iteration the stream began at, passed through when the rows have it).
    An unreadable image is logged with its path, counted, and replaced by another record chosen
    deterministically, so the stream keeps its length and DDP ranks stay in step.

    cache_mb: decoded images kept (read-only) for the next epochs, up to this many MB (`data.decode_cache_mb`).
    """

    def __init__(self, records: list[ImageRecord], augment: SSDAugmentation | SSDWithExtra, seed: int,
                 max_boxes: int, cache_mb: int = 0):
        self.samples = [_Sample(r.path, r.boxes, r.labels) for r in records]
        self.augment = augment
        self.seed = seed
        self.max_boxes = max_boxes
        self.cache: dict[int, np.ndarray] = {}
        self.cache_budget = int(cache_mb) << 20
        self.cache_bytes = 0
        if isinstance(augment, SSDWithExtra):
            augment.prepare()  # import albumentations and build the extras while the actor starts

    def _decode(self, i: int) -> np.ndarray:
        """Record `i`'s pixels, from the cache when an earlier epoch decoded it (read-only there: the
        augmentation makes new arrays, and a write would raise instead of changing later epochs)."""
        image = self.cache.get(i)
        if image is None:
            image = decode_image(self.samples[i].path)
            if self.cache_bytes + image.nbytes <= self.cache_budget:
                image.flags.writeable = False
                self.cache[i] = image
                self.cache_bytes += image.nbytes
        return image

    def _load(self, index: int) -> tuple[np.ndarray, _Sample, int]:
        n = len(self.samples)
        for attempt in range(SUBSTITUTE_TRIES):
            # A fixed stride walks to a different record on each attempt, the same wherever it runs.
            i = (index + attempt * 7919) % n
            s = self.samples[i]
            try:
                return self._decode(i), s, attempt
            except (ValueError, OSError) as e:
                log.warning("skipped (unreadable image): %s: %s", s.path, e)
        raise RuntimeError(f"{SUBSTITUTE_TRIES} images in a row could not be read, starting at "
                           f"{self.samples[index].path}: is the dataset readable from this node?")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        b, size, m = len(batch["index"]), self.augment.size, self.max_boxes
        images = np.empty((b, size, size, 3), dtype=np.uint8)
        boxes = np.zeros((b, m, 4), dtype=np.float32)
        labels = np.full((b, m), -1, dtype=np.int64)
        skipped = np.zeros(b, dtype=np.int32)
        dropped = np.zeros(b, dtype=np.int32)
        with_extra = isinstance(self.augment, SSDWithExtra)
        for row, (epoch, index) in enumerate(zip(batch["epoch"].tolist(), batch["index"].tolist())):
            image, s, skipped[row] = self._load(index)
            rng = np.random.default_rng([self.seed, epoch, index])
            if with_extra and not image.flags.writeable:  # user transforms may work in place: not on the cache
                image = image.copy()
            try:
                img, bx, lb = self.augment(image, s.boxes, s.labels, rng)
            except Exception as e:  # a user's extra transform can fail on one image size: say which image
                raise RuntimeError(f"augmenting {s.path} ({image.shape[1]}x{image.shape[0]}) failed: "
                                   f"{type(e).__name__}: {e}") from e
            if with_extra:
                dropped[row] = self.augment.last_dropped
            images[row] = img
            k = min(len(bx), m)  # more than max_boxes objects: the rest are dropped (config data.max_boxes)
            boxes[row, :k], labels[row, :k] = bx[:k], lb[:k]
        out = {"image": images, "boxes": boxes, "labels": labels, "skipped": skipped, "extra_dropped": dropped}
        if "start_iter" in batch:  # where the training stream began: the loop's resume check
            out["start_iter"] = np.asarray(batch["start_iter"], np.int64)
        return out


def make_augmentation(cfg) -> SSDAugmentation | SSDWithExtra:
    """The training augmentation of `cfg.data.augment`: the SSD recipe, after the albumentations extras if any.

    Without `extra` this is the plain `SSDAugmentation` (albumentations is never imported).
    """
    a = cfg.data.augment
    ssd = SSDAugmentation(cfg.model.min_dim, photometric=a.photometric, expand=a.expand,
                          max_expand_ratio=a.max_expand_ratio, crop=a.crop, mirror=a.mirror)
    if not a.extra:
        return ssd
    return SSDWithExtra(ssd, ExtraAugment(a.extra, a.extra_min_visibility))


def data_remote_args(cfg) -> dict:
    """The one place where data operators' resources and placement (Ray label selectors) are set."""
    args: dict = {"num_cpus": cfg.ray.data_cpus}
    if cfg.ray.data_label_selector:
        args["label_selector"] = dict(cfg.ray.data_label_selector)
    return args


try:  # Ray's execution-callback base; absent without Ray (the GPU check imports this module).
    from ray.data._internal.execution.execution_callback import ExecutionCallback as _CallbackBase
except ImportError:  # pragma: no cover
    _CallbackBase = object


class IdleBackoff(_CallbackBase):
    """Paces Ray Data's scheduling loop with a short sleep per step.

    Ray Data 2.60's scheduling loop only blocks in `ray.wait(timeout=0.1)`, and that returns at once
    while a map task has outputs waiting that backpressure does not let it read (or skips the wait
    when no task runs). Whenever augmentation runs ahead of training, the loop therefore spins. In the
    training worker, which executes the pipeline on single-worker runs, the spin held the GIL against
    the training thread: py-spy showed the executor thread as busy as the training thread, and
    training ran at ~48 img/s instead of ~115 on 2 cores. Each step also costs 3-4 ms of Python
    (resource budgets, metrics gauges, issue detectors: py-spy of the split coordinator), so a 5 ms
    sleep still left the coordinator at 20% of a core on the 2-core demo. 25 ms caps the loop at 40
    steps/s; throughput is not capped with it, because a step collects every finished map call and
    launches as many new ones as the budget allows, and the workers prefetch batches meanwhile.
    """

    STEP_SLEEP_S = 0.025

    def on_execution_step(self, executor) -> None:
        time.sleep(self.STEP_SLEEP_S)


def configure_data_context() -> None:
    """This process's Ray Data context for training streams (Ray Train hands the driver's to the workers).

    No progress bars: rank 0's log line per iteration window is the progress report. The scheduling
    loop is paced by `IdleBackoff`.
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if IdleBackoff not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes.append(IdleBackoff)


def build_train_dataset(dataset: DetectionDataset, cfg, start_iter: int = 0):
    """The lazy Ray dataset of training samples for iterations `[start_iter, max_iter)`.

    Never materialised: Ray Data streams it through the augmentation tasks to the workers.
    """
    import ray

    count = (cfg.train.max_iter - start_iter) * cfg.train.batch_size
    if count <= 0:
        raise ValueError(f"nothing to train: start iteration {start_iter} >= max_iter {cfg.train.max_iter}")
    epochs, index = sample_schedule(len(dataset.records), cfg.train.seed, start_iter * cfg.train.batch_size, count)
    starts = np.full(count, start_iter, np.int64)  # every row says where its stream began (resume check)
    blocks = [pa.table({"epoch": epochs[i:i + ROWS_PER_BLOCK], "index": index[i:i + ROWS_PER_BLOCK],
                        "start_iter": starts[i:i + ROWS_PER_BLOCK]}) for i in range(0, count, ROWS_PER_BLOCK)]
    configure_data_context()  # datasets carry the context of the process that builds them
    # A pool of long-lived actors, not tasks: Ray reaped idle task workers between backpressured
    # tasks, so every task paid a fresh process (imports + unpickling the records), which measured
    # as most of the data cost on 2 cores. Actors load the records once.
    n = cfg.ray.data_concurrency
    compute = ray.data.ActorPoolStrategy(size=n) if n else ray.data.ActorPoolStrategy(min_size=1)
    return ray.data.from_arrow(blocks).map_batches(
        TrainSampleMaker, fn_constructor_kwargs={
            "records": dataset.records, "augment": make_augmentation(cfg), "seed": cfg.train.seed,
            "max_boxes": cfg.data.max_boxes, "cache_mb": cfg.data.decode_cache_mb},
        batch_size=MAP_BATCH, batch_format="numpy", compute=compute, **data_remote_args(cfg))


def data_execution_options(cfg, preserve_order: bool):
    """Ray Data options for the training ingest: order (exact resume) and placement of the whole dataset."""
    from ray.data import ExecutionOptions

    return ExecutionOptions(preserve_order=preserve_order,
                            label_selector=dict(cfg.ray.data_label_selector) if cfg.ray.data_label_selector else None)


try:  # Ray's collate base class; the module stays importable without Ray for the GPU check script.
    from ray.data.collate_fn import NumpyBatchCollateFn as _CollateBase
except ImportError:  # pragma: no cover
    _CollateBase = object


class SSDCollate(_CollateBase):
    """Numpy batch -> dict of CPU tensors (copied: Ray's numpy batches are read-only)."""

    def __call__(self, batch: dict[str, np.ndarray]):
        import torch

        return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in batch.items()}
