"""Run a sweep: Ray Tune samples configs, each trial is a full Ray Train run, ASHA stops weak trials.

Ray 2.60 (Train V2) has no `Tuner(trainer)`: each trial is a Tune *function* that calls
`run_training(...)` with `TuneReportCallback`, which forwards rank 0's `ray.train.report` metrics
("iteration", "val_mAP", "val_loss", ...) to Tune. The function itself only orchestrates
(`{"CPU": 0.01}`); the Train workers and data tasks take the real CPUs, outside Tune's accounting,
so `max_concurrent_trials` is what keeps trials from oversubscribing the cluster (checked here).

Layout under the base config's `ray.storage_path` (absolute):

    tune/<sweep>/                 Tune's experiment folder (trial states; `Tuner.restore` reads it)
    tune/<sweep>/outputs/         sweep.json, summary.md/.csv, <metric>.png, best.yaml
    <sweep>-<trial id>/           each trial's Ray Train run (checkpoints, outputs), like any run
    mlflow.db, mlartifacts/       one parent run per sweep, one child run per trial
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..config import ConfigError
from ..train.launch import latest_checkpoint
from .report import TrialRow, best_row, format_table, plot_histories, write_best_config, write_csv
from .spec import LoadedSweep, TuneSpec, param_space, rungs, sampled_values, trial_config

log = logging.getLogger("ssd_ray.tune")

TRIAL_CPU = 0.01  # the Tune function's own share: it only waits on the Train controller (0 is refused)


@dataclass
class SweepSummary:
    name: str
    path: str  # Tune's experiment folder
    out_dir: str
    rows: list[TrialRow]
    best: TrialRow | None
    best_config: str | None
    parent_run_id: str | None
    table: str


@dataclass
class TrialContext:
    """What every trial needs besides its sampled values; travels to the trial actors."""

    sweep: str
    spec: TuneSpec
    base_raw: dict
    parent_run_id: str | None


class FinishingASHA(ASHAScheduler):
    """ASHA that lets a trial's final report through.

    Plain ASHA answers STOP to the report at `max_t` (and to a rung that falls on it). For a Train run
    that report comes from inside the loop, before `run_training` saves the final model, draws the
    curves and closes the MLflow run: a STOP there kills the trial actor mid-way. The trial ends on its
    own right after, so CONTINUE loses nothing; the result still counts for the rungs.
    """

    def __init__(self, budget: int, **kwargs):
        super().__init__(max_t=budget, **kwargs)
        self._budget = budget

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) >= self._budget:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def make_scheduler(spec: TuneSpec) -> FinishingASHA:
    """ASHA on the loop's "iteration" (metric and mode come from TuneConfig)."""
    return FinishingASHA(spec.budget.max_iter, time_attr="iteration", grace_period=spec.asha.grace_period,
                         reduction_factor=spec.asha.reduction_factor)


