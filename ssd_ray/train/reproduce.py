"""A training run's reproducibility record in MLflow, its logged models, and re-running it (`--from-run`).

What the driver records in every run (tags, so that a resumed run can compare them; `<p>` is
`ssd_ray.`, `ssd_ray.eval.` for `pipelines.evaluate --mlflow-run-id`):

    <p>code.version, <p>code.source_digest, <p>code.git_commit, <p>code.git_branch, <p>code.git_dirty
    mlflow.source.git.commit                       (MLflow's own tag: the UI shows it)
    <p>data.<split>.fingerprint/images/objects/classes/fingerprint_mode   (ssd_ray.data.fingerprint)
    <p>env.python/platform/torch/cuda/cudnn/torchvision/ray/mlflow/numpy/ssd_ray
    <p>cluster.nodes/cluster_cpus/cluster_gpus/accelerators/workers/gpus_per_worker/...
    <p>seeds                                       (JSON: every `seed` of the resolved config)
    artifacts provenance/provenance.json (all of the above), provenance/packages.txt (pip freeze
    format), provenance/code.diff (when the checkout is dirty; `git apply` it on the commit)
    MLflow dataset inputs, one per split (digest = the fingerprint's first 32 hex digits)

and after training, the MLflow models `model` (the final weights, `outputs/model.pt`) and
`best_model` (the best by val mAP, `outputs/best_model.pt` written by the loop), pyfunc flavour
(`ssd_ray.mlflow_model`); `mlflow.registered_model_name` registers the best one (the final one
when no evaluation ran).

`FromRun` re-reads a run's record: its resolved config (the `config.yaml` artifact) to train again,
and its tags to say what differs now (code, environment, data fingerprints) before training starts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import provenance
from ..data.fingerprint import DataFingerprint, fingerprint

log = logging.getLogger("ssd_ray.train")

PREFIX = "ssd_ray."
FINAL_MODEL = "model"  # runs:/<id>/model
BEST_MODEL = "best_model"  # runs:/<id>/best_model
BEST_MODEL_FILE = "best_model.pt"  # in <run>/outputs/, written by the loop on rank 0
_ENV_KEYS_COMPARED = ("python", "torch", "cuda", "torchvision", "ray", "numpy", "ssd_ray")


class DataMismatchError(ValueError):
    """`--from-run --strict`: the data now differs from what the recorded run was trained on."""


def data_fingerprints(cfg, datasets: dict) -> dict[str, DataFingerprint]:
    """{split: fingerprint} of the loaded splits (records only unless `mlflow.fingerprint_image_bytes`)."""
    return {split: fingerprint(ds, image_bytes=cfg.mlflow.fingerprint_image_bytes) for split, ds in datasets.items()}


def code_tags(cv: provenance.CodeVersion, prefix: str = PREFIX) -> dict[str, str]:
    tags = {f"{prefix}code.version": cv.package_version, f"{prefix}code.source_digest": cv.source_digest}
    if cv.git_commit:
        tags.update({f"{prefix}code.git_commit": cv.git_commit, f"{prefix}code.git_dirty": str(cv.git_dirty).lower()})
        if cv.git_branch:
            tags[f"{prefix}code.git_branch"] = cv.git_branch
        if prefix == PREFIX:
            tags["mlflow.source.git.commit"] = cv.git_commit
    return tags


def set_tags(tracker, tags: dict[str, str]) -> None:
    """All tags in batches of 100 (one request each, not one per tag: a tracking server is remote)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, v[:8000]) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        tracker.client.log_batch(tracker.run_id, tags=items[i:i + 100])


def _str(v) -> str:
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)


