"""COCO box metrics through pycocotools' COCOeval, for real COCO data or any `DetectionDataset`.

* COCO-format data (`dataset.coco_sources` set by the reader): the official evaluation. The ground
  truth is the dataset's own annotation file(s) through pycocotools (`official_coco_gt`), with its
  crowd regions, `area`s and original image/category ids, so the AP equals running COCOeval on that
  file with the results JSON `detections_to_coco_results` writes. Record `image_id`s are the COCO
  image ids as strings, and `DetectionDataset.category_ids` maps class ids back to category ids;
  only the records' images and the dataset's categories are scored.
* A `COCO` ground-truth object passed in explicitly works the same way.
* Any other dataset (VOC format too): the ground truth is converted to a COCO dict in memory. Difficult
  boxes become `iscrowd=1`: COCOeval ignores crowd ground truth (not counted, and detections on it
  are neither TP nor FP). A plain `ignore` flag would not work: COCOeval overwrites `ignore` with
  `iscrowd` when it prepares the ground truth. Note crowd IoU is intersection / detection area,
  so a detection inside a difficult box is ignored even when it covers only part of it.

Boxes in COCO are continuous pixels `[x, y, w, h]` = relative xyxy * width/height (docs/design.md).
pycocotools prints progress and the summary table; both are captured and logged at debug level.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import logging
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.evaluate.detections import align_detections, detection_arrays, to_pixels

log = logging.getLogger(__name__)

# Order of COCOeval.stats for iouType "bbox".
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


@contextlib.contextmanager
def _quiet():
    """Capture pycocotools' prints. Ray Train V2 replaces `builtins.print` on its workers with a
    function that logs instead of writing to `sys.stdout`, so redirecting stdout alone let them
    through; print is pointed at the sink too for the duration."""
    sink = io.StringIO()
    original = builtins.print

    def to_sink(*objects, sep=" ", end="\n", file=None, flush=False):
        if file not in (None, sys.stdout):
            original(*objects, sep=sep, end=end, file=file, flush=flush)
            return
        # Written here, not through `original`: Ray's replacement logs and ignores `file`.
        sink.write((" " if sep is None else sep).join(map(str, objects)) + ("\n" if end is None else end))

    builtins.print = to_sink
    try:
        with contextlib.redirect_stdout(sink):
            yield sink
    finally:
        builtins.print = original


def _xywh(boxes_px: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes_px[:, :2], boxes_px[:, 2:] - boxes_px[:, :2]], axis=1)


def dataset_to_coco(
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
) -> tuple[COCO, list[int]]:
    """In-memory COCO ground truth for any records -> (COCO object, COCO image id per record).

    Image ids are 1..N in record order; category ids are `category_ids` (default 1..C).
    Annotation ids start at 1: COCOeval stores the matched ground-truth id and treats 0 as
    "unmatched", so an annotation with id 0 could never be a true positive.
    """
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    if len(category_ids) != len(class_names):
        raise ValueError(f"category_ids has {len(category_ids)} entries for {len(class_names)} classes")
    images, annotations = [], []
    for i, rec in enumerate(records):
        images.append({"id": i + 1, "width": int(rec.width), "height": int(rec.height),
                       "file_name": os.path.basename(rec.path) or rec.image_id})
        xywh = _xywh(to_pixels(rec.boxes, rec.width, rec.height))
        for box, label, difficult in zip(xywh, rec.labels, rec.difficult):
            if not 0 <= label < len(class_names):
                raise ValueError(f"record {rec.image_id}: label {int(label)} outside 0..{len(class_names) - 1}")
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(category_ids[label]),
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                "iscrowd": int(difficult),  # difficult -> ignored by COCOeval (see module doc)
            })
    categories = [{"id": int(cid), "name": name} for cid, name in zip(category_ids, class_names)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with _quiet():
        coco.createIndex()
    return coco, [img["id"] for img in images]


def detections_to_coco_results(
    records: Sequence[ImageRecord],
    detections,
    image_ids: Sequence[int],
    category_ids: Sequence[int],
) -> list[dict]:
    """COCO results list `[{"image_id", "category_id", "bbox": [x,y,w,h] pixels, "score"}]`.

    detections: one dict per record (see `ssd_ray.evaluate.detections`), relative xyxy boxes and
    model-space labels; `category_ids[label - 1]` is the COCO category written.
    """
    records = list(records)
    detections = align_detections(records, detections)
    num_classes = len(category_ids) + 1
    results = []
    for rec, det, image_id in zip(records, detections, image_ids):
        boxes, scores, cls = detection_arrays(det, num_classes, f"detections for {rec.image_id}")
        xywh = _xywh(to_pixels(boxes, rec.width, rec.height))
        for box, score, c in zip(xywh, scores, cls):
            results.append({"image_id": image_id if isinstance(image_id, str) else int(image_id),
                            "category_id": int(category_ids[c]),
                            "bbox": [float(v) for v in box], "score": float(score)})
    return results


def _load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    if results:
        with _quiet():
            # loadRes adds keys to the dicts it gets; hand it copies so the caller's list stays as it was.
            return coco_gt.loadRes([dict(r) for r in results])
    # loadRes indexes results[0] and fails on an empty list. An empty result set built the same way
    # lets COCOeval run unchanged: 0 where ground truth exists, -1 where an area range has none.
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                   "categories": copy.deepcopy(coco_gt.dataset["categories"])}
    with _quiet():
        res.createIndex()
    return res


def coco_evaluate(coco_gt: COCO, results: list[dict], image_ids: Sequence[int] | None = None,
                  category_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCOeval (bbox) -> {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}.

    results: COCO results dicts with pixel `[x,y,w,h]` boxes and original category ids.
    image_ids: evaluate only these images (default: every image in coco_gt), e.g. a validation
    subset. category_ids: score only these categories (default: all of coco_gt's), e.g. the classes
    a model trained on a `data.classes` subset predicts. A value of -1 means "no ground truth in that setting" (pycocotools' convention).
    Empty `results` is fine: AP and AR are 0 where ground truth exists. An empty `image_ids` gives
    -1 everywhere (pycocotools would read an empty id list as "all images").
    """
    if image_ids is not None and len(image_ids) == 0:
        return {name: -1.0 for name in COCO_STAT_NAMES}
    known = set(coco_gt.getImgIds())
    unknown = {r["image_id"] for r in results} - known
    if unknown:
        raise ValueError(f"coco_evaluate: results name image ids not in the ground truth, e.g. {sorted(unknown)[:3]}")
    coco_dt = _load_results(coco_gt, results)
    ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if image_ids is not None:
        missing = set(image_ids) - known
        if missing:
            raise ValueError(f"coco_evaluate: image ids not in the ground truth, e.g. {sorted(missing)[:3]}")
        ev.params.imgIds = sorted(set(image_ids))
    if category_ids is not None:
        unknown_cats = set(category_ids) - set(coco_gt.getCatIds())
        if unknown_cats:
            raise ValueError(f"coco_evaluate: category ids not in the ground truth: {sorted(unknown_cats)}")
        ev.params.catIds = sorted(set(category_ids))
    with _quiet() as out:
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("COCOeval output:\n%s", out.getvalue())
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}


