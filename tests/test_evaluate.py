"""VOC evaluation: voc_ap parity with the reference data, voc_eval hand cases under both pixel
conventions, the in-memory evaluator, evaluate_model with a stand-in model, and the written reports."""

from __future__ import annotations

import importlib
import json
import math
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import ssd_ray
from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.evaluate import (
    EvalResult,
    evaluate_detections,
    evaluate_model,
    predict_records,
    score_detections,
    voc_ap,
    voc_eval,
)

from ssd_ray.postprocess import DetectArgs

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"


# ---------------------------------------------------------------- voc_ap parity

def _voc_ap_cases():
    data = json.loads((REFDATA / "voc_ap.json").read_text())
    return data["voc_ap_cases"]


@pytest.mark.parametrize("case", sorted(_voc_ap_cases()))
def test_voc_ap_matches_reference_exactly(case):
    c = _voc_ap_cases()[case]
    rec, prec = np.array(c["rec"], dtype=np.float64), np.array(c["prec"], dtype=np.float64)
    # Same operations in the same order as the reference: equal to the last bit, not approximately.
    assert voc_ap(rec, prec, use_07_metric=True) == c["ap_use_07_metric_true"]
    assert voc_ap(rec, prec, use_07_metric=False) == c["ap_use_07_metric_false"]


def test_voc_ap_uses_arange_thresholds_not_exact_tenths():
    c = _voc_ap_cases()["A_recall_multiples_of_0.1"]
    # Case A's recall hits 0.3 exactly, which does not reach np.arange's 0.30000000000000004.
    assert voc_ap(c["rec"], c["prec"]) != pytest.approx(c["contrast_ap_11pt_with_exact_thresholds_not_ssd_pytorch"])


def test_voc_ap_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="lengths differ"):
        voc_ap([0.1, 0.2], [1.0])


# ---------------------------------------------------------------- voc_eval on real XML

def write_voc_xml(path: Path, width: int, height: int, objects) -> None:
    """objects: [(name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)]"""
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(diff)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects)
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename><size><width>{width}</width>"
                    f"<height>{height}</height><depth>3</depth></size>{objs}</annotation>")


# img1: dog A (non-difficult), dog D (difficult).
# img2: dog B, dog C, and a cat where a dog detection lands.
GT_OBJECTS = {
    "img1": (100, 100, [("dog", (11, 11, 50, 50), 0), ("dog", (61, 61, 90, 90), 1)]),
    "img2": (100, 100, [("dog", (11, 11, 20, 20), 0), ("dog", (61, 11, 70, 20), 0),
                        ("cat", (31, 61, 60, 90), 0)]),
}
# (image_id, score, xmin, ymin, xmax, ymax) in the XML's pixel coordinates
DOG_DETECTIONS = [
    # d1 on A exactly. devkit IoU 1. ssd_pytorch: GT -> (10,10,49,49) 39x39 = 1521, det 39x39 = 1521,
    #    intersection 38x38 = 1444, IoU 1444 / 1598 = 0.904 -> TP under both.
    ("img1", 0.9, 11, 11, 50, 50),
    # d2 on A again: A is taken -> FP (duplicate).
    ("img1", 0.8, 11, 11, 50, 50),
    # d3 on the difficult D exactly: IoU > 0.5 with a difficult box -> ignored (neither TP nor FP).
    ("img1", 0.7, 61, 61, 90, 90),
    # d4 near B = (11,11,20,20):
    #   devkit: B 10x10 = 100; d4 8 wide (10..17) x 8 high (13..20) = 64; intersection x 11..17 -> 7,
    #     y 13..20 -> 8: 56; IoU 56 / (100 + 64 - 56) = 56/108 = 0.519 > 0.5 -> TP.
    #   ssd_pytorch: B -> (10,10,19,19) 9x9 = 81; d4 (17-10)x(20-13) = 7x7 = 49; intersection
    #     x 10..17 -> 7, y 13..19 -> 6: 42; IoU 42 / (81 + 49 - 42) = 42/88 = 0.477 -> FP.
    #   (Neither rule, XML boxes with no +1, would also say 42/88 -> FP: the devkit case catches it.)
    ("img2", 0.6, 10, 13, 17, 20),
    # d5 near C = (61,11,70,20) (the same geometry as B, shifted 50 px right):
    #   devkit: C 100; d5 10 wide (59..68) x 7 high (11..17) = 70; intersection x 61..68 -> 8,
    #     y 11..17 -> 7: 56; IoU 56 / (100 + 70 - 56) = 56/114 = 0.491 -> FP.
    #   ssd_pytorch: C -> (60,10,69,19) 81; d5 9x6 = 54; intersection x 60..68 -> 8, y 11..17 -> 6:
    #     48; IoU 48 / (81 + 54 - 48) = 48/87 = 0.552 -> TP. (No +1 on XML boxes: 42/93 -> FP.)
    ("img2", 0.5, 59, 11, 68, 17),
    # d6 exactly on the cat: no dog there -> FP (ground truth of other classes is not matched).
    ("img2", 0.4, 31, 61, 60, 90),
]


