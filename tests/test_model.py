"""SSD networks: parameter counts, prior counts and order, input checks, normalisation, VGG16 loading."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision

from ssd_ray.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MEAN_PIXEL_RGB,
    SSD,
    boxes_per_location,
    build_ssd,
    load_vgg16_imagenet,
    normalize,
)
from ssd_ray.model.layers import L2Norm

VOC300_AR = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
VOC300_MAPS = [38, 19, 10, 5, 3, 1]
SSD512_AR = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD512_MAPS = [64, 32, 16, 8, 4, 2, 1]
LIGHT224_MAPS = [28, 14, 7, 4]


def model_cfg(backbone="vgg16", num_classes=21, min_dim=300, pretrained=None, width=32):
    return SimpleNamespace(
        backbone=backbone, num_classes=num_classes, min_dim=min_dim, pretrained=pretrained, width=width
    )


def priors_cfg(feature_maps, aspect_ratios):
    return SimpleNamespace(feature_maps=feature_maps, aspect_ratios=aspect_ratios)


def light(num_classes=4, min_dim=224, maps=LIGHT224_MAPS, width=16) -> SSD:
    torch.manual_seed(0)
    return build_ssd(model_cfg("light", num_classes, min_dim, width=width), priors_cfg(maps, [[2]] * len(maps)))


@pytest.fixture(scope="module")
def ssd300() -> SSD:
    torch.manual_seed(0)
    return build_ssd(model_cfg(), priors_cfg(VOC300_MAPS, VOC300_AR))


# ---------------------------------------------------------------- VGG16 SSD300 / SSD512


def test_ssd300_voc_parameter_count_matches_reference(ssd300):
    # ssd.pytorch's build_ssd('train', 300, 21) has exactly this many parameters.
    assert sum(p.numel() for p in ssd300.parameters()) == 26_285_486


def test_ssd300_voc_forward_gives_8732_priors_with_channels_last_input(ssd300):
    # 38²·4 + 19²·6 + 10²·6 + 5²·6 + 3²·4 + 1²·4 = 5776 + 2166 + 600 + 150 + 36 + 4 = 8732
    assert ssd300.boxes_per_location == [4, 6, 6, 6, 4, 4]
    assert ssd300.feature_map_sizes(300) == VOC300_MAPS
    x = torch.randn(1, 3, 300, 300).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        loc, conf = ssd300.eval()(x)
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    assert loc.dtype == conf.dtype == torch.float32
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all()


def test_ssd300_init_follows_reference(ssd300):
    assert torch.equal(ssd300.backbone.l2norm.weight, torch.full((512,), 20.0))
    for conv in (*ssd300.loc, *ssd300.conf, *ssd300.backbone.extras):
        assert torch.count_nonzero(conv.bias) == 0
    # conf head of source 0: 4 boxes x 21 classes, 3x3 over conv4_3's 512 channels
    assert ssd300.conf[0].weight.shape == (84, 512, 3, 3)


def test_ssd300_coco_81_classes_on_meta_device():
    # The meta device computes shapes only, so the full network costs nothing to "run".
    with torch.device("meta"):
        ssd = build_ssd(model_cfg(num_classes=81), priors_cfg(VOC300_MAPS, VOC300_AR))
        loc, conf = ssd(torch.empty(2, 3, 300, 300))
    assert ssd.num_classes == 81
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 81)


def test_ssd512_feature_maps_and_24564_priors():
    with torch.device("meta"):
        ssd = build_ssd(model_cfg(min_dim=512), priors_cfg(SSD512_MAPS, SSD512_AR))
        loc, conf = ssd(torch.empty(1, 3, 512, 512))
    assert ssd.feature_map_sizes(512) == [64, 32, 16, 8, 4, 2, 1]
    assert ssd.boxes_per_location == [4, 6, 6, 6, 6, 4, 4]
    # 64²·4 + 32²·6 + 16²·6 + 8²·6 + 4²·6 + 2²·4 + 1·4 = 16384+6144+1536+384+96+16+4 = 24564
    assert sum(f * f * b for f, b in zip(SSD512_MAPS, ssd.boxes_per_location)) == 24564
    assert loc.shape == (1, 24564, 4) and conf.shape == (1, 24564, 21)
    # the 4x4 pad-1 last extra turns 2x2 into 1x1
    assert ssd.backbone.extras[-1].kernel_size == (4, 4)


# ---------------------------------------------------------------- light backbone


def test_light_224_prior_count_and_sources():
    ssd = light(width=16)
    assert ssd.feature_map_sizes(224) == LIGHT224_MAPS
    with torch.no_grad():
        loc, conf = ssd.eval()(torch.randn(2, 3, 224, 224))
    n = (28 * 28 + 14 * 14 + 7 * 7 + 4 * 4) * 4  # 4 boxes per location for [2]
    assert loc.shape == (2, n, 4) and conf.shape == (2, n, 4)


@pytest.mark.parametrize(
    "min_dim, maps",
    [
        (192, [24, 12, 6, 3]),
        (256, [32, 16, 8, 4]),
        (256, [32, 16, 8, 4, 2]),  # a fifth source adds one more stride-2 block
        (300, [38, 19, 10, 5, 3, 2]),  # ceil(n/2) per stride-2 conv: 300 -> 150 -> 75 -> 38 -> ...
    ],
)
def test_light_feature_map_sizes(min_dim, maps):
    ssd = light(min_dim=min_dim, maps=maps, width=8)
    assert ssd.feature_map_sizes(min_dim) == maps
    # the analytic sizes agree with what the layers really produce
    with torch.no_grad():
        sizes = [s.shape[-1] for s in ssd.backbone.eval()(torch.zeros(1, 3, min_dim, min_dim))]
    assert sizes == maps


def test_light_width24_parameter_budget():
    ssd = light(width=24)
    n_backbone = sum(p.numel() for p in ssd.backbone.parameters())
    # convs (bias-free): 3*12*9 + 12*24*9 + 24*48*9 + 48*48*9 + 48*96*9 + 96*96*9 + 96*192*9 + 192*192*9
    # = 656,100; BN weight + bias: 2 * (12+24+48+48+96+96+192+192) = 1,416
    assert n_backbone == 656_100 + 1_416
    assert not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in ssd.modules())  # no depthwise


def test_light_stem_without_batchnorm_and_narrower():
    # The demo's stem: 3 -> 8 channels, a conv with a bias and no BatchNorm (the costliest layer per
    # multiply-add on CPU), then the usual 8 -> 24 conv-BN-ReLU.
    cfg = SimpleNamespace(backbone="light", num_classes=4, min_dim=224, pretrained=None, width=24,
                          stem_width=8, stem_norm=False)
    ssd = build_ssd(cfg, priors_cfg(LIGHT224_MAPS, [[2]] * 4))
    first, second = ssd.backbone.stages[0][0], ssd.backbone.stages[0][1]
    assert [type(m) for m in first] == [torch.nn.Conv2d, torch.nn.ReLU] and first[0].bias is not None
    assert first[0].out_channels == 8 and second[0].in_channels == 8
    assert isinstance(second[1], torch.nn.BatchNorm2d)
    assert float(first[0].bias.abs().sum()) == 0.0  # zero-initialised, as BatchNorm's shift would be
    n_backbone = sum(p.numel() for p in ssd.backbone.parameters())
    # convs: 3*8*9 + 8 (bias) + 8*24*9 + (the rest as width 24) 24*48*9 + 48*48*9 + 48*96*9 + 96*96*9
    # + 96*192*9 + 192*192*9 = 216 + 8 + 1,728 + 653,184; BN: 2 * (24+48+48+96+96+192+192) = 1,392
    assert n_backbone == 216 + 8 + 1_728 + 653_184 + 1_392
    assert ssd.feature_map_sizes(224) == LIGHT224_MAPS
    assert ssd(torch.zeros(1, 3, 224, 224))[0].shape == (1, sum(f * f * 4 for f in LIGHT224_MAPS), 4)


def test_light_conf_bias_starts_at_99_percent_background():
    ssd = light(num_classes=4)
    for conv in ssd.conf:
        p = conv.bias.detach().view(4, 4).softmax(-1)  # [boxes, classes]
        # bias of class 0 = log(3 · 0.99 / 0.01): softmax gives 0.99 to background, 0.01/3 to the others
        assert torch.allclose(p[:, 0], torch.full((4,), 0.99))
        assert torch.allclose(p[:, 1:], torch.full((4, 3), 0.01 / 3))
    assert all(torch.count_nonzero(conv.bias) == 0 for conv in ssd.loc)


def test_output_order_is_source_then_row_major_then_box():
    ssd = light(num_classes=3, width=8).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        loc, conf = ssd(x)  # runs each source's two heads as one stacked conv
        source1 = ssd.backbone(x)[1]
        heads = {"loc1": ssd.loc[1](source1), "conf1": ssd.conf[1](source1)}  # each head on its own
    # source 1 (14x14, 4 boxes) starts after source 0's 28·28·4 = 3136 rows; location (i=5, j=9),
    # box a=2 is row 3136 + (5·14 + 9)·4 + 2 = 3136 + 316 + 2 = 3454
    row = 3454
    # (allclose: the stacked conv may sum in another order than each head's own)
    assert torch.allclose(loc[:, row], heads["loc1"][:, 8:12, 5, 9], atol=1e-6)  # box 2 -> channels 2·4 .. 2·4+3
    assert torch.allclose(conf[:, row], heads["conf1"][:, 6:9, 5, 9], atol=1e-6)  # box 2 -> channels 2·3 .. 2·3+2


def test_channels_last_input_gives_the_same_outputs():
    ssd = light(min_dim=128, maps=[16, 8, 4, 2], width=8).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = ssd(x)
        out = ssd.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref, out):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_forward_and_backward_under_bf16_autocast():
    ssd = light(min_dim=128, maps=[16, 8, 4, 2], width=8).train()
    x = torch.randn(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loc, conf = ssd(x)
    assert loc.dtype == conf.dtype == torch.bfloat16
    (loc.float().square().mean() + conf.float().logsumexp(-1).mean()).backward()
    grads = [p.grad for p in ssd.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_l2norm_hand_checked_and_keeps_bf16():
    layer = L2Norm(2, scale=20.0)
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    # ||(3,4)|| = 5 -> 20 · (0.6, 0.8) = (12, 16)
    assert torch.allclose(layer(x).flatten(), torch.tensor([12.0, 16.0]))
    out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float().flatten(), torch.tensor([12.0, 16.0]))


def test_boxes_per_location_derived_from_aspect_ratios():
    # (s,s), (s',s'), then each ratio and its reciprocal
    assert boxes_per_location([[2], [2, 3], []]) == [4, 6, 2]
    ssd = build_ssd(model_cfg("light", 5, 192, width=8), priors_cfg([24, 12, 6], [[2, 3], [], [2]]))
    assert ssd.boxes_per_location == [6, 2, 4]
    assert ssd.loc[0].out_channels == 24 and ssd.conf[1].out_channels == 10  # 6·4, 2·5


# ---------------------------------------------------------------- bad configuration / input


def test_feature_map_mismatch_names_both_lists():
    with pytest.raises(ValueError, match=r"\[38, 19, 10, 5, 3, 1\].*\[38, 19, 10, 5, 3, 2\]"), torch.device("meta"):
        build_ssd(model_cfg(), priors_cfg([38, 19, 10, 5, 3, 2], VOC300_AR))
    with pytest.raises(ValueError, match=r"\[28, 14, 7, 4\].*\[24, 12, 6, 3\]"):
        build_ssd(model_cfg("light", 4, 224, width=8), priors_cfg([24, 12, 6, 3], [[2]] * 4))


@pytest.mark.parametrize(
    "mcfg, pcfg, message",
    [
        (model_cfg("resnet"), priors_cfg(VOC300_MAPS, VOC300_AR), "model.backbone"),
        (model_cfg(), priors_cfg(VOC300_MAPS[:5], VOC300_AR[:5]), "6 \\(SSD300\\) or 7"),
        (model_cfg(), priors_cfg(VOC300_MAPS, VOC300_AR[:5]), "aspect_ratios has 5"),
        (model_cfg(num_classes=1), priors_cfg(VOC300_MAPS, VOC300_AR), "num_classes"),
        (model_cfg("light", 4, 224, pretrained="/x/v.pth"), priors_cfg(LIGHT224_MAPS, [[2]] * 4), "only for vgg16"),
    ],
)
def test_bad_config_raises_clear_error(mcfg, pcfg, message):
    with pytest.raises(ValueError, match=message), torch.device("meta"):  # meta: skip the weight init cost
        build_ssd(mcfg, pcfg)


def test_wrong_input_size_raises_instead_of_misaligning_priors():
    ssd = light(width=8).eval()
    with pytest.raises(ValueError, match=r"source 0 of size \[24, 24\].*28x28"):
        ssd(torch.zeros(1, 3, 192, 192))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        ssd(torch.zeros(3, 224, 224))


# ---------------------------------------------------------------- normalize


def test_normalize_hand_checked_values():
    img = torch.zeros(1, 2, 3, 3, dtype=torch.uint8)
    img[0, 1, 2] = torch.tensor([255, 0, 128], dtype=torch.uint8)
    x = normalize(img)
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    # pixel (row 1, col 2): R 255 -> (1 - 0.485)/0.229, G 0 -> -0.456/0.224, B 128 -> (128/255 - 0.406)/0.225
    expected = torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225])
    assert torch.allclose(x[0, :, 1, 2], expected, atol=1e-6)
    # a black pixel is -mean/std in each channel
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]), atol=1e-6)


def test_normalize_mean_pixel_is_near_zero_and_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    x = normalize(torch.tensor(MEAN_PIXEL_RGB, dtype=torch.uint8).view(1, 1, 1, 3))
    # |round(255 m) - 255 m| <= 0.5 -> |x| <= 0.5 / (255 · 0.224) ≈ 0.009
    assert x.abs().max() < 0.01


def test_normalize_memory_format_and_edge_cases():
    img = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    plain, cl = normalize(img), normalize(img, channels_last=True)
    assert plain.is_contiguous() and cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, cl)
    assert normalize(torch.zeros(0, 8, 8, 3, dtype=torch.uint8)).shape == (0, 3, 8, 8)  # empty batch
    with pytest.raises(ValueError, match="uint8"):
        normalize(img.float())
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        normalize(img[0])


# ---------------------------------------------------------------- ImageNet VGG16 weights


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A randomly initialised torchvision vgg16 (no BN) state dict on disk, as the real file would be."""
    torch.manual_seed(1)
    sd = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(sd, path)
    return path, sd


