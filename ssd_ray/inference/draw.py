"""Drawn copies of per-image output: the original image with its detections, encoded to bytes.

On the Ray path `draw_batch` runs as a CPU task after the model (it re-reads the original: carrying
full-size images through the actors would cost more object-store traffic than a second read), and
the driver only writes the bytes; the in-process path calls `render` on the image it decoded.
"""

from __future__ import annotations

import posixpath

import cv2
import numpy as np


def drawn_suffix(path: str) -> str:
    """`.png` for PNG inputs (lossless stays lossless), `.jpg` for everything else."""
    return ".png" if posixpath.splitext(path)[1].lower() == ".png" else ".jpg"


def render(image: np.ndarray, boxes_px: np.ndarray, names: list[str], scores: np.ndarray, suffix: str) -> bytes:
    """uint8 `[H,W,3]` RGB + detections (pixel xyxy `[K,4]`, K class names, `[K]` scores) -> the
    drawn image (`ssd_ray.evaluate.visualize.draw_detections`) encoded as `suffix` (".jpg" / ".png")."""
    from ssd_ray.evaluate.visualize import draw_detections

    drawn = draw_detections(image, boxes_px, names, scores)
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode a drawing as {suffix}")
    return buf.tobytes()


def draw_batch(batch: dict[str, np.ndarray], class_names: list[str]) -> dict[str, np.ndarray]:
    """`map_batches` task after the detection actors: adds `drawn` (encoded bytes per row, b"" where
    the image was unreadable)."""
    from .read import UnreadableImage, read_image
    from .results import pixel_boxes

    boxes = pixel_boxes(batch["boxes"], batch["width"], batch["height"])
    drawn = []
    for i, (path, error, n) in enumerate(zip(batch["path"], batch["error"], batch["count"])):
        path = str(path)
        if str(error):
            drawn.append(b"")
            continue
        try:
            image = read_image(path)
        except UnreadableImage:  # changed since it was read: the detections stand, without a drawing
            drawn.append(b"")
            continue
        names = [class_names[int(lb) - 1] for lb in batch["labels"][i, :n]]
        drawn.append(render(image, boxes[i, :n], names, batch["scores"][i, :n], drawn_suffix(path)))
    return {**batch, "drawn": np.array(drawn, dtype=object)}
