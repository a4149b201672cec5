"""`pipelines.convert`: ssd.pytorch and torchvision SSD300 weights -> ssd-ray model files, offline.

The source networks are built here with random, non-trivial weights (tests/ssd_sources.py): torchvision's
own `ssd300_vgg16(weights=None, weights_backbone=None)` and an ssd.pytorch-layout SSD300. After the
import, loc and conf logits and the priors must agree with the source's to 1e-5 (relative to the
largest value) on a 300x300 input, and `Predictor` must give the source's own top detections.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from ssd_sources import SSD_PYTORCH_MEAN_BGR, SsdPytorchSSD300, randomize, reference_detect

from ssd_ray import checkpoint as ckpt_io
from ssd_ray.checkpoint import load_model
from ssd_ray.config import load_config
from ssd_ray.convert import ConversionError, convert
from ssd_ray.model import normalize
from ssd_ray.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
VOC300, COCO300 = ROOT / "configs" / "voc300.yaml", ROOT / "configs" / "coco300.yaml"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the largest |b| (the tolerance the issue states: 1e-5)."""
    return float((a - b).abs().max() / b.abs().max())


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 RGB with gradients and blobs: a spread of values, like a photo, not white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([128 + 100 * np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 60)
        img[(np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """torchvision's own ssd300_vgg16 with random weights, and its state dict on disk."""
    tv = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None).eval()
    randomize(tv, seed=1)
    na = [i for i, c in enumerate(torchvision.models.detection.SSD300_VGG16_Weights.COCO_V1.meta["categories"])
          if c == "N/A"]
    with torch.no_grad():  # as in trained weights, the never-used N/A slots score far below the rest
        for conv in tv.head.classification_head.module_list:
            conv.bias.view(-1, 91)[:, na] = -60.0
    path = tmp_path_factory.mktemp("tv") / "ssd300_vgg16_coco.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


@pytest.fixture(scope="module")
def ssd_pytorch_file(tmp_path_factory):
    """An ssd.pytorch-layout VOC SSD300 with random weights, and its state dict on disk."""
    net = SsdPytorchSSD300(21).eval()
    randomize(net, seed=2)
    path = tmp_path_factory.mktemp("ssdpt") / "ssd300_mAP_77.43_v2.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="module")
def torchvision_source(torchvision_file):
    tv, path = torchvision_file
    out = path.with_name("tv.pt")
    ckpt_io.save(convert("torchvision", path, load_config(COCO300)), out)
    return tv, path, out


@pytest.fixture(scope="module")
def ssd_pytorch_source(ssd_pytorch_file):
    net, path = ssd_pytorch_file
    out = path.with_name("ref.pt")
    ckpt_io.save(convert("ssd.pytorch", path, load_config(VOC300)), out)
    return net, path, out


# ------------------------------------------------------------------------------ torchvision
@pytest.mark.slow  # VGG16 SSD300 forward passes on the CPU
def test_torchvision_logits_and_priors_agree(torchvision_source):
    tv, _, out = torchvision_source
    m = load_model(out)
    assert m.normalization["name"] == "torchvision" and m.class_names[:3] == ["person", "bicycle", "car"]
    img = smooth_image(300, 300, seed=3)
    with torch.no_grad():
        images, _ = tv.transform([torch.from_numpy(img).permute(2, 0, 1).float() / 255])
        feats = list(tv.backbone(images.tensors).values())
        head = tv.head(feats)
        anchors = tv.anchor_generator(images, feats)[0]  # [P,4] xyxy pixels
        x = normalize(torch.from_numpy(img)[None], spec=m.input_normalization)
        loc, conf = m.model(x)
    assert rel_err(x, images.tensors) < 1e-6  # the model's own normalisation = torchvision's transform
    assert rel_err(loc, head["bbox_regression"]) < 1e-5
    cats = torchvision.models.detection.SSD300_VGG16_Weights.COCO_V1.meta["categories"]
    kept = [0] + [i for i, c in enumerate(cats) if i > 0 and c != "N/A"]  # category-id order
    assert len(kept) == 81 and conf.shape[-1] == 81
    assert rel_err(conf, head["cls_logits"][..., kept]) < 1e-5
    assert conf.std() > 1.0 and loc.std() > 0.1  # non-trivial outputs
    # torchvision's anchors are the reference's COCO priors (configs/coco300.yaml)
    cxcywh = torch.cat([(anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]], 1) / 300
    assert rel_err(m.priors, cxcywh) < 1e-5


@pytest.mark.slow  # VGG16 SSD300 forward passes on the CPU
def test_torchvision_predictor_matches_torchvision_postprocessing(torchvision_source):
    """The model file's own post-processing is the torchvision preset: same detections as tv(images)."""
    tv, _, out = torchvision_source
    img = smooth_image(300, 300, seed=4)  # 300 x 300: both resizes are the identity
    with torch.no_grad():
        ref = tv([torch.from_numpy(img).permute(2, 0, 1).float() / 255])[0]
    pred = Predictor.from_checkpoint(out, score_thresh=0.01)
    assert pred.detect_args.nms_top_k == 400 and pred.detect_args.clip == "before_nms" and pred.detect_args.top_k == 200
    (det,) = pred(img)
    assert len(ref["scores"]) > 50
    n = 40
    cat_of_label = [0] + [i for i, c in enumerate(
        torchvision.models.detection.SSD300_VGG16_Weights.COCO_V1.meta["categories"]) if i > 0 and c != "N/A"]
    np.testing.assert_allclose(det["scores"][:n], ref["scores"][:n].numpy(), rtol=1e-4)
    np.testing.assert_allclose(det["boxes"][:n], ref["boxes"][:n].numpy(), atol=1e-3)
    assert [cat_of_label[int(lb)] for lb in det["labels"][:n]] == ref["labels"][:n].tolist()


# ------------------------------------------------------------------------------ ssd.pytorch
@pytest.mark.slow  # VGG16 SSD300 forward passes on the CPU
def test_ssd_pytorch_logits_and_priors_agree(ssd_pytorch_source, refdata):
    net, _, out = ssd_pytorch_source
    m = load_model(out)
    assert m.normalization["name"] == "ssd_pytorch" and m.class_names[0] == "aeroplane"
    img = smooth_image(300, 300, seed=5)
    # the reference's preprocessing: BGR, minus (104, 117, 123), then the channel swap to RGB
    bgr = img[:, :, ::-1].astype(np.float32) - np.array(SSD_PYTORCH_MEAN_BGR, np.float32)
    x_ref = torch.from_numpy(np.ascontiguousarray(bgr[:, :, (2, 1, 0)])).permute(2, 0, 1)[None]
    with torch.no_grad():
        loc_ref, conf_ref = net(x_ref)
        x = normalize(torch.from_numpy(img)[None], spec=m.input_normalization)
        loc, conf = m.model(x)
    assert torch.equal(x, x_ref)
    assert rel_err(loc, loc_ref) < 1e-5 and rel_err(conf, conf_ref) < 1e-5
    assert conf.std() > 1.0 and loc.std() > 0.1
    ref_priors = torch.from_numpy(np.load(refdata / "priors_voc300.npz")["priors_voc"])
    assert rel_err(m.priors, ref_priors) < 1e-5


@pytest.mark.slow  # VGG16 SSD300 forward passes on the CPU
def test_predictor_matches_the_reference_pipeline(ssd_pytorch_source, tmp_path):
    """An image file through `Predictor` vs the reference's own cv2 preprocessing + Detect."""
    net, _, out = ssd_pytorch_source
    path = tmp_path / "photo.png"
    img = smooth_image(241, 357, seed=6)
    cv2.imwrite(str(path), img[:, :, ::-1])
    bgr = cv2.resize(cv2.imread(str(path)), (300, 300)).astype(np.float32) - np.array(SSD_PYTORCH_MEAN_BGR, np.float32)
    x_ref = torch.from_numpy(np.ascontiguousarray(bgr[:, :, (2, 1, 0)])).permute(2, 0, 1)[None]
    m = load_model(out)
    with torch.no_grad():
        loc, conf = net(x_ref)
    ref = reference_detect(loc, conf, m.priors)[0]
    (det,) = Predictor.from_checkpoint(out, score_thresh=0.01)(str(path))
    n = 25
    assert len(ref) > n and len(det["scores"]) > n
    np.testing.assert_allclose(det["scores"][:n], [d[1] for d in ref[:n]], rtol=1e-5)
    assert det["labels"][:n].tolist() == [d[0] for d in ref[:n]]
    scale = np.array([357, 241, 357, 241], np.float32)
    ref_boxes = np.clip(np.array([d[2] for d in ref[:n]]), 0, 1) * scale  # Predictor clips to the image
    np.testing.assert_allclose(det["boxes"][:n], ref_boxes, atol=1e-2)


@pytest.mark.slow  # VGG16 SSD300 forward passes on the CPU
def test_ssd_pytorch_coco_head_with_201_outputs(tmp_path):
    """ssd.pytorch's COCO config builds 201 outputs per box; the first 81 are COCO's."""
    net = SsdPytorchSSD300(201).eval()
    randomize(net, seed=7)
    path = tmp_path / "coco_ref.pth"
    torch.save(net.state_dict(), path)
    state = convert("ssd.pytorch", path, load_config(COCO300))
    assert any("201" in n for n in state["imported_from"]["notes"])
    out = tmp_path / "coco.pt"
    ckpt_io.save(state, out)
    m = load_model(out)
    x = torch.randn(1, 3, 300, 300) * 60
    with torch.no_grad():
        _, conf_ref = net(x)
        _, conf = m.model(x)
    assert conf.shape[-1] == 81 and rel_err(conf, conf_ref[..., :81]) < 1e-5


# ------------------------------------------------------------------------------ bad input
def test_torchvision_file_given_as_ssd_pytorch_exits_2(torchvision_file, tmp_path, capsys):
    from pipelines.convert import main

    _, path = torchvision_file
    with pytest.raises(SystemExit) as e:
        main(["--from", "ssd.pytorch", "--weights", str(path), "--config", str(COCO300), "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith("convert error: ") and "missing keys: vgg.0.weight, vgg.0.bias" in err
    assert "unexpected keys: backbone.scale_weight, backbone.features.0.weight" in err
    assert "use --from torchvision" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_voc_head_with_coco_config_names_the_shape(ssd_pytorch_file, tmp_path):
    from pipelines.convert import main

    _, path = ssd_pytorch_file
    with pytest.raises(ConversionError, match=r"conf.0.weight has shape \[84, 512, 3, 3\]: 21 classes x 4 boxes.*"
                                              r"81 classes.*VOC config"):
        convert("ssd.pytorch", path, load_config(COCO300))
    with pytest.raises(SystemExit) as e:
        main(["--from", "ssd.pytorch", "--weights", str(path), "--config", str(COCO300), "--out", str(tmp_path / "y.pt")])
    assert e.value.code == 2 and not (tmp_path / "y.pt").exists()


def test_truncated_and_wrong_files(ssd_pytorch_file, tmp_path, capsys):
    from pipelines.convert import main

    _, path = ssd_pytorch_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SystemExit) as e:
        main(["--from", "ssd.pytorch", "--weights", str(cut), "--config", str(VOC300), "--out", str(tmp_path / "z.pt")])
    assert e.value.code == 2 and "cut.pth" in capsys.readouterr().err
    # a VGG backbone file is not a trained SSD; an existing --out is never overwritten
    reduced = tmp_path / "vgg16_reducedfc.pth"
    torch.save({k[len("vgg."):]: v for k, v in torch.load(path, weights_only=True).items() if k.startswith("vgg.")}, reduced)
    with pytest.raises(ConversionError, match="model.pretrained"):
        convert("ssd.pytorch", reduced, load_config(VOC300))
    out = tmp_path / "mine.pt"
    out.write_bytes(b"someone's file")
    before = out.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["--from", "ssd.pytorch", "--weights", str(path), "--config", str(VOC300), "--out", str(out)])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err and out.read_bytes() == before
    # missing layer: named
    sd = torch.load(path, weights_only=True)
    del sd["conf.5.bias"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(ConversionError, match=r"missing keys: conf.5.bias"):
        convert("ssd.pytorch", tmp_path / "partial.pth", load_config(VOC300))
    with pytest.raises(ConversionError, match="SSD300"):
        convert("torchvision", torchvision_file_stub(tmp_path), load_config(ROOT / "configs" / "voc512.yaml"))


def torchvision_file_stub(tmp_path) -> Path:
    p = tmp_path / "tv_stub.pth"
    torch.save({"backbone.scale_weight": torch.ones(512)}, p)
    return p


def test_ssd_pytorch_ssd512_layout_round_trip(tmp_path):
    """SSD512 state dicts in ssd.pytorch's naming (forks add base/extras['512']) load with voc512.yaml,
    and tell a 300 config why they do not fit."""
    from ssd_ray.model import build_ssd

    cfg = load_config(ROOT / "configs" / "voc512.yaml").with_num_classes(["c"] * 20)
    cfg.model.pretrained = None
    ours = build_ssd(cfg.model, cfg.priors).state_dict()
    rename = {"backbone.vgg.": "vgg.", "backbone.l2norm.": "L2Norm.", "backbone.extras.": "extras."}
    theirs = {}
    for k, v in ours.items():
        for a, b in rename.items():
            k = k.replace(a, b) if k.startswith(a) else k
        theirs[k] = torch.randn_like(v)
    path = tmp_path / "ssd512.pth"
    torch.save(theirs, path)
    state = convert("ssd.pytorch", path, load_config(ROOT / "configs" / "voc512.yaml"))
    assert torch.equal(state["model"]["backbone.extras.9.weight"], theirs["extras.9.weight"])
    assert torch.equal(state["model"]["conf.6.bias"], theirs["conf.6.bias"])
    assert torch.equal(state["model"]["backbone.l2norm.weight"], theirs["L2Norm.weight"])
    with pytest.raises(ConversionError, match=r"unexpected keys: extras.8.weight.*7 source maps.*voc512.yaml"):
        convert("ssd.pytorch", path, load_config(VOC300))
