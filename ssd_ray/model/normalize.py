"""Image normalisation on the device: `uint8 [B,H,W,3] RGB` -> `float32 [B,3,H,W]`.

Images travel as uint8 HWC RGB (see docs/design.md); the model expects ImageNet statistics because
torchvision's VGG16 weights were trained on exactly this input.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The mean as a uint8 RGB pixel: the fill of the zoom-out "expand" augmentation, so padding normalises
# to roughly zero.
MEAN_PIXEL_RGB: tuple[int, int, int] = (124, 116, 104)


def normalize(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """`images` uint8 `[B,H,W,3]` RGB -> float32 `[B,3,H,W]` = `(images/255 - mean) / std`.

    Runs on whatever device `images` is on. With `channels_last=True` the result is in
    `torch.channels_last` memory format (free here: the permuted NHWC input already has those strides).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"normalize: expected a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize: expected uint8 images, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"normalize: expected shape [B,H,W,3], got {list(images.shape)}")
    # (x/255 - m)/s == x * (1/(255 s)) - m/s: one multiply and one subtract over the batch.
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).to(device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    shift = (torch.tensor(IMAGENET_MEAN, dtype=torch.float64) / std).to(
        device=images.device, dtype=torch.float32
    ).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).to(torch.float32)  # keeps NHWC strides, i.e. channels_last
    x = x.mul_(scale).sub_(shift)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)
