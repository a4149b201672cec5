"""Import trained SSD weights from ssd.pytorch or torchvision into an ssd-ray model file.

    state = convert("torchvision", "ssd300_vgg16_coco-b556d3b4.pth", load_config("configs/coco300.yaml"))
    checkpoint.save(state, "tv_ssd300.pt")   # loadable by load_model, Predictor, evaluate, export, --init-from

Both sources build the network ssd-ray builds (VGG16 SSD300, ssd.pytorch's layer order), so the
import renames keys and, for the class head, picks rows; nothing is re-initialised. Every key of the
source and of the model is accounted for before anything is copied: a file that does not fit raises
`ConversionError` naming the missing and unexpected keys, or the key whose shape disagrees and what
the config expects, never a partial load.

ssd.pytorch (amdegroot/ssd.pytorch, `ssd.py`): `vgg.N` (same indices as `VGG16Backbone.vgg`),
`L2Norm.weight`, `extras.N`, `loc.N`, `conf.N`. Its COCO config has `num_classes: 201` (a known bug;
COCO has 80 classes + background); a model trained with it only ever learnt the first 81 outputs per
box (labels come from `coco_labels.txt`, COCO category-id order), which are kept. Input: its
normalisation (0..255 BGR minus (104, 117, 123), then RGB), post-processing: the reference's.

torchvision `ssd300_vgg16`: `backbone.features.N` (conv1_1..conv4_3), `backbone.scale_weight` (the
L2Norm scale), `backbone.extra.0.{1,3,5}` (conv5_x), `backbone.extra.0.7.{1,3}` (conv6/7),
`backbone.extra.{1..4}.{0,2}` (the extras), `head.{regression,classification}_head.module_list.N`.
Its class head has 91 slots indexed by COCO category id (0 = background, ten "N/A" ids never
used); ssd-ray's COCO classes are the 80 real categories in category-id order, so slot `id` becomes
class `label`. Dropping the N/A logits changes the softmax denominators by their (tiny, never
trained up) share. Input: torchvision's normalisation; post-processing: the `torchvision` preset.
Its default boxes are the reference's COCO priors (configs/coco300.yaml) except that only their sizes
are clamped to 1, not their centres (`priors.clip: size` in the model file), checked against
`DefaultBoxGenerator`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import MODEL_FORMAT
from .config import Config, config_to_dict
from .errors import CheckpointError

SOURCES: tuple[str, ...] = ("ssd.pytorch", "torchvision")
# ssd.pytorch's data/config.py prior sizes for SSD300 (feature maps, steps and ratios as configs/*300.yaml).
SSD_PYTORCH_PRIORS = {
    "voc": {"min_sizes": [30, 60, 111, 162, 213, 264], "max_sizes": [60, 111, 162, 213, 264, 315]},
    "coco": {"min_sizes": [21, 45, 99, 153, 207, 261], "max_sizes": [45, 99, 153, 207, 261, 315]},
}
SSD_PYTORCH_COCO_BUG_CLASSES = 201  # `coco['num_classes']` in ssd.pytorch's config
TORCHVISION_SLOTS = 91  # torchvision's COCO class slots: index = COCO category id, 0 = background
# torchvision ssd300_vgg16's DefaultBoxGenerator
TORCHVISION_ANCHORS = {"aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                       "scales": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], "steps": [8, 16, 32, 64, 100, 300]}
MAX_KEYS_SHOWN = 8


class ConversionError(CheckpointError):
    """A weights file that does not fit the source layout or the config (message says what and where)."""

    label = "convert error"


def _shown(keys) -> str:
    """The first keys, in the order given (the model's layer order, or the file's)."""
    keys = list(keys)
    more = f" ... ({len(keys)} in all)" if len(keys) > MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:MAX_KEYS_SHOWN]) + more


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (`weights_only=True`): a state dict, or one under "model" /
    "state_dict" (training checkpoints); a DataParallel "module." prefix is removed."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise ConversionError(f"cannot read {path} as a torch weights file (truncated or not a state dict?): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"{path}: not a state dict: entries that are not tensors: {_shown(not_tensors)}")
    if all(str(k).startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def _layout_hint(sd: dict, source: str) -> str:
    """What the file looks like when it is not what `--from` says."""
    if source != "torchvision" and any(k.startswith("backbone.features.") or k.startswith("head.") for k in sd):
        return " (this looks like a torchvision ssd300_vgg16 state dict: use --from torchvision)"
    if source != "ssd.pytorch" and any(k.startswith("vgg.") or k.startswith("L2Norm.") for k in sd):
        return " (this looks like an ssd.pytorch SSD state dict: use --from ssd.pytorch)"
    if any(k.startswith("backbone.vgg.") for k in sd):
        return " (this is already an ssd-ray state dict: load the model file directly)"
    if all(k.split(".")[0].isdigit() for k in sd):
        return (" (this looks like a VGG backbone alone, e.g. ssd.pytorch's vgg16_reducedfc.pth: use it as "
                "model.pretrained for training, not as a trained SSD)")
    return ""


# ------------------------------------------------------------------------------ key maps
def _ssd_pytorch_map(model) -> dict[str, str]:
    """ssd.pytorch key -> ssd-ray key, for the model the config builds."""
    m: dict[str, str] = {}
    for name, _ in model.named_parameters():
        if name.startswith("backbone.vgg."):
            m["vgg." + name[len("backbone.vgg."):]] = name
        elif name == "backbone.l2norm.weight":
            m["L2Norm.weight"] = name
        elif name.startswith("backbone.extras."):
            m["extras." + name[len("backbone.extras."):]] = name
        elif name.startswith(("loc.", "conf.")):
            m[name] = name
        else:  # a backbone ssd.pytorch does not have (the light one)
            raise ConversionError(f"the config's model ({model.backbone.__class__.__name__}) has no ssd.pytorch "
                                  f"counterpart for {name}; use model.backbone: vgg16")
    return m


def _torchvision_map(model) -> dict[str, str]:
    """torchvision ssd300_vgg16 key -> ssd-ray key (SSD300 only: torchvision publishes no SSD512)."""
    from .model.vgg import CONV6_INDEX, CONV7_INDEX

    backbone = model.backbone
    if getattr(backbone, "variant", None) != "ssd300":
        raise ConversionError("torchvision weights are SSD300 (ssd300_vgg16); the config builds "
                              f"{getattr(backbone, 'variant', type(backbone).__name__)}: use configs/coco300.yaml")
    m: dict[str, str] = {"backbone.scale_weight": "backbone.l2norm.weight"}
    conv5 = {24: 1, 26: 3, 28: 5}  # ssd-ray vgg index -> index inside torchvision's extra.0
    for kind in ("weight", "bias"):
        for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21):  # conv1_1 .. conv4_3: same as vgg16.features
            m[f"backbone.features.{i}.{kind}"] = f"backbone.vgg.{i}.{kind}"
        for ours, theirs in conv5.items():
            m[f"backbone.extra.0.{theirs}.{kind}"] = f"backbone.vgg.{ours}.{kind}"
        m[f"backbone.extra.0.7.1.{kind}"] = f"backbone.vgg.{CONV6_INDEX}.{kind}"
        m[f"backbone.extra.0.7.3.{kind}"] = f"backbone.vgg.{CONV7_INDEX}.{kind}"
        for k in range(len(backbone.extras)):
            m[f"backbone.extra.{k // 2 + 1}.{2 * (k % 2)}.{kind}"] = f"backbone.extras.{k}.{kind}"
        for k in range(len(model.loc)):
            m[f"head.regression_head.module_list.{k}.{kind}"] = f"loc.{k}.{kind}"
            m[f"head.classification_head.module_list.{k}.{kind}"] = f"conf.{k}.{kind}"
    return m


def _check_keys(sd: dict, key_map: dict[str, str], path, source: str, cfg_source: str) -> None:
    """ConversionError listing the missing and unexpected keys unless the file has exactly `key_map`'s."""
    missing = [k for k in key_map if k not in sd]
    unexpected = [k for k in sd if k not in key_map]
    if not (missing or unexpected):
        return
    parts = [f"missing keys: {_shown(missing)}"] if missing else []
    if unexpected:
        parts.append(f"unexpected keys: {_shown(unexpected)}")
    hint = _layout_hint(sd, source)
    if not hint and source == "ssd.pytorch":
        maps = lambda keys: {k.split(".")[1] for k in keys if k.startswith("loc.")}  # noqa: E731
        have, want = len(maps(sd)), len(maps(key_map))
        if have and have != want:
            hint = (f" (the file has {have} source maps, {cfg_source} builds {want}: SSD512 weights need "
                    f"configs/voc512.yaml, SSD300 ones a 300 px config)")
    raise ConversionError(f"{path} does not fit an {source} SSD built from {cfg_source}: {'; '.join(parts)}{hint}")