@pytest.fixture
def voc_dir(tmp_path):
    for image_id, (w, h, objects) in GT_OBJECTS.items():
        write_voc_xml(tmp_path / f"{image_id}.xml", w, h, objects)
    return tmp_path


@pytest.mark.parametrize("convention, rec, prec, ap07, ap_area", [
    # npos = 3 (A, B, C; D is difficult). Rows in score order d1..d6.
    # devkit: TP FP ign TP FP FP -> cum tp 1 1 1 2 2 2, cum fp 0 1 1 1 2 3.
    # 11-point: t = 0, .1, .2, .3 reach recall 1/3 at precision 1 (4 points); t = .4, .5, .6 reach
    # 2/3 at best precision 2/3 (3 points); t >= .7 none: (4 + 3 * 2/3) / 11 = 6/11.
    # area: 1/3 * 1 + 1/3 * 2/3 = 5/9.
    ("devkit", [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3], [1, 1 / 2, 1 / 2, 2 / 3, 2 / 4, 2 / 5], 6 / 11, 5 / 9),
    # ssd_pytorch: TP FP ign FP TP FP -> cum tp 1 1 1 1 2 2, cum fp 0 1 1 2 2 3.
    # 11-point: 4 points at 1, 3 points at 1/2: (4 + 1.5) / 11 = 0.5. area: 1/3 * 1 + 1/3 * 1/2 = 1/2.
    ("ssd_pytorch", [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3], [1, 1 / 2, 1 / 2, 1 / 3, 2 / 4, 2 / 5], 0.5, 0.5),
])
def test_voc_eval_hand_case(voc_dir, convention, rec, prec, ap07, ap_area):
    ids = ["img1", "img2"]
    r, p, ap = voc_eval(str(voc_dir), ids, "dog", DOG_DETECTIONS, use_07_metric=True, pixel_convention=convention)
    np.testing.assert_allclose(r, rec, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p, prec, rtol=0, atol=1e-15)
    assert ap == pytest.approx(ap07, abs=1e-12)
    _, _, ap2 = voc_eval(str(voc_dir), ids, "dog", DOG_DETECTIONS, use_07_metric=False, pixel_convention=convention)
    assert ap2 == pytest.approx(ap_area, abs=1e-12)


def test_voc_eval_sorts_by_score(voc_dir):
    # Input order must not matter: the reversed list gives the same curve.
    a = voc_eval(str(voc_dir), ["img1", "img2"], "dog", DOG_DETECTIONS)
    b = voc_eval(str(voc_dir), ["img1", "img2"], "dog", DOG_DETECTIONS[::-1])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_voc_eval_no_detections_and_absent_class(voc_dir):
    rec, prec, ap = voc_eval(str(voc_dir), ["img1", "img2"], "dog", [])
    assert rec.shape == prec.shape == (0,) and ap == 0.0  # 3 dogs, nothing found
    # No bird in any annotation: AP undefined -> NaN here; higher levels report "absent".
    rec, prec, ap = voc_eval(str(voc_dir), ["img1", "img2"], "bird", [("img1", 0.5, 1, 1, 10, 10)])
    assert math.isnan(ap) and np.isnan(rec).all()
    np.testing.assert_array_equal(prec, [0.0])  # one FP


