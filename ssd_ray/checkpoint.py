"""Checkpoint and model files: what they hold and how they load (always `weights_only=True`).

Two kinds of file, both plain dicts of tensors and Python values (no pickled modules):

- a *training checkpoint* (`checkpoint.pt` in a Ray Train checkpoint folder): model, optimizer,
  scheduler, iteration, RNG state, resolved config, class names, input normalisation, MLflow run id,
  and with `train.ema_decay` the weight average (`ema`: {"model", "updates", "decay"});
- a *model file* (`model.pt`): weights + config + class names + normalisation, everything
  `load_model` needs to rebuild the network for prediction, evaluation or export.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import CheckpointError, CheckpointNotFoundError
from .postprocess import DetectArgs

if TYPE_CHECKING:
    from .config import Config

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FORMAT = "ssd-ray/model/1"


def normalization_spec(name: str | None = None) -> dict[str, Any]:
    """How inputs are prepared (travels with every checkpoint, so consumers need no guessing).

    name: a config's `model.normalization` ("auto" or None: ssd-ray's own); see ssd_ray/model/normalize.py.
    """
    from .model.normalize import Normalization

    return Normalization.from_spec(None if name in (None, "auto") else name).to_dict()


def _config_normalization(config: dict) -> str | None:
    return ((config or {}).get("model") or {}).get("normalization")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save(state: dict, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-write never leaves a truncated file where a good one was. A URI
    (`s3://bucket/runs/.../model.pt`) is one upload (ssd_ray/storage.py), atomic by itself."""
    from . import storage

    if storage.is_uri(path):
        buf = io.BytesIO()
        torch.save(state, buf)
        storage.write_bytes(path, buf.getvalue())
        return
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The dict in a checkpoint or model file (a `checkpoint_*` folder means its `checkpoint.pt`).

    Always `weights_only=True`: tensors and plain values, never pickled code. Raises
    `CheckpointNotFoundError` for a missing path and `CheckpointError` saying what the file is (an
    empty file, a 6-byte text file, a JPEG image, a PyTorch file holding pickled objects, ...) when it
    is not one ssd-ray wrote; torch's own message (which suggests `weights_only=False`, unsafe and no
    help here) is not passed on. A URI (`s3://bucket/runs/<run>/checkpoint_00001000`) is read through
    ssd_ray/storage.py and checked the same way.
    """
    from . import storage

    if storage.is_uri(path):
        return _load_uri(str(path), map_location)
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_FILE).is_file():
            raise CheckpointNotFoundError(f"not an ssd-ray checkpoint or model file: {path} (a folder without "
                                          f"{CHECKPOINT_FILE}; give outputs/model.pt or a checkpoint_* folder)")
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint or model file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every unpickling failure means "not our file"
        raise CheckpointError(f"not an ssd-ray checkpoint or model file: {path} ({describe_file(path, e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"not an ssd-ray checkpoint or model file: {path} (a PyTorch file holding "
                              f"{_a(type(state).__name__)}, not ssd-ray's dict)")
    return state


def _load_uri(uri: str, map_location) -> dict:
    """`load` of an object-store file or `checkpoint_*` prefix: downloaded to a temporary file, loaded
    and checked like a local one; messages name the URI."""
    from . import storage

    uri = storage.absolute(uri)
    if storage.is_dir(uri):
        if not storage.is_file(storage.join(uri, CHECKPOINT_FILE)):
            raise CheckpointNotFoundError(f"not an ssd-ray checkpoint or model file: {uri} (a folder without "
                                          f"{CHECKPOINT_FILE}; give outputs/model.pt or a checkpoint_* folder)")
        uri = storage.join(uri, CHECKPOINT_FILE)
    if not storage.is_file(uri):
        raise CheckpointNotFoundError(f"checkpoint or model file not found: {uri}")
    with storage.local_copy(uri) as local:
        try:
            return load(local, map_location)
        except (CheckpointError, CheckpointNotFoundError) as e:
            raise type(e)(str(e).replace(local, uri)) from None


def require_model_keys(state: dict, path: str | os.PathLike) -> dict:
    """`state` if it has what `load_model` needs (weights, config, class names), else CheckpointError."""
    missing = [k for k in ("model", "config", "class_names") if k not in state]
    if not missing:
        return state
    tensors = sum(isinstance(v, torch.Tensor) for v in state.values())
    what = (f"a bare state dict of {tensors} tensors, without ssd-ray's config and class names"
            if state and tensors == len(state) else
            f"a PyTorch file holding a dict without {', '.join(repr(k) for k in missing)}")
    raise CheckpointError(f"not an ssd-ray checkpoint or model file: {path} ({what}). ssd-ray's model files "
                          f"are written by training (<run>/outputs/model.pt) or are its checkpoint_* folders")


def check_model_file(path: str | os.PathLike) -> dict:
    """Load `path` and check it is a model file or checkpoint `load_model` takes (CheckpointError if
    not). Entry points call it in the driver before any work, so a wrong file stops the run with one
    clear message instead of failing later inside a Ray worker."""
    return require_model_keys(load(path), path)


def describe_file(path: Path, error: BaseException | None = None) -> str:
    """What a file that torch could not load looks like: `"a 6-byte text file"`, `"an empty file"`, ..."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        if error is not None and "weights only" in str(error).lower():
            # A real PyTorch file whose pickle names classes or functions (torch.save(model), other
            # libraries' checkpoints): loading it would run that code, which ssd-ray never does.
            return (f"a {_size(size)} PyTorch file holding pickled Python objects, such as a whole model "
                    f"saved with torch.save(model); ssd-ray loads only tensors and plain values")
        kind = "ZIP archive"
    elif head.startswith(b"version https://git-lfs"):
        return f"a {_size(size)} Git LFS pointer; the real file was never fetched: run git lfs pull"
    elif head.startswith(b"\xff\xd8\xff"):
        kind = "JPEG image"
    elif head.startswith(b"\x89PNG"):
        kind = "PNG image"
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        kind = "Python pickle (not a PyTorch zip file)"
    elif path.suffix.lower() == ".onnx":
        kind = "ONNX model (run it with onnxruntime; ssd-ray loads its own .pt files)"
    elif _is_text(head):
        kind = "text file"
    else:
        kind = "binary file"
    return f"a {_size(size)} {kind}"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the 512-byte boundary is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def _size(n: int) -> str:
    if n < 1000:
        return f"{n}-byte"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def inference_weights(state: dict) -> dict:
    """The weights to predict with: the EMA when the checkpoint has one (it is what was evaluated), else the raw ones."""
    ema = state.get("ema")
    return ema["model"] if ema else state["model"]