def _trial(config: dict, ctx: TrialContext) -> None:
    """One Tune trial = one Ray Train run of the base config with this trial's sampled values."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .. import checkpoint as ckpt_io
    from ..train.launch import run_training

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sampled = sampled_values(ctx.spec, config)
    cfg = trial_config(ctx.base_raw, sampled)
    run_name = f"{ctx.sweep}-{tune.get_context().get_trial_id()}"
    # A restored sweep restarts unfinished trials from scratch; the Train run of the same name has
    # checkpoints: continue it (and its MLflow run) instead of training again.
    resume: bool | str = False
    found = latest_checkpoint(Path(cfg.ray.storage_path) / run_name)
    if found:
        if found[0] >= cfg.train.max_iter:  # trained to the end before the driver died: re-report
            history = ckpt_io.load(found[1])["counters"]["history"]
            if history:
                it, metrics = history[-1]
                tune.report({"iteration": int(it), **metrics})
            return
        resume = run_name
    run_training(cfg, resume=resume, run_name=run_name, callbacks=[TuneReportCallback()],
                 mlflow_parent_run_id=ctx.parent_run_id)


def _cpus_per_trial(cfg) -> float:
    r = cfg.ray
    workers = r.max_workers * r.cpus_per_worker if r.max_workers > 0 else 0.0
    return TRIAL_CPU + workers + r.data_cpus  # at least one data task must fit beside the workers


def check_capacity(spec: TuneSpec, cfg, cluster: dict) -> None:
    """Refuse a sweep whose concurrent trials cannot all be placed: Tune would start them and the
    Train worker groups or data tasks would wait forever ("worker group startup timed out")."""
    need = spec.max_concurrent_trials * _cpus_per_trial(cfg)
    have = float(cluster.get("CPU", 0.0))
    if need > have + 1e-9:
        r = cfg.ray
        raise ConfigError(
            f"max_concurrent_trials={spec.max_concurrent_trials} trials x ({TRIAL_CPU} Tune + "
            f"{r.max_workers} worker(s) x {r.cpus_per_worker} CPU + {r.data_cpus} data CPU) = {need:g} CPUs, "
            f"the cluster has {have:g}: lower max_concurrent_trials, ray.cpus_per_worker or ray.data_cpus")
    if cfg.ray.use_gpu:
        need_gpu = spec.max_concurrent_trials * max(1, cfg.ray.max_workers)
        if need_gpu > float(cluster.get("GPU", 0.0)):
            raise ConfigError(f"max_concurrent_trials={spec.max_concurrent_trials} trials x "
                              f"{max(1, cfg.ray.max_workers)} GPU worker(s) need {need_gpu} GPUs, the cluster "
                              f"has {cluster.get('GPU', 0)}")


def find_sweep(tune_root: Path, name: str, which: str | None = None) -> Path:
    """The sweep folder to restore: `which` if given, else the newest `<name>-*` Tune can restore."""
    from ray.tune import Tuner

    if which:
        path = tune_root / which
        if not Tuner.can_restore(str(path)):
            raise FileNotFoundError(f"no restorable sweep at {path}")
        return path
    found = sorted(p for p in tune_root.glob(f"{name}-*") if p.is_dir() and Tuner.can_restore(str(p)))
    if not found:
        raise FileNotFoundError(f"no restorable sweep named {name}-* under {tune_root}")
    return found[-1]  # names end in a sortable timestamp


def _rows(results, spec: TuneSpec, sweep: str) -> list[TrialRow]:
    rows = []
    for r in results:
        metrics = r.metrics or {}
        trial_id = metrics.get("trial_id") or Path(r.path).name
        history: list[tuple[int, float]] = []
        df = r.metrics_dataframe
        if df is not None and "iteration" in df and spec.metric in df:
            history = [(int(it), float(v)) for it, v in zip(df["iteration"], df[spec.metric]) if v == v]
        iterations = int(df["iteration"].max()) if df is not None and "iteration" in df and len(df) else 0
        rows.append(TrialRow(trial_id=trial_id, params=sampled_values(spec, r.config), history=history,
                             iterations=iterations, error=str(r.error).splitlines()[0] if r.error else None,
                             run_name=f"{sweep}-{trial_id}"))
    return sorted(rows, key=lambda row: row.trial_id)


class _Parent:
    """The sweep's MLflow parent run (created once by the driver; reused on --resume)."""

    def __init__(self, cfg, sweep: str, out_dir: Path, params: dict, resume: bool):
        from ..train import tracking

        self.uri = tracking.tracking_uri(cfg)
        self.experiment_id = tracking.ensure_experiment(cfg)
        state = out_dir / "sweep.json"
        run_id = json.loads(state.read_text()).get("parent_run_id") if resume and state.is_file() else None
        if run_id:
            tracking.RunLogger(self.uri, run_id).client.update_run(run_id, status="RUNNING")
        else:
            run_id = tracking.start_run(cfg, sweep, params)
        self.logger = tracking.RunLogger(self.uri, run_id)
        self.run_id = run_id
        self.logger.tags({"ssd_ray.sweep": sweep, "ssd_ray.sweep_dir": str(out_dir.parent)})

    def children(self) -> dict:
        """{run name: Run} of this sweep's trial runs."""
        runs = self.logger.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'", max_results=1000)
        return {run.info.run_name: run for run in runs}

    def close_children(self, rows: list[TrialRow], max_iter: int) -> None:
        """Link trials to their runs; ASHA kills stopped trials mid-run, so close their runs here."""
        children = self.children()
        client = self.logger.client
        for row in rows:
            run = children.get(row.run_name)
            if run is None:
                continue
            row.mlflow_run_id = run.info.run_id
            status = row.status(max_iter)
            client.set_tag(run.info.run_id, "ssd_ray.tune_trial_id", row.trial_id)
            client.set_tag(run.info.run_id, "ssd_ray.tune_status", status)
            # Tune, not the trial, knows how a trial ended: a run still open, or one that a stop
            # reached as an exception, is closed as what the sweep saw.
            if run.info.status == "RUNNING" or (status == "stopped early" and run.info.status == "FAILED"):
                client.set_terminated(run.info.run_id, "FAILED" if status == "error" else "KILLED")