def test_voc_eval_bad_input(voc_dir):
    with pytest.raises(ValueError, match="img9"):
        voc_eval(str(voc_dir), ["img1", "img2"], "dog", [("img9", 0.5, 1, 1, 10, 10)])
    with pytest.raises(ValueError, match="pixel_convention"):
        voc_eval(str(voc_dir), ["img1"], "dog", [], pixel_convention="matlab")
    (voc_dir / "broken.xml").write_text("<annotation><object><name>dog</name><bndbox><xmin>x</xmin>"
                                        "</bndbox></object></annotation>")
    with pytest.raises(ValueError, match="broken.xml.*xmin"):
        voc_eval(str(voc_dir), ["broken"], "dog", [])


# ---------------------------------------------------------------- in-memory evaluator

def _xml_to_rel(box, w, h):
    """docs/design.md: x_rel = (xmin - 1) / width, x2_rel = xmax / width."""
    return [(box[0] - 1) / w, (box[1] - 1) / h, box[2] / w, box[3] / h]


def _records_from_objects(class_names):
    records = []
    for image_id, (w, h, objects) in GT_OBJECTS.items():
        records.append(ImageRecord(
            image_id, f"/nonexistent/{image_id}.jpg", w, h,
            boxes=[_xml_to_rel(b, w, h) for _, b, _ in objects],
            labels=[class_names.index(n) for n, _, _ in objects],
            difficult=[d for _, _, d in objects]))
    return records


def test_in_memory_evaluator_gives_devkit_verdicts(voc_dir):
    # Records store continuous boxes (xmin-1, ..., xmax); IoU on them without +1 equals the devkit's
    # +1 IoU on the XML boxes, so the whole curve must match voc_eval(..., "devkit").
    class_names = ["cat", "dog"]
    records = _records_from_objects(class_names)
    dets = {r.image_id: {"boxes": [], "scores": [], "labels": []} for r in records}
    for image_id, score, *box in DOG_DETECTIONS:
        w, h, _ = GT_OBJECTS[image_id]
        d = dets[image_id]
        d["boxes"].append(_xml_to_rel(box, w, h))
        d["scores"].append(score)
        d["labels"].append(2)  # model space: dog = class id 1 -> label 2
    metrics = evaluate_detections(records, dets, class_names)
    rec, prec, ap07 = voc_eval(str(voc_dir), ["img1", "img2"], "dog", DOG_DETECTIONS)
    dog = metrics.classes[1]
    np.testing.assert_allclose(dog.rec, rec, atol=1e-12)
    np.testing.assert_allclose(dog.prec, prec, atol=1e-12)
    assert dog.ap_07 == pytest.approx(6 / 11) and dog.ap_area == pytest.approx(5 / 9)
    assert (dog.npos, dog.num_detections) == (3, 6)
    # cat: one GT, no detection -> present with AP 0, and it counts in the mean.
    cat = metrics.classes[0]
    assert (cat.npos, cat.ap_07, cat.ap_area) == (1, 0.0, 0.0)
    assert metrics.mAP_07 == pytest.approx((0 + 6 / 11) / 2)
    assert metrics.mAP_area == pytest.approx((0 + 5 / 9) / 2)
    assert metrics.absent == []


def test_absent_class_is_listed_not_averaged():
    # cat (id 0) has one GT, found perfectly; bird (id 1) has only a difficult GT; fish (id 2) none.
    records = [ImageRecord("a", "/x/a.jpg", 50, 40, boxes=[[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]],
                           labels=[0, 1], difficult=[False, True])]
    dets = [{"boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.6, 0.6, 0.9, 0.9], [0, 0, 1, 1]]),
             "scores": np.array([0.9, 0.8, 0.7, 0.6]), "labels": np.array([1, 2, 2, 3])}]
    m = evaluate_detections(records, dets, ["cat", "bird", "fish"])
    assert m.absent == ["bird", "fish"]
    assert m.classes[0].ap_07 == pytest.approx(1.0) and m.classes[0].ap_area == 1.0
    assert m.classes[1].ap_07 is None and m.classes[2].ap_area is None
    # Means over cat only: absent classes would pull a 0 or NaN in otherwise.
    assert m.mAP_07 == pytest.approx(1.0) and m.mAP_area == 1.0
    # Both bird detections sit on the difficult box: ignored, even the second one (rows stay).
    np.testing.assert_array_equal(m.classes[1].prec, [0.0, 0.0])
    assert m.classes[2].num_detections == 1


