"""SSD training augmentation (ssd_ray.data.augment): geometry moves boxes with pixels, the crop rules
hold on every draw, step frequencies match the recipe, and edge cases (no boxes, bad input) behave."""

import math

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from ssd_ray.data.augment import (CROP_MODES, CropChoice, EvalTransform, Geometry, PhotometricParams,
                                  SSDAugmentation, _boxes_after, _render, _sample_crop, apply_photometric,
                                  decode_image, sample_photometric)

MEAN = (124, 116, 104)


def rng(*seed):
    return np.random.default_rng(list(seed))


def white_rect_image(w=120, h=90, rect=(30, 20, 70, 60)):
    """Black image with a white rectangle at pixel xyxy `rect` (exclusive end); returns it and its relative box."""
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = rect
    img[y0:y1, x0:x1] = 255
    return img, np.array([[x0 / w, y0 / h, x1 / w, y1 / h]], np.float32)


def white_bbox_rel(out, threshold=128):
    """Relative xyxy bbox of the bright pixels of `out` (pixel edges: last pixel + 1)."""
    ys, xs = np.nonzero(out.mean(axis=2) > threshold)
    s = out.shape[0]
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / s


def smooth_image(seed, w=120, h=90):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)
    return cv2.normalize(cv2.GaussianBlur(img, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)


def canvas_reference(img, g: Geometry, size, fill):
    """The reference way: build the expand canvas, slice the patch, flip, cv2.resize."""
    h, w = img.shape[:2]
    canvas = np.empty((g.canvas_h, g.canvas_w, 3), np.uint8)
    canvas[:] = fill
    left, top = g.offset
    canvas[top:top + h, left:left + w] = img
    x0, y0, x1, y1 = g.crop.patch
    patch = canvas[y0:y1, x0:x1]
    if g.mirror:
        patch = patch[:, ::-1]
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------------------------ decode
def test_decode_image_bytes_and_path_give_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in cv2's BGR order
    ok, png = cv2.imencode(".png", bgr)
    path = tmp_path / "red.png"
    path.write_bytes(png.tobytes())
    for src in (png.tobytes(), str(path), path):
        img = decode_image(src)
        assert img.dtype == np.uint8 and img.shape == (4, 5, 3)
        assert (img[..., 0] == 255).all() and (img[..., 1:] == 0).all()  # red is channel 0 in RGB


def test_decode_image_grey_becomes_three_channels():
    ok, png = cv2.imencode(".png", np.full((3, 3), 77, np.uint8))
    img = decode_image(png.tobytes())
    assert img.shape == (3, 3, 3) and (img == 77).all()


def test_decode_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="broken.jpg"):
        decode_image(bad)
    with pytest.raises(ValueError, match="missing.jpg"):
        decode_image(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        decode_image(empty)
    with pytest.raises(ValueError, match="bytes"):
        decode_image(b"\x00\x01")


# ------------------------------------------------------------------------------------------- eval
def test_eval_transform_is_plain_linear_resize():
    img = smooth_image(1)
    out = EvalTransform(64)(img)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert np.array_equal(out, cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(64)(img.astype(np.float32))


# ------------------------------------------------------------------------------ hand-worked geometry
def test_render_and_boxes_hand_worked_expand_crop_mirror():
    # 100x50 image, white pixels x 20..39, y 10..29 -> relative box [0.2, 0.2, 0.4, 0.6].
    img, box = white_rect_image(100, 50, (20, 10, 40, 30))
    # Canvas 200x100 (ratio 2) with the image at (100, 50): the white block sits at canvas x 120..140,
    # y 60..80. Patch [100, 0, 200, 100] (100x100) -> in the patch x 20..40, y 60..80 of 100
    # -> box [0.2, 0.6, 0.4, 0.8]; output 100x100 is a 1:1 copy of the patch.
    crop = CropChoice(0.1, 0.1, np.array([100, 0, 200, 100]), (0.1,), False)
    g = Geometry(200, 100, (100, 50), True, crop, mirror=False)
    out, region = _render(img, g, 100, MEAN)
    boxes, labels = _boxes_after(g.source_to_canvas(box, 100, 50), np.array([3]), g)
    np.testing.assert_allclose(boxes, [[0.2, 0.6, 0.4, 0.8]], atol=1e-6)
    assert labels.tolist() == [3]
    np.testing.assert_allclose(white_bbox_rel(out), [0.2, 0.6, 0.4, 0.8])
    # The image covers output rows 50..99 (canvas y 50..100), cols 0..99; above it is pure fill.
    assert region == (slice(50, 100), slice(0, 100))
    assert (out[:50] == MEAN).all()
    # Mirrored: x -> 1 - x, so the box becomes [0.6, 0.6, 0.8, 0.8] and so do the white pixels.
    gm = Geometry(200, 100, (100, 50), True, crop, mirror=True)
    out_m, _ = _render(img, gm, 100, MEAN)
    boxes_m, _ = _boxes_after(gm.source_to_canvas(box, 100, 50), np.array([3]), gm)
    np.testing.assert_allclose(boxes_m, [[0.6, 0.6, 0.8, 0.8]], atol=1e-6)
    np.testing.assert_allclose(white_bbox_rel(out_m), [0.6, 0.6, 0.8, 0.8])


def test_crop_drops_boxes_whose_centre_is_outside_and_clips_the_rest():
    # Canvas = image 100x100. Patch [0, 0, 50, 50].
    # box A [0.1,0.1,0.3,0.3] (px 10..30): centre (20,20) inside -> kept, [0.2,0.2,0.6,0.6] of the patch;
    # box B [0.3,0.3,0.6,0.6] (px 30..60): centre (45,45) inside -> clipped to 30..50 -> [0.6,0.6,1,1];
    # box C [0.4,0.0,0.8,0.2] (px 40..80): centre (60,10) outside -> dropped.
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.3, 0.3, 0.6, 0.6], [0.4, 0.0, 0.8, 0.2]], np.float32)
    g = Geometry(100, 100, (0, 0), False, CropChoice("free", None, np.array([0, 0, 50, 50]), ("free",), False), False)
    out_boxes, out_labels = _boxes_after(g.source_to_canvas(boxes, 100, 100), np.array([0, 1, 2]), g)
    np.testing.assert_allclose(out_boxes, [[0.2, 0.2, 0.6, 0.6], [0.6, 0.6, 1.0, 1.0]], atol=1e-6)
    assert out_labels.tolist() == [0, 1]


