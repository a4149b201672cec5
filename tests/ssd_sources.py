"""Offline stand-ins for the networks whose weights `pipelines.convert` imports (tests only).

* `SsdPytorchSSD300`: an SSD300 laid out as amdegroot/ssd.pytorch's `ssd.py` builds it, written from
  its published key names and layer order: `vgg` (ModuleList: base['300'] convs/ReLUs/pools, pool5,
  dilated conv6, conv7), `L2Norm.weight`, `extras` (extras['300']: 1x1 256, 3x3/2 512, 1x1 128,
  3x3/2 256, 1x1 128, 3x3 256, 1x1 128, 3x3 256), `loc`/`conf` (mbox [4, 6, 6, 6, 4, 4] on vgg[21]
  (conv4_3) after L2Norm, vgg[-2] (conv7), then every second extra). Its forward is the reference's
  "train" phase output `(loc [B,P,4], conf [B,P,C])`; `reference_detect` is its test-phase `Detect`.
* `randomize`: random, non-trivial weights for any of these conv nets, scaled so activations keep an
  O(1) spread through the 20-odd layers on 0..255-scale inputs (neither exploding nor vanishing).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BASE_300 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
MBOX_300 = [4, 6, 6, 6, 4, 4]
EXTRAS_300 = [(1024, 256, 1, 1, 0), (256, 512, 3, 2, 1), (512, 128, 1, 1, 0), (128, 256, 3, 2, 1),
              (256, 128, 1, 1, 0), (128, 256, 3, 1, 0), (256, 128, 1, 1, 0), (128, 256, 3, 1, 0)]
SSD_PYTORCH_MEAN_BGR = (104.0, 117.0, 123.0)


class _L2Norm(nn.Module):
    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))
        self.eps = 1e-10

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight.view(1, -1, 1, 1) * (x / norm)


class SsdPytorchSSD300(nn.Module):
    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        c = 3
        for v in BASE_300:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif v == "C":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),
                   nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
        self.vgg = nn.ModuleList(layers)
        self.L2Norm = _L2Norm(512, 20.0)
        self.extras = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in EXTRAS_300)
        channels = [self.vgg[21].out_channels, self.vgg[-2].out_channels] + [e.out_channels for e in self.extras[1::2]]
        self.loc = nn.ModuleList(nn.Conv2d(ch, m * 4, 3, padding=1) for ch, m in zip(channels, MBOX_300))
        self.conf = nn.ModuleList(nn.Conv2d(ch, m * num_classes, 3, padding=1) for ch, m in zip(channels, MBOX_300))

    def forward(self, x):
        sources = []
        for k in range(23):
            x = self.vgg[k](x)
        sources.append(self.L2Norm(x))
        for k in range(23, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = F.relu(v(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        b = x.shape[0]
        loc = torch.cat([l(s).permute(0, 2, 3, 1).reshape(b, -1) for s, l in zip(sources, self.loc)], 1)
        conf = torch.cat([c(s).permute(0, 2, 3, 1).reshape(b, -1) for s, c in zip(sources, self.conf)], 1)
        return loc.view(b, -1, 4), conf.view(b, -1, self.num_classes)


@torch.no_grad()
def randomize(net: nn.Module, seed: int, input_std: float = 60.0, head_gain: float = 3.0) -> None:
    """He-normal convs (variance-preserving under ReLU), the first conv divided by the input's spread,
    biases N(0, 0.1), head convs (the last conv before loc/conf outputs, found by `is_head`) scaled to
    give logits of spread ~`head_gain`, L2Norm scales U(10, 30)."""
    g = torch.Generator().manual_seed(seed)
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    first = convs[0][1]
    for name, m in convs:
        fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        std = math.sqrt(2.0 / fan_in)
        if m is first:
            std /= input_std
        if is_head(name):
            std = head_gain / math.sqrt(fan_in)
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for name, p in net.named_parameters():
        if name in ("L2Norm.weight", "backbone.scale_weight", "backbone.l2norm.weight"):
            p.copy_(10 + 20 * torch.rand(p.shape, generator=g))


def is_head(name: str) -> bool:
    return name.startswith(("loc.", "conf.", "head."))


# --------------------------------------------------------------------------- the reference's Detect
def _decode(loc, priors, variances=(0.1, 0.2)):
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _greedy_nms(boxes, scores, overlap, top_k):
    """ssd.pytorch's `nms`: the `top_k` best scores, then keep the best and drop IoU > overlap, repeatedly."""
    order = scores.argsort()[-top_k:].tolist()  # ascending; the best is last
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order:
        i = order.pop()
        keep.append(i)
        if not order:
            break
        rest = torch.tensor(order)
        xx1 = boxes[rest, 0].clamp(min=float(boxes[i, 0]))
        yy1 = boxes[rest, 1].clamp(min=float(boxes[i, 1]))
        xx2 = boxes[rest, 2].clamp(max=float(boxes[i, 2]))
        yy2 = boxes[rest, 3].clamp(max=float(boxes[i, 3]))
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (area[rest] - inter + area[i])
        order = [j for j, o in zip(order, iou.tolist()) if o <= overlap]
    return keep


def reference_detect(loc, conf_logits, priors, conf_thresh=0.01, nms_thresh=0.45, top_k=200):
    """Per image: [(label, score, box xyxy relative)] of ssd.pytorch's `Detect` (no per-image cap)."""
    out = []
    for b in range(loc.shape[0]):
        boxes = _decode(loc[b], priors)
        scores = conf_logits[b].softmax(-1)
        dets = []
        for cl in range(1, scores.shape[1]):
            mask = scores[:, cl] > conf_thresh
            if not mask.any():
                continue
            s, bx = scores[mask, cl], boxes[mask]
            for i in _greedy_nms(bx, s, nms_thresh, top_k):
                dets.append((cl, float(s[i]), bx[i].tolist()))
        out.append(sorted(dets, key=lambda d: -d[1]))
    return out
