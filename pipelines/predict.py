"""Detect objects in any number of images with a trained model, in this process or on a Ray cluster.

    python -m pipelines.predict --checkpoint runs/<run>/outputs/model.pt --images SRC --out DST \\
        [--num-workers N] [--device cpu|cuda] [--batch-size 16] [--score 0.5] \\
        [--format per-image|jsonl|parquet] [--no-draw] [--recursive] [--overwrite] [--address ADDR]

SRC: an image file, a folder (with --recursive its subfolders too), or a text file (.txt/.lst)
listing image paths, one per line (relative to the list's folder); local, or in object storage
(`s3://bucket/prefix`, credentials and endpoint from the standard AWS settings, as for training data). Files without an image suffix are
left out and counted as "not an image (suffix)"; images that cannot be decoded are listed with the
reason in DST/skipped.jsonl; neither stops the run. An empty source is an error (exit 2).

Without --num-workers the model runs in this process. With --num-workers N the images stream
through Ray Data: read + decode + resize in CPU tasks, the model on N actors (loaded once per
actor; one GPU each with --device cuda), results written here as they arrive, with progress
(done/total, rate, ETA) in the log. Joins RAY_ADDRESS / --address, else starts a local Ray.

Each row: {"image": path, "width": W, "height": H, "detections": [{"box": [x1, y1, x2, y2] (original
pixels), "score": s, "label": class name, "label_id": id (model space 1..C-1; class_names[id - 1])}]}
--format per-image (default): DST/<name>.json per image, <name> relative to the source folder, plus
  the drawn copy <name>.jpg (.png for PNG inputs) unless --no-draw;
--format jsonl: DST/predictions.jsonl; --format parquet: DST/predictions/part-*.parquet.
Re-running with the same DST skips images whose results are already there (--overwrite redoes
them). DST/runs.jsonl gets one summary line per run. Exit status: 0, 2 for bad input, 1 when no
image at all could be read.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ssd_ray.cli import setup_logging

log = logging.getLogger("ssd_ray.predict")


def parse_args(argv=None) -> argparse.Namespace:
    from ssd_ray.inference.sinks import FORMATS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model file (outputs/model.pt) or training checkpoint")
    p.add_argument("--images", required=True, help="an image file, a folder of images, or a .txt list of paths; local or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-workers", type=int, help="stream through Ray Data with this many model actors "
                                                   "(default: predict in this process)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--score", type=float, default=0.5, help="keep detections scoring above this (default 0.5)")
    p.add_argument("--format", default="per-image", choices=FORMATS, help="output format (default per-image)")
    p.add_argument("--no-draw", action="store_true", help="per-image output without the drawn copies")
    p.add_argument("--recursive", action="store_true", help="include the subfolders of a folder SRC")
    p.add_argument("--overwrite", action="store_true", help="redo images whose results DST already holds")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    return p.parse_args(argv)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from ssd_ray.inference.run import model_info, predict_images
    from ssd_ray.inference.sinks import check_out_dir, make_sink
    from ssd_ray.inference.sources import SourceError, list_images
    from ssd_ray.storage import StorageError

    if args.num_workers is not None and args.num_workers < 1:
        return _error(f"--num-workers must be >= 1, got {args.num_workers} (leave it out to predict in-process)")
    if args.batch_size < 1:
        return _error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.score < 1.0:
        return _error(f"--score must be in [0, 1), got {args.score}")
    try:
        listing = list_images(args.images, recursive=args.recursive)
        model_info(args.checkpoint)  # a bad checkpoint fails here, before any output is touched
        draws = args.format == "per-image" and not args.no_draw
        check_out_dir(args.out, listing, args.recursive, draws)
        sink = make_sink(args.format, args.out, overwrite=args.overwrite, draw=not args.no_draw)
    except (SourceError, StorageError, ValueError, FileNotFoundError) as e:
        return _error(str(e))
    if args.num_workers is not None:
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False  # our progress line says it all
    try:
        summary = predict_images(args.checkpoint, listing, sink, num_workers=args.num_workers, device=args.device,
                                 batch_size=args.batch_size, score_thresh=args.score, address=args.address)
    except ValueError as e:  # e.g. --device cuda on a local Ray without GPUs
        return _error(str(e))
    unreadable = summary.skipped.get("unreadable", 0)
    left_out = sum(v for k, v in summary.skipped.items() if k != "unreadable")
    log.info("done: %d images read, %d detections above %.2f, %d unreadable skipped, %d already done, "
             "%d files not an image (suffix); results in %s (%s, %.1f s)", summary.predicted, summary.detections,
             args.score, unreadable, summary.already_done, left_out, args.out, summary.mode, summary.seconds)
    if summary.predicted == 0 and summary.already_done == 0:
        print(f"error: none of the {summary.listed} images in {args.images} could be read "
              f"(reasons in {sink.out / 'skipped.jsonl'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
