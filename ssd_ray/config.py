"""Configuration: YAML files validated into typed pydantic models, read in one place.

Names follow the classic ssd.pytorch recipe (`num_classes`, `lr_steps`, `max_iter`, `feature_maps`,
`min_dim`, `steps`, `min_sizes`, `max_sizes`, `aspect_ratios`, `variance`, `clip`, `name`) so users of
that code recognise them. Every section rejects unknown keys; every error names the key and value.

    cfg = load_config("configs/voc300.yaml", overrides=["train.lr=1e-3", "loss.neg_pos=4"])
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

__all__ = [
    "ConfigError", "Config", "DataConfig", "ShapesConfig", "AugmentConfig", "ModelConfig",
    "PriorsConfig", "LossConfig", "PostprocessConfig", "EvaluationConfig", "POSTPROCESS_PRESETS", "TrainConfig", "RayConfig", "MlflowConfig",
    "load_config", "parse_overrides", "apply_overrides", "config_to_dict", "config_from_dict",
]


class ConfigError(ValueError):
    """A configuration that cannot run. The message names the file, key and offending value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------- data
class ShapesConfig(_Section):
    """Synthetic shapes data, generated into `data.root` on first use when absent."""

    train: int = Field(2000, ge=1)
    val: int = Field(300, ge=1)
    seed: int = 0
    size: int = Field(256, ge=64)


def _check_extra_entry(entry: dict) -> dict:
    # Imported here, and albumentations only inside it: configs without extras never load it.
    from .data.extra_augment import check_entry

    return check_entry(entry)


# One albumentations transform: `{name: GaussianBlur, p: 0.2, blur_limit: [3, 5]}` or A.to_dict's form.
ExtraTransform = Annotated[dict[str, Any], AfterValidator(_check_extra_entry)]


class AugmentConfig(_Section):
    """The SSD training augmentation; each step can be switched off for lighter recipes.

    `extra`: albumentations transforms applied to the source image before the SSD steps, validated
    strictly here (ssd_ray/data/extra_augment.py says how boxes and randomness are handled).
    """

    photometric: bool = True
    expand: bool = True
    max_expand_ratio: float = Field(4.0, ge=1.0)
    crop: bool = True
    mirror: bool = True
    extra: list[ExtraTransform] = Field(default_factory=list)
    # A box keeping less than this share of its area inside the image after an extra transform is dropped.
    extra_min_visibility: float = Field(0.5, ge=0.0, le=1.0)


class DataConfig(_Section):
    format: Literal["voc", "coco"] = "voc"
    root: str  # a local folder or a URI (s3://bucket/VOCdevkit, gs://...; ssd_ray/storage.py)
    # VOC: "2007/trainval" entries (year/split, 07+12 is two entries); COCO: split names ("train2017").
    train_sets: list[str] = Field(default_factory=lambda: ["2007/trainval", "2012/trainval"])
    val_sets: list[str] = Field(default_factory=lambda: ["2007/test"])
    # The classes to train, in label order; others are left out (COCO: category names of the JSON).
    # None: every category of the JSON (COCO); the 20 Pascal classes (VOC: only when the annotations
    # use Pascal names, else the run stops and lists the names found).
    classes: list[str] | None = None
    keep_difficult: bool = False  # for training; evaluation always reads them and ignores them
    keep_empty: bool = True  # images without objects stay in training as negatives
    max_boxes: int = Field(100, ge=1)  # ground truth per image in a batch (padding width); extras dropped
    # A run stops before training when more than this share of the objects or of the images is dropped
    # for reasons meaning the data and the config disagree (unknown class, unreadable or malformed
    # entries; not boxes clipped to the image, not classes left out by a data.classes subset).
    bad_records_limit: float = Field(0.05, ge=0.0, le=1.0)
    accept_bad_records: bool = False  # go on anyway, without the dropped records (docs/data.md)
    synthetic: ShapesConfig | None = None
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # Decoded training images each augmentation actor keeps in memory, in MB (0: none). A training set
    # that fits is decoded once instead of once per epoch; past the budget images are decoded each time.
    decode_cache_mb: int = Field(0, ge=0)

    @field_validator("train_sets", "val_sets")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one set")
        return v

    @model_validator(mode="after")
    def _voc_sets_have_years(self) -> "DataConfig":
        if self.format == "voc":
            for s in self.train_sets + self.val_sets:
                year, _, split = s.partition("/")
                if not year or not split:
                    raise ValueError(f"VOC sets are written 'year/split' (e.g. '2007/trainval'), got {s!r}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes has duplicates: {self.classes}")
        if self.classes is not None and (not self.classes or not all(c.strip() for c in self.classes)):
            raise ValueError(f"classes must be a list of non-empty names, got {self.classes}")
        return self

    @model_validator(mode="after")
    def _synthetic_is_local(self) -> "DataConfig":
        from .storage import is_uri

        if self.synthetic is not None and is_uri(self.root):
            raise ValueError(f"data.synthetic writes generated shapes data into data.root, which must then be a "
                             f"local folder, not {self.root!r}; generate it locally (python -m pipelines.make_shapes) "
                             f"and upload it, then drop `synthetic:` from the config")
        return self

    def voc_image_sets(self, which: Literal["train", "val"]) -> list[tuple[str, str]]:
        sets = self.train_sets if which == "train" else self.val_sets
        return [tuple(s.split("/", 1)) for s in sets]  # type: ignore[misc]


