"""The driver side of a training run: datasets, run identity, MLflow run, TorchTrainer, summary.

Run layout under `ray.storage_path` (shared storage on a cluster):

    <storage_path>/mlflow.db, mlartifacts/      one MLflow store for every run and sweep
    <storage_path>/<run_name>/checkpoint_<iteration:08d>/checkpoint.pt   Ray Train checkpoints
    <storage_path>/<run_name>/outputs/          config, final model, curves, evaluation report

`run_name` is `<config name>-<YYYYmmdd-HHMMSS>`; running again with the same name (`--resume`)
makes Ray Train reload its checkpoint manager and the loop continue from the latest checkpoint.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import checkpoint as ckpt_io
from ..config import Config, config_to_dict
from ..data.sources import load_split
from ..runtime import init_ray

log = logging.getLogger("ssd_ray.train")

_CKPT_DIR = re.compile(r"^checkpoint_(\d{8})$")


@dataclass
class TrainSummary:
    run_name: str
    run_dir: str
    iterations: int
    wall_s: float
    final: dict  # evaluation of the final weights (EvalResult.to_json()) or {}
    best_map: float
    best_iteration: int
    skipped_steps: int
    skipped_images: int
    skipped_records: dict
    checkpoint: str | None
    model_file: str | None
    mlflow_run_id: str | None

    @property
    def final_map(self) -> float | None:
        return self.final.get("mAP_area") if self.final else None


def new_run_name(cfg: Config) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def find_run(storage_path: str, cfg_name: str, run_name: str | None = None) -> str:
    """`run_name` if it exists, else the latest run of this config; raises when there is none."""
    root = Path(storage_path)
    if run_name:
        if not (root / run_name).is_dir():
            raise FileNotFoundError(f"no run named {run_name!r} under {root}")
        return run_name
    runs = sorted(p.name for p in root.glob(f"{cfg_name}-*") if p.is_dir() and latest_checkpoint(p))
    if not runs:
        raise FileNotFoundError(f"no run of config {cfg_name!r} with a checkpoint under {root}")
    return runs[-1]  # names end in a sortable timestamp


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(iteration, folder) of the newest complete checkpoint of a run, or None."""
    found = []
    for p in Path(run_dir).glob("checkpoint_*"):
        m = _CKPT_DIR.match(p.name)
        if m and (p / ckpt_io.CHECKPOINT_FILE).is_file():
            found.append((int(m.group(1)), p))
    return max(found) if found else None


def _scaling_config(cfg: Config):
    from ray.train import ScalingConfig

    r = cfg.ray
    kwargs = {}
    if r.train_label_selector:
        kwargs["label_selector"] = dict(r.train_label_selector)
    return ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                         resources_per_worker={"CPU": r.cpus_per_worker}, **kwargs)


