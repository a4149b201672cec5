"""Drawing detections: boxes on one image, and a grid of val images for reports.

Built on `torchvision.utils.draw_bounding_boxes` and `make_grid`. Images are uint8 `[H,W,3]` RGB
numpy arrays in and out; boxes here are **pixel** xyxy (`*_px`, continuous: 0 is the left edge of
the first column, W the right edge of the last). Ground truth is drawn green, predictions red with
"name score" captions; predictions are drawn last so they stay visible where they cover the truth.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, make_grid

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 0, 0)


def _check_image(image: np.ndarray, where: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{where}: image must be uint8 [H,W,3] RGB, got {desc}")


def _boxes(boxes_px, where: str) -> torch.Tensor:
    b = torch.as_tensor(np.asarray(boxes_px, dtype=np.float32).reshape(-1, 4))
    if not torch.isfinite(b).all():
        raise ValueError(f"{where}: boxes contain NaN/inf")
    return b


def _draw(chw: torch.Tensor, boxes: torch.Tensor, captions: list[str] | None, color, width: int) -> torch.Tensor:
    if len(boxes) == 0:  # draw_bounding_boxes warns on an empty set; nothing to draw anyway
        return chw
    h, w = chw.shape[1:]
    # Clip to the canvas and give every box at least one pixel: torchvision rejects x2 < x1.
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
    return draw_bounding_boxes(chw, boxes, labels=captions, colors=color, width=width)


def draw_detections(
    image: np.ndarray,
    boxes_px,
    labels_names: Sequence[str],
    scores,
    gt_boxes_px=None,
    width: int = 2,
) -> np.ndarray:
    """Draw predictions (red, captioned "name 0.87") and optional ground truth (green) on a copy.

    image: uint8 `[H,W,3]` RGB. boxes_px: `[K,4]` pixel xyxy; labels_names: K class names; scores: `[K]`.
    gt_boxes_px: `[M,4]` pixel xyxy or None. Returns a new uint8 `[H,W,3]` array (input untouched).
    """
    _check_image(image, "draw_detections")
    boxes = _boxes(boxes_px, "draw_detections predictions")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (len(boxes) == len(labels_names) == len(scores)):
        raise ValueError(f"draw_detections: {len(boxes)} boxes, {len(labels_names)} names and "
                         f"{len(scores)} scores: the lengths must agree")
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if gt_boxes_px is not None:
        chw = _draw(chw, _boxes(gt_boxes_px, "draw_detections ground truth"), None, GT_COLOR, width)
    captions = [f"{n} {s:.2f}" for n, s in zip(labels_names, scores)]
    chw = _draw(chw, boxes, captions, PRED_COLOR, width)
    return chw.permute(1, 2, 0).contiguous().numpy()


def detection_grid(
    images: Sequence[np.ndarray],
    boxes_px: Sequence,
    labels_names: Sequence[Sequence[str]],
    scores: Sequence,
    gt_boxes_px: Sequence | None = None,
    tile: int = 256,
    nrow: int = 4,
) -> np.ndarray:
    """One uint8 `[H,W,3]` RGB picture of several images with their boxes (lists, one entry per image).

    Each image is resized to `tile x tile` first (boxes scaled with it) so captions have the same size
    on every tile; `make_grid` lays the tiles out `nrow` per row with a 2 px black border.
    """
    n = len(images)
    if n == 0:
        raise ValueError("detection_grid: no images")
    if not (len(boxes_px) == len(labels_names) == len(scores) == n) or (
            gt_boxes_px is not None and len(gt_boxes_px) != n):
        raise ValueError("detection_grid: images, boxes, names, scores (and ground truth) need one entry per image")
    tiles = []
    for i, img in enumerate(images):
        _check_image(img, f"detection_grid image {i}")
        h, w = img.shape[:2]
        scale = np.array([tile / w, tile / h, tile / w, tile / h], dtype=np.float32)
        small = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        gt = None if gt_boxes_px is None else np.asarray(gt_boxes_px[i], np.float32).reshape(-1, 4) * scale
        drawn = draw_detections(small, np.asarray(boxes_px[i], np.float32).reshape(-1, 4) * scale,
                                labels_names[i], scores[i], gt)
        tiles.append(torch.from_numpy(drawn).permute(2, 0, 1))
    grid = make_grid(tiles, nrow=min(nrow, n), padding=2)
    return grid.permute(1, 2, 0).contiguous().numpy()


def write_image(image: np.ndarray, path: str) -> None:
    """Write a uint8 `[H,W,3]` RGB image (format from the suffix: .png, .jpg); raises naming the path."""
    _check_image(image, path)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write image {path}")


def records_grid(records, detections, class_names: Sequence[str], score_thresh: float = 0.5,
                 num: int = 16, tile: int = 256) -> np.ndarray:
    """Grid of `num` records spread evenly over the set: ground truth green, detections >= score red.

    records: `ImageRecord`s (relative xyxy ground truth, 0-based labels); detections: aligned dicts
    with relative xyxy `boxes`, `scores`, model-space `labels` (1..C-1), as `predict_records` returns.
    """
    from ssd_ray.data.augment import decode_image

    if not records:
        raise ValueError("records_grid: no records")
    picks = np.unique(np.linspace(0, len(records) - 1, min(num, len(records))).round().astype(int))
    images, boxes, names, scores, gts = [], [], [], [], []
    for i in picks:
        rec, det = records[i], detections[i]
        image = decode_image(rec.path)
        h, w = image.shape[:2]
        scale = np.array([w, h, w, h], dtype=np.float32)
        keep = np.asarray(det["scores"]).reshape(-1) >= score_thresh
        images.append(image)
        boxes.append(np.asarray(det["boxes"], np.float32).reshape(-1, 4)[keep] * scale)
        names.append([class_names[int(lb) - 1] for lb in np.asarray(det["labels"]).reshape(-1)[keep]])
        scores.append(np.asarray(det["scores"]).reshape(-1)[keep])
        gts.append(rec.boxes * scale)
    return detection_grid(images, boxes, names, scores, gts, tile=tile)
