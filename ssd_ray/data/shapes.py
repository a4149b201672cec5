"""Synthetic shapes detection data: small, fast, deterministic stand-in for VOC/COCO.

`write_shapes` renders images with 0-6 coloured shapes (classes `SHAPE_CLASSES`) on varied
backgrounds and writes them as a VOC devkit or a COCO folder that `read_voc` / `read_coco` read.

- Image `index` of split `split_id` (train 0, val 1) is drawn from
  `numpy.random.default_rng([seed, split_id, index])`, so an image does not depend on how many are
  written and the same seed gives byte-identical files.
- Shape sizes (diameter of the circumscribed circle) are log-uniform from 16 px to 80% of the image
  side (scaled with `size`), so there are many small objects. Shapes lie fully inside the image.
- Shapes are drawn in order (largest first) without anti-aliasing; a placement that would hide more
  than half of an earlier shape is rejected. Each box is the bounding box of the shape's *visible*
  pixels (the `owner` map), so boxes are tight to what can be seen.
- About 5% of images have no object.

Box formats written: VOC XML 1-based inclusive (`xmin = x0 + 1`, `xmax = x1` for 0-based exclusive
`[x0, x1)`), COCO `[x0, y0, x1 - x0, y1 - y0]`; both read back to the same relative box.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from ssd_ray.errors import DataError


class NotGeneratorFolderError(DataError):
    """The target folder holds files the generator did not write: it is left untouched."""

# Silhouettes that stay distinct down to the smallest size (~16 px). No hexagon: its edges lie within
# 0.134 r of its circumcircle, about one pixel at 16 px, so small hexagons were circles in all but
# name (generator v2 had one; circle/square <-> hexagon were 40 % of a demo model's class confusions).
SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ellipse")

# Bump when rendering or layout changes, so `find_existing` regenerates stale folders.
GENERATOR_VERSION = 3
META_FILE = ".shapes_meta.json"
_IN_PROGRESS, _COMPLETE = "in_progress", "complete"  # the stamp's "status"
SPLITS = (("train", 0), ("val", 1))

_EMPTY_FRACTION = 0.05
_MAX_OBJECTS = 6
_MAX_TRIES = 12  # placements tried per shape before giving up on it
_MAX_HIDDEN = 0.5  # a new shape may hide at most this fraction of an earlier shape's area
_MIN_CONTRAST = 110.0  # RGB distance between a shape's colour and the mean of what it covers
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions keep small shapes regular
_ONE = 1 << _SHIFT


@dataclass
class RenderedImage:
    image: np.ndarray  # [H,W,3] uint8 RGB, as encoded to JPEG
    background: np.ndarray  # [H,W,3] uint8 RGB, the image before any shape was drawn
    owner: np.ndarray  # [H,W] int16: index of the object visible at each pixel, -1 = background
    labels: np.ndarray  # [n] int64 indexes into SHAPE_CLASSES
    boxes_px: np.ndarray  # [n,4] int64 xyxy pixels, 0-based, end exclusive (tight around owner == i)
    areas: np.ndarray  # [n] int64 visible pixel counts


# ---------------------------------------------------------------------------------------------------
# backgrounds: all keep their colour spread moderate so shapes can contrast with them


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """[H,W] float32 coordinate along a random direction, 0..1."""
    a = rng.uniform(0, 2 * math.pi)
    g = np.arange(size, dtype=np.float32) / max(size - 1, 1)
    t = g[None, :] * math.cos(a) + g[:, None] * math.sin(a)
    t -= t.min()
    return t / max(float(t.max()), 1e-6)


def _two_colours(rng: np.random.Generator, spread: int) -> tuple[np.ndarray, np.ndarray]:
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.integers(-spread, spread + 1, 3), 0, 255).astype(np.float32)
    return c0, c1


def _mix(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """[H,W] weights 0..1 -> [H,W,3] uint8 blend of c0 and c1 (a 256-entry cv2.LUT: ~10x faster than float maths)."""
    lut = (c0 + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c1 - c0)).astype(np.uint8)
    t8 = (t * 255 + 0.5).astype(np.uint8)
    return cv2.LUT(cv2.merge([t8, t8, t8]), lut.reshape(256, 1, 3))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = int(rng.integers(0, 5))
    if kind == 0:  # linear gradient
        return _mix(_ramp(rng, size), *_two_colours(rng, 90))
    if kind == 1:  # stripes: soft (sine) or hard, any direction and period
        period = rng.uniform(6, 48)
        t = 0.5 + 0.5 * np.sin(_ramp(rng, size) * (2 * math.pi * size / period))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
        return _mix(t, *_two_colours(rng, 60))
    if kind == 2:  # checkerboard
        p = int(rng.integers(6, 40))
        g = np.arange(size) // p
        return _mix(((g[None, :] + g[:, None]) % 2).astype(np.float32), *_two_colours(rng, 50))
    if kind == 3:  # smooth blobs: a coarse random grid upsampled
        n = int(rng.integers(3, 12))
        base = rng.integers(0, 256, 3)
        grid = np.clip(base + rng.integers(-35, 36, (n, n, 3)), 0, 255).astype(np.uint8)
        return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    # flat colour with grain
    base = rng.integers(0, 256, 3).astype(np.int16)
    grain = rng.integers(-20, 21, (size, size, 1), dtype=np.int16)
    return np.clip(base + grain, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# shapes, drawn into a local [L,L] uint8 mask around centre (c, c) with circumradius r


def _regular(n: int, r: float, rot: float, radii: np.ndarray | None = None) -> np.ndarray:
    ang = rot + np.arange(n) * (2 * math.pi / n)
    rr = r if radii is None else r * radii
    return np.stack([rr * np.cos(ang), rr * np.sin(ang)], axis=1)


def _cross(r: float, rot: float, rng: np.random.Generator) -> np.ndarray:
    k = rng.uniform(0.25, 0.4)  # arm half-width relative to arm length
    arm = r / math.sqrt(1 + k * k)  # corners (arm, k*arm) sit on the circumcircle
    a = k * arm
    pts = np.array([(-a, -arm), (a, -arm), (a, -a), (arm, -a), (arm, a), (a, a),
                    (a, arm), (-a, arm), (-a, a), (-arm, a), (-arm, -a), (-a, -a)])
    c, s = math.cos(rot), math.sin(rot)
    return pts @ np.array([[c, s], [-s, c]])


def _draw_shape(cls: str, mask: np.ndarray, c: float, r: float, rng: np.random.Generator) -> None:
    rot = rng.uniform(0, 2 * math.pi)
    centre = (int(round(c * _ONE)), int(round(c * _ONE)))
    if cls == "circle":
        cv2.circle(mask, centre, int(r * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
        return
    if cls == "ellipse":
        axes = (int(r * _ONE), int(r * rng.uniform(0.4, 0.65) * _ONE))
        cv2.ellipse(mask, centre, axes, math.degrees(rot), 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
        return
    if cls == "square":
        pts = _regular(4, r, rot)
    elif cls == "triangle":
        # slightly irregular triangles; radii <= 1 keeps them inside the circumcircle
        pts = _regular(3, r, rot, rng.uniform(0.85, 1.0, 3))
    elif cls == "star":
        radii = np.tile([1.0, rng.uniform(0.38, 0.5)], 5)
        pts = _regular(10, r, rot, radii)
    elif cls == "cross":
        pts = _cross(r, rot, rng)
    else:
        raise ValueError(f"unknown shape class {cls!r}; expected one of {SHAPE_CLASSES}")
    pts = np.round((pts + c) * _ONE).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, _SHIFT)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random RGB colour far (>= _MIN_CONTRAST) from `under`'s mean colour ([3] float)."""
    for _ in range(8):
        col = rng.integers(0, 256, 3)
        if float(np.linalg.norm(col - under)) >= _MIN_CONTRAST:
            return col.astype(np.uint8)
    # Fallback: the far corner of the RGB cube, at least 128*sqrt(3) away.
    return np.where(under > 127, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------


def render_image(seed: int, split_id: int, index: int, size: int = 256) -> RenderedImage:
    """Draw one image; the same `(seed, split_id, index, size)` always gives the same arrays."""
    rng = np.random.default_rng([seed, split_id, index])
    background = _background(rng, size)
    image = background.copy()
    owner = np.full((size, size), -1, dtype=np.int16)

    n_objects = 0 if rng.random() < _EMPTY_FRACTION else int(rng.integers(1, _MAX_OBJECTS + 1))
    lo, hi = math.log(16 * size / 256), math.log(0.8 * size)
    diameters = np.sort(np.exp(rng.uniform(lo, hi, n_objects)))[::-1]  # largest first
    classes = rng.integers(0, len(SHAPE_CLASSES), n_objects)

    labels: list[int] = []
    windows: list[tuple[int, int, int]] = []  # (ox, oy, side) canvas of each placed shape
    full_area: list[int] = []  # area when drawn
    visible: list[int] = []  # area still visible
    for d, cls_id in zip(diameters, classes):
        r = d / 2
        side = int(math.ceil(d)) + 2  # local canvas with a 1 px margin
        for _ in range(_MAX_TRIES):
            ox, oy = (int(v) for v in rng.integers(0, size - side + 1, 2))
            mask = np.zeros((side, side), dtype=np.uint8)
            _draw_shape(SHAPE_CLASSES[cls_id], mask, side / 2, r, rng)
            m = mask.view(bool)
            area = int(m.sum())
            if area == 0:
                continue  # cannot happen for size >= 64 (diameter >= 4 px); guards against empty boxes
            own = owner[oy:oy + side, ox:ox + side]
            under = own[m]
            covered = np.bincount(under[under >= 0], minlength=len(labels))
            if any(visible[i] - covered[i] < (1 - _MAX_HIDDEN) * full_area[i] for i in range(len(labels))):
                continue  # would hide too much of an earlier shape
            k = len(labels)
            for i in range(k):
                visible[i] -= int(covered[i])
            region = image[oy:oy + side, ox:ox + side]
            under_mean = np.array(cv2.mean(region, mask=mask)[:3])  # cv2.mean: ~10x faster than region[m].mean
            region[m] = _contrasting_colour(rng, under_mean)
            own[m] = k
            labels.append(int(cls_id))
            windows.append((ox, oy, side))
            full_area.append(area)
            visible.append(area)
            break

    boxes = np.zeros((len(labels), 4), dtype=np.int64)
    for i, (ox, oy, side) in enumerate(windows):
        # a shape's pixels never leave its canvas, so the box search can stay inside it
        x, y, w, h = cv2.boundingRect((owner[oy:oy + side, ox:ox + side] == i).view(np.uint8))
        boxes[i] = (ox + x, oy + y, ox + x + w, oy + y + h)
    return RenderedImage(image=image, background=background, owner=owner,
                         labels=np.array(labels, dtype=np.int64), boxes_px=boxes,
                         areas=np.array(visible, dtype=np.int64))


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a JPEG")
    return buf.tobytes()


def _voc_xml(folder: str, filename: str, size: int, r: _Encoded) -> str:
    objs = []
    for lab, (x0, y0, x1, y1) in zip(r.labels, r.boxes_px):
        objs.append(
            "\t<object>\n"
            f"\t\t<name>{SHAPE_CLASSES[lab]}</name>\n"
            "\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
            "\t\t<bndbox>\n"
            # 0-based exclusive [x0, x1) -> VOC 1-based inclusive [x0 + 1, x1]
            f"\t\t\t<xmin>{x0 + 1}</xmin>\n\t\t\t<ymin>{y0 + 1}</ymin>\n"
            f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n"
            "\t\t</bndbox>\n\t</object>\n")
    return ("<annotation>\n"
            f"\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
            "\t<source>\n\t\t<database>ssd-ray synthetic shapes</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            "\t<segmented>0</segmented>\n" + "".join(objs) + "</annotation>\n")


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@dataclass
class _Encoded:
    """One image as written: JPEG bytes and its annotations (what a writer needs of RenderedImage)."""

    jpeg: bytes
    labels: np.ndarray
    boxes_px: np.ndarray
    areas: np.ndarray


def _encode(job: tuple[int, int, int, int]) -> _Encoded:
    r = render_image(*job)
    return _Encoded(_jpeg(r.image), r.labels, r.boxes_px, r.areas)


Renderer = Callable[[Iterable[tuple[int, int, int, int]]], Iterator[_Encoded]]

# Below this many images a process pool's start-up (each process imports the package) costs more
# than it saves.
_PARALLEL_MIN_IMAGES = 500


def _cv2_single_thread() -> None:
    cv2.setNumThreads(1)


@contextmanager
def _renderer(n_images: int, workers: int | None):
    """`render(jobs)`: `_encode` over (seed, split_id, index, size) jobs, results in job order, in
    `workers` processes (default: the CPUs this process may use). Images depend only on their job,
    so the files are the same whatever the number of processes."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers <= 1 or n_images < _PARALLEL_MIN_IMAGES:
        yield lambda jobs: map(_encode, jobs)
        return
    # spawn: the caller may already run threads (Ray's), which fork does not copy safely.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_cv2_single_thread) as pool:
        yield lambda jobs: pool.map(_encode, jobs, chunksize=64)


def _write_voc(out: str, counts: dict[str, int], seed: int, size: int, year: str, render: Renderer) -> None:
    folder = f"VOC{year}"
    base = os.path.join(out, folder)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    all_ids: list[str] = []
    for split, split_id in SPLITS:
        ids = []
        for i, r in enumerate(render((seed, split_id, i, size) for i in range(counts[split]))):
            name = f"{split}_{i:06d}"
            _write_bytes(os.path.join(base, "JPEGImages", name + ".jpg"), r.jpeg)
            _write_bytes(os.path.join(base, "Annotations", name + ".xml"),
                         _voc_xml(folder, name + ".jpg", size, r).encode())
            ids.append(name)
        _write_bytes(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "".join(f"{n}\n" for n in ids).encode())
        all_ids += ids
    # trainval too, so read_voc's usual ("<year>", "trainval") works on this folder as well.
    _write_bytes(os.path.join(base, "ImageSets", "Main", "trainval.txt"), "".join(f"{n}\n" for n in all_ids).encode())


def _write_coco(out: str, counts: dict[str, int], seed: int, size: int, render: Renderer) -> None:
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    for split, split_id in SPLITS:
        img_dir = os.path.join(out, "images", split)
        os.makedirs(img_dir, exist_ok=True)
        images, anns = [], []
        for i, r in enumerate(render((seed, split_id, i, size) for i in range(counts[split]))):
            file_name = f"{i:06d}.jpg"
            # ids unique across splits (train 1.., val 1000001..), so concatenated splits don't collide
            image_id = split_id * 1_000_000 + i + 1
            _write_bytes(os.path.join(img_dir, file_name), r.jpeg)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for lab, (x0, y0, x1, y1), area in zip(r.labels, r.boxes_px, r.areas):
                x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(lab) + 1,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(area), "iscrowd": 0,
                             # box polygon: some tools expect a segmentation field on every annotation
                             "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
        data = {"info": {"description": "ssd-ray synthetic shapes", "version": str(GENERATOR_VERSION)},
                "licenses": [], "images": images, "annotations": anns, "categories": categories}
        _write_bytes(os.path.join(out, "annotations", f"instances_{split}.json"),
                     json.dumps(data, separators=(",", ":")).encode())


def _params(fmt: str, n_train: int, n_val: int, seed: int, size: int, year: str) -> dict:
    return {"generator_version": GENERATOR_VERSION, "format": fmt, "n_train": int(n_train),
            "n_val": int(n_val), "seed": int(seed), "size": int(size), "year": str(year)}


def _expected_images(out: str, p: dict) -> list[str]:
    if p["format"] == "voc":
        d = os.path.join(out, f"VOC{p['year']}", "JPEGImages")
        return [os.path.join(d, f"{s}_{i:06d}.jpg") for s, _ in SPLITS for i in range(p[f"n_{s}"])]
    return [os.path.join(out, "images", s, f"{i:06d}.jpg") for s, _ in SPLITS for i in range(p[f"n_{s}"])]


def read_stamp(out_dir: str | os.PathLike) -> dict | None:
    """The generator's stamp in `out_dir` (`.shapes_meta.json`), or None when there is none or it is unreadable."""
    try:
        with open(os.path.join(os.fspath(out_dir), META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "generator_version" in meta else None


def target_problem(out_dir: str | os.PathLike) -> str | None:
    """Why the generator may not write into `out_dir`, or None when it may.

    It may write into a missing or empty folder, or one holding its own stamp (a finished or an
    interrupted generation: the stamp is written first, marked in progress). Anything else may be
    someone's data, which ssd-ray never overwrites.
    """
    out = os.path.abspath(os.fspath(out_dir))
    if not os.path.lexists(out):
        return None
    if not os.path.isdir(out):
        return f"{out} exists and is not a folder"
    if read_stamp(out) is not None:
        return None
    entries = sorted(os.listdir(out))
    if not entries:
        return None
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (f"{out} is not empty ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: {shown}) and "
            f"has no {META_FILE} stamp of the shapes generator, so it may hold someone's data")


def find_existing(out_dir: str, fmt: str = "voc", n_train: int = 2000, n_val: int = 300, seed: int = 0,
                  size: int = 256, year: str = "2007") -> str | None:
    """`out_dir` if it already holds a complete shapes dataset written with these parameters, else None."""
    out = os.path.abspath(os.fspath(out_dir))
    meta = read_stamp(out)
    if meta is None:
        return None
    # Stamps written before generation was stamped "in progress" first have no status; they were
    # written last, so they mean complete.
    if meta.pop("status", _COMPLETE) != _COMPLETE:
        return None
    p = _params(fmt, n_train, n_val, seed, size, year)
    if meta != p:
        return None
    if fmt == "coco":
        anns = [os.path.join(out, "annotations", f"instances_{s}.json") for s, _ in SPLITS]
    else:
        anns = [os.path.join(out, f"VOC{year}", "ImageSets", "Main", f"{s}.txt") for s, _ in SPLITS]
    if not all(os.path.isfile(a) for a in anns + _expected_images(out, p)):
        return None
    return out


def _write_stamp(out: str, params: dict, status: str) -> None:
    """Atomically (write + rename): a crash leaves the previous stamp or the new one, never half a file."""
    stamp = os.path.join(out, META_FILE)
    _write_bytes(stamp + ".tmp", json.dumps({**params, "status": status}, sort_keys=True).encode())
    os.replace(stamp + ".tmp", stamp)


def write_shapes(out_dir: str, fmt: str = "voc", n_train: int = 2000, n_val: int = 300, seed: int = 0,
                 size: int = 256, year: str = "2007", workers: int | None = None) -> str:
    """Write a shapes dataset and return the root its reader takes.

    `fmt="voc"`: `<out>/VOC<year>/{JPEGImages,Annotations,ImageSets/Main/{train,val,trainval}.txt}`;
    read with `read_voc(root, [(year, "train")], class_names=SHAPE_CLASSES)`.
    `fmt="coco"`: `<out>/annotations/instances_{train,val}.json` and `<out>/images/{train,val}/`;
    read with `read_coco(root, "train")`. A stamp `<out>/.shapes_meta.json` records the parameters:
    written first with `"status": "in_progress"`, rewritten with `"complete"` last; `find_existing`
    uses it to skip regeneration. `workers`: rendering processes for large sets (default: the usable
    CPUs; the files do not depend on it).

    Writes only into a missing or empty folder or one holding this stamp (`target_problem`);
    anything else raises `NotGeneratorFolderError` before a file is written.
    """
    if fmt not in ("voc", "coco"):
        raise ValueError(f"write_shapes: fmt must be 'voc' or 'coco', got {fmt!r}")
    if n_train < 0 or n_val < 0 or max(n_train, n_val) >= 1_000_000:
        raise ValueError(f"write_shapes: image counts must be in [0, 1e6), got n_train={n_train}, n_val={n_val}")
    if size < 64:
        raise ValueError(f"write_shapes: size must be >= 64 px, got {size}")
    out = os.path.abspath(os.fspath(out_dir))
    problem = target_problem(out)
    if problem is not None:
        raise NotGeneratorFolderError(f"the shapes generator does not write here: {problem}. Choose a missing "
                                      f"or empty folder")
    os.makedirs(out, exist_ok=True)
    p = _params(fmt, n_train, n_val, seed, size, year)
    # First: an interrupted generation then reads as unfinished (redone next time), never as complete,
    # and its folder still carries the stamp that lets the generator finish it.
    _write_stamp(out, p, _IN_PROGRESS)
    counts = {"train": int(n_train), "val": int(n_val)}
    # cv2's thread pool only adds overhead on 256 px images (2x slower wall time on a busy 2-core box).
    prev_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with _renderer(counts["train"] + counts["val"], workers) as render:
            if fmt == "voc":
                _write_voc(out, counts, seed, size, str(year), render)
            else:
                _write_coco(out, counts, seed, size, render)
    finally:
        cv2.setNumThreads(prev_threads)
    _write_stamp(out, p, _COMPLETE)  # last: only now is the folder a complete dataset
    return out