@pytest.mark.parametrize("steps", [dict(expand=True), dict(crop=True), dict(mirror=True),
                                   dict(expand=True, crop=True, mirror=True)])
def test_boxes_move_with_the_pixels(steps):
    """A white rectangle on black: the output box matches the white pixels within 2 px (out of 96)."""
    flags = dict(expand=False, crop=False, mirror=False, photometric=False) | steps
    aug = SSDAugmentation(96, mean_pixel=(0, 0, 0), **flags)  # black fill: only the rectangle is bright
    img, box = white_rect_image()
    compared, changed = 0, 0
    for seed in range(40):
        out, boxes, labels = aug(img, box, np.array([5]), rng(seed))
        if len(boxes) == 0:  # crop dropped the box (its centre left the patch)
            continue
        assert labels.tolist() == [5]
        np.testing.assert_allclose(boxes[0], white_bbox_rel(out), atol=2 / 96)
        compared += 1
        changed += not np.allclose(boxes[0], box[0], atol=0.02)
    assert compared >= 25 and changed >= 10  # the step really ran on a good share of the draws


def test_full_pipeline_with_photometric_keeps_boxes_on_the_pixels():
    # Photometric on: white drops to >= (255-32)*0.5 = 111, black rises to <= (0+32)*1.5 = 48; grey
    # stays grey under hue/saturation, so threshold 80 still separates the rectangle.
    aug = SSDAugmentation(96, mean_pixel=(0, 0, 0))
    img, box = white_rect_image()
    compared = 0
    for seed in range(40):
        out, boxes, _ = aug(img, box, np.array([0]), rng(seed, 1))
        if len(boxes):
            np.testing.assert_allclose(boxes[0], white_bbox_rel(out, threshold=80), atol=2 / 96)
            compared += 1
    assert compared >= 25