def test_empty_detections_and_empty_ground_truth():
    records = [ImageRecord("a", "/x/a.jpg", 10, 10, boxes=[[0, 0, 1, 1]], labels=[0], difficult=[False]),
               ImageRecord("b", "/x/b.jpg", 10, 10, boxes=np.zeros((0, 4)), labels=[], difficult=[])]
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}
    m = evaluate_detections(records, [empty, empty], ["cat", "dog"])
    assert (m.classes[0].ap_07, m.classes[0].ap_area) == (0.0, 0.0)  # one cat, nothing found
    assert m.absent == ["dog"] and m.mAP_area == 0.0
    # No ground truth at all and no detections: everything absent, no mean, no crash.
    m = evaluate_detections(records[1:], [empty], ["cat", "dog"])
    assert m.absent == ["cat", "dog"] and m.mAP_07 is None and m.mAP_area is None
    m = evaluate_detections([], [], ["cat"])
    assert m.absent == ["cat"] and m.mAP_area is None


def test_detection_input_is_checked():
    records = [ImageRecord("a", "/x/a.jpg", 10, 10, boxes=[[0, 0, 1, 1]], labels=[0], difficult=[False])]
    bg = {"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [0]}
    with pytest.raises(ValueError, match="detections for a: detection label 0 outside 1..1"):
        evaluate_detections(records, [bg], ["cat"])
    with pytest.raises(ValueError, match="lack 1 of 1 images"):
        evaluate_detections(records, {"zzz": bg}, ["cat"])
    with pytest.raises(ValueError, match=r"\[K,4\]"):
        evaluate_detections(records, [{"boxes": [0, 0, 1], "scores": [0.5], "labels": [1]}], ["cat"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_detections(records, [{"boxes": [[0, 0, np.nan, 1]], "scores": [0.5], "labels": [1]}], ["cat"])


# ---------------------------------------------------------------- evaluate_model with a stand-in model

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
COLOURS_RGB = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]  # one solid colour per image


def _stand_in_normalize(images):
    """docs/design.md's normalize, used only while ssd_ray.model is not importable."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _module(monkeypatch, name):
    """The real module when it imports, else an empty stand-in registered for this test only."""
    try:
        return importlib.import_module(name)
    except ImportError:
        mod = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mod)
        monkeypatch.setattr(ssd_ray, name.rsplit(".", 1)[1], mod, raising=False)
        return mod


class ColourModel(torch.nn.Module):
    """Reports each image's mean normalised colour as loc[:, 0, :3]; one prior, 4 classes."""

    def __init__(self, size):
        super().__init__()
        self.size = size
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, self.size, self.size)
        loc = torch.zeros(x.shape[0], 1, 4)
        loc[:, 0, :3] = x.mean(dim=(2, 3))
        return loc, torch.zeros(x.shape[0], 1, 4)


@pytest.fixture
def colour_dataset(tmp_path):
    """3 solid-colour images of different sizes; classes a, b, c(never present); one difficult box."""
    sizes = [(64, 48), (50, 50), (80, 40)]  # (width, height)
    boxes = [[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], [[0.2, 0.2, 0.8, 0.9]], [[0.1, 0.0, 0.4, 1.0]]]
    labels = [[0, 1], [1], [0]]
    difficult = [[False, False], [False], [False]]
    records = []
    for i, ((w, h), colour) in enumerate(zip(sizes, COLOURS_RGB)):
        path = tmp_path / f"im{i}.png"
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = colour[::-1]  # cv2 writes BGR
        cv2.imwrite(str(path), img)
        records.append(ImageRecord(f"im{i}", str(path), w, h, boxes[i], labels[i], difficult[i]))
    return DetectionDataset(class_names=["a", "b", "c"], records=records, category_ids=[5, 9, 11])


@pytest.fixture
def perfect_detector(monkeypatch, colour_dataset):
    """Install normalize (real if available) and a detect that returns each image's ground truth,
    found by the image's colour: a BGR/RGB mix-up or a wrong record order would lose AP."""
    model_mod = _module(monkeypatch, "ssd_ray.model")
    if not hasattr(model_mod, "normalize"):
        monkeypatch.setattr(model_mod, "normalize", _stand_in_normalize, raising=False)
    post = _module(monkeypatch, "ssd_ray.postprocess")
    calls = []

    def detect(loc, conf, priors, conf_thresh=0.01, nms_thresh=0.45, top_k=200, nms_top_k=200, variance=(0.1, 0.2),
               clip_before_nms=False):
        calls.append((loc.shape[0], conf_thresh, nms_thresh, top_k, nms_top_k))
        out = []
        for b in range(loc.shape[0]):
            rgb = (loc[b, 0, :3].numpy() * STD + MEAN) * 255
            i = int(np.argmin([np.abs(rgb - np.array(c)).sum() for c in COLOURS_RGB]))
            rec = colour_dataset.records[i]
            boxes = torch.tensor(rec.boxes)
            boxes[boxes == 0] = -0.05  # detect does not clip: predict_records must
            out.append({"boxes": boxes, "scores": torch.linspace(0.9, 0.5, len(boxes)),
                        "labels": torch.tensor(rec.labels) + 1})
        return out

    monkeypatch.setattr(post, "detect", detect, raising=False)
    return calls


def test_evaluate_model_perfect_detections(colour_dataset, perfect_detector):
    model = ColourModel(32).train()
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    result = evaluate_model(model, priors, colour_dataset, image_size=32, batch_size=2,
                            detect_args=DetectArgs(conf_thresh=0.02, nms_thresh=0.4, top_k=50, nms_top_k=60))
    # batches of 2 + 1, thresholds passed through, model run in eval mode and put back to train.
    assert perfect_detector == [(2, 0.02, 0.4, 50, 60), (1, 0.02, 0.4, 50, 60)]
    assert model.seen_training == [False, False] and model.training
    assert result.num_images == 3
    assert result.ap_area == {"a": 1.0, "b": 1.0, "c": None}
    assert result.ap_07["a"] == pytest.approx(1.0) and result.ap_07["b"] == pytest.approx(1.0)
    assert result.absent == ["c"]
    assert result.mAP_area == 1.0 and result.mAP_07 == pytest.approx(1.0)
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert result.coco[k] == pytest.approx(1.0), k


def test_prediction_on_shards_scores_like_one_run(colour_dataset, perfect_detector):
    model, priors = ColourModel(24), torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    records = colour_dataset.records
    shards = [predict_records(model, priors, records[:1], 24), predict_records(model, priors, records[1:], 24)]
    dets = shards[0] + shards[1]
    assert [d["image_id"] for d in dets] == ["im0", "im1", "im2"]
    assert all(d["boxes"].min() >= 0 and d["boxes"].dtype == np.float32 for d in dets)  # clipped
    gathered = {d["image_id"]: d for d in reversed(dets)}  # any order when keyed by image_id
    a = score_detections(colour_dataset, gathered, detect_args=DetectArgs())  # what evaluate_model records
    b = evaluate_model(model, priors, colour_dataset, 24)
    assert a.to_json() == b.to_json()
    voc_only = score_detections(colour_dataset, dets, iou_types=("voc",))
    assert voc_only.coco is None and voc_only.mAP_area == 1.0
    with pytest.raises(ValueError, match="iou_types"):
        score_detections(colour_dataset, dets, iou_types=("voc", "lvis"))


def test_unreadable_image_is_named(colour_dataset, perfect_detector, tmp_path):
    bad = ImageRecord("bad", str(tmp_path / "missing.jpg"), 10, 10, [[0, 0, 1, 1]], [0], [False])
    with pytest.raises(ValueError, match="missing.jpg"):
        predict_records(ColourModel(16), torch.zeros(1, 4), [bad], 16)


# ---------------------------------------------------------------- reports

def test_result_reports_are_written(tmp_path):
    records = [ImageRecord("a", "/x/a.jpg", 50, 40, boxes=[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]],
                           labels=[0, 0], difficult=[False, False])]
    dets = [{"boxes": [[0.1, 0.1, 0.5, 0.5], [0.0, 0.6, 0.2, 0.9]], "scores": [0.9, 0.8], "labels": [1, 1]}]
    ds = DetectionDataset(class_names=["traffic light", "n/a"], records=records)
    result = score_detections(ds, dets)
    # one TP then one FP out of 2 GT: rec [.5, .5], prec [1, .5]; area AP = 0.5 * 1 = 0.5,
    # 11-point: t = 0 .. 0.5 (6 points) at precision 1 -> 6/11.
    assert result.ap_area["traffic light"] == 0.5
    assert result.ap_07["traffic light"] == pytest.approx(6 / 11)
    paths = result.write(str(tmp_path / "out"))
    assert sorted(Path(p).name for p in paths.values()) == [
        "ap_table.txt", "metrics.json", "pr_n_a.png", "pr_traffic_light.png"]
    for p in paths.values():
        assert Path(p).stat().st_size > 0
    png = cv2.imread(paths["pr_traffic_light.png"])
    assert png is not None and png.shape == (400, 400, 3)

    loaded = json.loads(Path(paths["metrics.json"]).read_text())
    assert loaded == result.to_json()
    assert EvalResult.from_json(loaded).to_json() == loaded
    assert loaded["per_class"][1] == {"class": "n/a", "npos": 0, "num_detections": 0, "ap_07": None, "ap_area": None}
    assert loaded["absent"] == ["n/a"] and loaded["mAP_area"] == 0.5
    assert set(loaded["coco"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}

    table = Path(paths["ap_table.txt"]).read_text()
    assert table == result.table()
    lines = {line.split()[0]: line for line in table.splitlines()[2:4]}
    assert "0.5000" in lines["traffic"] and "0.5455" in lines["traffic"]
    assert lines["n/a"].split()[-2:] == ["absent", "absent"]
    assert "VOC area mAP@0.5: 0.5000" in table and "1 of 2 classes present" in table


def test_equal_scores_keep_input_order():
    # 40 detections with the same score; only the one at input position 25 hits the single GT.
    # A stable sort keeps input order, so rows 0..24 are FP, row 25 the TP, rows 26..39 FP.
    from ssd_ray.evaluate import match_class

    boxes = np.tile([[60.0, 60.0, 70.0, 70.0]], (40, 1))
    boxes[25] = [0, 0, 10, 10]
    m = match_class([np.array([[0.0, 0.0, 10.0, 10.0]])], [np.array([False])],
                    np.zeros(40, np.int64), np.full(40, 0.5), boxes)
    assert np.nonzero(m.tp)[0].tolist() == [25]
    assert m.fp.sum() == 39 and m.npos == 1


def _reference_loop(gt_boxes, gt_difficult, det_image, det_scores, det_boxes, ovthresh, plus_one):
    """py-faster-rcnn's per-detection loop, written out plainly as an oracle."""
    order = np.argsort(-det_scores, kind="stable")
    taken = [np.zeros(len(b), bool) for b in gt_boxes]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        bbgt, bb = gt_boxes[det_image[k]], det_boxes[k]
        ovmax, jmax = -np.inf, -1
        if len(bbgt):
            iw = np.maximum(np.minimum(bbgt[:, 2], bb[2]) - np.maximum(bbgt[:, 0], bb[0]) + plus_one, 0)
            ih = np.maximum(np.minimum(bbgt[:, 3], bb[3]) - np.maximum(bbgt[:, 1], bb[1]) + plus_one, 0)
            inter = iw * ih
            uni = ((bb[2] - bb[0] + plus_one) * (bb[3] - bb[1] + plus_one)
                   + (bbgt[:, 2] - bbgt[:, 0] + plus_one) * (bbgt[:, 3] - bbgt[:, 1] + plus_one) - inter)
            ov = inter / uni
            ovmax, jmax = ov.max(), ov.argmax()
        if ovmax > ovthresh:
            if not gt_difficult[det_image[k]][jmax]:
                if not taken[det_image[k]][jmax]:
                    tp[d], taken[det_image[k]][jmax] = 1, True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    return tp, fp


@pytest.mark.parametrize("plus_one", [0.0, 1.0])
def test_vectorised_matching_equals_the_reference_loop(plus_one):
    from ssd_ray.evaluate import match_class

    rng = np.random.default_rng(0)
    n_img = 12
    gt_boxes, gt_diff = [], []
    for i in range(n_img):
        n = int(rng.integers(0, 5))  # some images without ground truth
        xy = rng.uniform(0, 60, (n, 2))
        gt_boxes.append(np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1).round())
        gt_diff.append(rng.random(n) < 0.2)
    det_image = rng.integers(0, n_img, 300)
    # Detections jittered around ground truth (many duplicates, near-threshold IoUs) plus noise.
    det_boxes = rng.uniform(0, 80, (300, 4))
    det_boxes[:, 2:] = det_boxes[:, :2] + rng.uniform(5, 40, (300, 2))
    for k in range(300):
        g = gt_boxes[det_image[k]]
        if len(g) and rng.random() < 0.7:
            det_boxes[k] = g[rng.integers(len(g))] + rng.integers(-4, 5, 4)
    det_scores = rng.choice([0.1, 0.2, 0.3, 0.5, 0.9], 300)  # many ties
    m = match_class(gt_boxes, gt_diff, det_image, det_scores, det_boxes, 0.5, plus_one)
    tp, fp = _reference_loop(gt_boxes, gt_diff, det_image, det_scores, det_boxes, 0.5, plus_one)
    assert 20 < tp.sum() and 20 < fp.sum() and (tp + fp).sum() < 300  # TPs, FPs and ignored rows
    np.testing.assert_array_equal(m.tp, tp)
    np.testing.assert_array_equal(m.fp, fp)


