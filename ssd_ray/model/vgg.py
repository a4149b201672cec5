"""VGG16 SSD backbone (SSD300 / SSD512), laid out exactly as ssd.pytorch (amdegroot) builds it.

`self.vgg` holds the same layers at the same indices as the reference's `vgg` list, so conv `i`
here is torchvision's `features.i` for i <= 28 (conv5_3); then pool5 (30), conv6 (31), conv7 (33).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import L2Norm, spatial_size

# ssd.pytorch `base['300']`: 'M' = 2x2 max pool, 'C' = the same with ceil_mode (75 -> 38 at 300 px).
VGG_BASE_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
CONV4_3_RELU = 23  # vgg[:23] ends with conv4_3's ReLU: the first source (after L2Norm)
# torchvision vgg16 `features` indices of conv1_1 .. conv5_3 (same indices in `self.vgg`).
VGG_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV6_INDEX, CONV7_INDEX = 31, 33


def vgg_layers() -> list[nn.Module]:
    """The reference `vgg(base['300'], 3)`: conv1_1 .. conv5_3, pool5, dilated conv6, conv7."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in VGG_BASE_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    # pool5 keeps the resolution; conv6 is fc6 made atrous (dilation 6) and thinned to 1024 channels.
    layers += [
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
        nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, kernel_size=1),
        nn.ReLU(inplace=True),
    ]
    return layers


def extra_layers(variant: str) -> list[nn.Conv2d]:
    """Extra feature layers after conv7 (1024 ch); every second one is a source.

    "ssd300": the reference `add_extras(extras['300'], 1024)`: 1x1 256 -> 3x3/2 512, 1x1 128 -> 3x3/2 256,
    then twice 1x1 128 -> 3x3 256 without padding (5 -> 3 -> 1 at 300 px).
    "ssd512": the original Caffe SSD512: four 1x1 -> 3x3/2 pairs, then 1x1 128 -> 4x4 (stride 1, pad 1)
    256 (2 -> 1 at 512 px).
    """
    if variant == "ssd300":
        return [
            nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1),
            nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.Conv2d(256, 128, 1), nn.Conv2d(128, 256, 3),
            nn.Conv2d(256, 128, 1), nn.Conv2d(128, 256, 3),
        ]  # fmt: skip
    if variant == "ssd512":
        return [
            nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1),
            nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.Conv2d(256, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.Conv2d(256, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.Conv2d(256, 128, 1), nn.Conv2d(128, 256, 4, stride=1, padding=1),
        ]  # fmt: skip
    raise ValueError(f"unknown VGG extras variant {variant!r}; expected 'ssd300' or 'ssd512'")


class VGG16Backbone(nn.Module):
    """`x [B,3,H,W] -> sources`: [L2Norm(conv4_3) 512ch, conv7 1024ch, then every second extra]."""

    def __init__(self, variant: str = "ssd300") -> None:
        super().__init__()
        self.variant = variant
        self.vgg = nn.ModuleList(vgg_layers())
        self.l2norm = L2Norm(512, scale=20.0)
        self.extras = nn.ModuleList(extra_layers(variant))
        self.out_channels: list[int] = [512, 1024] + [conv.out_channels for conv in self.extras[1::2]]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # No pretrained file: He init (torchvision's VGG init); the extras use Xavier as the reference.
        for k in (*VGG_CONV_INDICES, CONV6_INDEX, CONV7_INDEX):
            nn.init.kaiming_normal_(self.vgg[k].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.vgg[k].bias)
        for conv in self.extras:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        for layer in self.vgg[:CONV4_3_RELU]:
            x = layer(x)
        sources = [self.l2norm(x)]
        for layer in self.vgg[CONV4_3_RELU:]:
            x = layer(x)
        sources.append(x)
        for k, conv in enumerate(self.extras):
            x = F.relu(conv(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        return sources

    def feature_map_sizes(self, min_dim: int) -> list[int]:
        """Side of each source map for a `min_dim x min_dim` input, computed from the layers."""
        n = spatial_size(self.vgg[:CONV4_3_RELU], min_dim)
        sizes = [n]
        n = spatial_size(self.vgg[CONV4_3_RELU:], n)
        sizes.append(n)
        for k in range(0, len(self.extras), 2):
            n = spatial_size(self.extras[k : k + 2], n)
            sizes.append(n)
        return sizes