def test_render_matches_canvas_crop_resize_reference():
    """One resize/warp from the source == build canvas, slice, flip, resize (bilinear rounding aside)."""
    aug = SSDAugmentation(64)
    img = smooth_image(2)
    boxes = np.array([[0.1, 0.2, 0.5, 0.7], [0.6, 0.1, 0.9, 0.4]], np.float32)
    kinds = set()
    for seed in range(200):
        g = aug.sample_geometry(120, 90, boxes, rng(seed, 2))
        out, _ = _render(img, g, 64, MEAN)
        diff = np.abs(out.astype(int) - canvas_reference(img, g, 64, MEAN))
        assert diff.max() <= 4 and diff.mean() < 0.5, (seed, g)
        kinds.add((g.expanded, g.crop.mode == "whole", g.mirror))
    assert len(kinds) == 8  # every combination of expand / crop / mirror was exercised


# ------------------------------------------------------------------------------------ crop sampler
def test_crop_patch_satisfies_the_constraints_on_every_draw():
    r = np.random.default_rng(3)
    counts = {m: 0 for m in CROP_MODES}
    for i in range(600):
        cw = int(r.integers(300, 1200))
        ch = int(r.integers(300, 1200)) if i % 2 == 0 else int(cw * r.uniform(0.7, 1.4))
        n = int(r.integers(1, 5))
        xy = r.uniform(0, 0.8, (n, 2)) * (cw, ch)
        wh = r.uniform(0.05, 0.8, (n, 2)) * (cw, ch)
        if i % 2:  # a large first box, so that the 0.7 / 0.9 modes can succeed too
            xy[0], wh[0] = r.uniform(0, 0.1, 2) * (cw, ch), r.uniform(0.5, 0.9) * r.uniform(0.9, 1.1, 2) * (cw, ch)
        gt = np.concatenate([xy, np.minimum(xy + wh, (cw, ch))], axis=1)
        # Every second draw forces one mode, so that each mode gets checked often enough.
        modes = (CROP_MODES[(i // 2) % 7],) if i % 2 else CROP_MODES
        c = _sample_crop(cw, ch, gt, np.random.default_rng([3, i]), modes=modes)
        counts[c.mode] += 1
        x0, y0, x1, y1 = c.patch
        assert 0 <= x0 < x1 <= cw and 0 <= y0 < y1 <= ch
        if c.mode == "whole":
            assert (x0, y0, x1, y1) == (0, 0, cw, ch)
            assert c.fallback or c.modes_tried[-1] == "whole"
            continue
        # sides in [0.3, 1] of the canvas, h/w in [0.5, 2] (+-1 px from integer corners)
        assert x1 - x0 >= 0.3 * cw - 1 and y1 - y0 >= 0.3 * ch - 1
        assert 0.5 - 0.01 <= (y1 - y0) / (x1 - x0) <= 2 + 0.02
        centres = (gt[:, :2] + gt[:, 2:]) / 2
        inside = (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)
        assert inside.any()
        if c.mode == "free":
            assert c.min_iou is None
        else:
            assert c.min_iou == c.mode
            iou = box_iou(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float64), torch.from_numpy(gt))
            assert iou.max().item() >= c.min_iou - 1e-9, (c, gt)
    assert all(counts[m] >= 10 for m in CROP_MODES), counts  # every mode is checked on real draws


def test_crop_without_boxes_accepts_any_valid_patch():
    c = _sample_crop(400, 300, np.zeros((0, 4)), rng(4), modes=(0.9,), rounds=1)
    assert c.mode == 0.9 and not c.fallback  # vacuous constraint: the first valid-aspect candidate wins


def test_crop_falls_back_to_whole_image_when_no_patch_exists():
    # A 1x1 px box on a 1000x1000 canvas: IoU with any patch (>= 300x300) is <= 1/90000 < 0.9.
    gt = np.array([[500.0, 500.0, 501.0, 501.0]])
    c = _sample_crop(1000, 1000, gt, rng(5), modes=(0.9,))
    assert c.fallback and c.mode == "whole" and len(c.modes_tried) == 10
    assert c.patch.tolist() == [0, 0, 1000, 1000]


def test_crop_mode_frequencies_and_whole_image_share():
    """Modes are drawn uniformly; P(whole) follows from the per-mode success rates and 10 rounds."""
    w, h = 200, 150
    gt = np.array([[50.0, 40.0, 100.0, 90.0], [120.0, 20.0, 170.0, 100.0]])
    # Success rate of one round (50 tries) of each constrained mode, measured on its own
    # (here about 0.1/0.3/free: 1, 0.5: 0.45, 0.7: 0.01, 0.9: 0, so P(whole) ~ 0.22 vs 1/7 without retries).
    n_est = 500
    success = {m: np.mean([not _sample_crop(w, h, gt, rng(6, i), modes=(m,), rounds=1).fallback
                           for i in range(n_est)]) for m in CROP_MODES if m != "whole"}
    # A round ends in "whole" w.p. 1/7, continues w.p. p_cont (constrained mode drawn and failed);
    # after 10 rounds the whole image is kept: P(whole) = (1/7) sum_{k<10} p_cont^k + p_cont^10.
    p_cont = sum(1 - s for s in success.values()) / 7
    expected_whole = sum(p_cont ** k for k in range(10)) / 7 + p_cont ** 10
    n = 3000
    draws = [_sample_crop(w, h, gt, rng(7, i)) for i in range(n)]
    first = np.array([CROP_MODES.index(d.modes_tried[0]) for d in draws])
    sigma = math.sqrt(n * (1 / 7) * (6 / 7))
    for k in range(7):
        assert abs((first == k).sum() - n / 7) < 4 * sigma, (CROP_MODES[k], (first == k).sum())
    whole = np.mean([d.mode == "whole" for d in draws])
    # 4 sigma of the binomial noise of `whole`, plus 4 sigma of the p_cont estimate (d P/d p_cont < 1)
    sd_p_cont = math.sqrt(sum(s * (1 - s) for s in success.values()) / n_est) / 7
    tol = 4 * math.sqrt(expected_whole * (1 - expected_whole) / n) + 4 * sd_p_cont
    assert abs(whole - expected_whole) < tol, (whole, expected_whole, success)
    assert expected_whole - 1 / 7 > tol  # the retry/fallback share is large enough to be tested here


def test_whole_image_share_without_boxes_is_one_seventh():
    aug = SSDAugmentation(64, photometric=False, expand=False, mirror=False)
    n = 2000
    whole = sum(aug.sample_geometry(120, 90, np.zeros((0, 4), np.float32), rng(8, i)).crop.mode == "whole"
                for i in range(n))
    assert abs(whole - n / 7) < 4 * math.sqrt(n * (1 / 7) * (6 / 7)), whole


# ----------------------------------------------------------------------------- recipe statistics
def test_expand_and_mirror_frequencies_and_ranges():
    aug = SSDAugmentation(300)
    boxes = np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 0.9, 0.95]], np.float32)
    n = 2000
    gs = [aug.sample_geometry(500, 375, boxes, rng(9, i)) for i in range(n)]
    sigma = math.sqrt(n * 0.25)
    expanded = [g for g in gs if g.expanded]
    assert abs(len(expanded) - n / 2) < 4 * sigma
    assert abs(sum(g.mirror for g in gs) - n / 2) < 4 * sigma
    ratios = np.array([g.canvas_w / 500 for g in expanded])
    assert ratios.min() >= 1 and ratios.max() <= 4
    # ratio ~ U(1, 4): mean 2.5, sd 3/sqrt(12)
    assert abs(ratios.mean() - 2.5) < 4 * (3 / math.sqrt(12)) / math.sqrt(len(ratios))
    for g in expanded:
        left, top = g.offset
        assert 0 <= left <= g.canvas_w - 500 and 0 <= top <= g.canvas_h - 375
    assert all(g.canvas_w == 500 and g.canvas_h == 375 and g.offset == (0, 0) for g in gs if not g.expanded)


