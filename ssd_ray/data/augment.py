"""SSD training augmentation and the evaluation resize (numpy uint8 RGB in, uint8 RGB out).

Recipe (Liu et al. 2016 and the original Caffe SSD, in the order ssd.pytorch applies it, its bugs
fixed): photometric distortion -> zoom-out expand (p 0.5) -> IoU-constrained random crop -> horizontal
mirror (p 0.5) -> resize to `size x size`.

How it is made fast (see bench/data.py for the figures):

* Expand, crop, mirror and resize are ONE affine map from the output pixel grid back to the source
  image. `sample_geometry` draws the expand canvas and the crop patch analytically (integer pixel
  coordinates exactly as the reference computes them); `_render` then produces the output straight
  from the source image: `cv2.resize` of a slice (+ `cv2.flip`) when the patch lies inside the image,
  otherwise one `cv2.warpAffine` (INTER_LINEAR, constant border = mean pixel) over just the output
  rectangle the image covers. The expanded canvas (up to 16x the image) is never built.
* Photometric distortion runs on uint8 with LUTs and one uint8 HSV round trip, AFTER the warp, on the
  output rectangle that the source image covers (at most 300x300 instead of the full source image).
  The expand fill outside that rectangle is never touched, so it stays exactly `mean_pixel` as in
  the reference, where distortion runs before the expand. Only the one-pixel seam where bilinear
  interpolation blends image and fill is distorted too: a negligible difference.
  Distorting after the resize instead of before is exact for brightness/contrast up to clipping
  (affine maps commute with bilinear interpolation) and a close approximation for saturation/hue.
* albumentations is not used: its ColorJitter / HueSaturationValue / RandomBrightnessContrast draw
  different ranges and fixed orders (not the reference's "contrast before or after HSV" coin, nor
  its per-step p 0.5), and its crop/expand transforms build the canvas and work per step, which is
  what this module avoids. Importing it also pulls in torch, which the per-sample path does not need.
  Users' own albumentations transforms (`data.augment.extra`) run before this recipe, on the source
  image: ssd_ray/data/extra_augment.py.

Conventions: images uint8 HxWx3 RGB; boxes `[n,4]` float32 xyxy relative 0..1; labels `[n]` int64;
randomness only from the `numpy.random.Generator` passed in (the caller seeds it with
`(seed, epoch, index)`).

Images without boxes: the IoU-constrained crop modes treat the constraint as vacuously satisfied
(any patch of valid size/aspect is accepted), and the "a box centre must fall in the patch" rule does
not apply; the output has boxes of shape (0,4).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import cv2
import numpy as np

# Crop modes of the reference sampler, drawn uniformly: "whole" keeps the whole image, a float is the
# min IoU that the patch must reach with at least one ground-truth box, "free" is an unconstrained patch.
CROP_MODES: tuple = ("whole", 0.1, 0.3, 0.5, 0.7, 0.9, "free")
CROP_TRIES = 50  # candidate patches per mode before drawing another mode (reference: 50)
CROP_ROUNDS = 10  # modes drawn before giving up and keeping the whole image (reference: unbounded)
CROP_MIN_SCALE = 0.3  # patch side lengths uniform in [0.3, 1] of the (expanded) image side
CROP_MIN_ASPECT, CROP_MAX_ASPECT = 0.5, 2.0  # accepted patch h/w in pixels

# RandomLightingNoise of the reference: one of the six channel orders (identity included).
_CHANNEL_PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_IDENTITY_LUT = np.arange(256, dtype=np.float32)
_BYTE_RANGE = np.arange(256, dtype=np.int64)
_HSV_IDENTITY_LUT = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)  # [256,1,3]
_HUE_UNITS_PER_DEGREE = 256.0 / 360.0  # cv2 *_HSV_FULL stores hue 0..360 degrees as 0..255


# ----------------------------------------------------------------------------------------- decoding
def decode_image(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a JPEG/PNG/... file or its bytes to uint8 `[H,W,3]` RGB (grey and RGBA become RGB).

    A path may be a URI (`s3://bucket/...`): the object is read through `ssd_ray.storage`, with its
    bounded retries. Raises ValueError naming the file (or saying "<bytes>") when it cannot be read or
    decoded, so that the pipeline can catch one exception type and count a skip.
    """
    from .. import storage

    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        where = f"<{len(path_or_bytes)} bytes>"
        buf = np.frombuffer(path_or_bytes, dtype=np.uint8)
    elif storage.is_uri(path_or_bytes):
        where = os.fspath(path_or_bytes)
        try:
            buf = np.frombuffer(storage.read_bytes(where), dtype=np.uint8)
        except OSError as e:  # retried already: an object that stays unreadable is a bad image
            raise ValueError(f"cannot read image {where}: {e}") from e
    else:
        where = os.fspath(path_or_bytes)
        try:
            buf = np.fromfile(where, dtype=np.uint8)
        except OSError as e:
            raise ValueError(f"cannot read image file {where}: {e}") from e
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ValueError(f"cannot decode image {where} ({buf.size} bytes): not an image format cv2 reads")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be uint8 [H,W,3] RGB, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")


