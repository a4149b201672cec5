"""User transforms from config (`data.augment.extra`), run through albumentations before the SSD recipe.

Where they apply: on the decoded **source image**, before the SSD geometry (expand, crop, mirror,
resize) and photometric distortion. So any albumentations transform works, including ones that change
the image size (crops, `RandomScale`, `Resize`): the SSD recipe resizes to `min_dim` anyway, and its
crop rule then applies to the boxes the extras kept. Pixel-sized arguments (a blur kernel, a
translation in px) are in source-image pixels.

Boxes: albumentations moves them with every geometric transform (`bbox_params` in the
"albumentations" format, which is this project's convention: relative xyxy 0..1, labels alongside).
A box that leaves the image is **clipped** to it, and **dropped** with its label when less than
`data.augment.extra_min_visibility` of its area stays inside (albumentations' `min_visibility`,
checked once, on the box as the last transform leaves it). The default 0.5 is close to the SSD crop's
own rule (a box is kept when its centre stays inside), which for a box cut by one image edge is the
same as keeping more than half of it. Dropped boxes are counted per sample (`SSDWithExtra.last_dropped`, the training stream's
`extra_dropped` column). For rotations albumentations returns the box enclosing the rotated corners
(`rotate_method: largest_box`), which is larger than the object.

Randomness: the extras draw from a child of the sample's generator (`rng.spawn(1)`, seeded by
`(seed, epoch, index)` like the rest of the pipeline). Spawning leaves the parent's stream untouched,
so the SSD draws of a sample are the same with and without extras, and a resumed run gives the same
sample the same transform.

Config entries, validated when the config is read (`check_entry`, strict: an unknown transform or
argument is an error naming it; albumentations itself only warns about unknown arguments):

* shorthand: `{name: GaussianBlur, p: 0.2, blur_limit: [3, 5]}`: `name` is an albumentations
  transform class, `p` is required, the other keys are its arguments. Compositions (`OneOf`, `SomeOf`,
  `Sequential`, ...) take `transforms:` as a list of shorthand entries.
* albumentations' serialised form, as `A.to_dict(t)` writes it: `{transform: {__class_fullname__: ...,
  p: ..., ...}}` (an optional `__version__` key is ignored). A serialised `Compose` is taken as a
  `Sequential` of its transforms: box handling is ssd-ray's (its `bbox_params`, `keypoint_params`,
  `additional_targets`, `seed` etc. are not used).

Every transform is also run once, at validation, with p=1 on a 512x512 RGB test image with boxes, and
must return a uint8 `[H,W,3]` image: this rejects transforms that cannot handle boxes or that change
the image's type (`Normalize`, `ToFloat`, `ToTensorV2`, one-channel `ToGray`), before any work.

albumentations (which imports torch) is imported only when an entry is validated or built; with an
empty `extra` nothing in this module runs (`make_augmentation` returns the plain `SSDAugmentation`).
"""

from __future__ import annotations

import difflib
import inspect
import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ExtraAugmentError", "check_entry", "build_transform", "ExtraAugment", "SSDWithExtra"]

# Keys of a serialised Compose that describe its own processing; ssd-ray sets the box handling.
_COMPOSE_ONLY_KEYS = ("bbox_params", "keypoint_params", "additional_targets", "is_check_shapes", "strict",
                      "seed", "mask_interpolation", "save_applied_params")
# Registry entries that are not transforms a user can apply to one RGB image.
_NOT_USABLE = ("BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D",
               "BboxParams", "KeypointParams", "Compose", "ReplayCompose", "BaseCompose")
_TEST_SIZE = 512  # side of the dry-run image


class ExtraAugmentError(ValueError):
    """A `data.augment.extra` entry that cannot run; the message names the transform and the argument."""


def _at(where: str, msg: str) -> str:
    return f"{where}: {msg}" if where else msg


# ------------------------------------------------------------------------------------- parsing
def _albumentations():
    import albumentations as A  # noqa: F401  (imports torch: only here, only when extras are used)
    from albumentations.core.composition import BaseCompose
    from albumentations.core.serialization import (NON_SERIALIZABLE_REGISTRY, SERIALIZABLE_REGISTRY,
                                                   shorten_class_name)
    from albumentations.core.transforms_interface import BasicTransform

    return SERIALIZABLE_REGISTRY, NON_SERIALIZABLE_REGISTRY, shorten_class_name, BasicTransform, BaseCompose


