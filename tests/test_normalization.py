"""Input normalisation travels with the model: presets, stored specs, training, validation,
prediction, `model.pretrained` (ssd.pytorch's vgg16_reducedfc.pth) and fine-tuning."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssd_ray import checkpoint as ckpt_io
from ssd_ray.config import ConfigError, config_from_dict, config_to_dict
from ssd_ray.data.records import ImageRecord
from ssd_ray.evaluate.predict import predict_records
from ssd_ray.model import NORMALIZATIONS, Normalization, build_ssd, normalize
from ssd_ray.model.pretrained import pretrained_normalization
from ssd_ray.model.vgg import VGG16Backbone
from ssd_ray.predict import Predictor
from ssd_ray.train.step import StepSettings, TrainStep

IMG = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_presets_are_their_sources_formulas():
    x = IMG.permute(0, 3, 1, 2).double()
    # ssd.pytorch: BGR float minus (104, 117, 123), then the channel swap back to RGB
    bgr = IMG.flip(-1).double() - torch.tensor([104.0, 117.0, 123.0], dtype=torch.float64)
    expected = bgr.flip(-1).permute(0, 3, 1, 2)
    assert torch.equal(normalize(IMG, spec="ssd_pytorch").double(), expected)
    # torchvision GeneralizedRCNNTransform: (x/255 - image_mean) / (1/255)
    tv = (x / 255 - torch.tensor([0.48235, 0.45882, 0.40784], dtype=torch.float64).view(1, 3, 1, 1)) * 255
    assert torch.allclose(normalize(IMG, spec="torchvision").double(), tv, atol=1e-4)
    # ssd-ray's own is the default
    assert torch.equal(normalize(IMG), normalize(IMG, spec="ssd_ray"))
    assert torch.equal(normalize(IMG, spec=NORMALIZATIONS["ssd_pytorch"].to_dict()), normalize(IMG, spec="ssd_pytorch"))


def test_stored_specs_round_trip_and_bad_ones():
    for n in NORMALIZATIONS.values():
        assert Normalization.from_spec(n.to_dict()) == n
    # files older than the "name" entry: named after the preset their numbers match
    old = {"channels": "RGB", "dtype": "uint8", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
           "std": [0.229, 0.224, 0.225], "resize": "square, cv2.INTER_LINEAR"}
    assert Normalization.from_spec(old).name == "ssd_ray"
    assert Normalization.from_spec({**old, "mean": [0.5, 0.5, 0.5]}).name == "custom"
    with pytest.raises(ValueError, match="unknown normalization 'caffe'"):
        Normalization.from_spec("caffe")
    with pytest.raises(ValueError, match="std"):
        Normalization.from_spec({**old, "std": [0, 1, 1]})
    with pytest.raises(ValueError, match="BGR"):
        Normalization.from_spec({**old, "channels": "BGR"})


def _light_cfg(normalization="auto", **model):
    return config_from_dict({
        "name": "t", "data": {"root": "/nonexistent", "classes": ["a", "b"]},
        "model": {"backbone": "light", "min_dim": 64, "width": 4, "num_classes": 3, "normalization": normalization,
                  **model},
        "priors": {"feature_maps": [8, 4, 2, 1], "steps": [8, 16, 32, 64], "min_sizes": [8, 20, 36, 52],
                   "max_sizes": [20, 36, 52, 64], "aspect_ratios": [[2], [2], [2], [2]]},
        "train": {"max_iter": 10, "warmup_iters": 0, "channels_last": False}})


class _Recorder(torch.nn.Module):
    """Wraps a model and keeps the inputs it was given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def test_training_step_uses_the_configs_normalization():
    from ssd_ray.priors import priors_from_config

    cfg = _light_cfg("ssd_pytorch")
    settings = StepSettings.from_config(cfg, torch.device("cpu"))
    assert settings.normalization.name == "ssd_pytorch"
    assert StepSettings.from_config(_light_cfg(), torch.device("cpu")).normalization is None  # ssd-ray's own
    model = build_ssd(cfg.model, cfg.priors)
    rec = _Recorder(model)
    step = TrainStep(model, priors_from_config(cfg.model, cfg.priors), torch.optim.SGD(model.parameters(), lr=1e-3),
                     settings, net=rec)
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.3, 0.9, 0.8]]])
    step(images, boxes, torch.tensor([[0], [1]]))
    assert torch.equal(rec.inputs[0], normalize(images, spec="ssd_pytorch"))