# ------------------------------------------------------------------------------------ eval transform
class EvalTransform:
    """Plain resize for evaluation/prediction: uint8 `[H,W,3]` -> uint8 `[size,size,3]` (INTER_LINEAR).

    Boxes are relative (0..1), so they need no change.
    """

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        _check_image(image)
        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)


# -------------------------------------------------------------------------------------- photometric
@dataclass(frozen=True)
class PhotometricParams:
    """One draw of the reference PhotometricDistort; None means the step was skipped (p 0.5 each)."""

    brightness: float | None  # delta added, uniform [-32, 32]
    contrast: float | None  # factor, uniform [0.5, 1.5]
    contrast_first: bool  # the reference's coin: contrast before the HSV steps, else after them
    saturation: float | None  # factor on S, uniform [0.5, 1.5]
    hue: float | None  # shift in degrees, uniform [-18, 18]
    channels: tuple[int, int, int]  # channel order (identity when the swap step is skipped)


def sample_photometric(rng: np.random.Generator) -> PhotometricParams:
    """Draw the photometric parameters with the reference's probabilities and ranges."""
    brightness = rng.uniform(-32.0, 32.0) if rng.random() < 0.5 else None
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    hue = rng.uniform(-18.0, 18.0) if rng.random() < 0.5 else None
    channels = _CHANNEL_PERMS[rng.integers(6)] if rng.random() < 0.5 else (0, 1, 2)
    return PhotometricParams(brightness, contrast, contrast_first, saturation, hue, channels)


def _to_lut(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def apply_photometric(image: np.ndarray, p: PhotometricParams) -> np.ndarray:
    """Apply `p` to uint8 `[H,W,3]` RGB; returns a new uint8 `[H,W,3]` array (values clipped to 0..255).

    brightness and contrast are 256-entry LUTs (fused into one when no HSV step runs between them);
    saturation and hue are one 3-channel LUT on the uint8 HSV_FULL image (hue wraps around 360 deg,
    in steps of 360/256 deg); the channel swap is a cv2.merge of channel views (numpy fancy indexing
    of the channel axis is ~6x slower). Steps that were not drawn cost nothing.
    """
    pre = None
    if p.brightness is not None or (p.contrast is not None and p.contrast_first):
        pre = _IDENTITY_LUT + (p.brightness or 0.0)
        if p.contrast is not None and p.contrast_first:
            pre = pre * p.contrast
        pre = _to_lut(pre)
    post = None
    if p.contrast is not None and not p.contrast_first:
        post = _to_lut(_IDENTITY_LUT * p.contrast)

    hsv_step = p.saturation is not None or p.hue is not None
    if post is not None and not hsv_step:
        pre, post = (post if pre is None else post[pre]), None  # one pass instead of two
    out = image if pre is None else cv2.LUT(image, pre)
    if hsv_step:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)
        lut3 = _HSV_IDENTITY_LUT.copy()
        if p.hue is not None:
            lut3[:, 0, 0] = (_BYTE_RANGE + int(round(p.hue * _HUE_UNITS_PER_DEGREE))) % 256
        if p.saturation is not None:
            lut3[:, 0, 1] = _to_lut(_IDENTITY_LUT * p.saturation)
        out = cv2.cvtColor(cv2.LUT(hsv, lut3), cv2.COLOR_HSV2RGB_FULL)
    if post is not None:
        out = cv2.LUT(out, post)
    if p.channels != (0, 1, 2):
        out = cv2.merge([out[:, :, c] for c in p.channels])
    return out if out is not image else image.copy()