def _lookup(name: Any, where: str):
    registry, non_serializable, shorten, basic, compose = _albumentations()
    if not isinstance(name, str) or not name:
        raise ExtraAugmentError(_at(where, f"the transform name must be a string, got {name!r}"))
    short = shorten(name)
    if short in non_serializable:
        raise ExtraAugmentError(_at(where, f"{short} takes Python functions and cannot be written in a config"))
    if short in ("Compose", "ReplayCompose"):
        raise ExtraAugmentError(_at(where, f"{short} is not an entry here: the extras already form one Compose "
                                           "whose box handling ssd-ray sets; group transforms with Sequential"))
    cls = registry.get(short)
    usable = cls is not None and short not in _NOT_USABLE and issubclass(cls, (basic, compose)) and \
        "3D" not in short
    if not usable:
        known = sorted(k for k, c in registry.items() if k not in _NOT_USABLE and "3D" not in k
                       and issubclass(c, (basic, compose)))
        close = difflib.get_close_matches(short, known, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see albumentations' list of transforms)"
        raise ExtraAugmentError(_at(where, f"unknown albumentations transform {name!r}{hint}"))
    return cls, issubclass(cls, compose)


def _init_arg_names(cls) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [k for k, p in params.items()
            if k not in ("self", "strict") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _schema_message(e: Exception) -> str:
    """albumentations wraps its pydantic ValidationError in a ValueError: one line per argument."""
    cause = e.__cause__
    if hasattr(cause, "errors"):
        by_arg: dict[str, list[str]] = {}
        got: dict[str, Any] = {}
        for err in cause.errors():
            arg = str(err["loc"][0]) if err["loc"] else ""
            msg = err["msg"].removeprefix("Value error, ")
            if arg not in by_arg and arg and "input" in err:
                got[arg] = err["input"]
            if msg not in by_arg.setdefault(arg, []):
                by_arg[arg].append(msg)
        parts = [f"{arg}={got[arg]!r}: {' or '.join(m)}" if arg in got else f"{arg}: {' or '.join(m)}"
                 if arg else "; ".join(m) for arg, m in by_arg.items()]
        return "; ".join(parts)
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _instantiate(name: Any, args: dict, where: str, child, dry_run: bool):
    """Build one transform or composition from `args`; `child(node, where)` builds nested entries."""
    cls, is_compose = _lookup(name, where)
    short = cls.__name__
    where = f"{where} ({short})" if where else short
    if "p" not in args:
        raise ExtraAugmentError(_at(where, "'p' is required (the probability of applying it)"))
    valid = _init_arg_names(cls)
    unknown = [k for k in args if k not in valid]
    if unknown:
        raise ExtraAugmentError(_at(where, f"unknown argument{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(repr(k) for k in unknown)}; {short} takes: {', '.join(valid)}"))
    if is_compose:
        args = dict(args)
        for key in ("transforms", "first", "second"):
            if key not in args or args[key] is None:
                continue
            nodes = args[key]
            if key == "transforms":
                if not isinstance(nodes, list) or not nodes:
                    raise ExtraAugmentError(_at(where, "'transforms' must be a non-empty list of transforms"))
                args[key] = [child(n, f"{where}.transforms[{i}]") for i, n in enumerate(nodes)]
            else:
                args[key] = child(nodes, f"{where}.{key}")
        try:
            return cls(**args)
        except (TypeError, ValueError) as e:
            raise ExtraAugmentError(_at(where, _schema_message(e))) from None
    transform = _make_strict(cls, args, where)
    if dry_run:
        _dry_run(cls, {**args, "p": 1.0}, where)
    return transform


def _make_strict(cls, args: dict, where: str):
    """`cls(**args)` with albumentations' strict argument checking (where the class has it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "deprecated, use X": still valid
            try:
                return cls(**args, strict=True)
            except TypeError as e:
                if "strict" not in str(e):
                    raise
                return cls(**args)  # no schema (e.g. ToTensorV2): the names were checked above
    except (TypeError, ValueError) as e:
        raise ExtraAugmentError(_at(where, _schema_message(e))) from None


def _from_shorthand(node: Any, where: str, dry_run: bool = False):
    if not isinstance(node, Mapping):
        raise ExtraAugmentError(_at(where, f"expected a mapping such as {{name: GaussianBlur, p: 0.2}}, "
                                           f"got {node!r}"))
    args = dict(node)
    if "name" not in args:
        raise ExtraAugmentError(_at(where, f"needs 'name' (an albumentations transform, e.g. GaussianBlur) "
                                f"or 'transform' (albumentations' serialised form), got keys {sorted(args)}"))
    name = args.pop("name")
    return _instantiate(name, args, where, lambda n, w: _from_shorthand(n, w, dry_run), dry_run)


def _from_serialized(node: Any, where: str, dry_run: bool = False):
    if not isinstance(node, Mapping) or "__class_fullname__" not in node:
        raise ExtraAugmentError(_at(where, f"a serialised transform is a mapping with '__class_fullname__', "
                                           f"got {node!r}"))
    args = dict(node)
    name = args.pop("__class_fullname__")
    if name in ("Compose", "albumentations.core.composition.Compose"):
        for k in _COMPOSE_ONLY_KEYS:
            args.pop(k, None)
        args.setdefault("p", 1.0)
        name = "Sequential"
    return _instantiate(name, args, where, lambda n, w: _from_serialized(n, w, dry_run), dry_run)


def _plain(value: Any, where: str) -> Any:
    """Tuples -> lists, recursively; only YAML/JSON values (so configs round-trip through YAML/JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ExtraAugmentError(_at(where, f"values must be numbers, strings, lists or mappings, got {value!r}"))


def build_transform(entry: Mapping, where: str = "extra", dry_run: bool = False):
    """One config entry (shorthand or serialised) -> an albumentations transform (strict arguments)."""
    if isinstance(entry, Mapping) and "transform" in entry:
        unknown = sorted(set(entry) - {"transform", "__version__"})
        if unknown:
            raise ExtraAugmentError(_at(where, f"a serialised entry has only 'transform' (and '__version__'), "
                                    f"got also {unknown}"))
        return _from_serialized(entry["transform"], where, dry_run)
    return _from_shorthand(entry, where, dry_run)


def check_entry(entry: Any, where: str = "") -> dict:
    """Validate one `data.augment.extra` entry (builds it strictly and test-runs it); returns it in plain form.

    Raises ExtraAugmentError naming the entry, the transform and the offending argument.
    """
    if not isinstance(entry, Mapping):
        raise ExtraAugmentError(_at(where, f"expected a mapping such as {{name: GaussianBlur, p: 0.2}}, "
                                           f"got {entry!r}"))
    plain = _plain(entry, where)
    build_transform(plain, where, dry_run=True)
    return plain


# ------------------------------------------------------------------------------------ dry run
def _test_image() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    import cv2

    image = cv2.resize(small, (_TEST_SIZE, _TEST_SIZE), interpolation=cv2.INTER_LINEAR)
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.3, 0.9, 0.9]], np.float32)
    return image, boxes, np.array([0, 1], np.int64)


