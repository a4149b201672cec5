"""Prediction on dataset records: image files -> per-image detection dicts.

Kept apart from scoring so distributed evaluation can run `predict_records` on several Ray workers
(each on its shard of records) and score the gathered dicts once with `score_detections`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import cv2
import numpy as np
import torch

from ssd_ray.data.records import ImageRecord
from ssd_ray.postprocess import DetectArgs


def load_image_resized(path: str, image_size: int) -> np.ndarray:
    """Image file -> [image_size, image_size, 3] uint8 RGB (cv2 decode, INTER_LINEAR resize)."""
    from ssd_ray import storage

    if storage.is_uri(path):  # an object in a bucket: its bytes, read with retries
        try:
            bgr = cv2.imdecode(np.frombuffer(storage.read_bytes(path), np.uint8), cv2.IMREAD_COLOR)
        except OSError as e:
            raise ValueError(f"cannot read image {path!r}: {e}") from e
    else:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path!r} (missing or not a decodable image)")
    bgr = cv2.resize(bgr, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def predict_records(
    model: torch.nn.Module,
    priors,
    records: Sequence[ImageRecord],
    image_size: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    detect_args: DetectArgs | None = None,
    decode_threads: int = 4,
    normalization=None,
) -> list[dict]:
    """Run the model on every record's image -> one detection dict per record, in record order.

    priors: [P,4] cxcywh (tensor or array). Each image is resized to image_size x image_size,
    normalised on the device with `ssd_ray.model.normalize` and the model's `normalization` (a
    `Normalization`, its dict or name; None: ssd-ray's own; a loaded model's is
    `LoadedModel.input_normalization`), and `loc [B,P,4], conf [B,P,C] = model(x)` is decoded by
    `ssd_ray.postprocess.detect` with `detect_args` (default: `DetectArgs()`, the reference's
    settings; a loaded model's own are `LoadedModel.detect_args`). decode_threads: threads decoding
    each batch's image files.
    Returns dicts {"image_id": str, "boxes": [K,4] float32 xyxy relative, clipped to 0..1 unless
    `detect_args.clip` is "none",
    "scores": [K] float32, "labels": [K] int64 in 1..C-1 (model space)} as numpy arrays (picklable,
    small: safe to return from Ray tasks). The model's train/eval mode is restored afterwards.
    """
    # Imported here, not at module level: scoring (`ssd_ray.evaluate` on the driver) needs no model code.
    from ssd_ray.model import normalize
    from ssd_ray.model.normalize import Normalization
    from ssd_ray.postprocess import detect

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    detect_args = detect_args or DetectArgs()
    args, clip = detect_args.kwargs(), detect_args.clips_output
    norm = Normalization.from_spec(normalization)
    device = torch.device(device)
    priors = torch.as_tensor(priors, dtype=torch.float32, device=device)
    records = list(records)
    out: list[dict] = []
    was_training = model.training
    model.eval()
    try:
        # cv2 releases the GIL while decoding, so a few threads overlap file reads with each other.
        with ThreadPoolExecutor(max_workers=max(1, decode_threads)) as pool, torch.inference_mode():
            for start in range(0, len(records), batch_size):
                batch = records[start:start + batch_size]
                images = np.stack(list(pool.map(lambda r: load_image_resized(r.path, image_size), batch)))
                x = normalize(torch.from_numpy(images).to(device), spec=norm)
                loc, conf = model(x)
                dets = detect(loc, conf, priors, **args)
                if len(dets) != len(batch):
                    raise RuntimeError(f"detect returned {len(dets)} results for a batch of {len(batch)} images")
                for rec, det in zip(batch, dets):
                    boxes = det["boxes"]
                    if clip:  # boxes leaving the image would distort IoU and COCO areas
                        boxes = boxes.clamp(0.0, 1.0)
                    out.append({
                        "image_id": rec.image_id,
                        "boxes": boxes.float().cpu().numpy().reshape(-1, 4),
                        "scores": det["scores"].float().cpu().numpy().reshape(-1),
                        "labels": det["labels"].long().cpu().numpy().reshape(-1),
                    })
    finally:
        model.train(was_training)
    return out