def test_prediction_and_predictor_use_the_models_normalization(tmp_path):
    cfg = _light_cfg("torchvision")
    model = build_ssd(cfg.model, cfg.priors).eval()
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "im.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    rec = _Recorder(model)
    from ssd_ray.priors import priors_from_config

    priors = priors_from_config(cfg.model, cfg.priors)
    predict_records(rec, priors, [ImageRecord("im", str(path), 64, 64, [], [], [])], 64, normalization="torchvision")
    expected = normalize(torch.from_numpy(img)[None], spec="torchvision")
    assert torch.equal(rec.inputs[-1], expected)
    # the model file records it; load_model, Predictor and export read it from there
    file = tmp_path / "m.pt"
    ckpt_io.save(ckpt_io.model_state(model, config_to_dict(cfg), ["a", "b"]), file)
    loaded = ckpt_io.load_model(file)
    assert loaded.normalization["name"] == "torchvision" and loaded.input_normalization == NORMALIZATIONS["torchvision"]
    p = Predictor.from_checkpoint(file, score_thresh=0.0)
    p.model = _Recorder(p.model)
    p(img)
    assert torch.equal(p.model.inputs[-1], expected) and p.meta()["normalization"]["name"] == "torchvision"


def _reducedfc_file(tmp_path) -> tuple[Path, dict]:
    torch.manual_seed(3)
    sd = VGG16Backbone("ssd300").vgg.state_dict()  # ssd.pytorch saves its `vgg` ModuleList exactly so
    path = tmp_path / "vgg16_reducedfc.pth"
    torch.save(sd, path)
    return path, sd


def test_pretrained_accepts_vgg16_reducedfc(tmp_path):
    path, sd = _reducedfc_file(tmp_path)
    assert pretrained_normalization(path) == "ssd_pytorch"
    cfg = config_from_dict({**config_to_dict(_light_cfg()), "model": {"backbone": "vgg16", "min_dim": 300,
                                                                      "num_classes": 3, "pretrained": str(path)},
                            "priors": {"feature_maps": [38, 19, 10, 5, 3, 1], "steps": [8, 16, 32, 64, 100, 300],
                                       "min_sizes": [30, 60, 111, 162, 213, 264],
                                       "max_sizes": [60, 111, 162, 213, 264, 315],
                                       "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]]}})
    ssd = build_ssd(cfg.model, cfg.priors)
    for key in ("0.weight", "28.bias", "31.weight", "33.weight"):
        assert torch.equal(ssd.backbone.vgg.state_dict()[key], sd[key]), key
    # resolved before training: "auto" follows the pretrained file; a contradiction is a config error
    assert ckpt_io.resolve_normalization(cfg).model.normalization == "ssd_pytorch"
    cfg.model.normalization = "ssd_ray"
    with pytest.raises(ConfigError, match="vgg16_reducedfc.pth was trained with 'ssd_pytorch'"):
        ckpt_io.resolve_normalization(cfg)
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in sd.items() if k != "31.weight"}, bad)
    with pytest.raises(ValueError, match=r"missing keys \['31.weight'\]"):
        build_ssd(cfg.model.model_copy(update={"pretrained": str(bad)}), cfg.priors)


def test_finetuning_keeps_an_imported_models_normalization(tmp_path):
    cfg = _light_cfg("ssd_pytorch")
    model = build_ssd(cfg.model, cfg.priors)
    file = tmp_path / "imported.pt"
    ckpt_io.save(ckpt_io.model_state(model, config_to_dict(cfg), ["a", "b"]), file)
    assert ckpt_io.resolve_normalization(_light_cfg(), init_from=file).model.normalization == "ssd_pytorch"
    assert ckpt_io.resolve_normalization(_light_cfg()).model.normalization == "ssd_ray"
    with pytest.raises(ConfigError, match="model.normalization=torchvision but --init-from"):
        ckpt_io.resolve_normalization(_light_cfg("torchvision"), init_from=file)