def test_kept_boxes_are_those_with_centre_in_patch_and_always_valid():
    aug = SSDAugmentation(64)
    img = smooth_image(10)
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.3, 0.3, 0.9, 0.9], [0.7, 0.05, 0.95, 0.3]], np.float32)
    labels = np.array([4, 7, 9])
    kept_total = 0
    for i in range(300):
        out, b, lab = aug(img, boxes, labels, rng(11, i))
        # Recompute the geometry draw: photometric draws come first, so skip them with a twin rng.
        twin = rng(11, i)
        sample_photometric(twin)
        g = aug.sample_geometry(120, 90, boxes, twin)
        x0, y0, x1, y1 = g.crop.patch
        px = boxes.astype(np.float64) * (120, 90, 120, 90)  # float64 as the module: centres may sit on
        c = (px[:, :2] + px[:, 2:]) / 2 + g.offset  # integer patch edges, where float32 rounding decides
        inside = (c[:, 0] > x0) & (c[:, 0] < x1) & (c[:, 1] > y0) & (c[:, 1] < y1)
        expected = labels if g.crop.mode == "whole" else labels[inside]
        assert lab.tolist() == expected.tolist()
        assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
        assert b.dtype == np.float32 and b.shape == (len(lab), 4) and lab.dtype == np.int64
        assert ((b >= 0) & (b <= 1)).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        kept_total += len(lab)
    assert 1.0 < kept_total / 300 < 3.0  # crops drop some boxes, but not all of them on average


