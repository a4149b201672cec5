"""Checkpoint and model files: what they hold and how they load (always `weights_only=True`).

Two kinds of file, both plain dicts of tensors and Python values (no pickled modules):

- a *training checkpoint* (`checkpoint.pt` in a Ray Train checkpoint folder): model, optimizer,
  scheduler, iteration, RNG state, resolved config, class names, input normalisation, MLflow run id,
  and with `train.ema_decay` the weight average (`ema`: {"model", "updates", "decay"});
- a *model file* (`model.pt`): weights + config + class names + normalisation, everything
  `load_model` needs to rebuild the network for prediction, evaluation or export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .postprocess import DetectArgs

if TYPE_CHECKING:
    from .config import Config

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FORMAT = "ssd-ray/model/1"


def normalization_spec() -> dict[str, Any]:
    """How inputs are prepared (travels with every checkpoint, so consumers need no guessing)."""
    from .model import IMAGENET_MEAN, IMAGENET_STD

    return {"channels": "RGB", "dtype": "uint8", "scale": 1 / 255, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "resize": "square, cv2.INTER_LINEAR"}


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save(state: dict, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-write never leaves a truncated file where a good one was."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means the same thing to the user
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e


def inference_weights(state: dict) -> dict:
    """The weights to predict with: the EMA when the checkpoint has one (it is what was evaluated), else the raw ones."""
    ema = state.get("ema")
    return ema["model"] if ema else state["model"]


def model_state(model: nn.Module, config: dict, class_names: list[str]) -> dict:
    """A model file's contents for a live model."""
    return {"format": MODEL_FORMAT, "model": unwrap(model).state_dict(), "config": config,
            "class_names": list(class_names), "normalization": normalization_spec()}


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
    normalization: dict  # how inputs are prepared (`normalization_spec()` for ssd-ray's own models)
    detect_args: DetectArgs  # the model's post-processing (thresholds + its box variance)
    source: str  # the file it came from

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

    state = load(path, map_location="cpu")
    for key in ("model", "config", "class_names"):
        if key not in state:
            raise ValueError(f"{path} is not an ssd-ray checkpoint or model file (no {key!r})")
    cfg = config_from_dict(state["config"], source=str(path))
    cfg.model.pretrained = None  # the weights come from the file, not from ImageNet
    model = build_ssd(cfg.model, cfg.priors)
    model.load_state_dict(inference_weights(state))
    model.to(device).eval()
    return LoadedModel(
        model=model, priors=priors_from_config(cfg.model, cfg.priors).to(device), config=cfg,
        class_names=list(state["class_names"]), normalization=dict(state.get("normalization") or normalization_spec()),
        detect_args=DetectArgs.from_config(cfg.postprocess, cfg.priors.variance), source=str(path))


def load_weights_for_finetune(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """`--init-from`: copy every weight whose name and shape agree; return the names left as initialised.

    Heads whose class count differs (conf layers) keep their fresh initialisation.
    """
    state = inference_weights(load(path))
    own = unwrap(model).state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    unwrap(model).load_state_dict(compatible, strict=False)
    return sorted(set(own) - set(compatible))
