"""Config -> datasets: which reader, which sets, and the synthetic shapes data generated on first use."""

from __future__ import annotations

import logging
from typing import Literal

from .. import storage
from ..errors import DataError
from .records import DetectionDataset, SkipCounter

log = logging.getLogger(__name__)


def ensure_synthetic(data_cfg) -> None:
    """Write the configured shapes dataset into `data.root` unless a complete copy is already there.

    Only into a missing or empty folder or one the generator stamped (`shapes.target_problem`): a
    `data.root` holding anything else raises `DataError` before a file is written, since it may be
    the user's own dataset (a config copied from configs/shapes.yaml keeps `data.synthetic`).
    """
    syn = data_cfg.synthetic
    if syn is None:
        return
    from .shapes import find_existing, target_problem, write_shapes

    if find_existing(data_cfg.root, data_cfg.format, syn.train, syn.val, syn.seed, syn.size):
        return
    problem = target_problem(data_cfg.root)
    if problem is not None:
        raise DataError(
            f"data.synthetic asks for generated shapes data in data.root, but {problem}. Nothing was "
            f"written. To train on the data in that folder, remove the `synthetic:` entry from the "
            f"config's data section (and set data.classes to its classes); to generate shapes data, "
            f"set data.root to a missing or empty folder (e.g. --set data.root=data/shapes)")
    log.info("writing synthetic shapes data (%d train, %d val) to %s", syn.train, syn.val, data_cfg.root)
    write_shapes(data_cfg.root, data_cfg.format, syn.train, syn.val, syn.seed, syn.size)


def class_names_for(data_cfg) -> list[str] | None:
    if data_cfg.classes is not None:
        return list(data_cfg.classes)
    if data_cfg.synthetic is not None:
        from .shapes import SHAPE_CLASSES

        return list(SHAPE_CLASSES)
    return None  # the format's own list


def load_split(data_cfg, which: Literal["train", "val"], index_dir: str | None = None) -> DetectionDataset:
    """Read the train or val sets named in the config, and check they agree with it.

    Training drops difficult objects unless `keep_difficult` and, when `keep_empty` is false, images
    without objects; evaluation keeps everything (difficult objects are ignored when scoring).
    `data.classes` selects classes (VOC: by object name; COCO: by category name, a subset of the
    JSON's), in its order; objects of other classes are left out on purpose.

    Raises `DataError` before any training when the data and the config disagree (`checks`): VOC-format
    data without `data.classes` whose annotations use non-Pascal names; more than
    `data.bad_records_limit` of the objects or images dropped as bad records; a class of
    `data.classes` without any train object; train sets without any object. `data.accept_bad_records`
    turns the middle two into warnings.

    A `data.root` in a bucket (`s3://...`) is checked first (`StorageError` naming it: no credentials,
    no bucket, no permission, nothing there), then read through the annotation index under
    `index_dir` (ssd_ray/data/index.py; default: a local cache folder), built on the first read.
    """
    from . import checks

    if storage.is_uri(data_cfg.root):
        storage.check_access(data_cfg.root, "data.root")
    ensure_synthetic(data_cfg)
    train = which == "train"
    names = class_names_for(data_cfg)
    sets = data_cfg.train_sets if train else data_cfg.val_sets
    where = f"the {which} sets {sets} of {data_cfg.root}"
    if data_cfg.format == "voc":
        from .voc import read_voc

        image_sets = data_cfg.voc_image_sets(which)
        opts = {"class_names": names, "keep_difficult": data_cfg.keep_difficult or not train,
                "class_subset": data_cfg.classes is not None}
        ds = _read(data_cfg, image_sets, opts, lambda: read_voc(data_cfg.root, image_sets, **opts), index_dir, where)
        if names is None:
            checks.check_default_voc_classes(ds, where)
    else:
        from .coco import read_coco

        opts = {"keep_empty": True, "class_names": data_cfg.classes}
        parts = [_read(data_cfg, [s], opts, lambda s=s: read_coco(data_cfg.root, s, **opts), index_dir,
                       f"the {which} set {s} of {data_cfg.root}") for s in sets]
        ds = parts[0] if len(parts) == 1 else _concat(parts)
    checks.check_drops(ds, where, data_cfg.bad_records_limit, data_cfg.accept_bad_records)
    if train and data_cfg.classes is not None and not data_cfg.accept_bad_records:
        checks.check_classes_present(ds, data_cfg.classes, where)
    if train:
        checks.check_has_objects(ds, where)
    if train and not data_cfg.keep_empty:
        ds.records = [r for r in ds.records if len(r.boxes)]
    if not ds.records:
        raise DataError(f"{where} hold no usable image (skipped {ds.skipped.summary() or 'nothing'})")
    return ds


def _read(data_cfg, sets, options: dict, read, index_dir: str | None, what: str) -> DetectionDataset:
    """`read()`, or for a bucket root its annotation index (reused while the source is unchanged)."""
    if not storage.is_uri(data_cfg.root):
        return read()  # local files list and parse fast enough; no index to keep in step
    from .index import load_or_build

    return load_or_build(data_cfg.root, data_cfg.format, sets, options, read, index_dir, what)


def _concat(parts: list[DetectionDataset]) -> DetectionDataset:
    first = parts[0]
    for p in parts[1:]:
        if p.class_names != first.class_names:
            raise DataError(f"COCO splits disagree on categories: {first.class_names} vs {p.class_names}; "
                            f"set data.classes to the categories to train")
    skipped = SkipCounter()
    for p in parts:
        skipped.merge(p.skipped)
    sources = [s for p in parts for s in (p.coco_sources or [])]  # official COCO evaluation reads these files
    return DetectionDataset(first.class_names, [r for p in parts for r in p.records], skipped, first.category_ids,
                            coco_sources=sources or None)
