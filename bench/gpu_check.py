"""GPU check: SSD300 (the VOC config: VGG16, 21 classes, 8732 priors) training throughput on one GPU.

Meant for a GPU machine without network that has torch, torchvision, numpy, opencv-python-headless,
pyyaml and pyarrow but no Ray, MLflow, pydantic or albumentations: it imports only
`ssd_ray.{model,priors,boxes,loss,data.augment,data.shapes,train.step,train.optim}` and reads `configs/voc300.yaml` with
plain PyYAML (no `ssd_ray.config`). Run it through `bench/gpu_check.sh`; `--smoke` runs every section
on the CPU with a tiny model in seconds (the test suite does that).

Sections, in order:
  augment    decode + `SSDAugmentation` images/s on one CPU core (the per-core data ceiling)
  resident   training images/s on batches already on the GPU (model + matching + loss ceiling) and
             peak GPU memory, per batch size, eager and `torch.compile`d (`--compile both`, the
             default), cudnn.benchmark on as ssd_ray/train/loop.py runs; the first compiled batch
             size's section time includes compilation
  pipeline   training images/s with the project's augmentation in torch DataLoader worker processes
             (num_workers = available cores, pin_memory), batches copied to the GPU each step; the
             compiled step when there is one
  split      one eager step cut into phases timed with CUDA events: forward, match_batch,
             MultiBoxLoss forward+backward, network backward, optimizer; reports the loss's share
  correct    `--correct-iters` steps on a fixed set of augmented images, eager and compiled: the loss
             must fall (mean of the last 10% < `--fall` x mean of the first 10%) and stay finite, else exit 1

A section that raises is reported and skipped (exit 3 at the end); results go to `--json` after every
section, so a run cut short by a timeout keeps what it measured. Exit 0: all sections ran and passed.
The ratios printed at the end: compiled/eager (goal >= 1.3) and pipeline/compiled resident (>= 0.95).

The training step is the library's own, `ssd_ray.train.step.TrainStep` (normalise on the device,
batched matching, bf16 autocast, channels_last, MultiBoxLoss in float32, grad-norm + finiteness check
= one host sync per step), with SGD as configs/voc300.yaml; `split` times that step's pieces.

Source images: shapes images (ssd_ray.data.shapes.render_image) rendered at 448x448, JPEG-encoded
once (quality 90); each sample is decoded and augmented afresh, as the Ray Data pipeline does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # works with `pip install --no-deps -e .` or from a bare checkout

from ssd_ray.boxes import match_batch  # noqa: E402
from ssd_ray.data.augment import SSDAugmentation, decode_image  # noqa: E402
from ssd_ray.data.shapes import render_image  # noqa: E402
from ssd_ray.loss import MultiBoxLoss  # noqa: E402
from ssd_ray.model import build_ssd, normalize  # noqa: E402
from ssd_ray.priors import prior_boxes  # noqa: E402
from ssd_ray.train.optim import build_optimizer  # noqa: E402
from ssd_ray.train.step import StepSettings, TrainStep, autocast_dtype  # noqa: E402

SOURCE_SIZE = 448  # about the pixel count of a 500x375 VOC image
SOURCE_IMAGES = 64
MAX_BOXES = 32  # padding width of ground truth per image (VOC images hold at most ~40 objects)
# Goals on one H100/H200 (issue 13), measured in the same run: compiled vs eager on resident batches,
# and the augmentation-fed pipeline vs the compiled resident rate.
GOAL_COMPILED_OVER_EAGER = 1.3
GOAL_PIPELINE_OVER_RESIDENT = 0.95


# ------------------------------------------------------------------------------------------ configs
def voc300_config(num_classes_override: int | None = None) -> tuple[SimpleNamespace, SimpleNamespace, dict]:
    """Model and priors sections of configs/voc300.yaml as plain namespaces, plus its train section."""
    raw = yaml.safe_load((REPO / "configs" / "voc300.yaml").read_text())
    model = SimpleNamespace(backbone=raw["model"]["backbone"], min_dim=int(raw["model"]["min_dim"]),
                            num_classes=int(num_classes_override or raw["model"]["num_classes"]),
                            pretrained=None, width=32)  # no weights file on the GPU box: random init
    p = raw["priors"]
    priors = SimpleNamespace(feature_maps=p["feature_maps"], steps=p["steps"], min_sizes=p["min_sizes"],
                             max_sizes=p["max_sizes"], aspect_ratios=p["aspect_ratios"],
                             variance=tuple(p.get("variance", (0.1, 0.2))), clip=p.get("clip", True))
    return model, priors, raw.get("train", {})


def tiny_config() -> tuple[SimpleNamespace, SimpleNamespace, dict]:
    """The light backbone at 96 px (3 maps 12/6/3, 756 priors): `--smoke` runs every code path in seconds."""
    model = SimpleNamespace(backbone="light", min_dim=96, num_classes=21, pretrained=None, width=8)
    priors = SimpleNamespace(feature_maps=[12, 6, 3], steps=[8, 16, 32], min_sizes=[10, 30, 60],
                             max_sizes=[30, 60, 96], aspect_ratios=[[2], [2], [2]], variance=(0.1, 0.2),
                             clip=True)
    return model, priors, {"lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}


def make_priors(model_cfg, priors_cfg) -> torch.Tensor:
    p = priors_cfg
    return prior_boxes(model_cfg.min_dim, p.feature_maps, p.steps, p.min_sizes, p.max_sizes, p.aspect_ratios,
                       clip=p.clip)


# --------------------------------------------------------------------------------------------- data
def make_sources(n: int, seed: int) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    """`n` (JPEG bytes, boxes [k,4] xyxy 0..1 float32, labels [k] int64) from the shapes renderer."""
    out = []
    for i in range(n):
        r = render_image(seed, 0, i, size=SOURCE_SIZE)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(r.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"cv2.imencode failed for source image {i}")
        out.append((buf.tobytes(), (r.boxes_px / SOURCE_SIZE).astype(np.float32), r.labels.astype(np.int64)))
    return out


class AugmentedStream(torch.utils.data.Dataset):
    """Sample `i` = source `i % n` in epoch `i // n`, decoded and augmented with rng `(seed, epoch, index)`.

    Returns `(image uint8 [S,S,3] RGB, boxes float32 [MAX_BOXES,4] xyxy 0..1, labels int64 [MAX_BOXES],
    -1 = padding)`: the columns the Ray Data pipeline hands the train workers.
    """

    def __init__(self, sources, size: int, length: int, seed: int):
        self.sources, self.length, self.seed = sources, length, seed
        self.augment = SSDAugmentation(size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        n = len(self.sources)
        k, epoch = i % n, i // n
        jpeg, boxes, labels = self.sources[k]
        image, b, lab = self.augment(decode_image(jpeg), boxes, labels, np.random.default_rng([self.seed, epoch, k]))
        gt_boxes = np.zeros((MAX_BOXES, 4), dtype=np.float32)
        gt_labels = np.full(MAX_BOXES, -1, dtype=np.int64)
        m = min(len(b), MAX_BOXES)
        gt_boxes[:m], gt_labels[:m] = b[:m], lab[:m]
        return torch.from_numpy(image), torch.from_numpy(gt_boxes), torch.from_numpy(gt_labels)


def _worker_init(_):
    # One thread per worker process: the workers are the parallelism (as Ray Data tasks are).
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def resident_batch(sources, size: int, batch: int, device, seed: int):
    """A batch built once and kept on the device."""
    ds = AugmentedStream(sources, size, batch, seed)
    items = [ds[i] for i in range(batch)]
    return tuple(torch.stack(col).to(device) for col in zip(*items))


# ------------------------------------------------------------------------------------------- training
class Trainer:
    """Model, optimiser and the library's training step (`ssd_ray.train.step.TrainStep`) on one device:
    bf16 autocast + channels_last on CUDA (the config defaults), float32 on the CPU, as the loop runs."""

    def __init__(self, model_cfg, priors_cfg, train_cfg: dict, device: torch.device, compile_model: bool,
                 grad_clip: float | None = None):
        self.device = device
        self.cuda = device.type == "cuda"
        torch.manual_seed(0)
        self.model = build_ssd(model_cfg, priors_cfg).to(device)
        if self.cuda:
            self.model.to(memory_format=torch.channels_last)
        self.priors = make_priors(model_cfg, priors_cfg).to(device)
        self.optimizer = build_optimizer(self.model, SimpleNamespace(
            optimizer="sgd", lr=float(train_cfg.get("lr", 1e-3)), momentum=float(train_cfg.get("momentum", 0.9)),
            weight_decay=float(train_cfg.get("weight_decay", 5e-4)), no_bias_decay=False))
        settings = StepSettings(overlap_thresh=0.5, variance=tuple(priors_cfg.variance), grad_clip=grad_clip,
                                amp_dtype=autocast_dtype("bf16", device), channels_last=self.cuda,
                                compile=compile_model)
        self.train_step = TrainStep(self.model, self.priors, self.optimizer, settings, criterion=MultiBoxLoss(3.0))

    def step(self, images_u8, gt_boxes, gt_labels) -> torch.Tensor:
        """One training step of the library; returns the loss (on the device)."""
        return self.train_step(images_u8, gt_boxes, gt_labels).loss

    def split_step(self, images_u8, gt_boxes, gt_labels, timer) -> None:
        """The same step's pieces, cut at the network output so the loss's forward+backward is timed alone."""
        st = self.train_step
        s = st.settings
        timer.mark("start")
        images = normalize(images_u8, channels_last=s.channels_last)
        with st._autocast():
            loc, conf = st.net(images)
        timer.mark("forward")
        loc_t, conf_t = match_batch(gt_boxes, gt_labels, st.priors, s.overlap_thresh, s.variance)
        timer.mark("match")
        loc_d, conf_d = loc.detach().requires_grad_(), conf.detach().requires_grad_()
        loss_l, loss_c = st.criterion(loc_d, conf_d, loc_t, conf_t)
        (loss_l + loss_c).backward()
        timer.mark("loss")
        st.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([loc, conf], [loc_d.grad, conf_d.grad])
        timer.mark("backward")
        grad_norm = torch.nn.utils.clip_grad_norm_(st.params, math.inf)
        if bool(torch.isfinite(grad_norm)):
            st.optimizer.step()
        timer.mark("optimizer")


class PhaseTimer:
    """CUDA events between marks (device time); on the CPU, perf_counter (all work is synchronous)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.marks: list[tuple[str, object]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append((name, ev))
        else:
            self.marks.append((name, time.perf_counter()))

    def phases_ms(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            out[name] = a.elapsed_time(b) if self.cuda else (b - a) * 1000.0
        self.marks.clear()
        return out


def ratios(results: dict, batch: int) -> dict[str, tuple[float, float]]:
    """(value, goal) of the check's ratios that this run measured, at the pipeline's batch size."""
    resident = {r["compiled"]: r["images_per_s"] for r in results.get("resident", [])
                if r.get("batch") == batch and not r.get("oom")}
    out = {}
    if False in resident and True in resident:
        out["compiled/eager (resident)"] = (resident[True] / resident[False], GOAL_COMPILED_OVER_EAGER)
    pipe = results.get("pipeline")
    if pipe and pipe.get("compiled") in resident:
        out["pipeline/resident (same step)"] = (pipe["steady_images_per_s"] / resident[pipe["compiled"]],
                                                GOAL_PIPELINE_OVER_RESIDENT)
    return out


def rate(x: float) -> str:
    """Images/s for printing: whole numbers on a GPU, two decimals for the CPU smoke runs."""
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- sections
def bench_augment(sources, size: int, n: int) -> float:
    """Decode + augment images/s on this process's single core."""
    cv2.setNumThreads(1)
    ds = AugmentedStream(sources, size, n, seed=1)
    ds[0]
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t0)


def bench_pipeline(tr: Trainer, sources, size: int, batch: int, iters: int, warmup: int, workers: int) -> dict:
    """Training fed by DataLoader worker processes.

    The workers fill their prefetch queue (workers x 2 batches) while the GPU warms up, so the first
    timed iterations can run faster than the workers produce. Reported: the rate over all `iters` timed
    iterations and over their second half ("steady"), where a data-bound run has drained that queue.
    Every step ends with the loop's host sync, so per-step wall-clock stamps are meaningful.
    """
    ds = AugmentedStream(sources, size, (iters + warmup) * batch, seed=2)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, num_workers=workers, pin_memory=tr.cuda, drop_last=True,
        worker_init_fn=_worker_init if workers else None, persistent_workers=False,
        prefetch_factor=2 if workers else None, timeout=120 if workers else 0)
    it = iter(loader)
    wait = 0.0
    stamps = []
    for k in range(iters + warmup):
        if k == warmup:
            sync(tr.device)
            wait = 0.0
            stamps.append(time.perf_counter())
        w0 = time.perf_counter()
        images, boxes, labels = next(it)
        images = images.to(tr.device, non_blocking=True)
        boxes = boxes.to(tr.device, non_blocking=True)
        labels = labels.to(tr.device, non_blocking=True)
        if k >= warmup:
            wait += time.perf_counter() - w0
        tr.step(images, boxes, labels)
        if k >= warmup:
            stamps.append(time.perf_counter())
    sync(tr.device)
    del it, loader
    dt = stamps[-1] - stamps[0]
    half = iters // 2
    steady = (iters - half) * batch / (stamps[-1] - stamps[half]) if iters - half > 0 else float("nan")
    return {"images_per_s": iters * batch / dt, "steady_images_per_s": steady,
            "data_wait_fraction": wait / dt, "batch": batch, "workers": workers, "iters": iters}