def test_build_ssd_loads_and_reduces_vgg16(vgg16_file):
    path, sd = vgg16_file
    ssd = build_ssd(model_cfg(pretrained=str(path)), priors_cfg(VOC300_MAPS, VOC300_AR))
    vgg = ssd.backbone.vgg
    assert torch.equal(vgg[0].weight, sd["features.0.weight"])  # conv1_1
    assert torch.equal(vgg[28].weight, sd["features.28.weight"])  # conv5_3
    assert torch.equal(vgg[28].bias, sd["features.28.bias"])
    fc6, fc7 = sd["classifier.0.weight"], sd["classifier.3.weight"]
    assert torch.equal(vgg[31].weight, fc6.view(4096, 512, 7, 7)[::4, :, ::3, ::3])
    # one element by hand: conv6 filter 1, channel 5, tap (2,1) = fc6 row 4, column 5·49 + 6·7 + 3
    assert vgg[31].weight[1, 5, 2, 1] == fc6[4, 5 * 49 + 6 * 7 + 3]
    assert torch.equal(vgg[31].bias, sd["classifier.0.bias"][::4])
    # conv7 filter 3, input 7 = fc7 row 12, column 28
    assert vgg[33].weight.shape == (1024, 1024, 1, 1) and vgg[33].weight[3, 7, 0, 0] == fc7[12, 28]
    assert torch.equal(vgg[33].bias, sd["classifier.3.bias"][::4])


