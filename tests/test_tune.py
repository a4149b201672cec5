"""Sweeps: the sweep YAML's validation, ASHA's final-report rule, the summary, and a tiny real sweep."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from ssd_ray.config import ConfigError, load_config
from ssd_ray.tune.report import TrialRow, best_row, format_table
from ssd_ray.tune.spec import load_sweep, param_space, rungs, sampled_values, trial_config

# A light SSD at 96 px: build_ssd(...).feature_map_sizes(96) == [12, 6, 3, 2].
BASE = {
    "name": "tiny",
    "data": {"format": "voc", "root": "shapes", "train_sets": ["2007/train"], "val_sets": ["2007/val"],
             "synthetic": {"train": 16, "val": 4, "seed": 0, "size": 96}, "max_boxes": 8,
             "augment": {"photometric": False, "expand": False, "crop": False, "mirror": True}},
    "model": {"backbone": "light", "min_dim": 96, "width": 8},
    "priors": {"feature_maps": [12, 6, 3, 2], "steps": [8, 16, 32, 48], "min_sizes": [10, 24, 48, 72],
               "max_sizes": [24, 48, 72, 96], "aspect_ratios": [[2], [2], [2], [2]]},
    "train": {"batch_size": 4, "optimizer": "adamw", "schedule": "cosine", "lr": 1e-3, "warmup_iters": 1,
              "max_iter": 1000, "eval_batch_size": 4, "log_every": 1},
    "ray": {"num_workers": 1, "cpus_per_worker": 0.5, "torch_threads": 1, "data_cpus": 0.5,
            "storage_path": "runs", "max_failures": 0},
}

SWEEP = {
    "name": "tiny-sweep",
    "base": "base.yaml",
    "search_space": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                     "loss.neg_pos": {"type": "choice", "values": [2, 3]}},
    "num_samples": 2,
    "budget": {"max_iter": 4, "eval_every": 2},
    "asha": {"grace_period": 2, "reduction_factor": 2},
    "seed": 0,
}


def _write(tmp_path: Path, sweep: dict | None = None, base: dict | None = None) -> Path:
    base = dict(base or BASE)
    base["data"] = {**base["data"], "root": str(tmp_path / "shapes")}
    base["ray"] = {**base["ray"], "storage_path": str(tmp_path / "runs")}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep or SWEEP))
    return path


def _error(tmp_path, sweep, overrides=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_sweep(_write(tmp_path, sweep), overrides)
    return str(e.value)


# ------------------------------------------------------------------------------ validation
def test_valid_sweep_applies_budget_and_overrides(tmp_path):
    sweep = {**SWEEP, "overrides": {"train.weight_decay": 0.0, "ray": {"torch_threads": 2}}}
    loaded = load_sweep(_write(tmp_path, sweep))
    t = loaded.base.train
    # The budget replaces the base's max_iter 1000; reports (and checkpoints) every 2 iterations.
    assert (t.max_iter, t.eval_every, t.checkpoint_every) == (4, 2, 2)
    assert t.weight_decay == 0.0 and loaded.base.ray.torch_threads == 2  # dotted and nested overrides
    assert loaded.spec.mode == "max"  # val_mAP's own direction when mode is left out
    assert Path(loaded.base_path) == (tmp_path / "base.yaml").resolve()  # relative to the sweep YAML
    assert loaded.base.ray.storage_path == str(tmp_path / "runs")


def test_set_routes_keys_to_sweep_or_base(tmp_path):
    loaded = load_sweep(_write(tmp_path), ["num_samples=3", "train.batch_size=8", "asha.grace_period=1"])
    assert loaded.spec.num_samples == 3 and loaded.spec.asha.grace_period == 1
    assert loaded.base.train.batch_size == 8


def test_unknown_top_level_key_is_named(tmp_path):
    msg = _error(tmp_path, {**SWEEP, "num_trials": 4})
    assert "num_trials: unknown key" in msg and "sweep.yaml" in msg


def test_bad_search_space_type_is_named(tmp_path):
    space = {**SWEEP["search_space"], "train.lr": {"type": "lognormal", "low": 1e-4, "high": 1e-2}}
    msg = _error(tmp_path, {**SWEEP, "search_space": space})
    assert "search_space.train.lr" in msg and "lognormal" in msg


def test_unknown_key_inside_a_domain_is_named(tmp_path):
    space = {"train.lr": {"type": "loguniform", "low": 1e-4, "hi": 1e-2}}
    msg = _error(tmp_path, {**SWEEP, "search_space": space})
    assert "search_space.train.lr.loguniform.hi: unknown key" in msg


def test_search_space_key_must_be_a_config_field(tmp_path):
    msg = _error(tmp_path, {**SWEEP, "search_space": {"train.learning_rate": {"type": "choice", "values": [1]}}})
    assert "search_space.train.learning_rate: unknown config key" in msg


def test_search_space_values_must_give_valid_configs(tmp_path):
    # LossConfig.neg_pos >= 1: the choice 0.5 would fail in a trial, so the sweep fails at load.
    msg = _error(tmp_path, {**SWEEP, "search_space": {"loss.neg_pos": {"type": "choice", "values": [3, 0.5]}}})
    assert "search_space.loss.neg_pos: value 0.5" in msg and "neg_pos" in msg


@pytest.mark.parametrize("domain, fragment", [
    ({"type": "loguniform", "low": 1e-2, "high": 1e-3}, "must be < high"),
    ({"type": "loguniform", "low": 0.0, "high": 1e-3}, "greater than 0"),
    ({"type": "randint", "low": 3, "high": 3}, "high is excluded"),
    ({"type": "choice", "values": []}, "at least 1 item"),
])
def test_bad_domains(tmp_path, domain, fragment):
    msg = _error(tmp_path, {**SWEEP, "search_space": {"train.lr": domain}})
    assert "search_space.train.lr" in msg and fragment in msg


def test_grace_period_past_budget_and_wrong_mode(tmp_path):
    assert "grace_period=5 exceeds budget.max_iter=4" in _error(
        tmp_path, {**SWEEP, "asha": {"grace_period": 5}})
    assert "would pick the worst trial" in _error(tmp_path, {**SWEEP, "metric": "val_loss", "mode": "max"})


def test_budget_keys_cannot_be_overridden(tmp_path):
    # train.max_iter comes from budget.max_iter; a second source would be silently overwritten.
    assert "overrides.train.max_iter: set by the sweep's budget" in _error(
        tmp_path, {**SWEEP, "overrides": {"train": {"max_iter": 10}}})
    assert "--set train.eval_every: set by the sweep's budget" in _error(tmp_path, SWEEP, ["train.eval_every=3"])


def test_missing_base_names_the_key(tmp_path):
    assert "base: file not found" in _error(tmp_path, {**SWEEP, "base": "nope.yaml"})


def test_base_config_errors_name_the_key(tmp_path):
    # warmup_iters 10 >= the budget's max_iter 4: the base config cannot run with this budget.
    msg = _error(tmp_path, {**SWEEP, "overrides": {"train.warmup_iters": 10}})
    assert "warmup_iters=10 must be < train.max_iter=4" in msg


def test_cli_exits_2_on_bad_sweep(tmp_path, capsys):
    from pipelines.tune import main

    path = _write(tmp_path, {**SWEEP, "sampels": 2})
    with pytest.raises(SystemExit) as e:
        main(["--config", str(path)])
    assert e.value.code == 2
    assert "sampels: unknown key" in capsys.readouterr().err


# ------------------------------------------------------------------------------ sampling
def test_param_space_samples_within_bounds_and_builds_trial_configs(tmp_path):
    import random

    loaded = load_sweep(_write(tmp_path, {**SWEEP, "search_space": {
        **SWEEP["search_space"], "train.seed": {"type": "randint", "low": 0, "high": 3},
        "train.momentum": {"type": "uniform", "low": 0.8, "high": 0.95}}}))
    space = param_space(loaded.spec)
    random.seed(0)
    for _ in range(20):
        nested = {sec: {k: d.sample() for k, d in v.items()} for sec, v in space.items()}
        values = sampled_values(loaded.spec, nested)
        assert 1e-4 <= values["train.lr"] <= 1e-2
        assert values["loss.neg_pos"] in (2, 3)
        assert values["train.seed"] in (0, 1, 2)  # randint excludes high
        cfg = trial_config(loaded.base_raw, values)
        assert cfg.train.lr == pytest.approx(values["train.lr"]) and cfg.loss.neg_pos == values["loss.neg_pos"]
        assert cfg.train.max_iter == 4  # the budget survives
    # 4 -> rungs at 2 and 4 (grace 2, factor 2)
    assert rungs(loaded.spec) == [2, 4]


# ------------------------------------------------------------------------------ ASHA
class _Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def test_trials_get_absolute_paths_whatever_their_working_directory(tmp_path, monkeypatch):
    # Relative data.root / ray.storage_path resolve against the directory the sweep started in, not
    # the trial's own working directory (Tune runs each trial elsewhere).
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))  # root "shapes", storage "runs"
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    monkeypatch.chdir(tmp_path)
    loaded = load_sweep(tmp_path / "sweep.yaml")
    elsewhere = tmp_path / "trial_dir"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = trial_config(loaded.base_raw, {"train.lr": 1e-3, "loss.neg_pos": 2})
    assert cfg.data.root == str(tmp_path / "shapes") and cfg.ray.storage_path == str(tmp_path / "runs")


def test_asha_stops_weak_trials_but_never_the_final_report():
    from ray.tune.schedulers import TrialScheduler

    from ssd_ray.tune.spec import TuneSpec
    from ssd_ray.tune.sweep import make_scheduler

    spec = TuneSpec.model_validate({**SWEEP, "budget": {"max_iter": 4, "eval_every": 2}})
    sched = make_scheduler(spec)
    sched.set_search_properties("val_mAP", "max")
    a, b, c = _Trial("a"), _Trial("b"), _Trial("c")
    for t in (a, b, c):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, a, {"iteration": 2, "val_mAP": 0.5}) == TrialScheduler.CONTINUE
    # b at rung 2 is below the cutoff (median of {a: 0.5} = 0.5): stopped early.
    assert sched.on_trial_result(None, b, {"iteration": 2, "val_mAP": 0.1}) == TrialScheduler.STOP
    # a's final report (iteration 4 = max_t): plain ASHA says STOP, which would kill run_training
    # before it saves the final model; the trial is let through to end by itself.
    assert sched.on_trial_result(None, a, {"iteration": 4, "val_mAP": 0.6}) == TrialScheduler.CONTINUE
    # c beats a at rung 2 and continues; a report without the metric never stops a trial.
    assert sched.on_trial_result(None, c, {"iteration": 2, "val_mAP": 0.7}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, c, {"iteration": 3}) == TrialScheduler.CONTINUE


# ------------------------------------------------------------------------------ summary
def test_best_and_status_from_histories():
    rows = [
        TrialRow("t1", {"train.lr": 1e-3}, [(2, 0.2), (4, 0.4)], iterations=4),
        TrialRow("t2", {"train.lr": 1e-2}, [(2, 0.05)], iterations=2),  # stopped at the first rung
        TrialRow("t3", {"train.lr": 3e-3}, [(2, 0.45), (4, float("nan"))], iterations=4),  # NaN never wins
        TrialRow("t4", {"train.lr": 1e-1}, [], iterations=0, error="NonFiniteLossError"),
    ]
    assert rows[0].best("max") == (0.4, 4)
    assert rows[2].best("max") == (0.45, 2)
    assert rows[3].best("max") == (None, None)
    assert [r.status(4) for r in rows] == ["completed", "stopped early", "completed", "error"]
    assert best_row(rows, "max").trial_id == "t3"  # 0.45 at iteration 2 beats t1's 0.4
    assert best_row(rows, "min").trial_id == "t2"  # e.g. val_loss: smallest wins
    # Ties go to the earlier report (same score, less training).
    assert TrialRow("t", {}, [(2, 0.3), (4, 0.3)], 4).best("max") == (0.3, 2)
    table = format_table(rows, ["train.lr"], "val_mAP", "max", 4).splitlines()
    assert table[0].startswith("| trial | train.lr | best val_mAP | at iteration | iterations | status")
    assert table[3] == "| t2 | 0.01 | 0.0500 | 2 | 2 | stopped early |  |"
    assert best_row([rows[3]], "max") is None


def test_driver_closes_trial_runs_as_tune_saw_them(tmp_path):
    """A stopped trial's run may be left RUNNING (actor killed) or FAILED (Tune's stop reached the
    trial as an exception): the driver closes both as KILLED; a finished or failed trial keeps its status."""
    from ssd_ray.train import tracking
    from ssd_ray.tune.sweep import _Parent

    cfg = load_sweep(_write(tmp_path)).base
    parent = _Parent(cfg, "s", tmp_path, {"sweep": "s"}, resume=False)
    client = parent.logger.client
    ends = {"left-open": None, "stop-raised": "FAILED", "done": "FINISHED", "broke": "FAILED"}
    for name, end in ends.items():
        run_id = tracking.start_run(cfg, f"s-{name}", {}, parent_run_id=parent.run_id)
        if end:
            client.set_terminated(run_id, end)
    rows = [TrialRow("left-open", {}, [(2, 1.0)], 2, run_name="s-left-open"),
            TrialRow("stop-raised", {}, [(2, 1.0)], 2, run_name="s-stop-raised"),
            TrialRow("done", {}, [(4, 1.0)], 4, run_name="s-done"),
            TrialRow("broke", {}, [], 1, error="RuntimeError: boom", run_name="s-broke")]
    parent.close_children(rows, max_iter=4)
    status = {name: run.info.status for name, run in parent.children().items()}
    assert status == {"s-left-open": "KILLED", "s-stop-raised": "KILLED", "s-done": "FINISHED", "s-broke": "FAILED"}
    assert all(row.mlflow_run_id for row in rows)


# ------------------------------------------------------------------------------ a real sweep
@pytest.fixture
def local_ray(monkeypatch):
    import os

    import ray

    from ssd_ray.runtime import LOCAL_RAY_ENV, finish_ray, init_ray

    for key in LOCAL_RAY_ENV:
        monkeypatch.delenv(key, raising=False)
    # With the dashboard, its address handed to the workers: Train V2's placement-group cleaner polls
    # the state API; without it a trial stopped by ASHA leaks its placement group.
    init_ray(num_cpus=2)
    assert {k: os.environ.get(k) for k in LOCAL_RAY_ENV} == LOCAL_RAY_ENV  # one machine: no preemption watcher
    yield ray
    finish_ray(succeeded=False)
    assert not any(k in os.environ for k in LOCAL_RAY_ENV)  # a later cluster run gets Ray's defaults back


# The end-to-end sweep: val_loss (mAP is 0 for every trial this early), SGD at a constant lr, no
# warmup, fixed data order: lr 5e-2 against 1e-12 from the same initial weights. Tune's seeded sampling
# (seed 1) gives trial 0 lr 5e-2 and trial 1 lr 1e-12. Four SGD steps lower val_loss while trial 1 stays
# near the initial loss (only BatchNorm's running statistics move), so at ASHA's only rung (iteration 4
# of 6) trial 1 is above trial 0: ASHA stops it, and its placement group must be freed.
E2E = {**SWEEP, "metric": "val_loss", "seed": 1,
       "budget": {"max_iter": 6, "eval_every": 2}, "asha": {"grace_period": 4, "reduction_factor": 2},
       "overrides": {"train.optimizer": "sgd", "train.schedule": "steps", "train.lr_steps": [],
                     "train.warmup_iters": 0, "train.grad_clip": 10.0, "train.preserve_order": True},
       "search_space": {"loss.neg_pos": {"type": "choice", "values": [3]},
                        "train.lr": {"type": "choice", "values": [5e-2, 1e-12]}}}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_sweep_end_to_end(tmp_path, local_ray, monkeypatch):
    from mlflow.tracking import MlflowClient
    from ray.util import placement_group_table

    from ssd_ray.data.shapes import write_shapes
    from ssd_ray.tune.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    write_shapes(tmp_path / "shapes", "voc", 16, 4, 0, size=96)
    loaded = load_sweep(_write(tmp_path, E2E))
    summary = run_sweep(loaded)
    print(summary.table)

    # Tune's results live under <storage>/tune/<sweep>; each trial is a Train run beside normal runs.
    storage = tmp_path / "runs"
    assert Path(summary.path).parent == storage / "tune"
    first, second = summary.rows  # in trial order: max_concurrent_trials 1 runs them one after the other
    assert [first.params["train.lr"], second.params["train.lr"]] == [5e-2, 1e-12], \
        "Tune's seeded sampling changed: pick a seed that gives trial 0 lr 5e-2"
    for row in summary.rows:
        assert row.error is None, row.error
        assert (storage / row.run_name).is_dir()
        assert [it for it, _ in row.history][:2] == [2, 4]  # a report every eval_every iterations
    assert second.history[1][1] > first.history[1][1]  # at the rung: the precondition for the stop
    assert (first.status(6), first.iterations) == ("completed", 6)
    # Tune takes no report after its STOP; the killed Train run may still have got a little further.
    assert (second.status(6), second.iterations) == ("stopped early", 4)
    assert summary.best is first

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == sorted(r.run_name for r in summary.rows)  # one child run per trial
    assert by_name[first.run_name].info.status == "FINISHED"
    stopped = by_name[second.run_name]
    assert stopped.data.tags["ssd_ray.tune_status"] == "stopped early"
    assert stopped.info.status in ("KILLED", "FINISHED")  # killed mid-run (closed by the driver) or just after
    for run in children:
        assert "val_loss" in run.data.metrics and run.data.params["train.lr"] in ("0.05", "1e-12")
    assert [m.step for m in client.get_metric_history(first.mlflow_run_id, "val_loss")] == [2, 4, 6]
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials"] == 2 and parent.data.metrics["trials_stopped_early"] == 1
    logged = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {"summary.md", "summary.csv", "val_loss.png", "best.yaml"} <= logged

    best = load_config(summary.best_config)  # what `pipelines.train --config best.yaml` does first
    assert best.train.max_iter == 6 and best.model.min_dim == 96 and best.train.optimizer == "sgd"
    assert best.train.lr == 5e-2 and best.loss.neg_pos == 3
    # Nothing leaked: the stopped trial's placement group is removed too (by Train's cleaner).
    deadline = time.time() + 30
    while any(pg["state"] != "REMOVED" for pg in placement_group_table().values()) and time.time() < deadline:
        time.sleep(1)
    assert all(pg["state"] == "REMOVED" for pg in placement_group_table().values())

    # --resume on a finished sweep: Tune restores it with nothing left to run; the same parent run
    # gets the same summary again and no trial trains twice.
    again = run_sweep(loaded, resume=True)
    assert again.path == summary.path and again.parent_run_id == summary.parent_run_id
    assert [(r.trial_id, r.iterations, r.status(6)) for r in again.rows] == \
        [(r.trial_id, r.iterations, r.status(6)) for r in summary.rows]
    assert len(client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")) == 2
