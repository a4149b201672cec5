"""Evaluate a checkpoint on the config's val sets, prediction split across Ray workers.

    python -m pipelines.evaluate --config configs/shapes.yaml --checkpoint runs/<run>/outputs/model.pt \\
        [--num-workers N] [--out DIR] [--mlflow-run-id ID] [--address ADDR] [--set k=v ...]

Writes into --out (default `<checkpoint folder>/eval/`): `ap_table.txt` (also printed),
`metrics.json`, `pr_<class>.png`, and `detections.png` (16 val images: ground truth green,
detections above --score red). With --mlflow-run-id the same files go into that MLflow run under
`eval/`, with the headline metrics as `eval_mAP`, `eval_mAP_07`, `eval_AP`, `eval_AP/<class>`.
`--num-workers 1` (or 0) runs in this process without Ray.

Protocols (ssd_ray/evaluate/protocol.py, recorded in metrics.json): `--protocol voc07` scores as
ssd.pytorch's eval.py (its post-processing too); `--protocol coco` is the official COCOeval on the
dataset's annotation file (COCO-format data); the default `ssd_ray` gives VOC area/07 mAP and COCO AP
(official on COCO-format data). `--postprocess torchvision` applies torchvision's SSD post-processing
(400 candidates per class, boxes clipped before NMS, 200 per image). `--save-detections FILE` writes
the official COCO results JSON (original image and category ids; COCO-format data). --checkpoint and --out may be bucket URIs
(`s3://bucket/runs/<run>/outputs/model.pt`; the report is then uploaded beside it, ssd_ray/storage.py).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from ssd_ray.cli import add_config_args, exits_on_user_error, load_config_or_exit, setup_logging

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
    p.add_argument("--protocol", choices=["ssd_ray", "voc07", "coco"],
                   help="evaluation protocol (default: the config's evaluation.protocol)")
    p.add_argument("--postprocess", choices=["reference", "torchvision"],
                   help="post-processing preset (sets every postprocess key; default: the config's)")
    p.add_argument("--save-detections", metavar="FILE", help="write the official COCO results JSON here")
    return p.parse_args(argv)


def protocol_overrides(args) -> list[str]:
    """`--protocol` / `--postprocess` as config overrides (validated with the rest of the config)."""
    from ssd_ray.config import POSTPROCESS_PRESETS

    out = [f"evaluation.protocol={args.protocol}"] if args.protocol else []
    if args.postprocess:
        out.append(f"postprocess.preset={args.postprocess}")
        out += [f"postprocess.{k}={'null' if v is None else v}" for k, v in POSTPROCESS_PRESETS[args.postprocess].items()]
    return out


def default_out_dir(checkpoint: str) -> str:
    """`<checkpoint folder>/eval`: beside the checkpoint, in a bucket when it is in one."""
    from ssd_ray import storage

    folder = checkpoint if storage.is_dir(checkpoint) else storage.parent(checkpoint)
    return storage.join(folder, "eval")


def checkpoint_step(checkpoint: str) -> int:
    """Training iteration of a `checkpoint_<iter:08d>` path (the MLflow step), 0 for other files."""
    from ssd_ray import storage

    m = re.search(r"checkpoint_(\d{8})", storage.absolute(checkpoint))
    return int(m.group(1)) if m else 0


@exits_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    cfg = load_config_or_exit(args.config, list(args.overrides) + protocol_overrides(args))

    from ssd_ray import storage
    from ssd_ray.checkpoint import check_model_file
    from ssd_ray.data.sources import load_split
    from ssd_ray.evaluate.distributed import predict_distributed
    from ssd_ray.evaluate.run import score_detections
    from ssd_ray.runtime import finish_ray

    check_model_file(args.checkpoint)  # a wrong file stops here (exit 2), not inside a Ray actor
    val = load_split(cfg.data, "val", index_dir=storage.join(cfg.ray.storage_path, "index"))
    if args.save_detections and not val.coco_sources:
        from ssd_ray.errors import DataError

        raise DataError(f"--save-detections writes an official COCO results JSON (original image and category "
                        f"ids): the val data must be COCO-format (data.format coco), not {cfg.data.format!r}")
    if args.save_detections and Path(args.save_detections).exists():
        from ssd_ray.errors import DataError

        raise DataError(f"--save-detections {args.save_detections} exists; choose a new file (nothing is overwritten)")
    workers = args.num_workers if args.num_workers is not None else cfg.ray.max_workers
    t0 = time.perf_counter()
    detections = predict_distributed(args.checkpoint, val, cfg, workers, args.batch_size,
                                     use_gpu=args.use_gpu or None, address=args.address)
    finish_ray(succeeded=True)  # done with Ray: a local one stops before scoring leaves its workers idle
    dt = time.perf_counter() - t0
    log.info("predicted %d images with %d worker(s) in %.1fs (%.1f images/s)", len(val), max(1, workers), dt,
             len(val) / dt)
    from ssd_ray.evaluate.protocol import evaluation_postprocess
    from ssd_ray.postprocess import DetectArgs

    protocol = cfg.evaluation.protocol
    detect_args = DetectArgs.from_config(evaluation_postprocess(protocol, cfg.postprocess), cfg.priors.variance)
    result = score_detections(val, detections, protocol=protocol, detect_args=detect_args)
    if args.save_detections:
        _save_detections(val, detections, args.save_detections)

    report = args.out or default_out_dir(args.checkpoint)
    # A report for a bucket (s3://...) is written here first, uploaded at the end.
    out = Path(tempfile.mkdtemp(prefix="ssd_ray_eval_")) if storage.is_uri(report) else Path(report)
    try:
        _report(args, cfg, val, detections, result, out, report)
        if storage.is_uri(report):
            storage.upload(out, report)
    finally:
        if storage.is_uri(report):
            shutil.rmtree(out, ignore_errors=True)


def _save_detections(val, detections, path: str) -> None:
    """The official COCO results JSON: COCOeval on the annotation file with it gives the AP reported."""
    import json

    from ssd_ray.evaluate.coco_metrics import coco_ground_truth, detections_to_coco_results

    gt = coco_ground_truth(val)
    results = detections_to_coco_results(val.records, detections, gt.image_ids, gt.category_ids)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results))
    print(f"detections: {path} ({len(results)} results, ground truth {gt.source})")


def _report(args, cfg, val, detections, result, out: Path, report: str) -> None:
    from ssd_ray import storage
    from ssd_ray.evaluate.visualize import records_grid, write_image

    paths = result.write(str(out))
    grid = records_grid(val.records, detections, val.class_names, score_thresh=args.score)
    write_image(grid, str(out / "detections.png"))
    print(result.table())
    print(f"report: {report} ({len(paths) + 1} files)")

    if args.mlflow_run_id:
        from ssd_ray.train.tracking import RunLogger, tracking_uri

        tracker = RunLogger(tracking_uri(cfg), args.mlflow_run_id)
        metrics = {"eval_mAP": result.mAP_area, "eval_mAP_07": result.mAP_07,
                   **{f"eval_AP/{c}": v for c, v in result.ap_area.items() if v is not None}}
        if result.coco:
            metrics["eval_AP"] = result.coco.get("AP")
        tracker.metrics(metrics, step=checkpoint_step(args.checkpoint))
        tracker.artifacts(out, "eval")
        # What this evaluation ran with (code, val data fingerprint, environment) under ssd_ray.eval.*
        from ssd_ray.config import config_to_dict
        from ssd_ray.train.reproduce import data_fingerprints, record_start

        tracker.tags({"ssd_ray.eval.checkpoint": storage.absolute(args.checkpoint)})
        record_start(tracker, cfg, config_to_dict(cfg), data_fingerprints(cfg, {"val": val}), out,
                     prefix="ssd_ray.eval.", artifact_dir="eval/provenance")
        print(f"logged to MLflow run {args.mlflow_run_id}")


if __name__ == "__main__":
    main()