# ------------------------------------------------------------------------------- model, priors
class ModelConfig(_Section):
    backbone: Literal["vgg16", "light"] = "vgg16"
    min_dim: int = Field(300, ge=32)
    # Counts the background. Derived from the dataset's classes when absent, checked when present.
    num_classes: int | None = Field(None, ge=2)
    # Local file, never downloaded: torchvision's `vgg16` state dict or ssd.pytorch's vgg16_reducedfc.pth.
    pretrained: str | None = None
    width: int = Field(24, ge=2)  # base channel width of the light backbone
    # The light backbone's first conv (3 -> stem_width, stride 2, the model's costliest layer per
    # multiply-add on CPU): its channels (None: width // 2) and whether BatchNorm follows it.
    stem_width: int | None = Field(None, ge=1)
    stem_norm: bool = True
    # How images become the network's input (ssd_ray/model/normalize.py). "auto": the one the starting
    # weights expect (--init-from's model file, ssd.pytorch's reducedfc VGG), else ssd-ray's own.
    normalization: Literal["auto", "ssd_ray", "ssd_pytorch", "torchvision"] = "auto"


class PriorsConfig(_Section):
    feature_maps: list[int]
    steps: list[float]
    min_sizes: list[float]
    max_sizes: list[float]
    aspect_ratios: list[list[int]]
    variance: tuple[float, float] = (0.1, 0.2)
    # true: clamp (cx, cy, w, h) to [0, 1] (ssd.pytorch); "size": clamp w and h only (torchvision's
    # DefaultBoxGenerator, whose last-column centres pass 1.0); false: no clamp.
    clip: bool | Literal["size"] = True

    @field_validator("variance")
    @classmethod
    def _positive_variance(cls, v: tuple[float, float]) -> tuple[float, float]:
        if any(x <= 0 for x in v):
            raise ValueError(f"variance must be > 0, got {list(v)}")
        return v

    @field_validator("feature_maps", "steps", "min_sizes", "max_sizes")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError(f"must be a non-empty list of positive numbers, got {v}")
        return v

    @model_validator(mode="after")
    def _lengths_agree(self) -> "PriorsConfig":
        lengths = {k: len(getattr(self, k)) for k in
                   ("feature_maps", "steps", "min_sizes", "max_sizes", "aspect_ratios")}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"prior lists must have one entry per feature map, got lengths {lengths}")
        for k, (lo, hi) in enumerate(zip(self.min_sizes, self.max_sizes)):
            if hi < lo:
                raise ValueError(f"max_sizes[{k}]={hi} is smaller than min_sizes[{k}]={lo}")
        return self

    @property
    def boxes_per_location(self) -> list[int]:
        """(s,s), (s',s'), then each aspect ratio and its reciprocal."""
        return [2 + 2 * len(ar) for ar in self.aspect_ratios]

    @property
    def num_priors(self) -> int:
        return sum(f * f * b for f, b in zip(self.feature_maps, self.boxes_per_location))