def _dry_run(cls, args: dict, where: str) -> None:
    import albumentations as A

    image, boxes, labels = _test_image()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            compose = A.Compose([_make_strict(cls, args, where)], bbox_params=_bbox_params(0.0), p=1.0)
            compose.set_random_seed(0)
            out = compose(image=image, bboxes=boxes, labels=labels)
    except NotImplementedError as e:
        raise ExtraAugmentError(_at(where, f"cannot be used on an image with boxes: {e}")) from None
    except Exception as e:  # noqa: BLE001  (any failure is reported as the config's, naming the transform)
        raise ExtraAugmentError(_at(where, f"failed on a {_TEST_SIZE}x{_TEST_SIZE} RGB uint8 test image with "
                                f"boxes: {type(e).__name__}: {e}")) from None
    img = out["image"]
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        desc = f"{img.dtype} {tuple(img.shape)}" if hasattr(img, "shape") else type(img).__name__
        raise ExtraAugmentError(_at(where, f"must return a uint8 [H,W,3] RGB image (the SSD recipe and "
                                f"normalisation come after it), returned {desc}"))


# ------------------------------------------------------------------------------------ runtime
def _bbox_params(min_visibility: float):
    import albumentations as A

    # Relative xyxy is albumentations' own format. Boxes are filtered once, after the last transform
    # (check_each_transform=False: the per-transform checks cost more than the transforms on most
    # samples): clipped to the image, dropped below min_visibility of their area inside it.
    # Inputs are clipped to [0,1] by ExtraAugment itself (cheaper than albumentations' clip).
    return A.BboxParams(format="albumentations", label_fields=["labels"], min_visibility=min_visibility,
                        check_each_transform=False)


