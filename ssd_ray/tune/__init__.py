"""Hyperparameter sweeps: Ray Tune over full Ray Train runs, ASHA early stopping, MLflow parent/child runs.

    loaded = load_sweep("configs/tune_shapes.yaml", ["num_samples=2"])
    summary = run_sweep(loaded)            # or run_sweep(loaded, resume=True) after a driver crash

`spec` (the sweep YAML) and `report` (table, plot, best config) import no Ray; `sweep` runs Tune.
"""

from .report import TrialRow, best_row
from .spec import LoadedSweep, TuneSpec, load_sweep, param_space, sampled_values, trial_config

__all__ = ["LoadedSweep", "TuneSpec", "TrialRow", "best_row", "load_sweep", "param_space", "sampled_values",
           "trial_config", "run_sweep", "format_sweep"]


def __getattr__(name: str):
    # Importing Ray Tune costs seconds: only when a sweep actually runs.
    if name in ("run_sweep", "format_sweep"):
        from . import sweep

        return getattr(sweep, name)
    raise AttributeError(name)
