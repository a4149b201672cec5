"""Detect objects in images with a trained model.

    python -m pipelines.predict --checkpoint runs/<run>/outputs/model.pt --images photos/ --out preds/ \\
        [--score 0.5] [--device cpu|cuda] [--batch-size 16]

For every readable image `<stem>.json` is written:
    {"image": path, "width": W, "height": H,
     "detections": [{"box": [x1, y1, x2, y2] (original pixels), "score": s, "label": class name,
                     "label_id": id (model space 1..C-1; class_names[id - 1])}, ...]}
plus `<stem>.jpg` (`.png` for PNG inputs) with the boxes drawn. Class names, input size and
normalisation come from the checkpoint. Unreadable files are reported (a warning naming each) and
skipped; the exit status is 1 only when no image at all could be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ssd_ray.cli import setup_logging

log = logging.getLogger("ssd_ray.predict")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
PROGRESS_EVERY = 100  # images between progress lines on long folders


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model file (outputs/model.pt) or training checkpoint")
    p.add_argument("--images", required=True, help="an image file or a folder of images (not recursive)")
    p.add_argument("--out", required=True, help="output folder for <stem>.json and drawn images")
    p.add_argument("--score", type=float, default=0.5, help="keep detections scoring above this (default 0.5)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    return p.parse_args(argv)


def list_images(source: str) -> list[Path]:
    """A file itself, or the image files (by suffix) directly inside a folder, sorted by name."""
    src = Path(source)
    if src.is_file():
        return [src]
    if src.is_dir():
        return sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"--images: {source} is neither a file nor a folder")


def output_stems(paths: list[Path]) -> list[str]:
    """`<stem>` per input; inputs sharing a stem (a.jpg, a.png) get the suffix appended to keep files apart."""
    seen: dict[str, int] = {}
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
    return [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if seen[p.stem] > 1 else p.stem for p in paths]


def to_json(path: str, image_shape, det: dict) -> dict:
    h, w = image_shape[:2]
    return {"image": path, "width": int(w), "height": int(h), "detections": [
        {"box": [round(float(v), 2) for v in box], "score": round(float(s), 5), "label": name, "label_id": int(lb)}
        for box, s, lb, name in zip(det["boxes"], det["scores"], det["labels"], det["names"])]}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from ssd_ray.evaluate.visualize import draw_detections, write_image
    from ssd_ray.predict import Predictor

    try:
        paths = list_images(args.images)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.images}", file=sys.stderr)
        return 1
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, score_thresh=args.score,
                                          batch_size=args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stems = dict(zip((str(p) for p in paths), output_stems(paths)))

    t0, done, unreadable, boxes = time.perf_counter(), 0, [], 0
    for res in predictor.predict_paths(str(p) for p in paths):
        done += 1
        if res.error is not None:
            log.warning("skipped unreadable image: %s", res.error)  # the error names the file
            unreadable.append(res.path)
            continue
        stem, det = stems[res.path], res.detections
        boxes += len(det["scores"])
        (out / f"{stem}.json").write_text(json.dumps(to_json(res.path, res.image.shape, det), indent=1))
        drawn = draw_detections(res.image, det["boxes"], det["names"], det["scores"])
        ext = ".png" if Path(res.path).suffix.lower() == ".png" else ".jpg"
        write_image(drawn, str(out / f"{stem}{ext}"))
        if done % PROGRESS_EVERY == 0:
            log.info("%d/%d images (%.1f images/s)", done, len(paths), done / (time.perf_counter() - t0))

    read = len(paths) - len(unreadable)
    log.info("done: %d images read, %d detections above %.2f, %d unreadable skipped; results in %s",
             read, boxes, args.score, len(unreadable), os.fspath(out))
    if read == 0:
        print(f"error: none of the {len(paths)} images could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