# ---------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class CropChoice:
    """Result of `_sample_crop`. `patch` is int xyxy in canvas pixels (the whole canvas for "whole")."""

    mode: object  # the CROP_MODES entry that produced the patch ("whole" also after a fallback)
    min_iou: float | None  # the IoU the patch was required to reach with some gt box, if any
    patch: np.ndarray  # [4] int64 xyxy, canvas pixels
    modes_tried: tuple  # every mode drawn, in order (the last one is `mode` unless fallback)
    fallback: bool  # True when CROP_ROUNDS rounds found no patch and the whole image was kept


def _iou_patches_boxes(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU matrix `[P,N]` of patches `[P,4]` and boxes `[N,4]` (both xyxy, same units).

    numpy rather than torchvision.ops.box_iou: per sample these are ~50x4 boxes, where a torch call
    costs more in overhead than the arithmetic, and the per-sample path must not import torch.
    """
    lt = np.maximum(patches[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(patches[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_p = (patches[:, 2] - patches[:, 0]) * (patches[:, 3] - patches[:, 1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area_p[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def _sample_crop(canvas_w: int, canvas_h: int, boxes_px: np.ndarray, rng: np.random.Generator,
                 modes: tuple = CROP_MODES, tries: int = CROP_TRIES, rounds: int = CROP_ROUNDS) -> CropChoice:
    """Draw the SSD crop patch on a `canvas_w x canvas_h` image with gt `boxes_px [n,4]` xyxy pixels.

    Each round draws a mode uniformly from `modes`. "whole" returns the whole canvas. Otherwise up to
    `tries` candidate patches are drawn at once (sides uniform [0.3,1] of the canvas sides, integer
    corners as in the reference); a candidate is accepted when its h/w is in [0.5,2], its IoU with AT
    LEAST ONE gt box is >= min_iou (no IoU test for "free"), and at least one gt centre lies strictly
    inside it; the first accepted candidate wins. No boxes: both box conditions hold vacuously.
    After `rounds` rounds without a patch the whole canvas is kept (`fallback=True`).
    """
    whole = np.array([0, 0, canvas_w, canvas_h], dtype=np.int64)
    have_boxes = len(boxes_px) > 0
    centres = (boxes_px[:, :2] + boxes_px[:, 2:]) / 2 if have_boxes else None
    tried = []
    for _ in range(rounds):
        mode = modes[rng.integers(len(modes))]
        tried.append(mode)
        if mode == "whole":
            return CropChoice("whole", None, whole, tuple(tried), False)
        # The reference's loop body, vectorised over the tries: w ~ U(0.3 W, W), h ~ U(0.3 H, H),
        # left ~ U(0, W - w), top ~ U(0, H - h), corners truncated to int.
        u = rng.random((4, tries))
        w = (CROP_MIN_SCALE + (1 - CROP_MIN_SCALE) * u[0]) * canvas_w
        h = (CROP_MIN_SCALE + (1 - CROP_MIN_SCALE) * u[1]) * canvas_h
        left, top = u[2] * (canvas_w - w), u[3] * (canvas_h - h)
        aspect = h / w
        ok = (aspect >= CROP_MIN_ASPECT) & (aspect <= CROP_MAX_ASPECT)
        patches = np.stack([left, top, left + w, top + h], axis=1).astype(np.int64)
        ok &= (patches[:, 2] > patches[:, 0]) & (patches[:, 3] > patches[:, 1])
        min_iou = None if mode == "free" else float(mode)
        if have_boxes:
            if min_iou is not None:
                ok &= (_iou_patches_boxes(patches.astype(np.float64), boxes_px) >= min_iou).any(axis=1)
            inside = ((patches[:, None, 0] < centres[None, :, 0]) & (patches[:, None, 1] < centres[None, :, 1])
                      & (patches[:, None, 2] > centres[None, :, 0]) & (patches[:, None, 3] > centres[None, :, 1]))
            ok &= inside.any(axis=1)
        hits = np.flatnonzero(ok)
        if hits.size:
            return CropChoice(mode, min_iou, patches[hits[0]], tuple(tried), False)
    return CropChoice("whole", None, whole, tuple(tried), True)


@dataclass(frozen=True)
class Geometry:
    """Expand + crop + mirror of one sample, in pixels of the (virtual) expanded canvas."""

    canvas_w: int
    canvas_h: int
    offset: tuple[int, int]  # (left, top): canvas pixel where the source image's top-left pixel sits
    expanded: bool
    crop: CropChoice
    mirror: bool

    def source_to_canvas(self, boxes_rel: np.ndarray, width: int, height: int) -> np.ndarray:
        """Relative source boxes `[n,4]` -> canvas pixel boxes `[n,4]` float64 xyxy."""
        return _to_canvas_px(boxes_rel, width, height, self.offset)


def _to_canvas_px(boxes_rel: np.ndarray, width: int, height: int, offset: tuple[int, int]) -> np.ndarray:
    """Relative boxes `[n,4]` of a `width x height` image placed at canvas pixel `offset` -> canvas
    pixel boxes `[n,4]` float64 xyxy (float64 so that centres on integer patch edges are decided the
    same way every time)."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return boxes_rel.astype(np.float64) * scale + np.array([*offset, *offset], dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _fill_image(size: int, fill: tuple) -> np.ndarray:
    """A read-only `[size,size,3]` uint8 image of `fill`; copying it is ~30x faster than `out[:] = fill`."""
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = fill
    img.flags.writeable = False
    return img


def _render(image: np.ndarray, g: Geometry, size: int, fill: tuple) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Render the output `[size,size,3]` uint8 straight from the source image (no canvas is built).

    Output pixel u (centre u+0.5) maps to canvas coordinate x0 + (u+0.5)*pw/size, i.e. source pixel
    index x0 + (u+0.5)*pw/size - left - 0.5 (cv2.resize's half-pixel convention); with mirror u is
    replaced by size-1-u.

    Two paths, same map:
    * patch inside the source image (no fill visible; always so without expand): `cv2.resize` of the
      slice, then `cv2.flip` -- exactly the reference's crop-by-slicing + resize, and in OpenCV 5 on
      one thread ~4x cheaper than warpAffine for the same output;
    * patch reaching into the fill: the output starts as `fill`, and ONE `cv2.warpAffine`
      (INTER_LINEAR, constant border = fill, so the image/fill seam blends as it does on the
      reference's canvas) renders only the output rectangle that source pixels reach.
    Also returns that rectangle (the region to distort photometrically; the rest is exact fill).
    """
    x0, y0, x1, y1 = (int(v) for v in g.crop.patch)
    left, top = g.offset
    h, w = image.shape[:2]
    sx0, sy0, sx1, sy1 = x0 - left, y0 - top, x1 - left, y1 - top  # patch in source pixels
    if sx0 >= 0 and sy0 >= 0 and sx1 <= w and sy1 <= h:
        out = cv2.resize(image[sy0:sy1, sx0:sx1], (size, size), interpolation=cv2.INTER_LINEAR)
        if g.mirror:
            out = cv2.flip(out, 1)
        return out, (slice(0, size), slice(0, size))

    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    ax, bx = (-sx, (size - 0.5) * sx + sx0 - 0.5) if g.mirror else (sx, 0.5 * sx + sx0 - 0.5)
    by = 0.5 * sy + sy0 - 0.5
    # Output rows/cols whose source coordinate lies in (-1, w): they see at least part of a pixel.
    u = np.arange(size, dtype=np.float64)
    cols = np.flatnonzero(np.abs(ax * u + bx - (w - 1) / 2) < (w + 1) / 2)
    rows = np.flatnonzero(np.abs(sy * u + by - (h - 1) / 2) < (h + 1) / 2)
    out = _fill_image(size, tuple(fill)).copy()
    if cols.size == 0 or rows.size == 0:  # a patch entirely in the fill (possible without boxes)
        return out, (slice(0, 0), slice(0, 0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    m = np.array([[ax, 0.0, bx + ax * c0], [0.0, sy, by + sy * r0]], dtype=np.float64)
    out[r0:r1, c0:c1] = cv2.warpAffine(image, m, (c1 - c0, r1 - r0),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_CONSTANT,
                                       borderValue=tuple(float(v) for v in fill))
    return out, (slice(r0, r1), slice(c0, c1))


def _boxes_after(boxes_px: np.ndarray, labels: np.ndarray, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Canvas pixel boxes -> output relative boxes `[k,4]` float32 in [0,1] with positive area."""
    x0, y0, x1, y1 = (float(v) for v in g.crop.patch)
    if g.crop.mode != "whole":
        centres = (boxes_px[:, :2] + boxes_px[:, 2:]) / 2
        keep = (centres[:, 0] > x0) & (centres[:, 1] > y0) & (centres[:, 0] < x1) & (centres[:, 1] < y1)
        boxes_px, labels = boxes_px[keep], labels[keep]
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    rel = np.clip((boxes_px - np.array([x0, y0, x0, y0])) / scale, 0.0, 1.0)
    if g.mirror:
        rel = np.stack([1.0 - rel[:, 2], rel[:, 1], 1.0 - rel[:, 0], rel[:, 3]], axis=1)
    rel = rel.astype(np.float32)
    keep = (rel[:, 2] > rel[:, 0]) & (rel[:, 3] > rel[:, 1])  # degenerate after clipping/rounding
    return rel[keep].reshape(-1, 4), labels[keep].astype(np.int64)


# ------------------------------------------------------------------------------------- the recipe
class SSDAugmentation:
    """SSD training augmentation: `aug(image, boxes, labels, rng) -> (image, boxes, labels)`.

    image: uint8 `[H,W,3]` RGB; boxes: float32 `[n,4]` xyxy relative 0..1 (n may be 0); labels: int64
    `[n]`; rng: numpy Generator. Returns uint8 `[size,size,3]` RGB, float32 `[k,4]` relative xyxy
    clipped to [0,1] with positive area, int64 `[k]`. Each step can be switched off for lighter recipes.
    """

    def __init__(self, size: int, mean_pixel=(124, 116, 104), photometric: bool = True, expand: bool = True,
                 crop: bool = True, mirror: bool = True, max_expand_ratio: float = 4.0):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if max_expand_ratio < 1:
            raise ValueError(f"max_expand_ratio must be >= 1, got {max_expand_ratio}")
        if len(mean_pixel) != 3 or not all(0 <= v <= 255 for v in mean_pixel):
            raise ValueError(f"mean_pixel must be 3 values in 0..255, got {mean_pixel}")
        self.size = int(size)
        self.mean_pixel = tuple(int(round(v)) for v in mean_pixel)
        self.photometric, self.expand, self.crop, self.mirror = photometric, expand, crop, mirror
        self.max_expand_ratio = float(max_expand_ratio)

    def sample_geometry(self, width: int, height: int, boxes_rel: np.ndarray,
                        rng: np.random.Generator) -> Geometry:
        """Draw expand (p 0.5), crop and mirror (p 0.5) for a `width x height` source image."""
        cw, ch, offset, expanded = width, height, (0, 0), False
        if self.expand and rng.random() < 0.5:
            # Reference Expand: integer canvas int(side*ratio), image at int(uniform offset).
            ratio = rng.uniform(1.0, self.max_expand_ratio)
            cw, ch = int(width * ratio), int(height * ratio)
            offset = (int(rng.uniform(0, cw - width)), int(rng.uniform(0, ch - height)))
            expanded = True
        if self.crop:
            choice = _sample_crop(cw, ch, _to_canvas_px(boxes_rel, width, height, offset), rng)
        else:
            choice = CropChoice("whole", None, np.array([0, 0, cw, ch], dtype=np.int64), (), False)
        mirror = bool(self.mirror and rng.random() < 0.5)
        return Geometry(cw, ch, offset, expanded, choice, mirror)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _check_image(image)
        boxes = np.asarray(boxes, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)  # accept (0,), (0,4), [] for an image without objects
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be [n,4] xyxy relative, got shape {boxes.shape}")
        if labels.shape != (len(boxes),):
            raise ValueError(f"labels must be [{len(boxes)}] to match boxes, got shape {labels.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError(f"boxes contain NaN/inf: {boxes[~np.isfinite(boxes).all(axis=1)].tolist()}")

        # Draw order follows the reference: photometric, expand, crop, mirror.
        params = sample_photometric(rng) if self.photometric else None
        height, width = image.shape[:2]
        g = self.sample_geometry(width, height, boxes, rng)
        out, region = _render(image, g, self.size, self.mean_pixel)
        if params is not None and out[region].size:
            out[region] = apply_photometric(out[region], params)
        boxes_out, labels_out = _boxes_after(g.source_to_canvas(boxes, width, height), labels, g)
        return out, boxes_out, labels_out
