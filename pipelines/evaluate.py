"""Evaluate a checkpoint on the config's val sets, prediction split across Ray workers.

    python -m pipelines.evaluate --config configs/shapes.yaml --checkpoint runs/<run>/outputs/model.pt \\
        [--num-workers N] [--out DIR] [--mlflow-run-id ID] [--address ADDR] [--set k=v ...]

Writes into --out (default `<checkpoint folder>/eval/`): `ap_table.txt` (also printed),
`metrics.json`, `pr_<class>.png`, and `detections.png` (16 val images: ground truth green,
detections above --score red). With --mlflow-run-id the same files go into that MLflow run under
`eval/`, with the headline metrics as `eval_mAP`, `eval_mAP_07`, `eval_AP`, `eval_AP/<class>`.
`--num-workers 1` (or 0) runs in this process without Ray.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

from ssd_ray.cli import add_config_args, load_config_or_exit, setup_logging

log = logging.getLogger("ssd_ray.evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="model file, training checkpoint file or checkpoint_* folder")
    p.add_argument("--num-workers", type=int, help="prediction actors (default: ray.num_workers)")
    p.add_argument("--batch-size", type=int, help="images per forward (default: train.eval_batch_size)")
    p.add_argument("--out", help="report folder (default: <checkpoint folder>/eval)")
    p.add_argument("--score", type=float, default=0.5, help="score above which detections are drawn in the grid")
    p.add_argument("--mlflow-run-id", help="also log the report into this MLflow run")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per prediction actor")
    return p.parse_args(argv)


def default_out_dir(checkpoint: str) -> Path:
    ckpt = Path(checkpoint)
    return (ckpt if ckpt.is_dir() else ckpt.parent) / "eval"


def checkpoint_step(checkpoint: str) -> int:
    """Training iteration of a `checkpoint_<iter:08d>` path (the MLflow step), 0 for other files."""
    m = re.search(r"checkpoint_(\d{8})", str(Path(checkpoint).resolve()))
    return int(m.group(1)) if m else 0


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    cfg = load_config_or_exit(args.config, args.overrides)

    from ssd_ray.data.sources import load_split
    from ssd_ray.evaluate.distributed import predict_distributed
    from ssd_ray.evaluate.run import score_detections
    from ssd_ray.evaluate.visualize import records_grid, write_image

    val = load_split(cfg.data, "val")
    workers = args.num_workers if args.num_workers is not None else cfg.ray.num_workers
    t0 = time.perf_counter()
    detections = predict_distributed(args.checkpoint, val, cfg, workers, args.batch_size,
                                     use_gpu=args.use_gpu or None, address=args.address)
    dt = time.perf_counter() - t0
    log.info("predicted %d images with %d worker(s) in %.1fs (%.1f images/s)", len(val), max(1, workers), dt,
             len(val) / dt)
    result = score_detections(val, detections)

    out = Path(args.out) if args.out else default_out_dir(args.checkpoint)
    paths = result.write(str(out))
    grid = records_grid(val.records, detections, val.class_names, score_thresh=args.score)
    write_image(grid, str(out / "detections.png"))
    print(result.table())
    print(f"report: {out} ({len(paths) + 1} files)")

    if args.mlflow_run_id:
        from ssd_ray.train.tracking import RunLogger, tracking_uri

        tracker = RunLogger(tracking_uri(cfg), args.mlflow_run_id)
        metrics = {"eval_mAP": result.mAP_area, "eval_mAP_07": result.mAP_07,
                   **{f"eval_AP/{c}": v for c, v in result.ap_area.items() if v is not None}}
        if result.coco:
            metrics["eval_AP"] = result.coco.get("AP")
        tracker.metrics(metrics, step=checkpoint_step(args.checkpoint))
        tracker.artifacts(out, "eval")
        print(f"logged to MLflow run {args.mlflow_run_id}")


if __name__ == "__main__":
    main()