@pytest.mark.parametrize(
    "content, message",
    [
        ({}, "'features.0.weight' missing"),
        ({"features.0.weight": torch.zeros(64, 3, 3, 3)}, "'features.0.bias' missing.*29 of 30"),
        ({"features.1.running_mean": torch.zeros(64)}, "vgg16_bn"),
    ],
)
def test_load_vgg16_missing_keys(ssd300, tmp_path, content, message):
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=message):
        load_vgg16_imagenet(ssd300, path)


def test_load_vgg16_wrong_shape_names_key(ssd300, tmp_path):
    path = tmp_path / "bad_shape.pth"
    # keys are checked in order, so a wrong first conv is reported before the missing rest
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, path)
    before = ssd300.backbone.vgg[0].weight.clone()
    with pytest.raises(ValueError, match=r"'features.0.weight' has shape \[64, 1, 3, 3\], expected \[64, 3, 3, 3\]"):
        load_vgg16_imagenet(ssd300, path)
    assert torch.equal(ssd300.backbone.vgg[0].weight, before)  # nothing copied from a bad file


def test_load_vgg16_not_a_state_dict(ssd300, tmp_path):
    text = tmp_path / "vgg16.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="vgg16.txt"):
        load_vgg16_imagenet(ssd300, text)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_vgg16_imagenet(ssd300, tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="vgg16 backbone"):
        load_vgg16_imagenet(light(width=8), text)
