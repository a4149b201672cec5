"""The sweep's results as a table (Markdown + CSV), a per-trial metric plot and the best trial's config.

Plain data in (`TrialRow`: one trial's sampled values and metric history), files out: no Ray here.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import config_to_dict

__all__ = ["TrialRow", "best_row", "format_table", "write_csv", "plot_histories", "write_best_config"]


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]  # {dotted config key: sampled value}
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, metric) per report
    iterations: int = 0  # last iteration the trial reported
    error: str | None = None
    run_name: str | None = None  # the trial's Ray Train run (folder under ray.storage_path)
    mlflow_run_id: str | None = None

    def best(self, mode: str) -> tuple[float | None, int | None]:
        """(best metric, its iteration) over the reports; NaN reports never win. (None, None) if none."""
        finite = [(v, it) for it, v in self.history if v is not None and math.isfinite(v)]
        if not finite:
            return None, None
        # Ties go to the earlier report: the same score with less training.
        if mode == "max":
            return max(finite, key=lambda p: (p[0], -p[1]))
        return min(finite, key=lambda p: (p[0], p[1]))

    def status(self, max_iter: int) -> str:
        if self.error:
            return "error"
        return "completed" if self.iterations >= max_iter else "stopped early"


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The trial with the best metric over all its reports (not only its last); None if none reported."""
    scored = [(r.best(mode)[0], r) for r in rows]
    scored = [(v, r) for v, r in scored if v is not None]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda p: p[0])[1]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[TrialRow], keys: list[str], metric: str, mode: str, max_iter: int) -> list[list[str]]:
    out = [["trial", *keys, f"best {metric}", "at iteration", "iterations", "status", "mlflow run"]]
    for r in rows:
        v, it = r.best(mode)
        out.append([r.trial_id, *(_fmt(r.params.get(k)) for k in keys), "" if v is None else f"{v:.4f}",
                    "" if it is None else str(it), str(r.iterations), r.status(max_iter), r.mlflow_run_id or ""])
    return out


def format_table(rows: list[TrialRow], keys: list[str], metric: str, mode: str, max_iter: int) -> str:
    """A Markdown table, one line per trial in trial order."""
    t = _table(rows, keys, metric, mode, max_iter)
    lines = ["| " + " | ".join(t[0]) + " |", "|" + "---|" * len(t[0])]
    lines += ["| " + " | ".join(row) + " |" for row in t[1:]]
    return "\n".join(lines)


def write_csv(rows: list[TrialRow], keys: list[str], metric: str, mode: str, max_iter: int, path: Path) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(_table(rows, keys, metric, mode, max_iter))


def plot_histories(rows: list[TrialRow], keys: list[str], metric: str, max_iter: int, path: Path) -> None:
    """One line per trial: metric against iteration; an x marks where ASHA stopped a trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        pts = sorted((it, v) for it, v in r.history if v is not None and math.isfinite(v))
        if not pts:
            continue
        label = f"{r.trial_id}: " + ", ".join(f"{k.split('.')[-1]}={_fmt(r.params.get(k))}" for k in keys)
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
        if r.status(max_iter) == "stopped early":
            ax.plot([pts[-1][0]], [pts[-1][1]], marker="x", markersize=10, color=line.get_color())
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (x: stopped early by ASHA)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_best_config(cfg, path: Path, header: list[str]) -> None:
    """The best trial's full resolved config as a training YAML (`pipelines.train --config` takes it)."""
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    path.write_text("".join(f"# {line}\n" for line in header) + body)