def test_empty_boxes_never_crash():
    aug = SSDAugmentation(48)
    img = smooth_image(12)
    for i in range(100):
        for empty in (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), []):
            out, b, lab = aug(img, empty, np.zeros((0,), np.int64), rng(13, i))
            assert out.shape == (48, 48, 3) and out.dtype == np.uint8
            assert b.shape == (0, 4) and b.dtype == np.float32
            assert lab.shape == (0,) and lab.dtype == np.int64


def test_same_seed_same_output_and_seeds_differ():
    aug = SSDAugmentation(64)
    img = smooth_image(14)
    boxes = np.array([[0.2, 0.2, 0.7, 0.8]], np.float32)
    a = aug(img, boxes, np.array([1]), rng(0, 3, 17))
    b = aug(img, boxes, np.array([1]), rng(0, 3, 17))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    others = [aug(img, boxes, np.array([1]), rng(0, 3, k))[0] for k in range(5)]
    assert sum(not np.array_equal(a[0], o) for o in others) >= 4


def test_expand_fill_is_exactly_the_mean_pixel_under_photometric():
    aug = SSDAugmentation(100, crop=False, mirror=False)  # photometric + expand only
    img = np.full((60, 80, 3), 200, np.uint8)
    seen = 0
    for i in range(60):
        twin = rng(15, i)
        sample_photometric(twin)
        g = aug.sample_geometry(80, 60, np.zeros((0, 4), np.float32), twin)
        out, _, _ = aug(img, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng(15, i))
        if not g.expanded:
            continue
        seen += 1
        # image occupies canvas [left, left+80) -> output columns left/cw*100 ... ; leave a 2 px seam
        left, top = g.offset
        c0, c1 = left / g.canvas_w * 100, (left + 80) / g.canvas_w * 100
        r0, r1 = top / g.canvas_h * 100, (top + 60) / g.canvas_h * 100
        cols, rows = np.arange(100) + 0.5, np.arange(100)[:, None] + 0.5
        outside = (cols < c0 - 2) | (cols > c1 + 2) | (rows < r0 - 2) | (rows > r1 + 2)
        assert outside.any()
        assert (out[outside] == MEAN).all()
    assert seen > 15