def _moves_boxes(transform) -> bool:
    """Whether any leaf of a transform tree can move boxes (i.e. is not an ImageOnlyTransform)."""
    from albumentations.core.transforms_interface import ImageOnlyTransform

    children = getattr(transform, "transforms", None)
    if children is not None:
        return any(_moves_boxes(t) for t in children)
    return not isinstance(transform, ImageOnlyTransform)


class ExtraAugment:
    """The configured albumentations transforms: `(image, boxes, labels, rng) -> (image, boxes, labels, dropped)`.

    image uint8 `[H,W,3]` RGB; boxes float32 `[n,4]` relative xyxy; labels int64 `[n]`; rng: the
    numpy Generator the transforms draw from (both albumentations' numpy and Python streams are
    derived from it). Returns the new image (uint8 `[H',W',3]`, contiguous), float32 `[k,4]` boxes
    clipped to the image, int64 `[k]` labels and `dropped = n - k`.

    When every transform is pixel-only (blur, noise, JPEG, colour, weather: albumentations'
    `ImageOnlyTransform`s), the boxes bypass albumentations' box processing, which would return them
    unchanged at a cost of about a millisecond per sample. The draws, and so the images, are the same.

    Picklable: holds the config entries and builds the albumentations `Compose` in the process that
    runs it (`prepare()`), so the driver never ships albumentations objects to the data actors.
    """

    def __init__(self, entries: list[dict], min_visibility: float = 0.5):
        if not entries:
            raise ValueError("ExtraAugment needs at least one transform (an empty extra uses no albumentations)")
        if not 0.0 <= min_visibility <= 1.0:
            raise ValueError(f"min_visibility must be in [0, 1], got {min_visibility}")
        self.entries = [dict(e) for e in entries]
        self.min_visibility = float(min_visibility)
        self._compose = None
        self.moves_boxes = None  # known once built

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_compose": None}

    def prepare(self) -> None:
        """Import albumentations and build the pipeline (once per process; the first call does it too)."""
        if self._compose is None:
            import albumentations as A

            transforms = [build_transform(e, f"extra[{i}]") for i, e in enumerate(self.entries)]
            self.moves_boxes = any(_moves_boxes(t) for t in transforms)
            params = _bbox_params(self.min_visibility) if self.moves_boxes else None
            self._compose = A.Compose(transforms, bbox_params=params, p=1.0)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        self.prepare()
        boxes = np.clip(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), 0.0, 1.0)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        # albumentations draws from a numpy Generator and a random.Random: both from `rng`.
        self._compose.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        if self.moves_boxes:
            out = self._compose(image=image, bboxes=boxes, labels=labels)
            out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            out_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        else:
            out = self._compose(image=image)
            out_boxes, out_labels = boxes, labels
        img = out["image"]
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
            desc = f"{img.dtype} {tuple(img.shape)}" if hasattr(img, "shape") else type(img).__name__
            raise ValueError(f"data.augment.extra returned {desc}; it must return a uint8 [H,W,3] RGB image")
        return np.ascontiguousarray(img), out_boxes, out_labels, len(boxes) - len(out_boxes)


class SSDWithExtra:
    """`data.augment.extra` on the source image, then the SSD recipe: the training augmentation with extras.

    Same call as `SSDAugmentation`: `(image, boxes, labels, rng) -> (image [size,size,3], boxes, labels)`.
    The extras draw from `rng.spawn(1)[0]`, which leaves `rng`'s own stream (the SSD draws) untouched.
    `last_dropped` is the number of boxes the extras dropped in the latest call (see the module doc).
    """

    def __init__(self, ssd, extra: ExtraAugment):
        self.ssd, self.extra = ssd, extra
        self.last_dropped = 0

    @property
    def size(self) -> int:
        return self.ssd.size

    def prepare(self) -> None:
        self.extra.prepare()

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, boxes, labels, self.last_dropped = self.extra(image, boxes, labels, rng.spawn(1)[0])
        return self.ssd(image, boxes, labels, rng)
