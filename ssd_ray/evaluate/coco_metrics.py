"""COCO box metrics through pycocotools' COCOeval, for real COCO data or any `DetectionDataset`.

* Real COCO: pass the pycocotools `COCO` ground-truth object. Record `image_id`s must be the COCO
  image ids as strings, and `DetectionDataset.category_ids` maps class ids back to category ids.
* Any dataset (VOC format too): the ground truth is converted to a COCO dict in memory. Difficult
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
            results.append({"image_id": int(image_id), "category_id": int(category_ids[c]),
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


def coco_evaluate(coco_gt: COCO, results: list[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCOeval (bbox) -> {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}.

    results: COCO results dicts with pixel `[x,y,w,h]` boxes and original category ids.
    image_ids: evaluate only these images (default: every image in coco_gt), e.g. a validation
    subset. A value of -1 means "no ground truth in that setting" (pycocotools' convention).
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
        ev.params.imgIds = sorted(set(int(i) for i in image_ids))
    with _quiet() as out:
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("COCOeval output:\n%s", out.getvalue())
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}


def coco_evaluate_dataset(dataset: DetectionDataset, detections, coco_gt: COCO | None = None) -> dict[str, float]:
    """COCO metrics of per-record detections on a `DetectionDataset`.

    coco_gt None: ground truth converted from the records (`dataset_to_coco`), any dataset format.
    coco_gt given (real COCO): record image_ids are COCO image ids as strings, and
    `dataset.category_ids` must map class ids to the original category ids; only the records'
    images are evaluated.
    """
    records = dataset.records
    if coco_gt is None:
        coco_gt, image_ids = dataset_to_coco(records, dataset.class_names, dataset.category_ids)
        category_ids = [c["id"] for c in coco_gt.dataset["categories"]]
    else:
        if dataset.category_ids is None:
            raise ValueError("coco_evaluate_dataset: dataset.category_ids is None; a COCO ground truth needs "
                             "the class id -> category id map")
        category_ids = list(dataset.category_ids)
        try:
            image_ids = [int(r.image_id) for r in records]
        except ValueError as e:
            raise ValueError(f"coco_evaluate_dataset: with a COCO ground truth, record image_ids must be "
                             f"COCO image ids: {e}") from None
    results = detections_to_coco_results(records, detections, image_ids, category_ids)
    return coco_evaluate(coco_gt, results, image_ids)
