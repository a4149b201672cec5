"""`predict_images`: a listing through the model into a sink, in this process or streamed through Ray Data.

In-process (`num_workers=None`): `Predictor` on batches of `batch_size` listed files.
Ray (`num_workers=N`): the listing becomes blocks of `{path, key}` rows, then
    read_resize (CPU tasks) -> detect_stage (N actors, model loaded once each; GPUs with "cuda")
    -> draw_batch (CPU tasks, per-image output only) -> the driver writes each batch as it arrives.
Ray Data streams: the operators run concurrently with bounded queues between them (backpressure),
so the driver holds one batch of results at a time and its memory does not grow with the input.
Both paths batch the same listing positions and decode the same bytes, so they detect the same boxes.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field

from .progress import Progress
from .read import UnreadableImage, read_image
from .results import ImageResult, results_from_batch
from .sinks import SkippedReport, Sink, append_run_summary
from .sources import NOT_AN_IMAGE, ImageListing

log = logging.getLogger("ssd_ray.predict")

BATCHES_PER_BLOCK = 4  # source blocks of 4 batches: small steps through the stream
BLOCKS_PER_WORKER = 4  # small sources: blocks of fewer batches, so that every actor gets work
MAX_SOURCE_BLOCKS = 200  # large sources: at most Ray Data's default read parallelism in blocks (each
# becomes a read task that streams its output batch by batch), however many images there are


@dataclass
class PredictSummary:
    """What one run did. `skipped` counts by reason: NOT_AN_IMAGE and "unreadable" (listed in skipped.jsonl)."""

    source: str
    mode: str  # "in-process" or "ray, N workers (cpu|cuda)"
    listed: int  # image files in the source
    already_done: int  # skipped because their results exist (resume)
    predicted: int  # images whose results this run wrote
    detections: int
    skipped: dict = field(default_factory=dict)
    seconds: float = 0.0  # from the start of prediction (after listing) to the last write
    startup_s: dict = field(default_factory=dict)  # model_load / ray_start / first_result
    steady_images_per_s: float = float("nan")  # from the first finished batch to the last
    driver_cpu_s: float = 0.0  # CPU time of this process during the run (the model too when in-process)
    driver_peak_rss_mb: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["steady_images_per_s"] = None if math.isnan(self.steady_images_per_s) else round(self.steady_images_per_s, 2)
        d["seconds"] = round(self.seconds, 3)
        d["driver_cpu_s"] = round(self.driver_cpu_s, 3)
        d["startup_s"] = {k: round(v, 3) for k, v in self.startup_s.items()}
        return d


def model_info(checkpoint_path) -> tuple[list[str], int]:
    """(class names, input size) of a model file or training checkpoint, without building the network.
    FileNotFoundError / ValueError naming the file when it is not an ssd-ray checkpoint."""
    from ssd_ray.checkpoint import load
    from ssd_ray.config import config_from_dict

    state = load(checkpoint_path)
    for key in ("model", "config", "class_names"):
        if key not in state:
            raise ValueError(f"{checkpoint_path} is not an ssd-ray checkpoint or model file (no {key!r})")
    cfg = config_from_dict(state["config"], source=str(checkpoint_path))
    return list(state["class_names"]), int(cfg.model.min_dim)


def fit_cpus(total_cpus: float, num_workers: int) -> tuple[float, float]:
    """(CPUs per detection actor, CPUs per read/draw task).

    Actors get 1 CPU, or on a cluster with fewer than `num_workers + 1` CPUs an equal share that
    leaves one share beside them for reading (otherwise the actors would hold every CPU and the read
    tasks wait forever). Read tasks ask for half a share: decoding waits on the disk or the network
    part of the time, and a request unlike the actors' keeps Ray Data from fusing the read into the
    actors (it fuses operators with equal resources), so the model actors only run the model and the
    reads scale apart from them. Rounded down to 0.01 so the shares never add up to more than the
    cluster has.
    """
    if total_cpus <= 0:  # a head without CPUs: let the autoscaler bring nodes for 1-CPU requests
        return 1.0, 0.5
    share = max(0.02, math.floor(min(1.0, total_cpus / (num_workers + 1)) * 100) / 100)
    return share, math.floor(share * 50) / 100


def source_blocks(todo: ImageListing, batch_size: int, num_workers: int) -> list:
    """The listing as pyarrow tables of `{path, key}` rows, each a whole number of batches (so the
    actors batch together the same images as the in-process path): BATCHES_PER_BLOCK batches, fewer
    when that would leave actors idle (BLOCKS_PER_WORKER blocks per actor), more when it would make
    more than MAX_SOURCE_BLOCKS blocks."""
    import pyarrow as pa

    batches = math.ceil(len(todo) / batch_size)
    per_block = min(BATCHES_PER_BLOCK, math.ceil(batches / (BLOCKS_PER_WORKER * num_workers)))
    rows = max(per_block, math.ceil(batches / MAX_SOURCE_BLOCKS), 1) * batch_size
    return [pa.table({"path": todo.paths[i:i + rows], "key": todo.keys[i:i + rows]})
            for i in range(0, len(todo), rows)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _in_process(checkpoint_path, todo: ImageListing, sink: Sink, skipped: SkippedReport, progress: Progress,
                device: str, batch_size: int, score_thresh: float, startup: dict) -> int:
    from ssd_ray.predict import Predictor

    from .draw import drawn_suffix, render

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(checkpoint_path, device=device, score_thresh=score_thresh,
                                          batch_size=batch_size)
    startup["model_load"] = time.perf_counter() - t0
    detections = 0
    for start in range(0, len(todo), batch_size):
        rows = list(zip(todo.paths[start:start + batch_size], todo.keys[start:start + batch_size]))
        readable = []
        for path, key in rows:
            try:
                readable.append((path, key, read_image(path)))
            except UnreadableImage as e:
                skipped.add(path, str(e))
        dets = predictor.predict_arrays([image for _, _, image in readable])
        results = []
        for (path, key, image), d in zip(readable, dets):
            drawn = (render(image, d["boxes"], d["names"], d["scores"], drawn_suffix(path))
                     if sink.draws else None)
            results.append(ImageResult(path, key, image.shape[1], image.shape[0], d["boxes"], d["scores"],
                                       d["labels"], d["names"], drawn))
            detections += len(d["scores"])
        sink.write(results)
        progress.update(len(rows))
    return detections


def _on_ray(checkpoint_path, todo: ImageListing, sink: Sink, skipped: SkippedReport, progress: Progress,
            class_names: list[str], image_size: int, num_workers: int, device: str, batch_size: int,
            score_thresh: float, address: str | None, startup: dict) -> int:
    import ray

    from ssd_ray.evaluate.distributed import detect_stage
    from ssd_ray.runtime import init_ray

    from .draw import draw_batch
    from .read import read_resize

    local = not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))
    t0 = time.perf_counter()
    init_ray(address)
    startup["ray_start"] = time.perf_counter() - t0
    resources = ray.cluster_resources()
    if device == "cuda" and resources.get("GPU", 0) < 1:
        msg = f"--device cuda: the Ray cluster has no GPU (resources: {resources})"
        if local:
            raise ValueError(msg)
        log.warning("%s; the actors wait until GPU nodes join", msg)
    cpus, read_cpus = fit_cpus(resources.get("CPU", 0), num_workers)
    blocks = source_blocks(todo, batch_size, num_workers)
    num_workers = min(num_workers, len(blocks))  # a few images: no actor without a block to work on
    log.info("Ray Data: %d detection actor(s) on %s with %.2f CPU each, read%s tasks %.2f CPU each",
             num_workers, device, cpus, "/draw" if sink.draws else "", read_cpus)

    ds = ray.data.from_arrow(blocks).map_batches(
        read_resize, fn_kwargs={"image_size": image_size},
        batch_size=batch_size, batch_format="numpy", num_cpus=read_cpus)
    ds = detect_stage(ds, checkpoint_path, num_workers, batch_size, device,
                      torch_threads=max(1, int(cpus)), score_thresh=score_thresh, num_cpus=cpus)
    if sink.draws:
        ds = ds.map_batches(draw_batch, fn_kwargs={"class_names": class_names},
                            batch_size=batch_size, batch_format="numpy", num_cpus=read_cpus)
    detections = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        results, unreadable = results_from_batch(batch, class_names)
        for path, reason in unreadable:
            skipped.add(path, reason)
        sink.write(results)
        detections += sum(len(r.scores) for r in results)
        progress.update(len(batch["path"]))
    return detections


def predict_images(checkpoint_path, listing: ImageListing, sink: Sink, *, num_workers: int | None = None,
                   device: str = "cpu", batch_size: int = 16, score_thresh: float = 0.5,
                   address: str | None = None, progress_every_s: float = 10.0) -> PredictSummary:
    """Predict every image of `listing` that `sink` does not hold yet, writing results as they come.

    num_workers None: in this process; N >= 1: N Ray actors (one GPU each with device "cuda").
    Unreadable images go to `skipped.jsonl` in the sink's folder; a summary line to `runs.jsonl`.
    Raises ValueError/FileNotFoundError naming the checkpoint when it cannot be used.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score must be in [0, 1), got {score_thresh}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 (or None for in-process), got {num_workers}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    class_names, image_size = model_info(checkpoint_path)
    done = sink.done_mask(listing)
    todo = listing.select([not d for d in done])
    mode = "in-process" if num_workers is None else f"ray, {num_workers} worker(s) ({device})"
    summary = PredictSummary(listing.source, mode, len(listing), len(listing) - len(todo), 0, 0,
                             {NOT_AN_IMAGE: sum(listing.not_images.values())} if listing.not_images else {})
    if summary.already_done:
        log.info("%d of %d images already have results in %s: skipped (--overwrite redoes them)",
                 summary.already_done, len(listing), sink.out)
    skipped = SkippedReport(sink.out)
    progress = Progress(len(todo), every_s=progress_every_s)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    try:
        if len(todo) == 0:
            detections = 0
        elif num_workers is None:
            detections = _in_process(checkpoint_path, todo, sink, skipped, progress, device, batch_size,
                                     score_thresh, summary.startup_s)
        else:
            detections = _on_ray(checkpoint_path, todo, sink, skipped, progress, class_names, image_size,
                                 num_workers, device, batch_size, score_thresh, address, summary.startup_s)
    finally:
        sink.close()
        skipped.close()
    summary.seconds = time.perf_counter() - t0
    summary.driver_cpu_s = _cpu_s() - cpu0
    if progress.first_result_s is not None:
        summary.startup_s["first_result"] = progress.first_result_s
    progress.finish()
    summary.predicted = sink.written
    summary.detections = detections
    if skipped.count:
        summary.skipped["unreadable"] = skipped.count
    summary.steady_images_per_s = progress.rate()
    summary.driver_peak_rss_mb = _rss_mb()
    append_run_summary(sink.out, summary.to_json())
    return summary
