"""The sweep YAML: a base training config, overrides for it, a search space over dotted config keys,
and the Tune / ASHA settings. Validated with pydantic (unknown keys refused, errors name the key).

    name: shapes-sweep
    base: shapes.yaml                 # relative to this file, else to the current directory
    overrides: {train.warmup_iters: 30}
    search_space:
      train.lr: {type: loguniform, low: 1.0e-3, high: 1.5e-2}
      loss.neg_pos: {type: choice, values: [2, 3, 5]}
    num_samples: 4
    budget: {max_iter: 200, eval_every: 50}   # sets train.max_iter, eval_every, checkpoint_every
    asha: {grace_period: 50, reduction_factor: 2}

`load_sweep(path, overrides)` returns the spec and the base config (as a raw dict with the overrides
and budget applied) from which `trial_config(base_raw, sampled)` builds each trial's `Config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import (Config, ConfigError, _format_error, apply_overrides, config_from_dict, config_to_dict,
                      parse_overrides, resolve_paths)

__all__ = ["Budget", "Asha", "TuneSpec", "LoadedSweep", "load_sweep", "trial_config", "param_space",
           "sampled_values", "rungs", "CONFIG_SECTIONS"]

# `--set` keys starting with one of these go to the base training config, the rest to the sweep YAML.
CONFIG_SECTIONS = tuple(k for k in Config.model_fields if k != "name")

# Which way each metric improves: a sweep that maximises val_loss is a typo, not a choice.
METRIC_MODES = {"val_mAP": "max", "val_mAP_07": "max", "val_loss": "min"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FloatRange(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low={self.low} must be < high={self.high}")
        return self

    def candidates(self) -> list:
        return [self.low, self.high]


class LogUniform(_FloatRange):
    """Float sampled uniformly in log space from [low, high]; both > 0."""

    type: Literal["loguniform"]
    low: float = Field(gt=0.0)

    def to_tune(self):
        from ray import tune

        return tune.loguniform(self.low, self.high)


class Uniform(_FloatRange):
    """Float sampled uniformly from [low, high]."""

    type: Literal["uniform"]

    def to_tune(self):
        from ray import tune

        return tune.uniform(self.low, self.high)


class RandInt(_Strict):
    """Integer sampled uniformly from [low, high) — `high` excluded, as in `ray.tune.randint`."""

    type: Literal["randint"]
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low={self.low} must be < high={self.high} (high is excluded)")
        return self

    def candidates(self) -> list:
        return [self.low, self.high - 1]

    def to_tune(self):
        from ray import tune

        return tune.randint(self.low, self.high)


class Choice(_Strict):
    """One of `values`, each equally likely."""

    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)

    def candidates(self) -> list:
        return list(self.values)

    def to_tune(self):
        from ray import tune

        return tune.choice(list(self.values))


Domain = Annotated[Union[LogUniform, Uniform, RandInt, Choice], Field(discriminator="type")]


class Budget(_Strict):
    """Per-trial iteration budget: every `eval_every` iterations the trial evaluates and reports."""

    max_iter: int = Field(ge=1)
    eval_every: int = Field(ge=1)

    @model_validator(mode="after")
    def _fits(self):
        if self.eval_every > self.max_iter:
            raise ValueError(f"eval_every={self.eval_every} exceeds max_iter={self.max_iter}: no report "
                             f"before the end, so ASHA could never stop a trial")
        return self


class Asha(_Strict):
    """ASHA: a trial reaching a rung (grace_period * reduction_factor^k iterations) with a metric in the
    worst 1 - 1/reduction_factor of the trials already seen there is stopped."""

    grace_period: int = Field(ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class TuneSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, Domain] = Field(min_length=1)
    num_samples: int = Field(ge=1)
    # Tune does not count Train's placement groups: this is the only guard against oversubscription.
    max_concurrent_trials: int = Field(1, ge=1)
    metric: Literal["val_mAP", "val_mAP_07", "val_loss"] = "val_mAP"
    mode: Literal["max", "min"] | None = None  # None: the metric's own direction
    budget: Budget
    asha: Asha
    seed: int = 0

    @field_validator("search_space")
    @classmethod
    def _dotted(cls, v: dict) -> dict:
        for key in v:
            if "." not in key:
                raise ValueError(f"{key!r}: search-space keys are dotted config keys such as 'train.lr'")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        natural = METRIC_MODES[self.metric]
        if self.mode is None:
            self.mode = natural
        elif self.mode != natural:
            raise ValueError(f"mode={self.mode!r} with metric={self.metric!r} would pick the worst trial "
                             f"({self.metric} improves with mode {natural!r})")
        if self.asha.grace_period > self.budget.max_iter:
            raise ValueError(f"asha.grace_period={self.asha.grace_period} exceeds budget.max_iter="
                             f"{self.budget.max_iter}")
        return self


@dataclass
class LoadedSweep:
    spec: TuneSpec
    source: str  # the sweep YAML's path
    base_path: str  # the resolved base training config
    base_raw: dict  # base YAML + overrides + budget, paths not yet resolved
    base: Config  # base_raw validated, paths resolved (the search space's keys left at base values)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} and {"train.lr": 1} both give {"train.lr": 1}: overrides may be written either way."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _field_exists(key: str) -> bool:
    """Whether a dotted key names a field of `Config` (through nested sections)."""
    model: Any = Config
    for part in key.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        ann = model.model_fields[part].annotation
        # `ShapesConfig | None` and the like: step into the model member of the union.
        members = getattr(ann, "__args__", None) or (ann,)
        model = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), ann)
    return True


def _budget_overrides(spec: TuneSpec) -> list[tuple[str, Any]]:
    b = spec.budget
    # Checkpoint with every report: reports without val metrics would give ASHA nothing to compare.
    return [("train.max_iter", b.max_iter), ("train.eval_every", b.eval_every),
            ("train.checkpoint_every", b.eval_every)]


def _find_base(base: str, sweep_path: Path) -> Path:
    candidates = [Path(base)] if Path(base).is_absolute() else [sweep_path.parent / base, Path.cwd() / base]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"invalid sweep config {sweep_path}:\n  base: file not found (looked at "
                      f"{', '.join(str(c) for c in candidates)})")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> LoadedSweep:
    """Read and validate a sweep YAML. `overrides` (`--set k=v`): keys under a training-config section
    (train., loss., data., ...) override the base config; others (num_samples, asha.grace_period, ...)
    the sweep YAML. Raises ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid sweep config {path}: the top level must be a mapping")
    sweep_sets, base_sets = [], []
    for key, value in parse_overrides(overrides):
        (base_sets if key.split(".")[0] in CONFIG_SECTIONS else sweep_sets).append((key, value))
    raw = apply_overrides(raw, sweep_sets)
    try:
        spec = TuneSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e, str(path))) from None

    base_path = _find_base(spec.base, path)
    try:
        base_yaml = yaml.safe_load(base_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {base_path}: {e}") from None
    if not isinstance(base_yaml, dict):
        raise ConfigError(f"invalid config {base_path}: the top level must be a mapping")
    budget = _budget_overrides(spec)
    budget_keys = {k for k, _ in budget}
    for where, keys in (("overrides.", _flatten(spec.overrides)), ("--set ", dict(base_sets)),
                        ("search_space.", spec.search_space)):
        for key in budget_keys & set(keys):
            raise ConfigError(f"invalid sweep config {path}:\n  {where}{key}: set by the sweep's budget "
                              f"(budget.max_iter, budget.eval_every); change those instead")
    base_raw = apply_overrides(base_yaml, list(_flatten(spec.overrides).items()) + base_sets + budget)
    source = f"{base_path} (with the overrides and budget of {path})"
    base = resolve_paths(config_from_dict(base_raw, source))
    # Trials run in their own working directories: hand them absolute paths, or every trial would
    # regenerate (or miss) the data and write runs beside itself.
    base_raw = config_to_dict(base)

    # Every key must exist and every value the space can produce must give a valid config, so a
    # typo fails now rather than in trial 3 after twenty minutes.
    for key, domain in spec.search_space.items():
        if not _field_exists(key):
            raise ConfigError(f"invalid sweep config {path}:\n  search_space.{key}: unknown config key")
        for value in domain.candidates():
            try:
                config_from_dict(apply_overrides(base_raw, [(key, value)]))
            except ConfigError as e:
                detail = str(e).split("\n", 1)[-1].strip()
                raise ConfigError(f"invalid sweep config {path}:\n  search_space.{key}: value {value!r} "
                                  f"gives an invalid config: {detail}") from None
    return LoadedSweep(spec, str(path), str(base_path), base_raw, base)


def _plain(v: Any) -> Any:
    """numpy scalars (what Tune samples) -> Python numbers, which pydantic and YAML take."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


def param_space(spec: TuneSpec) -> dict:
    """Tune's nested param space: {"train": {"lr": tune.loguniform(...)}, "loss": {...}}."""
    space: dict = {}
    for key, domain in spec.search_space.items():
        *parents, leaf = key.split(".")
        node = space
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = domain.to_tune()
    return space


def sampled_values(spec: TuneSpec, trial_config_dict: dict) -> dict[str, Any]:
    """A trial's nested Tune config -> {dotted key: plain value} for the search-space keys."""
    out = {}
    for key in spec.search_space:
        node: Any = trial_config_dict
        for part in key.split("."):
            node = node[part]
        out[key] = _plain(node)
    return out


def trial_config(base_raw: dict, sampled: dict[str, Any]) -> Config:
    """The full training config of one trial: base (+ overrides + budget) + sampled values, paths resolved."""
    items = [(k, _plain(v)) for k, v in sampled.items()]
    return resolve_paths(config_from_dict(apply_overrides(base_raw, items), f"trial config {sampled}"))


def rungs(spec: TuneSpec) -> list[int]:
    """ASHA's milestones for this budget (iterations at which trials are compared), ascending."""
    a, max_t = spec.asha, spec.budget.max_iter
    n = int(math.log(max_t / a.grace_period) / math.log(a.reduction_factor) + 1)
    return [int(a.grace_period * a.reduction_factor ** k) for k in range(n)]