# Official ground truth, loaded once per file version: training's periodic validation scores often.
_OFFICIAL_CACHE: dict[tuple, COCO] = {}


def official_coco_gt(dataset: DetectionDataset) -> tuple[COCO, list[str]] | None:
    """`(COCO ground truth, annotation file paths)` of COCO-format data, None for other formats.

    Reads the dataset's own annotation file(s) (`dataset.coco_sources`) with the reader's loader
    (`ssd_ray.data.coco.coco_api`). Several files (two val splits) become one ground truth; their image
    ids must not overlap (ValueError naming the files otherwise), annotation ids are renumbered.
    """
    sources = getattr(dataset, "coco_sources", None)
    if not sources:
        return None
    from ssd_ray import storage
    from ssd_ray.data.coco import annotation_file, coco_api

    paths = [annotation_file(root, split) for root, split in sources]
    # Local files are cached by version; bucket objects (read through ssd_ray.storage) are read each time.
    local = all(not storage.is_uri(p) and os.path.isfile(p) for p in paths)
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths) if local else None
    if key is not None and key in _OFFICIAL_CACHE:
        return _OFFICIAL_CACHE[key], paths
    apis = [coco_api(root, split) for root, split in sources]
    if len(apis) == 1:
        gt = apis[0]
    else:
        cats = apis[0].dataset["categories"]
        images, annotations, seen = [], [], {}
        for path, api in zip(paths, apis):
            if sorted(api.cats) != sorted(c["id"] for c in cats):
                raise ValueError(f"{path}: categories differ from {paths[0]}'s; evaluate the sets one at a time")
            shared = set(api.imgs) & set(seen)
            if shared:
                raise ValueError(f"{path} and {seen[next(iter(shared))]} share image ids (e.g. {sorted(shared)[:3]}): "
                                 f"one COCO ground truth cannot hold both; evaluate the sets one at a time")
            seen.update({i: path for i in api.imgs})
            images += api.dataset["images"]
            annotations += [{**a, "id": len(annotations) + k + 1} for k, a in enumerate(api.dataset["annotations"])]
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": cats}
        with _quiet():
            gt.createIndex()
    if key is not None:
        while len(_OFFICIAL_CACHE) >= 2:
            _OFFICIAL_CACHE.pop(next(iter(_OFFICIAL_CACHE)))
        _OFFICIAL_CACHE[key] = gt
    return gt, paths


