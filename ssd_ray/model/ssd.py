"""The SSD detector: a backbone giving source maps, plus one 3x3 loc and one 3x3 conf conv per source."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .light import LightBackbone
from .pretrained import load_vgg16_imagenet
from .vgg import VGG16Backbone

BACKBONES = ("vgg16", "light")


def boxes_per_location(aspect_ratios: list[list[int]]) -> list[int]:
    """Default boxes per map location: (s,s), (s',s'), then each ratio and its reciprocal."""
    return [2 + 2 * len(ars) for ars in aspect_ratios]


class SSD(nn.Module):
    """`forward(x [B,3,H,W] normalised) -> (loc [B,P,4], conf [B,P,num_classes] raw logits)`.

    P is the prior count in the reference order: source k first, then row-major (i,j) over the map,
    then the boxes of one location in order (each head output is permuted to NHWC and flattened, as
    ssd.pytorch does). loc holds encoded offsets against the priors; no softmax is applied here.
    Outputs take the dtype the convs produce (bf16 under autocast).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        boxes_per_location: list[int],
        feature_maps: list[int],
        background_prior: float | None = None,
    ) -> None:
        super().__init__()
        channels = list(backbone.out_channels)
        if not (len(channels) == len(boxes_per_location) == len(feature_maps)):
            raise ValueError(
                f"backbone has {len(channels)} sources but {len(boxes_per_location)} aspect-ratio lists "
                f"and {len(feature_maps)} feature maps"
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.boxes_per_location = list(boxes_per_location)
        self.feature_maps = list(feature_maps)
        self.loc = nn.ModuleList(nn.Conv2d(c, b * 4, 3, padding=1) for c, b in zip(channels, boxes_per_location))
        self.conf = nn.ModuleList(
            nn.Conv2d(c, b * num_classes, 3, padding=1) for c, b in zip(channels, boxes_per_location)
        )
        self.reset_head_parameters(background_prior)

    def reset_head_parameters(self, background_prior: float | None = None) -> None:
        """Xavier-uniform weights, zero bias (the reference). With `background_prior=p` the conf bias of
        class 0 is set so that softmax of the bias alone gives background probability p
        (RetinaNet-style prior init): early hard-negative mining and the loss then start from the
        "almost everything is background" answer instead of a uniform guess, which keeps the first
        steps stable."""
        for conv in (*self.loc, *self.conf):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        if background_prior is None:
            return
        if not 0.0 < background_prior < 1.0:
            raise ValueError(f"background_prior must be in (0, 1), got {background_prior}")
        # softmax([b, 0, ..., 0])[0] = e^b / (e^b + C-1) = p  <=>  b = log((C-1) p / (1-p))
        b0 = math.log((self.num_classes - 1) * background_prior / (1.0 - background_prior))
        with torch.no_grad():
            for conv, boxes in zip(self.conf, self.boxes_per_location):
                conv.bias.view(boxes, self.num_classes)[:, 0] = b0

    def feature_map_sizes(self, min_dim: int) -> list[int]:
        """Source map sides for a `min_dim x min_dim` input (computed from the layers, no forward)."""
        return self.backbone.feature_map_sizes(min_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SSD expects input [B,3,H,W], got {list(x.shape)}")
        sources = self.backbone(x)
        b = x.shape[0]
        locs, confs = [], []
        for k, (src, loc, conf) in enumerate(zip(sources, self.loc, self.conf)):
            f = self.feature_maps[k]
            if src.shape[-2] != f or src.shape[-1] != f:
                raise ValueError(
                    f"input {list(x.shape[-2:])} gives source {k} of size {list(src.shape[-2:])}, "
                    f"the priors expect {f}x{f} (feature_maps {self.feature_maps})"
                )
            # Both heads of a source as one conv (their weights stacked along the output channels): the
            # same sums, but one pass over the source map forward and backward instead of two: 1.04x
            # the demo's whole training step on CPU (docs/benchmarks.md). The modules stay two, so
            # state_dicts keep the reference's `loc.k` / `conf.k` names.
            out = F.conv2d(src, torch.cat([loc.weight, conf.weight]), torch.cat([loc.bias, conf.bias]),
                           loc.stride, loc.padding, loc.dilation)
            out = out.permute(0, 2, 3, 1)  # [B,f,f,boxes·(4 + C)]; no copy for channels_last maps
            n_loc = loc.out_channels
            locs.append(out[..., :n_loc].reshape(b, -1, 4))
            confs.append(out[..., n_loc:].reshape(b, -1, self.num_classes))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)


def _vgg_variant(num_sources: int) -> str:
    # The extras decide how many sources there are: 6 -> SSD300's, 7 -> SSD512's.
    variants = {6: "ssd300", 7: "ssd512"}
    if num_sources not in variants:
        raise ValueError(f"vgg16 SSD supports 6 (SSD300) or 7 (SSD512) feature maps, got {num_sources}")
    return variants[num_sources]


def build_ssd(model_cfg: Any, priors_cfg: Any) -> SSD:
    """Build the SSD described by `model_cfg` (backbone, num_classes, min_dim, pretrained, width,
    optional stem_width and stem_norm) and
    `priors_cfg` (feature_maps, aspect_ratios). Raises ValueError if the network's map sizes at
    `min_dim` differ from `priors_cfg.feature_maps`."""
    backbone_name = model_cfg.backbone
    num_classes = int(model_cfg.num_classes)
    min_dim = int(model_cfg.min_dim)
    feature_maps = [int(f) for f in priors_cfg.feature_maps]
    aspect_ratios = [list(a) for a in priors_cfg.aspect_ratios]
    if num_classes < 2:
        raise ValueError(f"model.num_classes must count the background and at least one class, got {num_classes}")
    if len(aspect_ratios) != len(feature_maps):
        raise ValueError(
            f"priors.aspect_ratios has {len(aspect_ratios)} entries but priors.feature_maps has {len(feature_maps)}"
        )
    if backbone_name == "vgg16":
        backbone: nn.Module = VGG16Backbone(_vgg_variant(len(feature_maps)))
        background_prior = None  # the reference's zero-bias heads
    elif backbone_name == "light":
        backbone = LightBackbone(int(model_cfg.width), len(feature_maps), getattr(model_cfg, "stem_width", None),
                                 bool(getattr(model_cfg, "stem_norm", True)))
        background_prior = 0.99
    else:
        raise ValueError(f"model.backbone must be one of {BACKBONES}, got {backbone_name!r}")

    actual = backbone.feature_map_sizes(min_dim)
    if actual != feature_maps:
        raise ValueError(
            f"{backbone_name} at min_dim {min_dim} gives feature maps {actual}, "
            f"but priors.feature_maps is {feature_maps}"
        )
    ssd = SSD(backbone, num_classes, boxes_per_location(aspect_ratios), feature_maps, background_prior)

    pretrained = getattr(model_cfg, "pretrained", None)
    if pretrained:
        if backbone_name != "vgg16":
            raise ValueError(f"model.pretrained is supported only for vgg16, not {backbone_name!r}")
        load_vgg16_imagenet(ssd, Path(pretrained))
    return ssd
