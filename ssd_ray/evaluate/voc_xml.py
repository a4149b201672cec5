"""`voc_eval`: the py-faster-rcnn VOC evaluation on annotation XML files.

The contract is the widely used `voc_eval(...) -> rec, prec, ap` with two changes: detections come
as a list instead of a results file, and annotations are parsed once per call and kept in memory
(no pickle cache files on disk).

Pixel conventions (`pixel_convention`):

* "devkit" (default): the official VOC devkit and py-faster-rcnn. XML boxes are used as they are
  (1-based, inclusive) and IoU adds 1 to every width and height. This is the same IoU as
  continuous boxes `(xmin - 1, ymin - 1, xmax, ymax)`, which is how `ssd_ray` stores boxes
  (docs/design.md), so `evaluate_detections` on records gives the devkit verdicts.
* "ssd_pytorch": the port shipped with ssd.pytorch (eval.py): it subtracts 1 from every XML box
  coordinate (`int(text) - 1`) and adds nothing in the IoU. Implemented exactly so, to reproduce
  numbers reported with that code. (ssd.pytorch also adds 1 to its detections when it writes the
  results file; here detections are taken as given, in the XML's pixel coordinates.)
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import Iterable, Sequence

import numpy as np

from ssd_ray.evaluate.ap import voc_ap
from ssd_ray.evaluate.matching import match_class, precision_recall

PIXEL_CONVENTIONS = {
    # name: (offset added to XML box coordinates, term added to widths/heights in IoU)
    "devkit": (0.0, 1.0),
    "ssd_pytorch": (-1.0, 0.0),
}


def parse_voc_xml(path: str) -> list[dict]:
    """Objects of one VOC annotation file: [{"name", "bbox": [xmin, ymin, xmax, ymax], "difficult"}].

    Coordinates are read as floats (some VOC-format tools write "273.5"); a missing <difficult>
    counts as 0.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"{path}: cannot read VOC annotation: {e}") from e
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = obj.findtext("name")
        bndbox = obj.find("bndbox")
        if name is None or bndbox is None:
            raise ValueError(f"{path}: object {i} lacks <name> or <bndbox>")
        bbox = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(tag)
            try:
                bbox.append(float(text))
            except (TypeError, ValueError):
                raise ValueError(f"{path}: object {i} ({name}): bad <{tag}> {text!r}") from None
        difficult = obj.findtext("difficult")
        objects.append({
            "name": name.strip(),
            "bbox": bbox,
            "difficult": bool(int(difficult)) if difficult not in (None, "") else False,
        })
    return objects


def voc_eval(
    annotations_dir: str,
    image_ids: Sequence[str],
    classname: str,
    detections: Iterable[tuple],
    ovthresh: float = 0.5,
    use_07_metric: bool = True,
    pixel_convention: str = "devkit",
) -> tuple[np.ndarray, np.ndarray, float]:
    """VOC evaluation of one class against `<annotations_dir>/<image_id>.xml`.

    detections: iterable of `(image_id, score, xmin, ymin, xmax, ymax)`, boxes in the XML's pixel
    coordinates; every image_id must be one of `image_ids`.
    Returns `rec` [D], `prec` [D] (float64, detections in score order; empty when there are none)
    and `ap` (VOC07 11-point if use_07_metric else area).
    Difficult objects are ignored: they do not count in npos, and a detection matched to one is
    neither TP nor FP.
    A class with no non-difficult ground truth in these images has no defined AP: `ap` is NaN and
    `rec` is NaN. Callers above this function report such classes as absent (see
    `evaluate_detections`), never as a NaN or 0 inside a mean.
    """
    if pixel_convention not in PIXEL_CONVENTIONS:
        raise ValueError(f"pixel_convention must be one of {sorted(PIXEL_CONVENTIONS)}, got {pixel_convention!r}")
    offset, plus_one = PIXEL_CONVENTIONS[pixel_convention]
    image_ids = [str(i) for i in image_ids]
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    if len(index) != len(image_ids):
        raise ValueError("voc_eval: image_ids contains duplicates")

    gt_boxes, gt_difficult = [], []
    for image_id in image_ids:
        objects = [o for o in parse_voc_xml(os.path.join(annotations_dir, f"{image_id}.xml"))
                   if o["name"] == classname]
        gt_boxes.append(np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4) + offset)
        gt_difficult.append(np.array([o["difficult"] for o in objects], dtype=bool))

    det_image, det_scores, det_boxes = [], [], []
    for k, det in enumerate(detections):
        if len(det) != 6:
            raise ValueError(f"voc_eval: detection {k} must be (image_id, score, xmin, ymin, xmax, ymax), got {det!r}")
        image_id = str(det[0])
        if image_id not in index:
            raise ValueError(f"voc_eval: detection {k} is on image {image_id!r}, which is not in image_ids")
        det_image.append(index[image_id])
        det_scores.append(float(det[1]))
        det_boxes.append([float(v) for v in det[2:]])

    match = match_class(gt_boxes, gt_difficult, np.array(det_image, dtype=np.int64),
                        np.array(det_scores), np.array(det_boxes).reshape(-1, 4), ovthresh, plus_one)
    rec, prec = precision_recall(match)
    ap = voc_ap(rec, prec, use_07_metric) if match.npos > 0 else math.nan
    return rec, prec, ap
