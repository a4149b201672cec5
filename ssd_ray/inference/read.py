"""Read, decode and resize images for the model; why a file could not be read, when it could not.

`read_resize` is the Ray Data read task of batch prediction; the in-process path calls `read_image`
too, so both decode the same bytes the same way (cv2, as `ssd_ray.data.augment.decode_image`, which
`Predictor` uses on paths). Imports no torch: read tasks stay light.
"""

from __future__ import annotations

import numpy as np

from ssd_ray import storage
from ssd_ray.data.augment import EvalTransform, decode_image


class UnreadableImage(ValueError):
    """A listed file that gives no image; the message is the reason (the report names the file)."""


def read_image(path: str) -> np.ndarray:
    """The file's pixels (a local path or a URI, read through `ssd_ray.storage`, transient store errors
    retried), uint8 `[H,W,3]` RGB; UnreadableImage saying why not."""
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise UnreadableImage("missing file (removed after listing?)") from None
    except OSError as e:
        raise UnreadableImage(f"cannot read: {e}") from None
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        return decode_image(data)
    except ValueError:
        raise UnreadableImage(f"cannot decode {len(data)} bytes: not an image format cv2 reads") from None


def read_resize(batch: dict[str, np.ndarray], image_size: int) -> dict[str, np.ndarray]:
    """`map_batches` task: `{"path" [b], ...}` -> the same columns plus

    `image` uint8 `[b,S,S,3]` RGB resized to `image_size` (zeros where unreadable), `width`, `height`
    int32 `[b]` of the original image (0 where unreadable), `error` str `[b]` ("" or the reason).
    """
    paths = [str(p) for p in batch["path"]]
    b = len(paths)
    resize = EvalTransform(image_size)
    images = np.zeros((b, image_size, image_size, 3), np.uint8)
    width = np.zeros(b, np.int32)
    height = np.zeros(b, np.int32)
    errors = [""] * b
    for i, path in enumerate(paths):
        try:
            image = read_image(path)
        except UnreadableImage as e:
            errors[i] = str(e)
            continue
        height[i], width[i] = image.shape[:2]
        images[i] = resize(image)
    return {**batch, "image": images, "width": width, "height": height, "error": np.array(errors, dtype=object)}