def test_all_class_pass_equals_per_class_matching():
    # evaluate_detections matches all classes in one IoU pass per image; per class it must give
    # what match_class gives on that class alone (other classes' boxes invisible to it).
    from ssd_ray.evaluate import match_class, precision_recall

    rng = np.random.default_rng(1)
    names = ["a", "b", "c"]
    records, dets = [], []
    for i in range(15):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 0.6, (n, 2))
        records.append(ImageRecord(f"i{i}", "", 120, 90, np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (n, 2))], 1),
                                   rng.integers(0, 3, n), rng.random(n) < 0.2))
        k = 25
        boxes = rng.uniform(0, 0.5, (k, 4))
        boxes[:, 2:] += 0.3
        if n:  # most detections jitter a GT box of any class, labelled with a random class
            pick = rng.integers(0, n, k)
            boxes[:20] = records[-1].boxes[pick[:20]] + rng.normal(0, 0.02, (20, 4))
        dets.append({"boxes": boxes, "scores": rng.choice([0.2, 0.4, 0.6], k), "labels": rng.integers(1, 4, k)})
    m = evaluate_detections(records, dets, names)
    for c, name in enumerate(names):
        gt_b = [r.boxes[r.labels == c].astype(np.float64) * [120, 90, 120, 90] for r in records]
        gt_d = [r.difficult[r.labels == c] for r in records]
        sel = [np.asarray(d["labels"]) == c + 1 for d in dets]
        match = match_class(gt_b, gt_d, np.concatenate([np.full(s.sum(), i) for i, s in enumerate(sel)]),
                            np.concatenate([d["scores"][s] for d, s in zip(dets, sel)]),
                            np.concatenate([d["boxes"][s] * [120, 90, 120, 90] for d, s in zip(dets, sel)]))
        rec, prec = precision_recall(match)
        assert match.tp.sum() > 3 and match.fp.sum() > 3
        np.testing.assert_allclose(m.classes[c].rec, rec, atol=1e-12)
        np.testing.assert_allclose(m.classes[c].prec, prec, atol=1e-12)
