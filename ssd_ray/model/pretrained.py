"""Load ImageNet VGG16 weights into an SSD's VGG backbone (`model.pretrained`), from either file:

* torchvision's `vgg16` state dict (no BN; `features.N`, `classifier.N`). fc6/fc7 become conv6/conv7
  by decimation, as the SSD paper's `VGG_ILSVRC_16_layers_fc_reduced` did: fc6 `[4096, 512*7*7]` ->
  `[4096,512,7,7][::4, :, ::3, ::3]` = `[1024,512,3,3]` (every 3rd spatial tap, which is why conv6 is
  dilated 6 = 2 (pool5 removed stride) * 3), fc7 `[4096,4096][::4, ::4]`. Input normalisation: ssd-ray's.
* ssd.pytorch's `vgg16_reducedfc.pth`: the state dict of its `vgg` ModuleList (`N.weight`, `N.bias` at
  the same indices as `VGG16Backbone.vgg`, conv6/conv7 already reduced: 31, 33), converted from the
  Caffe model; it expects ssd.pytorch's normalisation (`pretrained_normalization` says which).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .vgg import CONV6_INDEX, CONV7_INDEX, VGG_CONV_INDICES, VGG16Backbone

FC6, FC7 = "classifier.0", "classifier.3"  # torchvision vgg16 `classifier` Linear layers


def _expected_keys() -> dict[str, tuple[int, ...] | None]:
    """torchvision key -> required shape (None: checked against the target conv instead)."""
    keys: dict[str, tuple[int, ...] | None] = {}
    for i in VGG_CONV_INDICES:
        keys[f"features.{i}.weight"] = None
        keys[f"features.{i}.bias"] = None
    keys[f"{FC6}.weight"], keys[f"{FC6}.bias"] = (4096, 512 * 7 * 7), (4096,)
    keys[f"{FC7}.weight"], keys[f"{FC7}.bias"] = (4096, 4096), (4096,)
    return keys


REDUCEDFC_KEYS: tuple[str, ...] = tuple(
    f"{i}.{kind}" for i in (*VGG_CONV_INDICES, CONV6_INDEX, CONV7_INDEX) for kind in ("weight", "bias"))


def is_reducedfc(sd: dict) -> bool:
    """ssd.pytorch's reducedfc layout (bare ModuleList indices) rather than torchvision's `features.N`."""
    return any(isinstance(k, str) and k.split(".")[0].isdigit() for k in sd)


def pretrained_normalization(path: str | Path) -> str:
    """The input normalisation a `model.pretrained` file's weights expect: "ssd_pytorch" for
    vgg16_reducedfc.pth, "ssd_ray" for torchvision's vgg16 (ImageNet mean/std on RGB / 255)."""
    path = Path(path)
    try:  # memory-mapped: only the key names are needed (legacy-format files load in full)
        sd = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception:  # noqa: BLE001 - _read_state_dict below reports what is wrong with the file
        sd = _read_state_dict(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict (dict of tensors), got {type(sd).__name__}")
    return "ssd_pytorch" if is_reducedfc(sd) else "ssd_ray"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights file not found: {path}")
    try:
        sd = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a torch state-dict file loadable with weights_only=True ({e})") from e
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict (dict of tensors), got {type(sd).__name__}")
    return sd


@torch.no_grad()
def load_vgg16_imagenet(ssd: nn.Module, path: str | Path) -> None:
    """Copy conv1_1..conv5_3 and the decimated fc6/fc7 from a torchvision `vgg16` state dict at `path`
    into `ssd.backbone` (a `VGG16Backbone`), or conv1_1..conv7 as they are from ssd.pytorch's
    vgg16_reducedfc.pth (told apart by the key names). Extras, L2Norm and heads are left as initialised.

    Raises ValueError naming the key on a missing key or a wrong shape.
    """
    path = Path(path)
    backbone = getattr(ssd, "backbone", None)
    if not isinstance(backbone, VGG16Backbone):
        raise ValueError(f"load_vgg16_imagenet needs an SSD with the vgg16 backbone, got {type(backbone).__name__}")
    sd = _read_state_dict(path)
    if is_reducedfc(sd):
        _load_reducedfc(backbone, sd, path)
        return
    expected = _expected_keys()
    # Check every key before copying anything, so a bad file leaves the model untouched.
    for key, shape in expected.items():
        if key not in sd:
            n_missing = sum(k not in sd for k in expected)
            bn = "features.1.running_mean" in sd
            hint = " (this looks like vgg16_bn; use torchvision vgg16 without batch norm)" if bn else ""
            raise ValueError(
                f"{path}: key {key!r} missing from the VGG16 state dict "
                f"({n_missing} of {len(expected)} expected keys missing){hint}"
            )
        if not isinstance(sd[key], torch.Tensor):
            raise ValueError(f"{path}: {key!r} is a {type(sd[key]).__name__}, not a tensor")
        if shape is None:
            idx, kind = key.split(".")[1:]
            shape = tuple(getattr(backbone.vgg[int(idx)], kind).shape)
        if tuple(sd[key].shape) != shape:
            raise ValueError(f"{path}: {key!r} has shape {list(sd[key].shape)}, expected {list(shape)}")

    for i in VGG_CONV_INDICES:
        backbone.vgg[i].weight.copy_(sd[f"features.{i}.weight"])
        backbone.vgg[i].bias.copy_(sd[f"features.{i}.bias"])
    conv6, conv7 = backbone.vgg[CONV6_INDEX], backbone.vgg[CONV7_INDEX]
    conv6.weight.copy_(sd[f"{FC6}.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3])
    conv6.bias.copy_(sd[f"{FC6}.bias"][::4])
    conv7.weight.copy_(sd[f"{FC7}.weight"].view(4096, 4096, 1, 1)[::4, ::4])
    conv7.bias.copy_(sd[f"{FC7}.bias"][::4])


@torch.no_grad()
def _load_reducedfc(backbone: VGG16Backbone, sd: dict, path: Path) -> None:
    """ssd.pytorch's vgg16_reducedfc.pth: the reference's `vgg` ModuleList state dict, copied as it is."""
    own = {k: v for k, v in backbone.vgg.state_dict().items()}
    missing = [k for k in REDUCEDFC_KEYS if k not in sd]
    unexpected = sorted(k for k in sd if k not in own)
    if missing or unexpected:
        raise ValueError(f"{path}: not ssd.pytorch's vgg16_reducedfc layout: missing keys {missing[:6]}"
                         f"{' ...' if len(missing) > 6 else ''}, unexpected keys {unexpected[:6]}"
                         f"{' ...' if len(unexpected) > 6 else ''}")
    for key in REDUCEDFC_KEYS:
        if not isinstance(sd[key], torch.Tensor):
            raise ValueError(f"{path}: {key!r} is a {type(sd[key]).__name__}, not a tensor")
        if sd[key].shape != own[key].shape:
            raise ValueError(f"{path}: {key!r} has shape {list(sd[key].shape)}, expected {list(own[key].shape)}")
    backbone.vgg.load_state_dict({k: sd[k] for k in REDUCEDFC_KEYS}, strict=True)
