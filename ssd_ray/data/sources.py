"""Config -> datasets: which reader, which sets, and the synthetic shapes data generated on first use."""

from __future__ import annotations

import logging
from typing import Literal

from .records import DetectionDataset, SkipCounter

log = logging.getLogger(__name__)


def ensure_synthetic(data_cfg) -> None:
    """Write the configured shapes dataset into `data.root` unless a complete copy is already there."""
    syn = data_cfg.synthetic
    if syn is None:
        return
    from .shapes import find_existing, write_shapes

    if find_existing(data_cfg.root, data_cfg.format, syn.train, syn.val, syn.seed, syn.size):
        return
    log.info("writing synthetic shapes data (%d train, %d val) to %s", syn.train, syn.val, data_cfg.root)
    write_shapes(data_cfg.root, data_cfg.format, syn.train, syn.val, syn.seed, syn.size)


def class_names_for(data_cfg) -> list[str] | None:
    if data_cfg.classes is not None:
        return list(data_cfg.classes)
    if data_cfg.synthetic is not None:
        from .shapes import SHAPE_CLASSES

        return list(SHAPE_CLASSES)
    return None  # the format's own list


def load_split(data_cfg, which: Literal["train", "val"]) -> DetectionDataset:
    """Read the train or val sets named in the config.

    Training drops difficult objects unless `keep_difficult` and, when `keep_empty` is false, images
    without objects; evaluation keeps everything (difficult objects are ignored when scoring).
    """
    ensure_synthetic(data_cfg)
    train = which == "train"
    names = class_names_for(data_cfg)
    if data_cfg.format == "voc":
        from .voc import read_voc

        ds = read_voc(data_cfg.root, data_cfg.voc_image_sets(which), class_names=names,
                      keep_difficult=data_cfg.keep_difficult or not train)
    else:
        from .coco import read_coco

        sets = data_cfg.train_sets if train else data_cfg.val_sets
        parts = [read_coco(data_cfg.root, s, keep_empty=data_cfg.keep_empty or not train) for s in sets]
        ds = parts[0] if len(parts) == 1 else _concat(parts)
    if train and not data_cfg.keep_empty:
        ds.records = [r for r in ds.records if len(r.boxes)]
    if not ds.records:
        raise ValueError(f"the {which} sets {data_cfg.train_sets if train else data_cfg.val_sets} of "
                         f"{data_cfg.root} hold no usable image")
    return ds


def _concat(parts: list[DetectionDataset]) -> DetectionDataset:
    first = parts[0]
    for p in parts[1:]:
        if p.class_names != first.class_names:
            raise ValueError(f"COCO splits disagree on categories: {first.class_names} vs {p.class_names}")
    skipped = SkipCounter()
    for p in parts:
        skipped.update(p.skipped)
    return DetectionDataset(first.class_names, [r for p in parts for r in p.records], skipped, first.category_ids)