def bench_resident(tr: Trainer, sources, size: int, batch: int, iters: int, warmup: int) -> dict:
    images, boxes, labels = resident_batch(sources, size, batch, tr.device, seed=3)
    if tr.cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        tr.step(images, boxes, labels)
    sync(tr.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        tr.step(images, boxes, labels)
    sync(tr.device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if tr.cuda else None
    return {"images_per_s": iters * batch / dt, "step_ms": dt / iters * 1000.0, "batch": batch,
            "peak_mem_gib": peak}


def bench_split(tr: Trainer, sources, size: int, batch: int, iters: int, warmup: int) -> dict:
    images, boxes, labels = resident_batch(sources, size, batch, tr.device, seed=4)
    if tr.cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = PhaseTimer(tr.cuda)
    totals: dict[str, float] = {}
    for k in range(warmup + iters):
        tr.split_step(images, boxes, labels, timer)
        phases = timer.phases_ms()
        if k >= warmup:
            for name, ms in phases.items():
                totals[name] = totals.get(name, 0.0) + ms
    ms = {name: v / iters for name, v in totals.items()}
    step = sum(ms.values())
    loss_ms = ms["match"] + ms["loss"]
    peak = torch.cuda.max_memory_allocated() / 2**30 if tr.cuda else None
    return {"phases_ms": ms, "step_ms": step, "loss_share": loss_ms / step, "batch": batch, "peak_mem_gib": peak}


def run_correctness(tr: Trainer, sources, size: int, batch: int, iters: int, fall: float, warmup: int) -> dict:
    """Train on 2 fixed batches (alternating) for `iters` steps; the loss must fall and stay finite.

    The VGG16 here starts from random weights (no ImageNet file on the GPU box), so the run uses what
    the config offers for that: a linear warm-up from 0.1x lr over `warmup` steps and gradient-norm
    clipping (the trainer's `grad_clip`; train.warmup_iters / train.grad_clip).
    """
    batches = [resident_batch(sources, size, batch, tr.device, seed=10 + j) for j in range(2)]
    base_lr = tr.optimizer.param_groups[0]["lr"]
    losses = []
    for k in range(iters):
        for g in tr.optimizer.param_groups:
            g["lr"] = base_lr * (0.1 + 0.9 * min(1.0, k / warmup)) if warmup else base_lr
        losses.append(tr.step(*batches[k % 2]))
    values = torch.stack(losses).float().cpu().numpy()
    w = max(2, iters // 10)
    first, last = float(values[:w].mean()), float(values[-w:].mean())
    finite = bool(np.isfinite(values).all())
    ok = finite and last < fall * first
    return {"iters": iters, "batch": batch, "loss_first": first, "loss_last": last, "finite": finite,
            "ratio": last / first if first else float("nan"), "required_ratio": fall, "ok": ok,
            "curve": [round(float(v), 4) for v in values[:: max(1, iters // 20)]]}


# ------------------------------------------------------------------------------------------------ CLI
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS)
        return os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--arch", choices=["voc300", "tiny"], default="voc300")
    p.add_argument("--batch", type=int, default=128, help="batch of the pipeline, split and correct sections")
    p.add_argument("--resident-batches", default="128,256", help="comma list for the resident section")
    p.add_argument("--iters", type=int, default=40, help="timed iterations per throughput measurement")
    p.add_argument("--pipeline-iters", type=int, default=200,
                   help="timed iterations of the pipeline section (long enough to drain the prefetch queue)")
    p.add_argument("--warmup", type=int, default=8, help="untimed iterations before each measurement")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: available cores)")
    p.add_argument("--correct-iters", type=int, default=200)
    p.add_argument("--correct-batch", type=int, default=32)
    p.add_argument("--fall", type=float, default=0.7, help="required last/first loss ratio in `correct`")
    p.add_argument("--correct-warmup", type=int, default=20, help="linear lr warm-up steps in `correct`")
    p.add_argument("--correct-clip", type=float, default=10.0, help="gradient-norm clip in `correct`")
    p.add_argument("--compile", choices=["off", "on", "both"], default="both",
                   help="torch.compile the step's network: both = eager and compiled measured in the same run "
                        "(the pipeline section then feeds the compiled step)")
    p.add_argument("--sections", default="augment,pipeline,resident,split,correct")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny model, 2 iterations per section: checks that every code path runs")
    if p.parse_args(argv).smoke:  # smoke defaults; options given explicitly still win
        p.set_defaults(device="cpu", arch="tiny", batch=4, resident_batches="4", iters=2, pipeline_iters=4, warmup=1,
                       correct_iters=40, correct_batch=4, correct_warmup=4, workers=1, compile="off")
    args = p.parse_args(argv)
    if args.workers is None:
        args.workers = available_cores()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch.cuda.is_available() is False "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda})", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # shared CPU machines: keep the smoke run to one core
    cv2.setNumThreads(1)  # this process only renders sources and times one core; workers fork from it
    model_cfg, priors_cfg, train_cfg = voc300_config() if args.arch == "voc300" else tiny_config()
    size = model_cfg.min_dim
    num_priors = make_priors(model_cfg, priors_cfg).shape[0]
    if args.arch == "voc300" and num_priors != 8732:
        print(f"gpu_check: configs/voc300.yaml gives {num_priors} priors, SSD300 has 8732", file=sys.stderr)
        return 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    results: dict = {
        "arch": args.arch, "min_dim": size, "num_classes": model_cfg.num_classes, "num_priors": int(num_priors),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "cores": available_cores(),
        "compile": args.compile, "amp": "bf16" if device.type == "cuda" else "none",
        "channels_last": device.type == "cuda", "errors": {},
    }

    def save() -> None:  # after every section: a run killed by a timeout still leaves its numbers
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))

    def section(name: str, fn) -> None:
        """Run one section; an exception is reported and recorded, and the next section still runs."""
        if name not in sections:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken section must not cost the others' figures
            results["errors"][name] = f"{type(e).__name__}: {e}"
            print(f"[{name}] ERROR {type(e).__name__}: {e}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()

    print(f"gpu_check: {args.arch} ({size}px, {model_cfg.num_classes} classes, {num_priors} priors) on "
          f"{results['device']}, torch {torch.__version__}, {results['cores']} cores, compile={args.compile}")
    t_all = time.perf_counter()
    sources = make_sources(SOURCE_IMAGES if not args.smoke else 8, seed=0)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    trainers = {c: Trainer(model_cfg, priors_cfg, train_cfg, device, c) for c in modes}
    tr = trainers[modes[-1]]  # the pipeline section feeds the compiled step when there is one
    results["parameters_M"] = sum(p.numel() for p in tr.model.parameters()) / 1e6
    torch.backends.cudnn.benchmark = True  # as ssd_ray/train/loop.py runs on CUDA

    def label(compiled: bool) -> str:
        return "compiled" if compiled else "eager"

    def augment():
        per_core = bench_augment(sources, size, 32 if args.smoke else 400)
        results["augment_images_per_s_per_core"] = per_core
        print(f"[augment]  decode+SSDAugmentation on 1 core: {rate(per_core)} img/s "
              f"(x {results['cores']} cores = {rate(per_core * results['cores'])} img/s ceiling)")

    def resident():
        results["resident"] = []
        for batch in [int(b) for b in args.resident_batches.split(",") if b.strip()]:
            for compiled, trainer in trainers.items():
                t0 = time.perf_counter()
                try:
                    r = bench_resident(trainer, sources, size, batch, args.iters, args.warmup)
                except torch.cuda.OutOfMemoryError:
                    r = {"batch": batch, "oom": True}
                    trainer.optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                r["compiled"] = compiled
                r["section_s"] = time.perf_counter() - t0  # the first batch size includes compilation
                results["resident"].append(r)
                if r.get("oom"):
                    print(f"[resident] batch {batch}, {label(compiled)}: out of memory")
                else:
                    mem = f", peak {r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else ""
                    print(f"[resident] batch {batch}, {label(compiled)}: {rate(r['images_per_s'])} img/s "
                          f"({r['step_ms']:.1f} ms/step{mem}; section {r['section_s']:.0f} s)")

    def pipeline():
        r = bench_pipeline(tr, sources, size, args.batch, args.pipeline_iters, args.warmup, args.workers)
        r["compiled"] = modes[-1]
        results["pipeline"] = r
        print(f"[pipeline] batch {r['batch']}, {label(r['compiled'])} step, {r['workers']} DataLoader workers, "
              f"{r['iters']} iterations: {rate(r['images_per_s'])} img/s, second half "
              f"{rate(r['steady_images_per_s'])} img/s (waiting for data {100 * r['data_wait_fraction']:.0f}% of the time)")

    def split():
        r = bench_split(trainers[False] if False in trainers else tr, sources, size, args.batch,
                        max(3, args.iters // 4), args.warmup)
        results["split"] = r
        phases = "  ".join(f"{k} {v:.1f}" for k, v in r["phases_ms"].items())
        print(f"[split]    batch {r['batch']} ms: {phases}  (step {r['step_ms']:.1f}); "
              f"match+loss fwd/bwd = {100 * r['loss_share']:.1f}% of the step")

    def correct():
        results["correct"] = {}
        for compiled in modes:
            # A fresh model: the measurements above trained the others on repeated batches.
            fresh = Trainer(model_cfg, priors_cfg, train_cfg, device, compiled, grad_clip=args.correct_clip)
            r = run_correctness(fresh, sources, size, args.correct_batch, args.correct_iters, args.fall,
                                args.correct_warmup)
            results["correct"][label(compiled)] = r
            print(f"[correct]  {label(compiled)}: {r['iters']} iterations, batch {r['batch']}: loss "
                  f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} (ratio {r['ratio']:.2f}, needs < "
                  f"{r['required_ratio']}): {'OK' if r['ok'] else 'FAILED'}")
            print(f"           curve {r['curve']}")

    for name, fn in (("augment", augment), ("resident", resident), ("pipeline", pipeline), ("split", split),
                     ("correct", correct)):
        section(name, fn)

    results["wall_s"] = time.perf_counter() - t_all
    results["ratios"] = ratios(results, int(args.batch))
    for name, (value, goal) in results["ratios"].items():
        print(f"ratio {name}: {value:.2f} (goal >= {goal}): {'met' if value >= goal else 'NOT met'}")
    correct = results.get("correct", {})
    correct_failed = "correct" in sections and not (correct and all(r["ok"] for r in correct.values()))
    status = 1 if correct_failed else 3 if results["errors"] else 0
    save()
    errors = f" (errors in: {', '.join(sorted(results['errors']))})" if results["errors"] else ""
    print(f"gpu_check: done in {results['wall_s']:.0f} s, {'PASS' if status == 0 else 'FAIL'}{errors}")
    return status


if __name__ == "__main__":
    sys.exit(main())
