"""One image's detections in its own pixels, and the row every output format writes for it.

Row (JSON lines, per-image JSON, Parquet): `image` (path), `width`, `height`, `detections`: a list of
`{"box": [x1, y1, x2, y2] (original pixels, clipped to the image), "score", "label" (class name),
"label_id" (model space 1..C-1: class_names[label_id - 1])}`, highest score first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageResult:
    path: str
    key: str  # output name of per-image files (`ImageListing.keys`)
    width: int
    height: int
    boxes: np.ndarray  # float32 [K,4] xyxy original pixels
    scores: np.ndarray  # float32 [K]
    labels: np.ndarray  # int64 [K], model space 1..C-1
    names: list[str]  # [K] class names, names[i] = class_names[labels[i] - 1]
    drawn: bytes | None = None  # encoded drawing (suffix `drawn_suffix(path)`), per-image output only


def pixel_boxes(boxes_rel: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Relative xyxy `[b,K,4]` -> original pixels, clipped to the image, float32 `[b,K,4]`, with width
    and height `[b]`: the float32 clamp-and-scale `Predictor` computes, so both paths give identical
    boxes (the clamp also covers models whose post-processing leaves boxes unclipped)."""
    scale = np.stack([width, height, width, height], axis=1).astype(np.float32)  # [b,4]
    return np.clip(np.asarray(boxes_rel, np.float32), 0.0, 1.0) * scale[:, None, :]


def results_from_batch(batch: dict[str, np.ndarray],
                       class_names: list[str]) -> tuple[list[ImageResult], list[tuple[str, str]]]:
    """An output batch of the Ray pipeline -> (results of the readable images, [(path, reason)] of the others).

    batch: `path`, `key`, `width`, `height`, `error` `[b]`; `count` `[b]`, `boxes` `[b,K,4]` relative,
    `scores`, `labels` `[b,K]` (padded, see `detect_stage`); optionally `drawn` `[b]` bytes.
    """
    width = np.asarray(batch["width"], np.int64)
    height = np.asarray(batch["height"], np.int64)
    boxes = pixel_boxes(batch["boxes"], width, height)
    drawn = batch.get("drawn")
    results, unreadable = [], []
    for i, (path, key, error, n) in enumerate(zip(batch["path"], batch["key"], batch["error"], batch["count"])):
        if str(error):
            unreadable.append((str(path), str(error)))
            continue
        labels = np.asarray(batch["labels"][i, :n], np.int64)
        results.append(ImageResult(str(path), str(key), int(width[i]), int(height[i]), boxes[i, :n],
                                   np.asarray(batch["scores"][i, :n], np.float32), labels,
                                   [class_names[int(lb) - 1] for lb in labels],
                                   None if drawn is None else bytes(drawn[i])))
    return results, unreadable


def json_row(r: ImageResult) -> dict:
    """The JSON row of one image; boxes rounded to 0.01 px and scores to 5 decimals (readable files)."""
    return {"image": r.path, "width": r.width, "height": r.height, "detections": [
        {"box": [round(float(v), 2) for v in box], "score": round(float(s), 5), "label": name, "label_id": int(lb)}
        for box, s, lb, name in zip(r.boxes, r.scores, r.labels, r.names)]}


def arrow_table(results: list[ImageResult]):
    """The rows as a pyarrow Table (Parquet), full float32 precision: `detections` is a list of
    struct<box: fixed_size_list<float32>[4], score: float32, label: string, label_id: int32>."""
    import pyarrow as pa

    counts = np.array([len(r.scores) for r in results], np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    boxes = np.concatenate([r.boxes.reshape(-1, 4) for r in results] or [np.zeros((0, 4))]).astype(np.float32)
    scores = np.concatenate([r.scores for r in results] or [np.zeros(0)]).astype(np.float32)
    labels = np.concatenate([r.labels for r in results] or [np.zeros(0)]).astype(np.int32)
    names = [name for r in results for name in r.names]
    dets = pa.StructArray.from_arrays(
        [pa.FixedSizeListArray.from_arrays(pa.array(boxes.reshape(-1)), 4), pa.array(scores),
         pa.array(names, pa.string()), pa.array(labels)], names=["box", "score", "label", "label_id"])
    return pa.table({
        "image": pa.array([r.path for r in results], pa.string()),
        "width": pa.array([r.width for r in results], pa.int32()),
        "height": pa.array([r.height for r in results], pa.int32()),
        "detections": pa.ListArray.from_arrays(pa.array(offsets), dets),
    })
