"""Bench: batch prediction (`pipelines.predict`) in-process vs streamed through Ray Data; driver memory.

Setup: the shapes demo model (configs/shapes.yaml: light backbone width 24, 224 px) with RANDOM
weights (throughput does not depend on training), shapes images of 256 px generated once into
`--data` (default data/bench_predict), batch 16, score 0.5, JSON-lines output (no drawings).

`--section rate`: images/s on `--images` (2,000) images for the in-process path (`Predictor`, with
torch's default threads and with one) and Ray Data with 1 and 2 CPU workers (read tasks + model
actors of one torch thread each), in alternating order per round. Reported apart: Ray start-up (`ray.init`, once per process), the time to the first
finished batch (Ray Data start, actor processes, each actor loading the model, one batch; in-process:
loading the model + one batch) and the steady rate (images/s from the first finished batch to the
last). The ratio column divides by the in-process one-thread steady rate of the same round; driver
CPU % is the CPU time of the process calling `predict_images` (in-process: the model's too).

`--section memory`: peak driver RSS (`ru_maxrss` of the process running `pipelines.predict`, a fresh
process each) with `--num-workers 2` on the same 2,000 images and on `--big` (20,000) images, the
latter hard links to the former under other names (so the disk holds them once; every one is
decoded and predicted). Growth should stay under 10 %: the driver streams.

    python bench/predict.py [--section rate|memory|all] [--rounds 2] [--images 2000] [--big 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python bench/predict.py`

from bench._common import format_table  # noqa: E402


def _range(xs: list[float], digits: int = 1) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.median(xs):.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def prepare(data_dir: Path, n: int, big: int) -> tuple[str, Path, Path]:
    """(checkpoint, folder of n images, folder of `big` hard links to them)."""
    import torch

    from ssd_ray.checkpoint import model_state, save
    from ssd_ray.config import config_to_dict, load_config
    from ssd_ray.data.shapes import SHAPE_CLASSES, find_existing, write_shapes
    from ssd_ray.model import build_ssd

    shapes = data_dir / "shapes"
    if not find_existing(str(shapes), "voc", 0, n, 0, 256):
        print(f"writing {n} shapes images to {shapes} ...", flush=True)
        write_shapes(str(shapes), "voc", n_train=0, n_val=n, seed=0, size=256)
    images = shapes / "VOC2007" / "JPEGImages"
    files = sorted(images.glob("*.jpg"))
    links = data_dir / f"links_{big}"
    if len(list(links.glob("*.jpg"))) != big:
        links.mkdir(parents=True, exist_ok=True)
        for i in range(big):
            target = links / f"img_{i:06d}.jpg"
            if not target.exists():
                os.link(files[i % len(files)], target)
    ckpt = data_dir / "model_random.pt"
    if not ckpt.exists():
        cfg = load_config(ROOT / "configs/shapes.yaml", [f"data.root={shapes}"]).with_num_classes(list(SHAPE_CLASSES))
        torch.manual_seed(0)
        save(model_state(build_ssd(cfg.model, cfg.priors), config_to_dict(cfg), list(SHAPE_CLASSES)), ckpt)
    return str(ckpt), images, links


def section_rate(ckpt: str, images: Path, rounds: int) -> None:
    import ray

    from ssd_ray.inference.run import predict_images
    from ssd_ray.inference.sinks import JsonlSink
    from ssd_ray.inference.sources import list_images

    listing = list_images(str(images))
    n = len(listing)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    ray.data.DataContext.get_current().enable_progress_bars = False
    import torch

    default_threads = torch.get_num_threads()
    # name -> (num_workers, torch threads of this process); Ray's actors run 1 thread each.
    variants = {f"in-process, {default_threads} torch threads (default)": (None, default_threads),
                "in-process, 1 torch thread": (None, 1),
                "Ray Data, 1 CPU worker": (1, 1), "Ray Data, 2 CPU workers": (2, 1)}
    baseline = "in-process, 1 torch thread"
    stats: dict[str, dict[str, list[float]]] = {v: {"steady": [], "first": [], "total": [], "ratio": [], "cpu": []}
                                                for v in variants}
    load = []
    try:
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            steady = {}
            load.append(os.getloadavg()[0])
            for name in order:
                workers, threads = variants[name]
                torch.set_num_threads(threads)
                with tempfile.TemporaryDirectory() as out:
                    s = predict_images(ckpt, listing, JsonlSink(out), num_workers=workers, batch_size=16,
                                       score_thresh=0.5, progress_every_s=1e9)
                assert s.predicted == n, (name, s.predicted)
                steady[name] = s.steady_images_per_s
                stats[name]["steady"].append(s.steady_images_per_s)
                stats[name]["first"].append(s.startup_s["first_result"])
                stats[name]["total"].append(n / s.seconds)
                stats[name]["cpu"].append(100 * s.driver_cpu_s / s.seconds)
                print(f"round {r}: {name}: steady {s.steady_images_per_s:.1f} images/s, first batch after "
                      f"{s.startup_s['first_result']:.1f} s, {n / s.seconds:.1f} images/s overall", flush=True)
            for name in variants:
                stats[name]["ratio"].append(steady[name] / steady[baseline])
    finally:
        ray.shutdown()
    rows = [[name, _range(st["steady"]), _range(st["ratio"], 2), _range(st["first"]), _range(st["total"]),
             _range(st["cpu"], 0)] for name, st in stats.items()]
    print(f"\n{n} images, {rounds} round(s), Ray start-up (ray.init) {ray_start:.1f} s, "
          f"load average at round starts {', '.join(f'{x:.1f}' for x in load)}; median (min-max)")
    print(format_table(["variant", "steady images/s", "x in-process 1 thread", "first batch s", "overall images/s",
                        "driver CPU %"], rows))


def _driver_peak(ckpt: str, images: Path, workers: int | None) -> tuple[float, float, int]:
    """(peak driver RSS MB, wall s, images predicted) of one `pipelines.predict` process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "pipelines.predict", "--checkpoint", ckpt, "--images", str(images), "--out", out,
               "--format", "jsonl", "--batch-size", "16"]
        if workers:
            cmd += ["--num-workers", str(workers)]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        run = json.loads((Path(out) / "runs.jsonl").read_text().splitlines()[-1])
    return run["driver_peak_rss_mb"], wall, run["predicted"]