def _dataset_inputs(cfg, fingerprints: dict[str, DataFingerprint]) -> list:
    """MLflow dataset inputs: the run's "Datasets used", one per split."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from .. import storage

    sets = {"train": cfg.data.train_sets, "val": cfg.data.val_sets}
    context = {"train": "training", "val": "validation"}
    root = str(cfg.data.root)
    folder = root.rstrip("/").rsplit("/", 1)[-1]  # a local path or a bucket URI
    out = []
    for split, fp in fingerprints.items():
        name = f"{cfg.data.format}:{folder}:{'+'.join(sets.get(split, [split]))}"
        ds = Dataset(name=name[:500], digest=fp.digest.split(":", 1)[1][:32],
                     source_type=storage.scheme(root) if storage.is_uri(root) else "local",
                     source=json.dumps({"uri": cfg.data.root}),
                     profile=json.dumps({"images": fp.images, "objects": fp.objects,
                                         "classes": len(fp.class_names), "fingerprint": fp.digest}))
        out.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", context.get(split, split))]))
    return out


def record_start(tracker, cfg, resolved: dict, fingerprints: dict[str, DataFingerprint], out_dir: str | Path, *,
                 resumed: bool = False, from_run: "FromRun | None" = None, prefix: str = PREFIX,
                 artifact_dir: str = "provenance") -> dict:
    """Log code version, data fingerprints, environment, packages and seeds into the run; also
    written to `<out_dir>/provenance.json`. A resumed run keeps the tags its first attempt recorded,
    warns about (and tags, `<p>resume_differs`) what differs now, and writes this attempt's record
    beside the first (`provenance/resumed-<time>/`). Returns the record."""
    cv = provenance.code_version()
    env = provenance.environment()
    record = {"code": cv.to_dict(), "env": env, "data": {s: fp.to_dict() for s, fp in fingerprints.items()},
              "seeds": provenance.seeds(resolved)}
    tags = {**code_tags(cv, prefix), **{f"{prefix}env.{k}": _str(v) for k, v in env.items() if v is not None},
            f"{prefix}seeds": json.dumps(record["seeds"], sort_keys=True)}
    for split, fp in fingerprints.items():
        tags.update(fp.tags(split, prefix))
    if from_run is not None:
        record["from_run"] = from_run.run_id
        tags[f"{prefix}from_run"] = from_run.run_id
    name = "provenance.json"
    if resumed:
        before = tracker.client.get_run(tracker.run_id).data.tags
        differs = describe_differences(before, tags, prefix)
        tags = {k: v for k, v in tags.items() if k not in before}  # the first attempt's record stands
        if differs:
            log.warning("resuming a run recorded with different inputs:\n  %s", "\n  ".join(differs))
            tags[f"{prefix}resume_differs"] = "; ".join(differs)
        # This attempt's record goes beside the first one's, not over it.
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name, artifact_dir = f"provenance-resumed-{stamp}.json", f"{artifact_dir}/resumed-{stamp}"
    set_tags(tracker, tags)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(record, indent=2))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "provenance.json").write_text(json.dumps(record, indent=2))
        (Path(d) / "packages.txt").write_text("\n".join(provenance.installed_packages()) + "\n")
        if cv.diff:
            (Path(d) / "code.diff").write_text(cv.diff)
        tracker.artifacts(d, artifact_dir)
    if prefix == PREFIX:
        tracker.client.log_inputs(tracker.run_id, datasets=_dataset_inputs(cfg, fingerprints))
    log.info("recorded code %s, data %s", cv.describe(),
             ", ".join(f"{s} {fp.short} ({fp.images} images)" for s, fp in fingerprints.items()))
    return record


def record_cluster(tracker, cfg, prefix: str = PREFIX) -> dict:
    """Tag the cluster shape (call once Ray is up)."""
    shape = provenance.cluster_shape(cfg)
    set_tags(tracker, {f"{prefix}cluster.{k}": _str(v) for k, v in shape.items() if v is not None})
    return shape


def log_models(tracker, cfg, out_dir: str | Path, *, final_file: str | Path | None, final_iteration: int,
               best_iteration: int, example_image: str | None) -> dict[str, str]:
    """Log the final and best model files as MLflow models (`model`, `best_model`) and register the
    best one when `mlflow.registered_model_name` is set. Returns {name: model URI}."""
    from ..mlflow_model import log_pyfunc_model

    best_file = Path(out_dir) / BEST_MODEL_FILE
    todo = []
    if final_file:
        todo.append((FINAL_MODEL, Path(final_file), final_iteration))
    if best_file.is_file():
        todo.append((BEST_MODEL, best_file, best_iteration))
    register = todo[-1][0] if todo else None  # the best when there is one
    uris = {}
    for name, path, step in todo:
        info = log_pyfunc_model(
            path, run_id=tracker.run_id, tracking_uri=tracker.client.tracking_uri, name=name,
            example_image=example_image, step=step,
            registered_model_name=cfg.mlflow.registered_model_name if name == register else None,
            metadata={"ssd_ray_model": "final" if name == FINAL_MODEL else "best", "iteration": step})
        uris[name] = f"runs:/{tracker.run_id}/{name}"
        version = getattr(info, "registered_model_version", None)
        log.info("logged MLflow model %s (iteration %d)%s", uris[name], step,
                 f", registered as {cfg.mlflow.registered_model_name} version {version}" if version else "")
        if version:
            tracker.tags({f"{PREFIX}registered_model": f"models:/{cfg.mlflow.registered_model_name}/{version}"})
    return uris


# ------------------------------------------------------------------------------------ --from-run
def describe_differences(recorded: dict[str, str], current: dict[str, str], prefix: str = PREFIX) -> list[str]:
    """Human-readable differences between two sets of record tags (code, environment, data)."""
    out = []
    digest, commit, dirty = (f"{prefix}code.{k}" for k in ("source_digest", "git_commit", "git_dirty"))
    if digest not in recorded:
        out.append("code: the recorded run has no code version")
    elif recorded.get(commit) != current.get(commit):
        out.append(f"code: git commit {recorded.get(commit) or '(none)'} recorded, "
                   f"{current.get(commit) or '(none)'} now")
    elif recorded[digest] != current.get(digest):
        out.append(f"code: same commit but the ssd_ray/pipelines sources differ (uncommitted changes: "
                   f"{recorded.get(dirty, 'n/a')} recorded, {current.get(dirty, 'n/a')} now)")
    for k in _ENV_KEYS_COMPARED:
        key = f"{prefix}env.{k}"
        if key in recorded and recorded.get(key) != current.get(key):
            out.append(f"environment: {k} {recorded[key]} recorded, {current.get(key)} now")
    out.extend(data_differences(recorded, current, prefix))
    return out


def data_differences(recorded: dict[str, str], current: dict[str, str], prefix: str = PREFIX) -> list[str]:
    out = []
    splits = sorted({k[len(prefix) + 5:].rsplit(".", 1)[0] for k in recorded
                     if k.startswith(f"{prefix}data.") and k.endswith(".fingerprint")})
    for split in splits:
        p = f"{prefix}data.{split}."
        rec, cur = recorded.get(f"{p}fingerprint"), current.get(f"{p}fingerprint")
        if cur is None or rec == cur:
            continue
        detail = []
        for what in ("images", "objects"):
            if recorded.get(p + what) != current.get(p + what):
                detail.append(f"{what} {recorded.get(p + what)} -> {current.get(p + what)}")
        if recorded.get(p + "classes") != current.get(p + "classes"):
            detail.append(f"classes {recorded.get(p + 'classes')} -> {current.get(p + 'classes')}")
        if recorded.get(p + "fingerprint_mode") != current.get(p + "fingerprint_mode"):
            detail.append(f"mode {recorded.get(p + 'fingerprint_mode')} -> {current.get(p + 'fingerprint_mode')}")
        out.append(f"data: {split} fingerprint {rec} recorded, {cur} now"
                   f" ({', '.join(detail) if detail else 'same counts: annotations changed'})")
    return out


def parse_run_ref(ref: str) -> str:
    """A run id from `<run id>` or `runs:/<run id>[/path]`."""
    ref = ref.strip()
    if ref.startswith("runs:/"):
        ref = ref[len("runs:/"):].strip("/").split("/", 1)[0]
    if not ref or "/" in ref or ":" in ref:
        raise ValueError(f"--from-run expects an MLflow run id or a runs:/<run id> URI, got {ref!r}")
    return ref


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the default store of a config with default paths (./runs/mlflow.db)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from ..config import RayConfig

    return f"sqlite:///{Path(RayConfig().storage_path).resolve() / 'mlflow.db'}"


@dataclass
class FromRun:
    """A recorded run to train again: its resolved config and its record tags."""

    run_id: str
    tracking_uri: str
    config: dict  # the recorded resolved config (config.yaml artifact)
    tags: dict[str, str] = field(repr=False)
    strict: bool = False

    @classmethod
    def load(cls, ref: str, tracking_uri: str | None = None, strict: bool = False) -> "FromRun":
        """Raises ValueError naming the run when it cannot be found or holds no ssd-ray config."""
        import yaml
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        run_id = parse_run_ref(ref)
        uri = tracking_uri or default_tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():  # MLflow would create it
            raise ValueError(f"no MLflow store at {uri} (set MLFLOW_TRACKING_URI to the store that holds "
                             f"run {run_id})")
        client = MlflowClient(uri)
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            raise ValueError(f"run {run_id} not found in the MLflow store {uri} (set MLFLOW_TRACKING_URI "
                             f"to the store that holds it): {e.message}") from None
        with tempfile.TemporaryDirectory() as d:
            try:
                path = client.download_artifacts(run_id, "config.yaml", d)
            except (MlflowException, OSError) as e:
                raise ValueError(f"run {run_id} has no config.yaml artifact: not an ssd-ray training run "
                                 f"({e})") from None
            config = yaml.safe_load(Path(path).read_text())
        if not isinstance(config, dict):
            raise ValueError(f"run {run_id}: config.yaml is not a mapping")
        return cls(run_id=run_id, tracking_uri=uri, config=config, tags=dict(run.data.tags), strict=strict)

    def config_with(self, overrides: list[str] | None = None):
        """The recorded config with `--set` overrides applied, validated (ConfigError naming the key);
        relative paths in overrides resolve against the current directory, as in `load_config`."""
        from ..config import apply_overrides, config_from_dict, parse_overrides, resolve_paths

        raw = apply_overrides(self.config, parse_overrides(overrides))
        return resolve_paths(config_from_dict(raw, f"run {self.run_id}'s config.yaml"))

    def check(self, fingerprints: dict[str, DataFingerprint]) -> list[str]:
        """Compare code, environment and data now with the record; log what differs. A different
        data fingerprint raises DataMismatchError under `strict`. Returns the differences."""
        current = {**code_tags(provenance.code_version()),
                   **{f"{PREFIX}env.{k}": _str(v) for k, v in provenance.environment().items() if v is not None}}
        for split, fp in fingerprints.items():
            current.update(fp.tags(split))
        if not any(k.startswith(f"{PREFIX}data.") for k in self.tags):
            if self.strict:
                raise DataMismatchError(f"--strict: run {self.run_id} has no data fingerprint recorded, so the "
                                        f"data cannot be checked")
            log.warning("run %s has no data fingerprint recorded (logged before ssd-ray recorded them): "
                        "the data cannot be compared", self.run_id)
        differs = describe_differences(self.tags, current)
        if not differs:
            log.info("re-running %s: code, environment and data fingerprints match the record", self.run_id)
            return []
        data = data_differences(self.tags, current)
        if data and self.strict:
            raise DataMismatchError(f"--strict: the data differs from run {self.run_id}'s:\n  " + "\n  ".join(data))
        log.warning("re-running %s; differences from its record:\n  %s", self.run_id, "\n  ".join(differs))
        return differs
