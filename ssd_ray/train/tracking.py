"""MLflow bookkeeping: the driver creates experiment and run; rank 0 logs into that run by id.

Default store: one SQLite database `<storage_path>/mlflow.db` with artifacts in
`<storage_path>/mlartifacts/` (absolute paths: Ray workers run in other directories). On a cluster,
point `mlflow.tracking_uri` at a server every node reaches.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

log = logging.getLogger(__name__)


def tracking_uri(cfg) -> str:
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    from .. import storage
    from ..config import ConfigError

    if storage.is_uri(cfg.ray.storage_path):  # the config check says so first; kept for configs built in code
        raise ConfigError(f"ray.storage_path={cfg.ray.storage_path} is in object storage, where MLflow's SQLite "
                          f"store cannot live: set mlflow.tracking_uri (a tracking server, docs/cluster.md)")
    return f"sqlite:///{Path(cfg.ray.storage_path) / 'mlflow.db'}"


def experiment_name(cfg) -> str:
    return cfg.mlflow.experiment or cfg.name


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(cfg) -> str:
    """Create the experiment once (the driver does it: SQLite races on concurrent creation)."""
    client = _client(tracking_uri(cfg))
    name = experiment_name(cfg)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not cfg.mlflow.tracking_uri:
        location = (Path(cfg.ray.storage_path) / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def start_run(cfg, run_name: str, params: dict, parent_run_id: str | None = None) -> str:
    """A new MLflow run with the resolved config as params; returns its id."""
    from mlflow.entities import Param

    client = _client(tracking_uri(cfg))
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run = client.create_run(ensure_experiment(cfg), run_name=run_name, tags=tags)
    items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


class RunLogger:
    """Logs metrics and artifacts into an existing run (rank 0 / the driver only)."""

    def __init__(self, uri: str, run_id: str):
        self.client = _client(uri)
        self.run_id = run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in values.items()
                 if v is not None and math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def tags(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, v)

    def history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