def section_memory(ckpt: str, small: Path, big: Path, sizes: tuple[int, int], rounds: int, in_process: bool) -> None:
    modes = [("Ray Data, 2 workers", 2)] + ([("in-process", None)] if in_process else [])
    rows = []
    for label, workers in modes:
        peaks: dict[Path, list[float]] = {small: [], big: []}
        for r in range(rounds):
            for images in (small, big):
                peak, wall, n = _driver_peak(ckpt, images, workers)
                print(f"{label}, {n} images: peak driver RSS {peak:.0f} MB, {wall:.0f} s", flush=True)
                peaks[images].append(peak)
        growth = [100 * (b / a - 1) for a, b in zip(peaks[small], peaks[big])]
        rows.append([label, _range(peaks[small], 0), _range(peaks[big], 0), _range(growth, 1)])
    print("\npeak driver RSS (MB), median (min-max) over rounds")
    print(format_table(["variant", f"{sizes[0]:,} images", f"{sizes[1]:,} images", "growth %"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["rate", "memory", "all"], default="all")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--memory-rounds", type=int, default=1)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--big", type=int, default=20000)
    ap.add_argument("--memory-in-process", action="store_true", help="also measure the in-process driver")
    ap.add_argument("--data", default=str(ROOT / "data" / "bench_predict"))
    args = ap.parse_args()
    ckpt, images, links = prepare(Path(args.data), args.images, args.big)
    if args.section in ("rate", "all"):
        section_rate(ckpt, images, args.rounds)
    if args.section in ("memory", "all"):
        section_memory(ckpt, images, links, (args.images, args.big), args.memory_rounds, args.memory_in_process)


if __name__ == "__main__":
    main()
