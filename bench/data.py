"""Data-path benchmarks.

Section `per-sample`: decode + full SSD training augmentation, images/s on ONE core
(cv2.setNumThreads(1)), 500x375-ish JPEGs -> 300x300. Compares
  * ours:      `ssd_ray.data.augment.decode_image` + `SSDAugmentation` (uint8, analytic geometry,
               one resize/warp from the source, LUT photometrics on the output), and
  * baseline:  the same recipe written the way ssd.pytorch's `utils/augmentations.py` does it
               (cv2.imread -> float32, every photometric step in float32 numpy, the full expand canvas
               built with np.zeros + fill, crop by slicing inside a per-try Python loop, cv2.resize),
               with ssd.pytorch's crop bugs fixed so both follow the same rules,
  * decode only: `decode_image` alone, the ceiling for any augmentation,
  * ours + 3 extras: ours after three typical `data.augment.extra` albumentations transforms (blur,
               JPEG artefacts, a small rotation; `TYPICAL_EXTRAS`, the README's example) at the
               README's probabilities, the same with every p = 1 (all three on every image), and
               three pixel-only ones (blur, noise, JPEG; `PIXEL_EXTRAS`).
Rounds alternate between the variants in one process; medians over rounds are reported.

Section `extra-startup`: what extras add to a data actor's start-up (importing albumentations, which
imports torch, and building the transforms), timed in fresh processes, alternating with and without.

Run: `python bench/data.py [--section per-sample|all]`. The lead can add further sections (e.g. a
Ray Data throughput section) as `bench_<name>(args)` functions registered in `SECTIONS`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py when run as a script
from _common import alternating_rounds, format_table, median  # noqa: E402

from ssd_ray.data.augment import SSDAugmentation, decode_image  # noqa: E402

MEAN_BGR = (104.0, 116.0, 124.0)  # the reference works in BGR
# Three typical user extras (the README's example): blur, JPEG artefacts, a small rotation.
TYPICAL_EXTRAS = [
    {"name": "GaussianBlur", "p": 0.2, "blur_limit": [3, 5]},
    {"name": "ImageCompression", "p": 0.3, "quality_range": [40, 90]},
    {"name": "Affine", "p": 0.3, "rotate": [-10, 10], "fill": [124, 116, 104]},
]
# Three pixel-only extras (blur, noise, JPEG): boxes cannot move, so they skip albumentations' box processing.
PIXEL_EXTRAS = [TYPICAL_EXTRAS[0], {"name": "GaussNoise", "p": 0.3, "std_range": [0.02, 0.06]}, TYPICAL_EXTRAS[1]]


# ------------------------------------------------------------------------------ synthetic images
def write_synthetic_jpegs(folder: Path, n: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Write `n` JPEGs (about 500x375, some 375x500, quality 90) with 2-4 filled shapes each.

    Shapes on a smooth gradient plus mild noise, so that JPEG decode costs about what it costs for
    photos (pure noise would make decode ~3x slower, a flat image ~2x faster).
    Returns `[(path, boxes [n,4] float32 xyxy relative, labels [n] int64)]`.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
        w += int(rng.integers(-20, 21))
        h += int(rng.integers(-20, 21))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(40, 200, size=3).astype(np.float32)
        tilt = rng.uniform(-0.2, 0.2, size=(2, 3)).astype(np.float32)
        img = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
        img += rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
        img = np.clip(img, 0, 255).astype(np.uint8)
        boxes, labels = [], []
        for _ in range(int(rng.integers(2, 5))):
            bw, bh = rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.6) * h
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            color = tuple(int(c) for c in rng.integers(0, 256, size=3))
            if rng.random() < 0.5:
                cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), color, -1)
            else:
                cv2.ellipse(img, (int(x0 + bw / 2), int(y0 + bh / 2)), (int(bw / 2), int(bh / 2)),
                            0, 0, 360, color, -1)
            boxes.append([x0 / w, y0 / h, (x0 + bw) / w, (y0 + bh) / h])
            labels.append(int(rng.integers(0, 20)))
        path = folder / f"img_{i:03d}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        samples.append((str(path), np.array(boxes, np.float32), np.array(labels, np.int64)))
    return samples


# ------------------------------------------------------------------- ssd.pytorch-style baseline
def _jaccard_numpy(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    inter_wh = np.clip(np.minimum(box_a[:, 2:], box_b[2:]) - np.maximum(box_a[:, :2], box_b[:2]), 0, None)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    area_a = (box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    return inter / (area_a + area_b - inter)


class ReferenceStyleAugmentation:
    """ssd.pytorch's SSDAugmentation (float32 numpy, BGR), crop bugs fixed, ending at the resize.

    Same rules as `SSDAugmentation`: per-step p 0.5 photometrics with the contrast-before/after coin,
    clip to [0,255]; expand p 0.5 up to 4x with the mean fill; seven crop modes, IoU with at least one
    box >= min_iou, 50 tries per mode, at most 10 rounds; mirror p 0.5. No SubtractMeans: our output
    is uint8 and normalisation happens on the device, so the baseline is not charged for it.
    """

    perms = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
    modes = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -np.inf)

    def __init__(self, size: int = 300):
        self.size = size

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        im = image.copy()
        if rng.random() < 0.5:  # RandomBrightness
            im += rng.uniform(-32, 32)
        contrast_first = rng.random() < 0.5

        def contrast(x: np.ndarray) -> np.ndarray:
            if rng.random() < 0.5:
                x *= rng.uniform(0.5, 1.5)
            return x

        if contrast_first:
            im = contrast(im)
        im = cv2.cvtColor(im, cv2.COLOR_BGR2HSV)
        if rng.random() < 0.5:  # RandomSaturation
            im[:, :, 1] *= rng.uniform(0.5, 1.5)
        if rng.random() < 0.5:  # RandomHue
            im[:, :, 0] += rng.uniform(-18, 18)
            im[:, :, 0][im[:, :, 0] > 360.0] -= 360.0
            im[:, :, 0][im[:, :, 0] < 0.0] += 360.0
        im = cv2.cvtColor(im, cv2.COLOR_HSV2BGR)
        if not contrast_first:
            im = contrast(im)
        if rng.random() < 0.5:  # RandomLightingNoise
            im = im[:, :, self.perms[rng.integers(6)]]
        return np.clip(im, 0, 255)

    def expand(self, image, boxes, rng):
        if rng.random() < 0.5:
            return image, boxes
        height, width, depth = image.shape
        ratio = rng.uniform(1, 4)
        left = rng.uniform(0, width * ratio - width)
        top = rng.uniform(0, height * ratio - height)
        expand_image = np.zeros((int(height * ratio), int(width * ratio), depth), dtype=image.dtype)
        expand_image[:, :, :] = MEAN_BGR
        expand_image[int(top):int(top + height), int(left):int(left + width)] = image
        boxes = boxes.copy()
        boxes[:, :2] += (int(left), int(top))
        boxes[:, 2:] += (int(left), int(top))
        return expand_image, boxes

    def crop(self, image, boxes, labels, rng):
        height, width, _ = image.shape
        for _ in range(10):
            mode = self.modes[rng.integers(len(self.modes))]
            if mode is None:
                return image, boxes, labels
            min_iou = mode
            for _ in range(50):
                w = rng.uniform(0.3 * width, width)
                h = rng.uniform(0.3 * height, height)
                if h / w < 0.5 or h / w > 2:
                    continue
                left = rng.uniform(0, width - w)
                top = rng.uniform(0, height - h)
                rect = np.array([int(left), int(top), int(left + w), int(top + h)])
                if len(boxes):
                    if _jaccard_numpy(boxes, rect).max() < min_iou:  # fixed: at least one box
                        continue
                current_image = image[rect[1]:rect[3], rect[0]:rect[2], :]
                if not len(boxes):
                    return current_image, boxes, labels
                centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
                m1 = (rect[0] < centers[:, 0]) * (rect[1] < centers[:, 1])
                m2 = (rect[2] > centers[:, 0]) * (rect[3] > centers[:, 1])
                mask = m1 * m2
                if not mask.any():
                    continue
                current_boxes = boxes[mask, :].copy()
                current_labels = labels[mask]
                current_boxes[:, :2] = np.maximum(current_boxes[:, :2], rect[:2])
                current_boxes[:, :2] -= rect[:2]
                current_boxes[:, 2:] = np.minimum(current_boxes[:, 2:], rect[2:])
                current_boxes[:, 2:] -= rect[:2]
                return current_image, current_boxes, current_labels
        return image, boxes, labels

    def __call__(self, path: str, boxes_rel: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        image = cv2.imread(path).astype(np.float32)  # ConvertFromInts
        height, width, _ = image.shape
        boxes = boxes_rel * np.array([width, height, width, height], np.float32)  # ToAbsoluteCoords
        image = self.photometric(image, rng)
        image, boxes = self.expand(image, boxes, rng)
        image, boxes, labels = self.crop(image, boxes, labels, rng)
        height, width, _ = image.shape
        if rng.random() < 0.5:  # RandomMirror
            image = image[:, ::-1]
            boxes = boxes.copy()
            boxes[:, 0::2] = width - boxes[:, 2::-2]
        boxes = boxes / np.array([width, height, width, height], np.float32)  # ToPercentCoords
        image = cv2.resize(image, (self.size, self.size))
        return image, boxes, labels


# ---------------------------------------------------------------------------------------- sections
def bench_per_sample(args: argparse.Namespace) -> dict[str, float]:
    """Decode + augment images/s on one core; returns the median rates and the speed-up."""
    from ssd_ray.data.extra_augment import ExtraAugment, SSDWithExtra

    cv2.setNumThreads(1)
    ours_aug = SSDAugmentation(args.size)
    baseline = ReferenceStyleAugmentation(args.size)
    with_extras = SSDWithExtra(ours_aug, ExtraAugment(TYPICAL_EXTRAS))
    with_extras_p1 = SSDWithExtra(ours_aug, ExtraAugment([{**e, "p": 1.0} for e in TYPICAL_EXTRAS]))
    with_pixel = SSDWithExtra(ours_aug, ExtraAugment(PIXEL_EXTRAS))
    for a in (with_extras, with_extras_p1, with_pixel):
        a.prepare()
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_synthetic_jpegs(Path(tmp), args.images, args.seed)
        n_per_round = len(samples) * args.passes

        def ours(r: int) -> int:
            for p in range(args.passes):
                for i, (path, boxes, labels) in enumerate(samples):
                    ours_aug(decode_image(path), boxes, labels, np.random.default_rng([args.seed, r + 1, p, i]))
            return n_per_round

        def reference(r: int) -> int:
            for p in range(args.passes):
                for i, (path, boxes, labels) in enumerate(samples):
                    baseline(path, boxes, labels, np.random.default_rng([args.seed, r + 1, p, i]))
            return n_per_round

        def decode_only(r: int) -> int:
            for _ in range(args.passes):
                for path, _, _ in samples:
                    decode_image(path)
            return n_per_round

        def extras(aug):
            def run(r: int) -> int:
                for p in range(args.passes):
                    for i, (path, boxes, labels) in enumerate(samples):
                        aug(decode_image(path), boxes, labels, np.random.default_rng([args.seed, r + 1, p, i]))
                return n_per_round
            return run

        rates = alternating_rounds({"baseline (ssd.pytorch style)": reference, "ours": ours,
                                    "decode only (ceiling)": decode_only,
                                    "ours + 3 extras (README p)": extras(with_extras),
                                    "ours + 3 extras (p = 1)": extras(with_extras_p1),
                                    "ours + 3 pixel-only extras": extras(with_pixel)}, rounds=args.rounds)
    med = {name: median(r) for name, r in rates.items()}
    base = med["baseline (ssd.pytorch style)"]
    rows = [[name, med[name], min(r), max(r), 1e3 / med[name], f"{med[name] / base:.2f}x"]
            for name, r in rates.items()]
    print(f"\n## per-sample decode + SSD augmentation, one core, {args.images} JPEGs ~500x375 -> "
          f"{args.size}x{args.size}, {args.rounds} alternating rounds x {n_per_round} images")
    print(format_table(["variant", "img/s (median)", "min", "max", "ms/img", "vs baseline"], rows))
    per_round = [o / b for o, b in zip(rates["ours"], rates["baseline (ssd.pytorch style)"])]
    print(f"speed-up ours/baseline: {med['ours'] / base:.2f}x (ratio of medians), "
          f"median of per-round ratios {median(per_round):.2f}x")
    extra_ratio = {}
    for name in ("ours + 3 extras (README p)", "ours + 3 extras (p = 1)", "ours + 3 pixel-only extras"):
        per_round = [e / o for e, o in zip(rates[name], rates["ours"])]
        extra_ratio[name] = median(per_round)
        print(f"{name} / ours: {med[name] / med['ours']:.2f}x (ratio of medians), "
              f"median of per-round ratios {extra_ratio[name]:.2f}x")
    return {"ours_img_s": med["ours"], "baseline_img_s": base, "speedup": med["ours"] / base,
            "decode_img_s": med["decode only (ceiling)"],
            "extras_img_s": med["ours + 3 extras (README p)"], "extras_p1_img_s": med["ours + 3 extras (p = 1)"],
            "extras_ratio": extra_ratio["ours + 3 extras (README p)"],
            "extras_p1_ratio": extra_ratio["ours + 3 extras (p = 1)"],
            "pixel_extras_ratio": extra_ratio["ours + 3 pixel-only extras"]}


def bench_extra_startup(args: argparse.Namespace) -> dict[str, float]:
    """Seconds a fresh process spends importing the data path and building the training augmentation,
    without extras and with `TYPICAL_EXTRAS` (albumentations + torch imports, transforms built): what a
    Ray Data augmentation actor pays once when it starts. Alternating runs; interpreter start excluded.
    CPU seconds (user + system of the process) are reported beside wall seconds: on a busy machine the
    wall time mostly measures the wait for a core."""
    import json
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    build = {
        "without extras": "a = SSDAugmentation(300)",
        "with 3 extras": ("from ssd_ray.data.extra_augment import ExtraAugment, SSDWithExtra\n"
                          f"a = SSDWithExtra(SSDAugmentation(300), ExtraAugment({json.dumps(TYPICAL_EXTRAS)}))\n"
                          "a.prepare()"),
    }
    times: dict[str, list[float]] = {k: [] for k in build}
    cpu: dict[str, list[float]] = {k: [] for k in build}
    for r in range(args.startup_runs):
        for name in (list(build) if r % 2 == 0 else list(build)[::-1]):
            code = ("import sys, time\nt0, c0 = time.perf_counter(), time.process_time()\n"
                    "from ssd_ray.data.pipeline import TrainSampleMaker\n"
                    "from ssd_ray.data.augment import SSDAugmentation\n"
                    f"{build[name]}\n"
                    "print(time.perf_counter() - t0, time.process_time() - c0, 'torch' in sys.modules)")
            out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
            secs, cpu_secs, torch_loaded = out.stdout.split()
            times[name].append(float(secs))
            cpu[name].append(float(cpu_secs))
            print(f"  run {r}: {name}: {float(secs):.2f} s wall, {float(cpu_secs):.2f} s CPU, "
                  f"torch imported: {torch_loaded}", flush=True)
    rows = [[name, median(times[name]), min(times[name]), max(times[name]), median(cpu[name]), min(cpu[name]),
             max(cpu[name])] for name in build]
    print(f"\n## data actor start-up: import the data path + build the augmentation, {args.startup_runs} fresh "
          f"processes each")
    print(format_table(["variant", "wall s (median)", "min", "max", "CPU s (median)", "min", "max"], rows))
    extra_cpu = median(cpu["with 3 extras"]) - median(cpu["without extras"])
    extra_wall = median(times["with 3 extras"]) - median(times["without extras"])
    print(f"extras add {extra_cpu:.2f} CPU s ({extra_wall:.2f} s wall) per actor start (differences of medians)")
    return {"startup_without_s": median(times["without extras"]), "startup_with_s": median(times["with 3 extras"]),
            "startup_without_cpu_s": median(cpu["without extras"]), "startup_with_cpu_s": median(cpu["with 3 extras"])}


def bench_ray_pipeline(args: argparse.Namespace) -> dict[str, float]:
    """Ray Data pipeline throughput (the training path: from_arrow positions -> map_batches decode +
    augment -> iter_torch_batches with the SSD collate) into one consuming process, with the
    augmentation tasks limited to 1 and then 2 concurrent data CPUs. Each setting runs on a fresh
    Ray so the two cannot share warm workers; the first batches (task start-up) are not timed.
    `--ray-store s3` (or `both`) reads the same JPEGs from a local S3 server instead (bench/_s3.py:
    moto in its own process, sharing the cores; informational), as a bucket `data.root` does."""
    import time

    import ray

    from ssd_ray.config import config_from_dict
    from ssd_ray.data.pipeline import SSDCollate, build_train_dataset
    from ssd_ray.data.records import DetectionDataset, ImageRecord

    with tempfile.TemporaryDirectory() as d:
        samples = write_synthetic_jpegs(Path(d), 40, seed=1)
        records = [ImageRecord(str(i), path, 500, 375, boxes, labels, np.zeros(len(labels), bool))
                   for i, (path, boxes, labels) in enumerate(samples)]
        batch, iters, warm = 32, args.ray_iters, 4
        rates = {}
        stores = ["local", "s3"] if args.ray_store == "both" else [args.ray_store]
        server = None
        if "s3" in stores:
            from _s3 import LocalS3

            server = LocalS3()
            server.use()  # before ray.init: the data actors inherit the endpoint and credentials
            server.upload_dir(d, "bench", "jpegs")
        try:
            for store, cpus in [(s, c) for s in stores for c in (1, 2)]:
                recs = records if store == "local" else [
                    ImageRecord(r.image_id, f"s3://bench/jpegs/{Path(r.path).name}", r.width, r.height, r.boxes,
                                r.labels, r.difficult) for r in records]
                dataset = DetectionDataset(["a", "b", "c", "d", "e", "f", "g"], recs)
                cfg = config_from_dict({
                    "name": "bench", "data": {"root": d, "train_sets": ["x/y"], "val_sets": ["x/y"]},
                    "model": {"min_dim": 300},
                    "priors": {"feature_maps": [1], "steps": [300], "min_sizes": [30], "max_sizes": [60],
                               "aspect_ratios": [[]]},
                    "train": {"batch_size": batch, "max_iter": iters + warm, "warmup_iters": 0},
                    "ray": {"data_cpus": 1, "data_concurrency": cpus},
                })
                # The consumer (this process) is not a Ray task: all of Ray's CPUs go to the data tasks.
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
                try:
                    it = build_train_dataset(dataset, cfg).iter_torch_batches(
                        batch_size=batch, collate_fn=SSDCollate(), drop_last=True, prefetch_batches=2)
                    n = 0
                    for i, b in enumerate(it):
                        if i == warm:
                            t0 = time.perf_counter()
                        n += len(b["image"]) if i >= warm else 0
                    rates[store, cpus] = n / (time.perf_counter() - t0)
                finally:
                    ray.shutdown()
        finally:
            if server is not None:
                server.stop()
    print(format_table(["images from", "data CPUs", "images/s", "vs 1 CPU", "vs local disk"],
                       [[s, str(c), r, f"{r / rates[s, 1]:.2f}x",
                         f"{r / rates['local', c]:.2f}x" if ("local", c) in rates else "-"]
                        for (s, c), r in rates.items()]))
    return {f"ray_{s}_{c}cpu_img_s": r for (s, c), r in rates.items()}


SECTIONS = {"per-sample": bench_per_sample, "ray": bench_ray_pipeline, "extra-startup": bench_extra_startup}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    ap.add_argument("--ray-iters", type=int, default=30, help="timed batches of 32 per Ray setting")
    ap.add_argument("--ray-store", choices=["local", "s3", "both"], default="local",
                    help="ray section: images from the local disk, a local S3 server, or both")
    ap.add_argument("--images", type=int, default=20, help="synthetic JPEGs to write")
    ap.add_argument("--passes", type=int, default=3, help="passes over the images per round")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per variant (alternating)")
    ap.add_argument("--size", type=int, default=300, help="output side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-runs", type=int, default=5, help="fresh processes per variant (extra-startup)")
    args = ap.parse_args(argv)
    for name, fn in SECTIONS.items():
        if args.section in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
