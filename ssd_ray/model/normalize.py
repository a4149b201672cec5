"""Image normalisation on the device: `uint8 [B,H,W,3] RGB` -> `float32 [B,3,H,W]`.

Images travel as uint8 HWC RGB (see docs/design.md). How they become the network's input belongs to
the weights, so it travels with every model file and checkpoint (`Normalization.to_dict()` under
`"normalization"`) and every consumer (training step, validation, `Predictor`, evaluation, ONNX
metadata) applies the model's own:

| name          | what the weights were trained on                                               |
|---------------|---------------------------------------------------------------------------------|
| `ssd_ray`     | RGB / 255, minus ImageNet mean, divided by ImageNet std (torchvision's VGG16)   |
| `ssd_pytorch` | ssd.pytorch: 0..255 BGR minus (104, 117, 123), then swapped to RGB; std 1       |
| `torchvision` | torchvision `ssd300_vgg16`: 0..255 RGB minus (0.48235, 0.45882, 0.40784) x 255; std 1 |

ssd.pytorch subtracts its BGR mean before the channel swap, so in RGB order it is `x - (123, 117,
104)`. All three are `x * scale - mean` then `/ std` per RGB channel, which is what `normalize`
computes (as one multiply and one subtract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The mean as a uint8 RGB pixel: the fill of the zoom-out "expand" augmentation, so padding normalises
# to roughly zero.
MEAN_PIXEL_RGB: tuple[int, int, int] = (124, 116, 104)


@dataclass(frozen=True)
class Normalization:
    """`input = (pixel * scale - mean) / std` per channel, pixels uint8 RGB resized to the model's side.

    mean/std are in RGB order and in the units of `pixel * scale`.
    """

    name: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form stored in model files, checkpoints and the ONNX metadata."""
        return {"name": self.name, "channels": "RGB", "dtype": "uint8", "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "resize": "square, cv2.INTER_LINEAR",
                "description": self.description}

    @classmethod
    def from_spec(cls, spec: "Normalization | Mapping | str | None") -> "Normalization":
        """A `Normalization` from a name, a stored dict (older files have no "name": their numbers
        decide) or None (ssd-ray's own). ValueError naming the problem otherwise."""
        if spec is None:
            return NORMALIZATIONS["ssd_ray"]
        if isinstance(spec, Normalization):
            return spec
        if isinstance(spec, str):
            if spec not in NORMALIZATIONS:
                raise ValueError(f"unknown normalization {spec!r}; expected one of {sorted(NORMALIZATIONS)}")
            return NORMALIZATIONS[spec]
        if not isinstance(spec, Mapping):
            raise ValueError(f"normalization must be a name or a dict, got {type(spec).__name__}")
        if spec.get("channels", "RGB") != "RGB":
            raise ValueError(f"normalization channels {spec.get('channels')!r} not supported (inputs are RGB)")
        try:
            scale = float(spec["scale"])
            mean = tuple(float(v) for v in spec["mean"])
            std = tuple(float(v) for v in spec["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"normalization {dict(spec)!r} lacks numeric scale/mean/std: {e}") from None
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std) or scale <= 0:
            raise ValueError(f"normalization needs 3 means, 3 positive stds and a positive scale, got {dict(spec)!r}")
        name = str(spec.get("name") or "")
        known = NORMALIZATIONS.get(name)
        if known is None:  # an older file: name it after the preset its numbers match, if any
            known = next((n for n in NORMALIZATIONS.values() if n.matches(scale, mean, std)), None)
            name = known.name if known else "custom"
        return cls(name, scale, mean, std, str(spec.get("description") or (known.description if known else "")))  # type: ignore[arg-type]

    def matches(self, scale: float, mean, std, tol: float = 1e-6) -> bool:
        close = lambda a, b: abs(a - b) <= tol * max(1.0, abs(b))  # noqa: E731
        return (close(scale, self.scale) and all(close(a, b) for a, b in zip(mean, self.mean))
                and all(close(a, b) for a, b in zip(std, self.std)))

    def affine(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(multiplier, shift) `[1,3,1,1]` float32 with `input = pixel * multiplier - shift`."""
        std = torch.tensor(self.std, dtype=torch.float64)
        mul = (self.scale / std).to(device=device, dtype=torch.float32).view(1, 3, 1, 1)
        shift = (torch.tensor(self.mean, dtype=torch.float64) / std).to(device=device, dtype=torch.float32)
        return mul, shift.view(1, 3, 1, 1)


NORMALIZATIONS: dict[str, Normalization] = {
    "ssd_ray": Normalization("ssd_ray", 1 / 255, IMAGENET_MEAN, IMAGENET_STD,
                             "RGB / 255 minus ImageNet mean, divided by ImageNet std"),
    # BGR (104, 117, 123) subtracted before the channel swap = RGB (123, 117, 104).
    "ssd_pytorch": Normalization("ssd_pytorch", 1.0, (123.0, 117.0, 104.0), (1.0, 1.0, 1.0),
                                 "ssd.pytorch: 0..255 BGR minus (104, 117, 123), then RGB; std 1"),
    # torchvision ssd300_vgg16: image_mean (0.48235, 0.45882, 0.40784) on 0..1 pixels, image_std 1/255.
    "torchvision": Normalization("torchvision", 1.0, (0.48235 * 255, 0.45882 * 255, 0.40784 * 255),
                                 (1.0, 1.0, 1.0),
                                 "torchvision ssd300_vgg16: 0..255 RGB minus (0.48235, 0.45882, 0.40784) x 255; std 1"),
}
NORMALIZATION_NAMES: tuple[str, ...] = tuple(NORMALIZATIONS)


def normalize(images: torch.Tensor, channels_last: bool = False,
              spec: Normalization | Mapping | str | None = None) -> torch.Tensor:
    """`images` uint8 `[B,H,W,3]` RGB -> float32 `[B,3,H,W]` = `(images * scale - mean) / std`.

    spec: the model's normalisation (a `Normalization`, its dict, or a name); None is ssd-ray's own,
    `(images/255 - ImageNet mean) / ImageNet std`. Runs on whatever device `images` is on. With
    `channels_last=True` the result is in `torch.channels_last` memory format (free here: the
    permuted NHWC input already has those strides).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"normalize: expected a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize: expected uint8 images, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"normalize: expected shape [B,H,W,3], got {list(images.shape)}")
    # (x*s - m)/d == x * (s/d) - m/d: one multiply and one subtract over the batch.
    scale, shift = Normalization.from_spec(spec).affine(images.device)
    x = images.permute(0, 3, 1, 2).to(torch.float32)  # keeps NHWC strides, i.e. channels_last
    x = x.mul_(scale).sub_(shift)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)