# ---------------------------------------------------------------------------------- photometric
def test_photometric_hand_cases():
    none = dict(brightness=None, contrast=None, contrast_first=True, saturation=None, hue=None,
                channels=(0, 1, 2))
    grey = np.full((2, 2, 3), 100, np.uint8)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255

    def run(img, **kw):
        return apply_photometric(img, PhotometricParams(**(none | kw)))

    assert (run(grey) == 100).all()  # nothing drawn: unchanged copy
    assert (run(grey, brightness=20.0) == 120).all()  # 100 + 20
    assert (run(grey, brightness=20.0, contrast=1.5) == 180).all()  # (100 + 20) * 1.5
    assert (run(grey, brightness=20.0, contrast=1.5, contrast_first=False) == 180).all()  # grey: HSV no-op
    assert (run(grey, brightness=32.0, contrast=2.5) == 255).all()  # 330 clipped to 255
    assert (run(grey, brightness=-32.0, contrast=0.2) == 14).all()  # 68 * 0.2 = 13.6 -> 14
    assert (run(grey, saturation=1.5, hue=18.0) == 100).all()  # grey has no saturation or hue to change
    half = run(red, saturation=0.5)[0, 0]  # S 1 -> 0.5 at V 255: (255, 128, 128)
    assert abs(int(half[0]) - 255) <= 1 and abs(int(half[1]) - 128) <= 2 and abs(int(half[2]) - 128) <= 2
    # hue +18 deg on pure red: G rises to 255 * 18/60 = 76.5 (HSV sector 0 of 60 deg), B stays 0
    shifted = run(red, hue=18.0)[0, 0]
    assert shifted[0] == 255 and abs(int(shifted[1]) - 76) <= 6 and shifted[2] == 0
    # hue -18 deg wraps to 342 deg: B rises to 76.5, G stays 0
    wrapped = run(red, hue=-18.0)[0, 0]
    # (hue moves in steps of 360/256 deg in uint8 HSV_FULL: ~0.7 deg rounding = ~3 levels, plus cv2's own)
    assert wrapped[0] == 255 and wrapped[1] == 0 and abs(int(wrapped[2]) - 76) <= 6
    assert run(red, channels=(2, 1, 0))[0, 0].tolist() == [0, 0, 255]  # swap R and B


def test_photometric_draw_frequencies_and_ranges():
    n = 3000
    ps = [sample_photometric(rng(16, i)) for i in range(n)]
    sigma = math.sqrt(n * 0.25)
    for field, lo, hi in (("brightness", -32, 32), ("contrast", 0.5, 1.5), ("saturation", 0.5, 1.5),
                          ("hue", -18, 18)):
        vals = [getattr(p, field) for p in ps if getattr(p, field) is not None]
        assert abs(len(vals) - n / 2) < 4 * sigma, field
        assert lo <= min(vals) and max(vals) <= hi, field
        assert abs(np.mean(vals) - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * len(vals)), field
    assert abs(sum(p.contrast_first for p in ps) - n / 2) < 4 * sigma
    # swap step p 0.5, then one of 6 orders (identity included): P(order != identity) = 0.5 * 5/6
    swapped = sum(p.channels != (0, 1, 2) for p in ps)
    p_swap = 0.5 * 5 / 6
    assert abs(swapped - n * p_swap) < 4 * math.sqrt(n * p_swap * (1 - p_swap))


# ------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    aug = SSDAugmentation(32)
    img = smooth_image(17)
    ok_boxes, ok_labels = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), np.array([0])
    with pytest.raises(ValueError, match="NaN"):
        aug(img, np.array([[0.1, np.nan, 0.5, 0.5]], np.float32), ok_labels, rng(0))
    with pytest.raises(ValueError, match="uint8"):
        aug(img.astype(np.float32), ok_boxes, ok_labels, rng(0))
    with pytest.raises(ValueError, match="labels"):
        aug(img, ok_boxes, np.array([0, 1]), rng(0))
    with pytest.raises(ValueError, match="boxes"):
        aug(img, np.array([[0.1, 0.1, 0.5]], np.float32), ok_labels, rng(0))
    with pytest.raises(ValueError, match="max_expand_ratio"):
        SSDAugmentation(32, max_expand_ratio=0.5)