def _class_rows(source_classes: int, boxes: int, keep: list[int]) -> torch.Tensor:
    """Row indices of a conf layer `[boxes * source_classes, ...]` keeping classes `keep` of every box."""
    keep_t = torch.tensor(keep, dtype=torch.long)
    return (torch.arange(boxes).view(-1, 1) * source_classes + keep_t.view(1, -1)).reshape(-1)


def _head_classes(sd: dict, key: str, boxes: int, path) -> int:
    rows = sd[key].shape[0]
    if rows % boxes:
        raise ConversionError(f"{path}: {key} has {rows} rows, not a multiple of the {boxes} boxes per location "
                              f"the config's aspect ratios give")
    return rows // boxes


def convert(source: str, weights: str | os.PathLike, cfg: Config) -> dict[str, Any]:
    """A model file's contents (see `ssd_ray.checkpoint`) for `weights` of `source` under `cfg`.

    cfg: the ssd-ray config to build the network with (configs/voc300.yaml, coco300.yaml,
    voc512.yaml); its classes come from `data.classes`, else the format's standard list.
    Raises ConversionError naming the keys or shapes that do not fit.
    """
    from .data.sources import class_names_for
    from .model import build_ssd
    from .model.normalize import NORMALIZATIONS

    if source not in SOURCES:
        raise ConversionError(f"--from must be one of {list(SOURCES)}, got {source!r}")
    cfg_source = f"config {cfg.name!r}"
    class_names = class_names_for(cfg.data)
    if class_names is None:
        if cfg.data.format == "coco":
            from .data.coco import COCO_CLASSES as default
        else:
            from .data.voc import VOC_CLASSES as default
        class_names = list(default)
    cfg = cfg.with_num_classes(class_names)
    cfg.model.pretrained = None
    num_classes = int(cfg.model.num_classes)
    sd = read_state_dict(weights)
    model = build_ssd(cfg.model, cfg.priors)
    key_map = _ssd_pytorch_map(model) if source == "ssd.pytorch" else _torchvision_map(model)
    _check_keys(sd, key_map, weights, source, cfg_source)

    notes: list[str] = []
    own = model.state_dict()
    conf_key = "conf.0.weight" if source == "ssd.pytorch" else "head.classification_head.module_list.0.weight"
    boxes0 = model.boxes_per_location[0]
    src_classes = _head_classes(sd, conf_key, boxes0, weights)
    keep: list[int] | None = None  # class slots kept per box (None: all, as they are)
    if src_classes == num_classes:
        pass
    elif source == "ssd.pytorch" and src_classes == SSD_PYTORCH_COCO_BUG_CLASSES and num_classes == 81:
        keep = list(range(81))
        notes.append("ssd.pytorch's COCO head has 201 outputs per box (its config's num_classes bug); "
                     "kept the first 81 (background + the 80 COCO classes, coco_labels.txt order)")
    elif source == "torchvision" and src_classes == TORCHVISION_SLOTS and num_classes == 81:
        keep = _torchvision_coco_slots(class_names)
        notes.append("torchvision's 91 COCO slots (indexed by category id) mapped to ssd-ray's 81 classes in "
                     "category-id order; the 10 'N/A' slots dropped")
    else:
        raise ConversionError(
            f"{weights}: {conf_key} has shape {list(sd[conf_key].shape)}: {src_classes} classes x {boxes0} boxes "
            f"(background included), but {cfg_source} has {num_classes} classes ({len(class_names)} + background"
            f"{', e.g. VOC' if num_classes == 21 else ', e.g. COCO' if num_classes == 81 else ''}): "
            f"{'a VOC head needs a VOC config (configs/voc300.yaml)' if src_classes == 21 else 'use the config the weights were trained with'}")

    new: dict[str, torch.Tensor] = {}
    for theirs, ours in key_map.items():
        t = sd[theirs]
        is_conf = ours.startswith("conf.")
        if is_conf and keep is not None:
            k = int(ours.split(".")[1])
            boxes = model.boxes_per_location[k]
            have = _head_classes(sd, theirs, boxes, weights)
            if have != src_classes:
                raise ConversionError(f"{weights}: {theirs} has {have} classes per box, {conf_key} has {src_classes}")
            t = t[_class_rows(src_classes, boxes, keep)]
        if tuple(t.shape) != tuple(own[ours].shape):
            what = (f" ({own[ours].shape[0] // model.boxes_per_location[int(ours.split('.')[1])]} classes x "
                    f"{model.boxes_per_location[int(ours.split('.')[1])]} boxes)" if is_conf else "")
            raise ConversionError(f"{weights}: {theirs} has shape {list(sd[theirs].shape)}, but {cfg_source} expects "
                                  f"{list(own[ours].shape)} for {ours}{what}")
        new[ours] = t.to(own[ours].dtype).clone()
    missing_ours = set(own) - set(new)
    if missing_ours:  # every parameter must come from the file (there are no buffers in this network)
        raise ConversionError(f"internal: no source for {_shown(missing_ours)}")
    model.load_state_dict(new, strict=True)

    if source == "ssd.pytorch":
        _check_ssd_pytorch_priors(cfg, num_classes, src_classes, cfg_source)
        normalization, preset = "ssd_pytorch", "reference"
    else:
        # torchvision clamps the default boxes' sizes but not their centres (the reference clamps both):
        # the weights were trained against its boxes, so the model file keeps them.
        cfg.priors.clip = "size"
        _check_torchvision_anchors(cfg, cfg_source)
        normalization, preset = "torchvision", "torchvision"
    cfg.model.normalization = normalization
    config = config_to_dict(cfg)
    config["postprocess"] = {"preset": preset}  # the source's own post-processing (filled on load)
    return {
        "format": MODEL_FORMAT, "model": model.state_dict(), "config": config,
        "class_names": list(class_names), "normalization": NORMALIZATIONS[normalization].to_dict(),
        "imported_from": {"source": source, "file": str(Path(weights).resolve()), "sha256": _sha256(weights),
                          "notes": notes},
    }