def model_state(model: nn.Module, config: dict, class_names: list[str]) -> dict:
    """A model file's contents for a live model."""
    return {"format": MODEL_FORMAT, "model": unwrap(model).state_dict(), "config": config,
            "class_names": list(class_names), "normalization": normalization_spec(_config_normalization(config))}


def model_state_from_checkpoint(state: dict) -> dict:
    """A model file's contents for a training checkpoint: its inference weights and metadata."""
    return {"format": MODEL_FORMAT, "model": inference_weights(state), "config": state["config"],
            "class_names": list(state["class_names"]), "normalization": state["normalization"]}


@dataclass
class LoadedModel:
    """A model file or checkpoint rebuilt for inference: the one object every consumer takes.

    `Predictor`, export, the evaluation actors and `pipelines.evaluate` read the network, its input
    size, classes, normalisation and post-processing from here rather than from the raw state.
    """

    model: nn.Module  # eval mode, on the device it was loaded to
    priors: torch.Tensor  # [P,4] cxcywh relative, same device
    config: "Config"  # the configuration the weights were trained with (model.pretrained cleared)
    class_names: list[str]  # foreground classes; model label l is class_names[l - 1]
    normalization: dict  # how inputs are prepared (`Normalization.to_dict()`; see `input_normalization`)
    detect_args: DetectArgs  # the model's post-processing (thresholds + its box variance)
    source: str  # the file it came from

    @property
    def input_normalization(self):
        """The `ssd_ray.model.Normalization` every consumer passes to `normalize` for this model."""
        from .model.normalize import Normalization

        return Normalization.from_spec(self.normalization)

    @property
    def image_size(self) -> int:
        """Square input side `model.min_dim` the network was trained at."""
        return int(self.config.model.min_dim)

    @property
    def device(self) -> torch.device:
        return self.priors.device

    def detect_args_for(self, postprocess) -> DetectArgs:
        """This model's decoding with another config's thresholds (evaluation configs); the box
        variance stays the model's own, since it is a property of the weights."""
        return DetectArgs.from_config(postprocess, self.detect_args.variance)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained SSD from a model file or a training checkpoint (file or folder)."""
    from .config import config_from_dict
    from .model import build_ssd
    from .priors import priors_from_config

    state = require_model_keys(load(path, map_location="cpu"), path)
    cfg = config_from_dict(state["config"], source=str(path))
    cfg.model.pretrained = None  # the weights come from the file, not from ImageNet
    model = build_ssd(cfg.model, cfg.priors)
    model.load_state_dict(inference_weights(state))
    model.to(device).eval()
    return LoadedModel(
        model=model, priors=priors_from_config(cfg.model, cfg.priors).to(device), config=cfg,
        class_names=list(state["class_names"]), normalization=stored_normalization(state),
        detect_args=DetectArgs.from_config(cfg.postprocess, cfg.priors.variance), source=str(path))


def stored_normalization(state: dict) -> dict:
    """The normalisation dict of a loaded model file / checkpoint: its own entry (checked), else the
    config's `model.normalization`, else ssd-ray's (files older than the entry)."""
    from .model.normalize import Normalization

    spec = state.get("normalization") or _config_normalization(state.get("config"))
    return Normalization.from_spec(None if spec == "auto" else spec).to_dict()


def resolve_normalization(cfg: "Config", init_from: str | os.PathLike | None = None) -> "Config":
    """`cfg` with `model.normalization` decided before training starts (written into the run's config).

    "auto" becomes what the starting weights expect: the `--init-from` file's own normalisation
    (fine-tuning an imported model keeps it), else that of the `model.pretrained` file (ssd.pytorch's
    vgg16_reducedfc.pth: "ssd_pytorch"; torchvision's vgg16: "ssd_ray"), else ssd-ray's own. An explicit
    value that disagrees with the starting weights is a ConfigError: they would see inputs unlike
    those they were trained on.
    """
    from .config import ConfigError
    from .model.normalize import NORMALIZATION_NAMES, Normalization
    from .model.pretrained import pretrained_normalization

    found, source = None, None
    if init_from:
        found = Normalization.from_spec(stored_normalization(load(init_from))).name
        source = f"--init-from {init_from}"
    elif cfg.model.pretrained and cfg.model.backbone == "vgg16":
        found = pretrained_normalization(cfg.model.pretrained)
        source = f"model.pretrained {cfg.model.pretrained}"
    if found is not None and found not in NORMALIZATION_NAMES:
        raise ConfigError(f"{source} expects a custom input normalisation ({found!r}); ssd-ray trains with "
                          f"one of {list(NORMALIZATION_NAMES)}")
    wanted = cfg.model.normalization
    if wanted == "auto":
        resolved = found or "ssd_ray"
    elif found is not None and found != wanted:
        raise ConfigError(f"model.normalization={wanted} but {source} was trained with {found!r} inputs; "
                          f"set model.normalization={found} (or auto)")
    else:
        resolved = wanted
    out = cfg.model_copy(deep=True)
    out.model.normalization = resolved
    return out


def load_weights_for_finetune(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """`--init-from`: copy every weight whose name and shape agree; return the names left as initialised.

    Heads whose class count differs (conf layers) keep their fresh initialisation.
    """
    state = inference_weights(load(path))
    own = unwrap(model).state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    unwrap(model).load_state_dict(compatible, strict=False)
    return sorted(set(own) - set(compatible))