# ------------------------------------------------------------------------------ loss, detection
class LossConfig(_Section):
    overlap_thresh: float = Field(0.5, gt=0.0, lt=1.0)
    neg_pos: float = Field(3.0, ge=1.0)


# Post-processing of published models: `postprocess.preset` fills the keys a config leaves out.
POSTPROCESS_PRESETS: dict[str, dict[str, Any]] = {
    # ssd.pytorch's Detect (with a per-image cap: the reference's own cap never takes effect).
    "reference": {"conf_thresh": 0.01, "nms_thresh": 0.45, "top_k": 200, "nms_top_k": 200, "clip": "after_nms"},
    # torchvision SSD.postprocess_detections: boxes clipped to the image, 400 candidates per class.
    "torchvision": {"conf_thresh": 0.01, "nms_thresh": 0.45, "top_k": 200, "nms_top_k": 400, "clip": "before_nms"},
}


class PostprocessConfig(_Section):
    preset: Literal["reference", "torchvision"] = "reference"
    conf_thresh: float = Field(0.01, ge=0.0, lt=1.0)
    nms_thresh: float = Field(0.45, gt=0.0, le=1.0)
    top_k: int | None = Field(200, ge=1)  # detections per image; null: no cap
    nms_top_k: int = Field(200, ge=1)  # candidates per class entering NMS
    # Boxes clipped to the image: before NMS (torchvision), after it (the output only), or not at all.
    clip: Literal["after_nms", "before_nms", "none"] = "after_nms"

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset", "reference")
            if preset in POSTPROCESS_PRESETS:
                data = {**POSTPROCESS_PRESETS[preset], **data}
        return data


# ---------------------------------------------------------------------------------- evaluation
class EvaluationConfig(_Section):
    """How detections are scored (ssd_ray/evaluate/protocol.py); recorded in every metrics JSON.

    "ssd_ray": VOC area mAP@0.5 (the headline), VOC07 11-point mAP and COCO AP (official, from the
    annotation file, on COCO-format data). "voc07": ssd.pytorch's eval.py (its post-processing, pixel
    conventions and VOC07 11-point mAP). "coco": COCOeval on the dataset's annotation file only.
    """

    protocol: Literal["ssd_ray", "voc07", "coco"] = "ssd_ray"


