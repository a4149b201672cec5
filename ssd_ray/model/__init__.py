"""SSD networks: VGG16 SSD300/SSD512 (as ssd.pytorch) and a light CPU backbone; input normalisation."""

from .normalize import IMAGENET_MEAN, IMAGENET_STD, MEAN_PIXEL_RGB, NORMALIZATIONS, Normalization, normalize
from .pretrained import load_vgg16_imagenet
from .ssd import SSD, boxes_per_location, build_ssd

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEAN_PIXEL_RGB",
    "NORMALIZATIONS",
    "Normalization",
    "SSD",
    "boxes_per_location",
    "build_ssd",
    "load_vgg16_imagenet",
    "normalize",
]
