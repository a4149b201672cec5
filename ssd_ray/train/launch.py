"""The driver side of a training run: datasets, run identity, MLflow run, TorchTrainer, summary.

Run layout under `ray.storage_path` (a local folder, shared storage, or a bucket URI `s3://bucket/runs`):

    <storage_path>/mlflow.db, mlartifacts/      one MLflow store for every run and sweep (not in a bucket:
                                               there mlflow.tracking_uri names a server)
    <storage_path>/index/                       annotation indexes of bucket datasets (data/index.py)
    <storage_path>/<run_name>/checkpoint_<iteration:08d>/checkpoint.pt   Ray Train checkpoints
    <storage_path>/<run_name>/outputs/          config, final model, curves, evaluation report
                                               started_by.json: user and host (owner.py)
                                               (in a bucket: written locally, uploaded: outputs.py)

`run_name` is `<config name>-<YYYYmmdd-HHMMSS>`; running again with the same name (`--resume`)
makes Ray Train reload its checkpoint manager and the loop continue from the latest checkpoint.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .. import checkpoint as ckpt_io
from .. import storage
from ..config import Config, config_to_dict
from ..data.sources import load_split
from ..errors import RunSelectionError
from ..runtime import finish_ray, init_ray
from . import owner
from .local_checkpoints import CHECKPOINT_DIR_RE, KEEP_CHECKPOINTS, checkpoint_dir
from .outputs import RunOutputs

log = logging.getLogger("ssd_ray.train")



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
    images_per_s: float = 0.0  # training throughput of the last attempt (first step, evaluation and checkpoints excluded)
    preemptions: int = 0  # preemption notices answered with a just-in-time checkpoint

    @property
    def final_map(self) -> float | None:
        return self.final.get("mAP_area") if self.final else None


def new_run_name(cfg: Config) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def find_run(storage_path: str, cfg_name: str, run_name: str | None = None) -> str:
    """`run_name` if it exists, else the latest run of this config with a checkpoint.

    Without a name the choice is logged (which run, who started it), and when the latest run was
    started by someone else (another user or host, `owner.py`) it raises `RunSelectionError` asking
    for the name: several people may share a storage path. Raises the same error when there is no run.
    """
    root = str(storage_path)  # a local folder or a bucket URI
    if run_name:
        if not storage.is_dir(storage.join(root, run_name)):
            raise RunSelectionError(f"--resume: no run named {run_name!r} under {root}")
        return run_name
    pattern = re.compile(rf"^{re.escape(cfg_name)}-\d{{8}}-\d{{6}}$")  # new_run_name's form only
    runs = sorted(e.name for e in _list(root)
                  if e.is_dir and pattern.match(e.name) and latest_checkpoint(e.path))
    if not runs:
        raise RunSelectionError(f"--resume: no run of config {cfg_name!r} with a checkpoint under {root}")
    latest = runs[-1]  # names end in a sortable timestamp
    who = owner.read(storage.join(root, latest))
    if not owner.is_mine(who):
        me = owner.current()
        mine = [r for r in reversed(runs) if owner.read(storage.join(root, r)) is not None
                and owner.is_mine(owner.read(storage.join(root, r)))]
        raise RunSelectionError(
            f"--resume: the latest run of config {cfg_name!r} under {root}, {latest}, was {owner.describe(who)}, "
            f"not by you ({me['user']} on {me['host']}). Name the run to continue: --resume RUN_NAME"
            + (f" (yours, newest first: {', '.join(mine[:5])})" if mine else " (none of the runs there is yours)"))
    log.info("--resume: continuing %s, the latest run of config %r under %s (%s); --resume RUN_NAME picks another",
             latest, cfg_name, root, owner.describe(who))
    return latest


def _list(folder: str) -> list:
    try:
        return storage.list_dir(folder)
    except FileNotFoundError:
        return []


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path | str] | None:
    """(iteration, folder) of the newest complete checkpoint of a run, or None. The folder is a Path
    for a local run, a URI string for a run in a bucket."""
    found = []
    for e in _list(str(run_dir)):
        m = CHECKPOINT_DIR_RE.match(e.name)
        if e.is_dir and m and storage.is_file(storage.join(e.path, ckpt_io.CHECKPOINT_FILE)):
            found.append((int(m.group(1)), e.path if storage.is_uri(e.path) else Path(e.path)))
    return max(found) if found else None


def _run_storage(root: str) -> dict:
    """RunConfig's storage arguments: a local folder as it is; a bucket as the same pyarrow filesystem
    every read here uses (its credentials chain and AWS_ENDPOINT_URL), with the path on it."""
    if not storage.is_uri(root):
        return {"storage_path": root}
    fs, path = storage.filesystem(root)
    return {"storage_path": path, "storage_filesystem": fs}


def _scaling_config(cfg: Config):
    from ray.train import ScalingConfig

    r = cfg.ray
    kwargs = {}
    if r.train_label_selector:
        kwargs["label_selector"] = dict(r.train_label_selector)
    if r.elastic:  # Ray Train grows the group back towards max every interval while it is healthy
        kwargs["elastic_resize_monitor_interval_s"] = r.elastic_resize_interval_s
    return ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                         resources_per_worker={"CPU": r.cpus_per_worker, **r.worker_resources}, **kwargs)


def run_training(cfg: Config, *, resume: bool | str = False, init_from: str | None = None,
                 address: str | None = None, callbacks: list | None = None,
                 run_name: str | None = None, mlflow_parent_run_id: str | None = None,
                 from_run=None) -> TrainSummary:
    """Train `cfg` with Ray Train and return a summary. `resume=True` continues the latest run of the
    config, `resume="name"` that run; `init_from` starts a new run from a checkpoint's weights;
    `from_run` (a `reproduce.FromRun`) compares code and data with a recorded run before training."""
    import ray.train
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from ..data.pipeline import configure_data_context, data_execution_options
    from . import reproduce, tracking
    from .loop import train_loop_per_worker
    from .stream import TrainStream, registered_iteration

    t0 = time.perf_counter()
    root = cfg.ray.storage_path  # a local folder or a bucket URI (s3://bucket/runs)
    # A bucket that is missing or refused stops the run here, before anything is read or written.
    storage.check_access(root, "ray.storage_path", must_exist=False)

    # Data first: a data.root that is not the generator's, or data that disagrees with the config,
    # stops the run here, before anything is written. A bucket data.root is read through its
    # annotation index under the storage path (ssd_ray/data/index.py).
    index_dir = storage.join(root, "index")
    # "auto" -> what the starting weights expect (an imported model keeps its own); saved in the config.
    # Before any data is read: a contradiction is a config error.
    cfg = ckpt_io.resolve_normalization(cfg, init_from)
    train_ds = load_split(cfg.data, "train", index_dir=index_dir)
    val_ds = load_split(cfg.data, "val", index_dir=index_dir)
    cfg = cfg.with_num_classes(train_ds.class_names)
    skipped_records = {**{f"train/{k}": v for k, v in train_ds.skipped.items()},
                       **{f"val/{k}": v for k, v in val_ds.skipped.items()}}
    log.info("data: %d train / %d val images, %d classes%s", len(train_ds), len(val_ds),
             len(train_ds.class_names), f", skipped {skipped_records}" if skipped_records else "")
    fingerprints = reproduce.data_fingerprints(cfg, {"train": train_ds, "val": val_ds})
    if from_run is not None:
        from_run.check(fingerprints)  # says what differs; DataMismatchError under --strict

    start_iter, mlflow_run_id = 0, None
    if resume:
        run_name = find_run(root, cfg.name, resume if isinstance(resume, str) else None)
        # What Ray Train will restore (its checkpoint manager's record), not merely the newest folder.
        registered = registered_iteration(storage.join(root, run_name))
        if registered is not None:
            start_iter = registered
            mlflow_run_id = ckpt_io.load(checkpoint_dir(storage.join(root, run_name), registered)).get(
                "mlflow_run_id")
        log.info("resuming %s from iteration %d", run_name, start_iter)
    run_name = run_name or new_run_name(cfg)
    run_dir = storage.join(root, run_name)
    outputs = RunOutputs(run_dir)  # outputs/ here, or a local mirror of it in the bucket
    outputs.pull()  # a resumed run's owner record and provenance
    out_dir = outputs.local
    owner.record(out_dir, resumed=bool(resume))  # who and where: plain --resume checks it
    resolved = config_to_dict(cfg)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    tracker = None
    if cfg.mlflow.enabled:
        if mlflow_run_id is None:
            mlflow_run_id = tracking.start_run(cfg, run_name, resolved, parent_run_id=mlflow_parent_run_id)
        tracker = tracking.RunLogger(tracking.tracking_uri(cfg), mlflow_run_id)
        tracker.artifact(out_dir / "config.yaml")
        tracker.tags({"ssd_ray.run_name": run_name, "ssd_ray.run_dir": str(run_dir)})
        reproduce.record_start(tracker, cfg, resolved, fingerprints, out_dir, resumed=start_iter > 0,
                               from_run=from_run)
        if skipped_records:
            tracker.metrics({f"skipped_records/{k}": v for k, v in skipped_records.items()}, step=start_iter)

    outputs.push()  # a bucket that refuses writes stops the run here, before training
    if start_iter >= cfg.train.max_iter:
        raise ValueError(f"run {run_name} already reached max_iter {cfg.train.max_iter}; "
                         f"raise train.max_iter (--set train.max_iter=N) to train further")

    # Local mode (`ray.num_workers: 0`): the loop runs here, in the driver, and reads the stream itself:
    # no Train controller, worker processes, DDP or split coordinator (docs/benchmarks.md: ~50 s less
    # start-up on 2 cores). Ray Data and the augmentation actors work as in any run; the loop persists
    # its checkpoints itself (local_checkpoints.py) and a crash is resumed with --resume, not by Ray.
    local = cfg.ray.max_workers == 0
    init_ray(address, cfg)
    if tracker:
        reproduce.record_cluster(tracker, cfg)
    configure_data_context()
    if local:  # DataConfig's options reach the workers' streams only; here the driver's context runs it
        import ray.data

        ray.data.DataContext.get_current().execution_options = data_execution_options(
            cfg, preserve_order=cfg.train.preserve_order)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": resolved, "class_names": train_ds.class_names, "val_dataset": val_ds,
            "init_from": storage.absolute(init_from) if init_from else None,
            "start_iter": start_iter,
            "mlflow": {"uri": tracking.tracking_uri(cfg), "run_id": mlflow_run_id} if tracker else None,
            "best_model_file": outputs.uri(reproduce.BEST_MODEL_FILE),  # rank 0 writes it, wherever it runs
            "run_dir": str(run_dir), "local": local,
        },
        scaling_config=_scaling_config(cfg),
        run_config=RunConfig(
            name=run_name, callbacks=callbacks, **_run_storage(root),
            checkpoint_config=CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS,
                                               checkpoint_score_attribute="iteration",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures, controller_failure_limit=3,
                                         max_preemption_failures=cfg.ray.max_preemption_failures),
        ),
        # A factory, not a dataset: Ray calls it at every worker-group start (first start, restarts after
        # a failure or preemption, elastic resizes), and it starts the stream where the checkpoint
        # Ray restores stopped (ssd_ray/train/stream.py).
        datasets={"train": TrainStream(train_ds, cfg, run_dir, start_iter)},
        # One worker reads the stream itself; several share it through Ray Data's streaming split
        # (equal shares, so DDP ranks stay in step). The split's coordinator actor costs about a
        # third of a core, which a 2-core machine notices.
        dataset_config=DataConfig(datasets_to_split=["train"] if cfg.ray.max_workers > 1 else [],
                                  execution_options={"train": data_execution_options(
                                      cfg, preserve_order=cfg.train.preserve_order)}),
    )
    threads = torch.get_num_threads()
    try:
        result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C, or Tune stopping this trial (its report thread exits with sys.exit(0)): not a failure.
        if tracker:
            tracker.finish("KILLED")
        outputs.discard()
        raise
    except BaseException:
        if tracker:
            tracker.finish("FAILED")
        outputs.discard()
        raise
    finally:
        torch.set_num_threads(threads)  # local mode trained in this process with ray.torch_threads
    # Done with Ray: a Ray started here stops now, before the post-run work below leaves its workers
    # idle (idle workers exiting one by one can hit Ray's exit crash); its helpers' crash reports are
    # no longer news (runtime.finish_ray, docs/design.md "Ray at exit").
    finish_ray(succeeded=True)
    ret = result.return_value or {}
    log.info("training finished after %.0f s; writing the model file and curves", time.perf_counter() - t0)
    final_ckpt = latest_checkpoint(run_dir)
    model_file = None
    if final_ckpt:
        state = ckpt_io.load(final_ckpt[1])
        model_file = out_dir / "model.pt"
        ckpt_io.save(ckpt_io.model_state_from_checkpoint(state), model_file)
    outputs.pull_file(reproduce.BEST_MODEL_FILE)  # from the bucket, where rank 0 wrote it
    outputs.push()
    summary = TrainSummary(
        run_name=run_name, run_dir=str(run_dir), iterations=int(ret.get("iteration", 0)),
        wall_s=time.perf_counter() - t0, final=ret.get("final_eval", {}),
        best_map=float(ret.get("best_map", -1.0)), best_iteration=int(ret.get("best_iteration", 0)),
        skipped_steps=int(ret.get("skipped_steps", 0)), skipped_images=int(ret.get("skipped_images", 0)),
        skipped_records=skipped_records, checkpoint=str(final_ckpt[1]) if final_ckpt else None,
        model_file=outputs.uri("model.pt") if model_file else None, mlflow_run_id=mlflow_run_id,
        images_per_s=float(ret.get("images_per_s", 0.0)), preemptions=int(ret.get("preemptions", 0)))
    if tracker:
        from .plots import plot_curves

        try:
            plot_curves(tracker, out_dir / "curves.png")
            tracker.artifact(out_dir / "curves.png")
            if cfg.mlflow.log_models:  # final and best as MLflow models, the best registered when configured
                reproduce.log_models(tracker, cfg, out_dir, final_file=model_file, final_iteration=summary.iterations,
                                     best_iteration=summary.best_iteration, example_image=val_ds.records[0].path)
        except BaseException:
            tracker.finish("FAILED")
            raise
        tracker.finish("FINISHED")
    outputs.close()
    return summary


def format_summary(s: TrainSummary) -> str:
    lines = [f"run {s.run_name}: {s.iterations} iterations in {s.wall_s / 60:.1f} min "
             f"(training {s.images_per_s:.1f} img/s)",
             f"  run folder: {s.run_dir}", f"  model file: {s.model_file}"]
    if s.preemptions:
        lines.append(f"  preemptions answered with a just-in-time checkpoint: {s.preemptions}")
    if s.mlflow_run_id:
        lines.append(f"  MLflow run: {s.mlflow_run_id}")
    if s.skipped_steps or s.skipped_images or s.skipped_records:
        lines.append(f"  skipped: {s.skipped_steps} non-finite steps, {s.skipped_images} unreadable images "
                     f"in the stream, records {s.skipped_records or 'none'}")
    if s.best_map >= 0:
        lines.append(f"  best mAP@0.5 {s.best_map:.4f} at iteration {s.best_iteration}")
    return "\n".join(lines)