# ------------------------------------------------------------------------------------- train
class TrainConfig(_Section):
    batch_size: int = Field(32, ge=1)  # global: split evenly across workers
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["steps", "cosine"] = "steps"
    lr: float = Field(1e-3, gt=0.0)  # for batch_size; scale linearly when changing it
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    no_bias_decay: bool = False
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    lr_steps: list[int] = Field(default_factory=lambda: [80000, 100000, 120000])
    max_iter: int = Field(120000, ge=1)
    warmup_iters: int = Field(500, ge=0)
    warmup_factor: float = Field(1e-3, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)  # cosine floor as a fraction of lr
    grad_clip: float | None = Field(None, gt=0.0)
    # > 0: keep an exponential moving average of the weights (ramped decay, ssd_ray/train/ema.py) and
    # evaluate, keep as best and export it instead of the raw weights; 0 = off.
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    checkpoint_every: int = Field(5000, ge=1)
    eval_every: int = Field(10000, ge=1)
    log_every: int = Field(20, ge=1)
    seed: int = 0
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # CUDA only; CPU always runs float32
    # NHWC activations: faster convs with cuDNN and with oneDNN on CPU (1.3x for the light model on 2 cores)
    channels_last: bool = True
    # torch.compile the network inside the training step (ssd_ray/train/step.py); the first steps
    # compile (logged, kept out of img/s). Pays on GPUs (1.38x on one H200); see docs/benchmarks.md for CPU.
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    max_bad_steps: int = Field(10, ge=1)  # consecutive non-finite losses before the run stops
    eval_batch_size: int = Field(32, ge=1)
    # Reproducible data order (Ray Data preserve_order): exact resume on one worker, a little slower.
    preserve_order: bool = False
    # Fault injection for tests: iterations whose loss is replaced by NaN, and a sleep after every
    # step (a slow accelerator, so multi-node tests can preempt and resize a run mid-way).
    inject_nan_at: list[int] = Field(default_factory=list)
    inject_step_delay_s: float = Field(0.0, ge=0.0)

    @field_validator("lr_steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])) or any(s <= 0 for s in v):
            raise ValueError(f"lr_steps must be positive and increasing, got {v}")
        return v


class RayConfig(_Section):
    # An int (0 runs the loop in the driver process, without persisted checkpoints), or [min, max]:
    # an elastic group that Ray Train resizes between min and max as nodes come and go.
    num_workers: int | tuple[int, int] = 1
    elastic_resize_interval_s: float = Field(60.0, gt=0.0)  # how often Ray looks for room to grow the group
    preemption_check_every: int = Field(10, ge=1)  # iterations between preemption polls (a barrier)
    max_preemption_failures: int = Field(-1, ge=-1)  # restarts after node preemptions; -1 = unbounded
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    # Custom Ray resources each train worker asks for besides CPUs/GPUs, e.g. {train_slot: 1} where only
    # train nodes advertise `train_slot`. Elastic CPU groups need it (Ray 2.60 sizes an elastic group by
    # resources, label selectors aside: docs/cluster.md "Spot instances").
    worker_resources: dict[str, float] = Field(default_factory=dict)
    data_cpus: float = Field(1.0, gt=0.0)  # CPUs each data (decode + augment) actor asks for
    data_concurrency: int | None = Field(None, ge=1)  # augmentation actors; None: autoscale from 1
    address: str | None = None  # None: RAY_ADDRESS or a local Ray
    # A local Ray's dashboard (127.0.0.1); None: on, except in local mode (num_workers 0), which has no
    # Train controller asking its state API and where its processes compete with training for the cores.
    dashboard: bool | None = None
    # Checkpoints, outputs/, MLflow db and artifacts live under here; a local folder or a bucket URI
    # (s3://bucket/runs: then mlflow.tracking_uri is required, see ssd_ray/storage.py).
    storage_path: str = "runs"
    max_failures: int = Field(2, ge=0)
    torch_threads: int | None = Field(None, ge=1)  # intra-op threads per worker; None: cpus_per_worker
    # Placement on clusters: Ray label selectors for data operators and train workers.
    data_label_selector: dict[str, str] | None = None
    train_label_selector: dict[str, str] | None = None

    @field_validator("num_workers", mode="before")
    @classmethod
    def _worker_range(cls, v):
        if isinstance(v, str) and "-" in v:  # the CLI's "4-8"
            lo, _, hi = v.partition("-")
            v = [lo.strip(), hi.strip()]
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError(f"num_workers is an int or [min, max], got {list(v)}")
            lo, hi = (int(x) for x in v)
            if not 1 <= lo <= hi:
                raise ValueError(f"num_workers [min, max] needs 1 <= min <= max, got [{lo}, {hi}]")
            return (lo, hi) if lo != hi else lo
        if isinstance(v, int) and v < 0:
            raise ValueError(f"num_workers must be >= 0, got {v}")
        return v

    @field_validator("worker_resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"worker_resources holds custom resources; {name} comes from "
                                 f"{'cpus_per_worker' if name == 'CPU' else 'use_gpu'}")
            if amount <= 0:
                raise ValueError(f"worker_resources.{name} must be > 0, got {amount}")
        return v

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def elastic(self) -> bool:
        return self.min_workers != self.max_workers


class MlflowConfig(_Section):
    enabled: bool = True
    tracking_uri: str | None = None  # None: sqlite:///<storage_path>/mlflow.db
    experiment: str | None = None  # None: the config's name
    # The driver logs the final and best weights as MLflow models ("model", "best_model": pyfunc, see
    # ssd_ray/mlflow_model.py); with a name, the best is also registered (a new version per run).
    log_models: bool = True
    registered_model_name: str | None = Field(None, min_length=1)
    # The data fingerprint hashes the parsed records; true also hashes every image file (reads them all).
    fingerprint_image_bytes: bool = False


# ---------------------------------------------------------------------------------- top level
class Config(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    priors: PriorsConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        t, r = self.train, self.ray
        # Ray's streaming split gives every rank an equal share, so the global batch must divide by
        # every worker count the group may have (elastic groups: each count in [min, max]).
        bad = [n for n in range(max(1, r.min_workers), r.max_workers + 1) if t.batch_size % n]
        if bad:
            raise ValueError(f"train.batch_size={t.batch_size} must divide by every worker count in "
                             f"ray.num_workers={list(r.num_workers) if r.elastic else r.num_workers} "
                             f"(it is the global batch); it does not divide by {bad}")
        if t.warmup_iters >= t.max_iter:
            raise ValueError(f"train.warmup_iters={t.warmup_iters} must be < train.max_iter={t.max_iter}")
        if self.evaluation.protocol == "coco" and self.data.format != "coco":
            raise ValueError(f"evaluation.protocol=coco scores against the dataset's COCO annotation file, "
                             f"but data.format is {self.data.format!r}; use protocol ssd_ray or voc07")
        from .storage import is_uri

        if is_uri(r.storage_path) and self.mlflow.enabled and not self.mlflow.tracking_uri:
            raise ValueError(f"ray.storage_path={r.storage_path!r} is in object storage, where MLflow's default "
                             f"SQLite store cannot live: set mlflow.tracking_uri to a tracking server every node "
                             f"reaches (e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db "
                             f"--artifacts-destination {r.storage_path.rstrip('/')}/mlartifacts`, docs/cluster.md), "
                             f"or mlflow.enabled=false")
        return self

    def with_num_classes(self, class_names: list[str]) -> "Config":
        """Derive `model.num_classes` from the dataset (+1 background) or check the configured one."""
        derived = len(class_names) + 1
        if self.model.num_classes is not None and self.model.num_classes != derived:
            raise ConfigError(
                f"model.num_classes={self.model.num_classes} disagrees with the dataset: "
                f"{len(class_names)} classes + background = {derived}")
        out = self.model_copy(deep=True)
        out.model.num_classes = derived
        return out


# ------------------------------------------------------------------------------- loading
def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """`["train.lr=1e-3", "data.classes=[a, b]"]` -> [("train.lr", 0.001), ...]; values parse as YAML."""
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
        out.append((key.strip(), value))
    return out


def apply_overrides(raw: dict, overrides: list[tuple[str, Any]]) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides:
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return raw


def _format_error(e: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML config; `overrides` are `key.sub=value` strings applied first.

    Relative `data.root`, `model.pretrained` and `ray.storage_path` resolve against the current
    directory at load time, because Ray workers run elsewhere; URIs (`s3://bucket/VOCdevkit`) stay.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {path}: {e}") from None
    raw = apply_overrides(raw, parse_overrides(overrides))
    cfg = config_from_dict(raw, str(path))
    return resolve_paths(cfg)


def resolve_paths(cfg: Config) -> Config:
    cfg = cfg.model_copy(deep=True)
    from .storage import absolute  # URIs (s3://bucket/runs) stay as they are

    cfg.data.root = absolute(cfg.data.root)
    cfg.ray.storage_path = absolute(cfg.ray.storage_path)
    if cfg.model.pretrained:
        cfg.model.pretrained = str(Path(cfg.model.pretrained).expanduser().resolve())
    _check_storage_outside_data(cfg.data.root, cfg.ray.storage_path)
    return cfg


def _check_storage_outside_data(root: str, storage_path: str) -> None:
    """Runs, checkpoints and MLflow files go under ray.storage_path; ssd-ray writes nothing inside a
    user's data folder, so the two must not nest (docs/data.md)."""
    r, s = root.rstrip("/") + "/", storage_path.rstrip("/") + "/"
    if s.startswith(r):
        raise ConfigError(f"ray.storage_path {storage_path} lies inside data.root {root}: ssd-ray never writes "
                          f"into the data folder; set ray.storage_path to a folder outside it "
                          f"(e.g. --set ray.storage_path=/elsewhere/runs)")


def config_to_dict(cfg: Config) -> dict:
    """Plain-Python form (YAML/JSON safe); `config_from_dict(config_to_dict(c)) == c`."""
    return cfg.model_dump(mode="json")