def run_sweep(loaded: LoadedSweep, *, address: str | None = None, resume: bool | str = False) -> SweepSummary:
    """Run (or with `resume`, restore and finish) the sweep; write and log its summary."""
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ..data.sources import load_split
    from ..runtime import init_ray

    spec, cfg = loaded.spec, loaded.base
    from .. import storage

    if storage.is_uri(cfg.ray.storage_path):  # the sweep's own state and report are local files for now
        from ..config import ConfigError

        raise ConfigError(f"ray.storage_path={cfg.ray.storage_path}: sweeps keep their state under a local or "
                          f"mounted storage path (EFS); a bucket data.root works, a bucket storage path is for "
                          f"pipelines.train")
    # Once, here, before anything is written: concurrent trials must not all generate the synthetic
    # data, and data that disagrees with the config stops the sweep (DataError) before any trial.
    index_dir = storage.join(cfg.ray.storage_path, "index")  # a bucket data.root: the trials reuse this index
    load_split(cfg.data, "train", index_dir=index_dir)
    load_split(cfg.data, "val", index_dir=index_dir)
    tune_root = Path(cfg.ray.storage_path) / "tune"
    tune_root.mkdir(parents=True, exist_ok=True)
    if resume:
        exp_dir = find_sweep(tune_root, spec.name, resume if isinstance(resume, str) else None)
    else:
        exp_dir = tune_root / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep = exp_dir.name
    out_dir = exp_dir / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)

    init_ray(address, cfg)
    check_capacity(spec, cfg, ray.cluster_resources())

    spec_dict = spec.model_dump(mode="json")
    parent = _Parent(cfg, sweep, out_dir, {"sweep": spec_dict, "base_config": loaded.base_path}, bool(resume)) \
        if cfg.mlflow.enabled else None
    (out_dir / "sweep.json").write_text(json.dumps(
        {"sweep": sweep, "source": loaded.source, "base": loaded.base_path,
         "parent_run_id": parent.run_id if parent else None, "spec": spec_dict}, indent=2))
    (out_dir / "tune.yaml").write_text(yaml.safe_dump(spec_dict, sort_keys=False))
    log.info("sweep %s: %d trials, %d at a time, budget %d iterations, ASHA rungs %s on %s (%s)%s", sweep,
             spec.num_samples, spec.max_concurrent_trials, spec.budget.max_iter, rungs(spec), spec.metric,
             spec.mode, f", MLflow parent run {parent.run_id}" if parent else "")

    ctx = TrialContext(sweep, spec, loaded.base_raw, parent.run_id if parent else None)
    trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"CPU": TRIAL_CPU})
    try:
        if resume:
            tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space(spec),
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                    scheduler=make_scheduler(spec),
                    # The limit goes on the generator: TuneConfig(max_concurrent_trials=...) only wraps
                    # `Searcher`s and is silently ignored (a warning) for BasicVariantGenerator.
                    search_alg=BasicVariantGenerator(random_state=spec.seed,
                                                     max_concurrent=spec.max_concurrent_trials)),
                run_config=tune.RunConfig(name=sweep, storage_path=str(tune_root)))
        results = tuner.fit()
    except BaseException:
        if parent:
            parent.logger.finish("FAILED")
        raise
    return _summarise(loaded, results, sweep, exp_dir, out_dir, parent)


def _summarise(loaded: LoadedSweep, results, sweep: str, exp_dir: Path, out_dir: Path, parent) -> SweepSummary:
    spec = loaded.spec
    keys, max_iter = list(spec.search_space), spec.budget.max_iter
    rows = _rows(results, spec, sweep)
    if parent:
        parent.close_children(rows, max_iter)
    table = format_table(rows, keys, spec.metric, spec.mode, max_iter)
    (out_dir / "summary.md").write_text(f"# Sweep {sweep}\n\n{table}\n")
    write_csv(rows, keys, spec.metric, spec.mode, max_iter, out_dir / "summary.csv")
    plot_path = out_dir / f"{spec.metric}.png"
    plot_histories(rows, keys, spec.metric, max_iter, plot_path)

    best = best_row(rows, spec.mode)
    best_path = None
    if best is not None:
        value, at = best.best(spec.mode)
        header = [f"Best trial {best.trial_id} of sweep {sweep}: {spec.metric} {value:.4f} at iteration {at}",
                  f"sampled: {best.params}"]
        if best.mlflow_run_id:
            header.append(f"MLflow run {best.mlflow_run_id}; its best weights: MLflow model "
                          f"runs:/{best.mlflow_run_id}/best_model")
        header.append(f"train.max_iter is the sweep's budget ({max_iter}); raise it with --set for a full run")
        best_path = out_dir / "best.yaml"
        write_best_config(trial_config(loaded.base_raw, best.params), best_path, header)

    if parent:
        lg = parent.logger
        for f in ("summary.md", "summary.csv", plot_path.name, "tune.yaml", "sweep.json"):
            lg.artifact(out_dir / f)
        if best is not None:
            lg.artifact(best_path)
            lg.metrics({f"best_{spec.metric}": best.best(spec.mode)[0]}, step=0)
            lg.tags({"ssd_ray.best_trial": best.trial_id, "ssd_ray.best_run_id": best.mlflow_run_id or ""})
        stopped = sum(r.status(max_iter) == "stopped early" for r in rows)
        lg.metrics({"trials": len(rows), "trials_stopped_early": stopped,
                    "trials_failed": sum(r.status(max_iter) == "error" for r in rows)}, step=0)
        lg.finish("FINISHED")
    return SweepSummary(sweep, str(exp_dir), str(out_dir), rows, best, str(best_path) if best_path else None,
                        parent.run_id if parent else None, table)


def format_sweep(s: SweepSummary) -> str:
    lines = [f"sweep {s.name}: {len(s.rows)} trials", s.table, f"  outputs: {s.out_dir}"]
    if s.parent_run_id:
        lines.append(f"  MLflow parent run: {s.parent_run_id}")
    if s.best_config:
        lines.append(f"  best config: {s.best_config}  (python -m pipelines.train --config {s.best_config})")
    return "\n".join(lines)