@dataclass
class CocoGroundTruth:
    """What scoring a dataset's detections against COCO ground truth needs."""

    coco: COCO
    image_ids: list  # the ground truth's image id of each record, in record order
    category_ids: list[int]  # the ground truth's category id of each class (label - 1)
    source: str  # "records" or the annotation file(s) scored against


def coco_ground_truth(dataset: DetectionDataset, coco_gt: COCO | None = None) -> CocoGroundTruth:
    """The ground truth `coco_evaluate_dataset` scores against: `coco_gt` if given, else the dataset's
    own annotation file(s) (`official_coco_gt`) for COCO-format data, else one built from the records."""
    records = dataset.records
    source = "given COCO object"
    if coco_gt is None:
        official = official_coco_gt(dataset)
        if official is None:
            coco_gt, image_ids = dataset_to_coco(records, dataset.class_names, dataset.category_ids)
            return CocoGroundTruth(coco_gt, image_ids, [c["id"] for c in coco_gt.dataset["categories"]], "records")
        coco_gt, paths = official
        source = ", ".join(paths)
    if dataset.category_ids is None:
        raise ValueError("coco_evaluate_dataset: dataset.category_ids is None; a COCO ground truth needs "
                         "the class id -> category id map")
    # Record ids are the ground truth's ids as strings (ints in COCO files; strings work too).
    by_str = {str(i): i for i in coco_gt.getImgIds()}
    missing = [r.image_id for r in records if r.image_id not in by_str]
    if missing:
        raise ValueError(f"coco_evaluate_dataset: records name images the COCO ground truth ({source}) does not "
                         f"have, e.g. {missing[:3]}")
    return CocoGroundTruth(coco_gt, [by_str[r.image_id] for r in records], list(dataset.category_ids), source)


def coco_evaluate_dataset(dataset: DetectionDataset, detections, coco_gt: COCO | None = None) -> dict[str, float]:
    """COCO metrics of per-record detections on a `DetectionDataset` (ground truth: `coco_ground_truth`).

    Only the records' images and the dataset's categories are evaluated.
    """
    gt = coco_ground_truth(dataset, coco_gt)
    results = detections_to_coco_results(dataset.records, detections, gt.image_ids, gt.category_ids)
    return coco_evaluate(gt.coco, results, gt.image_ids, gt.category_ids)