def run_training(cfg: Config, *, resume: bool | str = False, init_from: str | None = None,
                 address: str | None = None, callbacks: list | None = None,
                 run_name: str | None = None, mlflow_parent_run_id: str | None = None) -> TrainSummary:
    """Train `cfg` with Ray Train and return a summary. `resume=True` continues the latest run of the
    config, `resume="name"` that run; `init_from` starts a new run from a checkpoint's weights."""
    import ray.train
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from ..data.pipeline import build_train_dataset, data_execution_options
    from . import tracking
    from .loop import train_loop_per_worker

    t0 = time.perf_counter()
    storage = Path(cfg.ray.storage_path)
    storage.mkdir(parents=True, exist_ok=True)

    train_ds = load_split(cfg.data, "train")
    val_ds = load_split(cfg.data, "val")
    cfg = cfg.with_num_classes(train_ds.class_names)
    skipped_records = {**{f"train/{k}": v for k, v in train_ds.skipped.items()},
                       **{f"val/{k}": v for k, v in val_ds.skipped.items()}}
    log.info("data: %d train / %d val images, %d classes%s", len(train_ds), len(val_ds),
             len(train_ds.class_names), f", skipped {skipped_records}" if skipped_records else "")

    start_iter, mlflow_run_id = 0, None
    if resume:
        run_name = find_run(str(storage), cfg.name, resume if isinstance(resume, str) else None)
        found = latest_checkpoint(storage / run_name)
        if found:
            start_iter = found[0]
            mlflow_run_id = ckpt_io.load(found[1]).get("mlflow_run_id")
        log.info("resuming %s from iteration %d", run_name, start_iter)
    run_name = run_name or new_run_name(cfg)
    run_dir = storage / run_name
    out_dir = run_dir / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = config_to_dict(cfg)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    tracker = None
    if cfg.mlflow.enabled:
        if mlflow_run_id is None:
            mlflow_run_id = tracking.start_run(cfg, run_name, resolved, parent_run_id=mlflow_parent_run_id)
        tracker = tracking.RunLogger(tracking.tracking_uri(cfg), mlflow_run_id)
        tracker.artifact(out_dir / "config.yaml")
        tracker.tags({"ssd_ray.run_name": run_name, "ssd_ray.run_dir": str(run_dir)})
        if skipped_records:
            tracker.metrics({f"skipped_records/{k}": v for k, v in skipped_records.items()}, step=start_iter)

    if start_iter >= cfg.train.max_iter:
        raise ValueError(f"run {run_name} already reached max_iter {cfg.train.max_iter}; "
                         f"raise train.max_iter (--set train.max_iter=N) to train further")

    init_ray(address, cfg)
    import ray.data

    # One log line per iteration window from rank 0 is the progress report: no Ray Data bars.
    ray.data.DataContext.get_current().enable_progress_bars = False
    train_data = build_train_dataset(train_ds, cfg, start_iter)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": resolved, "class_names": train_ds.class_names, "val_dataset": val_ds,
            "init_from": str(Path(init_from).resolve()) if init_from else None,
            "mlflow": {"uri": tracking.tracking_uri(cfg), "run_id": mlflow_run_id} if tracker else None,
        },
        scaling_config=_scaling_config(cfg),
        run_config=RunConfig(
            name=run_name, storage_path=str(storage), callbacks=callbacks,
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="iteration",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures, controller_failure_limit=3),
        ),
        datasets={"train": train_data},
        # One worker reads the stream itself; several share it through Ray Data's streaming split
        # (equal shares, so DDP ranks stay in step). The split's coordinator actor costs about a
        # third of a core, which a 2-core machine notices.
        dataset_config=DataConfig(datasets_to_split=["train"] if cfg.ray.num_workers > 1 else [],
                                  execution_options={"train": data_execution_options(
                                      cfg, preserve_order=cfg.train.preserve_order)}),
    )
    try:
        result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C, or Tune stopping this trial (its report thread exits with sys.exit(0)): not a failure.
        if tracker:
            tracker.finish("KILLED")
        raise
    except BaseException:
        if tracker:
            tracker.finish("FAILED")
        raise
    ret = result.return_value or {}
    log.info("training finished after %.0f s; writing the model file and curves", time.perf_counter() - t0)
    final_ckpt = latest_checkpoint(run_dir)
    model_file = None
    if final_ckpt:
        state = ckpt_io.load(final_ckpt[1])
        model_file = out_dir / "model.pt"
        ckpt_io.save(ckpt_io.model_state_from_checkpoint(state), model_file)
    summary = TrainSummary(
        run_name=run_name, run_dir=str(run_dir), iterations=int(ret.get("iteration", 0)),
        wall_s=time.perf_counter() - t0, final=ret.get("final_eval", {}),
        best_map=float(ret.get("best_map", -1.0)), best_iteration=int(ret.get("best_iteration", 0)),
        skipped_steps=int(ret.get("skipped_steps", 0)), skipped_images=int(ret.get("skipped_images", 0)),
        skipped_records=skipped_records, checkpoint=str(final_ckpt[1]) if final_ckpt else None,
        model_file=str(model_file) if model_file else None, mlflow_run_id=mlflow_run_id)
    if tracker:
        from .plots import plot_curves

        plot_curves(tracker, out_dir / "curves.png")
        if model_file:
            tracker.artifact(model_file, "final")
        tracker.artifact(out_dir / "curves.png")
        tracker.finish("FINISHED")
    return summary


def format_summary(s: TrainSummary) -> str:
    lines = [f"run {s.run_name}: {s.iterations} iterations in {s.wall_s / 60:.1f} min",
             f"  run folder: {s.run_dir}", f"  model file: {s.model_file}"]
    if s.mlflow_run_id:
        lines.append(f"  MLflow run: {s.mlflow_run_id}")
    if s.skipped_steps or s.skipped_images or s.skipped_records:
        lines.append(f"  skipped: {s.skipped_steps} non-finite steps, {s.skipped_images} unreadable images "
                     f"in the stream, records {s.skipped_records or 'none'}")
    if s.best_map >= 0:
        lines.append(f"  best mAP@0.5 {s.best_map:.4f} at iteration {s.best_iteration}")
    return "\n".join(lines)