def _torchvision_coco_slots(class_names: list[str]) -> list[int]:
    """Background + the torchvision slot (= COCO category id) of each of ssd-ray's 80 COCO classes."""
    from torchvision.models.detection import SSD300_VGG16_Weights

    slots = SSD300_VGG16_Weights.COCO_V1.meta["categories"]  # index = category id; "N/A" = unused id
    real = [i for i, name in enumerate(slots) if i > 0 and name != "N/A"]
    names = [slots[i] for i in real]
    if names != list(class_names):
        raise ConversionError(f"torchvision's COCO categories {names[:5]}... differ from the config's classes "
                              f"{list(class_names)[:5]}...; use configs/coco300.yaml (the 80 COCO classes)")
    return [0] + real


def _check_ssd_pytorch_priors(cfg: Config, num_classes: int, src_classes: int, cfg_source: str) -> None:
    """ssd.pytorch builds its priors from the VOC config for 21 classes, else the COCO one (SSD300 only)."""
    if cfg.model.min_dim != 300:
        return  # ssd.pytorch has no SSD512 config; such weights come from forks with their own sizes
    ref = SSD_PYTORCH_PRIORS["voc" if src_classes == 21 else "coco"]
    for key, want in ref.items():
        have = [float(v) for v in getattr(cfg.priors, key)]
        if have != [float(v) for v in want]:
            raise ConversionError(f"{cfg_source} has priors.{key} {have}, but ssd.pytorch trained these weights "
                                  f"with {want} ({'VOC' if src_classes == 21 else 'COCO'} config): the boxes "
                                  f"would be decoded against other priors")


def _check_torchvision_anchors(cfg: Config, cfg_source: str) -> None:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    from .priors import priors_from_config

    gen = DefaultBoxGenerator(**TORCHVISION_ANCHORS)
    size = int(cfg.model.min_dim)
    theirs = gen._grid_default_boxes([[f, f] for f in cfg.priors.feature_maps], [size, size], torch.float32)
    ours = priors_from_config(cfg.model, cfg.priors)
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-5, atol=1e-6):
        raise ConversionError(f"{cfg_source}'s priors are not torchvision ssd300_vgg16's default boxes "
                              f"(scales {TORCHVISION_ANCHORS['scales']} x {size}): use configs/coco300.yaml")


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_file(source: str, weights: str | os.PathLike, cfg: Config, out: str | os.PathLike,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """`convert` and write the model file to `out` (refusing to overwrite an existing file)."""
    from .checkpoint import save

    out = Path(out)
    if out.exists():
        raise ConversionError(f"--out {out} exists; choose a new file name (nothing is overwritten)")
    state = convert(source, weights, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save(state, out)
    for note in state["imported_from"]["notes"]:
        log(f"note: {note}")
    return state
