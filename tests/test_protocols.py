"""Evaluation protocols: official COCO (pycocotools on the annotation file) and ssd.pytorch's voc07.

* COCO: a COCO-format set with crowd regions, given `area`s and non-contiguous image/category ids;
  ssd-ray's AP must equal pycocotools run on the file with the same detections, and differ from the
  records-built ground truth (where crowd hits are false positives and areas are box areas).
* voc07: hand-worked numbers with difficult objects, duplicates and an IoU of exactly 0.5 under the
  reference's pixel conventions; and parity with an independent port of eval.py's results-file round
  trip and `voc_eval` loop on random detections with many 3-decimal score ties.
"""

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_ray.config import PostprocessConfig, config_from_dict, load_config
from ssd_ray.data.coco import read_coco
from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.data.voc import read_voc
from ssd_ray.evaluate.coco_metrics import coco_evaluate_dataset
from ssd_ray.evaluate.protocol import evaluation_postprocess
from ssd_ray.evaluate.run import score_detections
from ssd_ray.postprocess import DetectArgs, detect

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ COCO, official
IMAGES = [{"id": 1000, "file_name": "c.png", "width": 64, "height": 48},
          {"id": 7, "file_name": "a.png", "width": 64, "height": 48},
          {"id": 42, "file_name": "b.png", "width": 80, "height": 60}]
CATEGORIES = [{"id": 90, "name": "kite"}, {"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]
ANNOTATIONS = [  # given areas differ from w*h (segmentation areas); two crowd regions
    {"id": 11, "image_id": 7, "category_id": 3, "bbox": [4, 4, 20, 16], "area": 250.0, "iscrowd": 0},
    {"id": 15, "image_id": 7, "category_id": 17, "bbox": [30, 10, 20, 30], "area": 500.0, "iscrowd": 0},
    {"id": 16, "image_id": 7, "category_id": 3, "bbox": [40, 2, 22, 20], "area": 300.0, "iscrowd": 1},
    {"id": 23, "image_id": 42, "category_id": 90, "bbox": [10, 10, 30, 30], "area": 1100.0, "iscrowd": 0},
    {"id": 24, "image_id": 42, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 80.0, "iscrowd": 0},
    {"id": 31, "image_id": 1000, "category_id": 17, "bbox": [5, 5, 50, 35], "area": 1500.0, "iscrowd": 0},
    {"id": 32, "image_id": 1000, "category_id": 17, "bbox": [0, 0, 64, 48], "area": 2000.0, "iscrowd": 1},
]


@pytest.fixture
def coco_set(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "val").mkdir(parents=True)
    for img in IMAGES:
        cv2.imwrite(str(root / "images" / "val" / img["file_name"]), np.full((img["height"], img["width"], 3), 90, np.uint8))
    ann_file = root / "annotations" / "instances_val.json"
    ann_file.write_text(json.dumps({"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}))
    return read_coco(str(root), "val"), ann_file


def _rel(x, y, w, h, W, H):
    return [x / W, y / H, (x + w) / W, (y + h) / H]


def coco_detections(ds):
    """Hits, misses, a duplicate and detections on the crowd regions (category order: cat, dog, kite)."""
    label = {cid: i + 1 for i, cid in enumerate(ds.category_ids)}
    by_id = {
        "7": [(3, 0.9, [5, 4, 19, 16]), (3, 0.8, [5, 5, 19, 15]), (3, 0.7, [41, 3, 20, 18]),
              (17, 0.6, [31, 12, 18, 28]), (90, 0.3, [0, 0, 30, 30])],
        "42": [(90, 0.85, [12, 9, 28, 31]), (3, 0.4, [1, 1, 9, 9]), (17, 0.2, [50, 30, 20, 20])],
        "1000": [(17, 0.95, [6, 4, 48, 36]), (17, 0.5, [0, 0, 60, 40]), (17, 0.45, [30, 20, 30, 25])],
    }
    dets = []
    for rec in ds.records:
        items = by_id[rec.image_id]
        dets.append({"image_id": rec.image_id,
                     "boxes": np.array([_rel(*b, rec.width, rec.height) for _, _, b in items], np.float32),
                     "scores": np.array([s for _, s, _ in items], np.float32),
                     "labels": np.array([label[c] for c, _, _ in items], np.int64)})
    return dets


def pycocotools_stats(ann_file, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_coco_protocol_is_pycocotools_on_the_annotation_file(coco_set):
    ds, ann_file = coco_set
    assert ds.category_ids == [3, 17, 90] and sorted(r.image_id for r in ds.records) == ["1000", "42", "7"]
    assert sum(len(r.boxes) for r in ds.records) == 5  # training records drop the crowd regions
    dets = coco_detections(ds)
    # The results file written independently of ssd-ray: pixel [x, y, w, h], original ids.
    results = []
    for rec, d in zip(ds.records, dets):
        scale = np.array([rec.width, rec.height, rec.width, rec.height])
        for box, score, label in zip(d["boxes"], d["scores"], d["labels"]):
            x1, y1, x2, y2 = (box.astype(np.float64) * scale).tolist()
            results.append({"image_id": int(rec.image_id), "category_id": ds.category_ids[label - 1],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    stats = pycocotools_stats(ann_file, results)
    args = DetectArgs.from_config(PostprocessConfig(preset="torchvision"), (0.1, 0.2))
    result = score_detections(ds, dets, protocol="coco", detect_args=args)
    assert result.per_class == [] and result.headline == result.coco["AP"]
    for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"), stats):
        assert result.coco[k] == pytest.approx(v, abs=1e-12), k
    assert 0.3 < result.coco["AP"] < 1.0
    # recorded: protocol, the official ground truth file, the post-processing
    info = result.to_json()["protocol"]
    assert info["name"] == "coco" and info["coco_ground_truth"] == str(ann_file)
    assert info["postprocess"]["nms_top_k"] == 400 and info["postprocess"]["clip"] == "before_nms"
    # the default protocol's COCO numbers on COCO-format data are the official ones too
    assert score_detections(ds, dets).coco == result.coco
    # ... and not those of ground truth rebuilt from the records (crowd hits become false positives)
    records_only = DetectionDataset(ds.class_names, ds.records, category_ids=ds.category_ids)
    assert coco_evaluate_dataset(records_only, dets)["AP"] < result.coco["AP"]


def test_coco_protocol_needs_coco_data():
    recs = [ImageRecord("a", "/x/a.png", 10, 10, [[0, 0, 1, 1]], [0], [False])]
    with pytest.raises(ValueError, match="not COCO-format"):
        score_detections(DetectionDataset(["x"], recs), [{"boxes": [], "scores": [], "labels": []}], protocol="coco")
    with pytest.raises(Exception, match="data.format is 'voc'"):
        load_config(ROOT / "configs" / "voc300.yaml", ["evaluation.protocol=coco"])


# ------------------------------------------------------------------------------ voc07
def _rec(image_id, boxes_xml, labels, difficult, W=100, H=100):
    """A record from VOC XML pixel boxes (1-based, inclusive) as the VOC reader stores them."""
    rel = [[(x1 - 1) / W, (y1 - 1) / H, x2 / W, y2 / H] for x1, y1, x2, y2 in boxes_xml]
    return ImageRecord(image_id, f"/x/{image_id}.jpg", W, H, rel, labels, difficult)


def _det(items, W=100, H=100):
    """Detections given as the reference writes them: (label, score, pixel box + 1 in its results file)."""
    boxes = [[(x1 - 1) / W, (y1 - 1) / H, (x2 - 1) / W, (y2 - 1) / H] for _, _, (x1, y1, x2, y2) in items]
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array([s for _, s, _ in items], np.float32),
            "labels": np.array([lb for lb, _, _ in items], np.int64)}


def test_voc07_hand_worked_difficult_duplicates_and_iou_half():
    # eval.py's ground truth is every XML coordinate minus 1; detections are written +1, IoU has no +1.
    records = [
        _rec("A", [(11, 11, 50, 50), (61, 61, 90, 90)], [0, 0], [False, True]),  # cat, difficult cat
        _rec("B", [(21, 21, 80, 80), (1, 1, 30, 30)], [0, 1], [False, False]),  # cat, dog
    ]
    dets = [
        _det([(1, 0.9, (10, 10, 49, 49)), (1, 0.85, (10, 10, 49, 49)), (1, 0.8, (60, 60, 89, 89))]),
        # dog (0, 0, 29, 58) against ground truth (0, 0, 29, 29): IoU 841 / 1682 = 0.5, not > 0.5
        _det([(1, 0.7, (20, 20, 79, 79)), (1, 0.6, (85, 85, 99, 99)), (2, 0.95, (0, 0, 29, 58)),
              (2, 0.5, (0, 0, 29, 31))]),
    ]
    result = score_detections(DetectionDataset(["cat", "dog"], records), dets, protocol="voc07")
    # cat: TP, duplicate FP, difficult ignored, TP, FP -> rec .5 .5 .5 1 1, prec 1 .5 .5 2/3 .5
    # 11-point: six thresholds 0..0.5 at precision 1, five 0.6..1.0 at 2/3
    assert result.ap_07["cat"] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)
    # dog: FP (IoU exactly 0.5) then TP -> precision 0.5 at every threshold
    assert result.ap_07["dog"] == pytest.approx(0.5, abs=1e-12)
    assert result.mAP_07 == pytest.approx(((6 + 5 * 2 / 3) / 11 + 0.5) / 2, abs=1e-12)
    assert result.headline == result.mAP_07 and result.coco is None
    assert "Mean AP = 0.6742" in result.table()


def _write_voc(root: Path, objects_per_image, size=(120, 90)):
    (root / "VOC2007" / "Annotations").mkdir(parents=True)
    (root / "VOC2007" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
    ids = []
    for i, objs in enumerate(objects_per_image):
        image_id = f"{i:06d}"
        ids.append(image_id)
        ann = ET.Element("annotation")
        s = ET.SubElement(ann, "size")
        for tag, v in (("width", size[0]), ("height", size[1]), ("depth", 3)):
            ET.SubElement(s, tag).text = str(v)
        for name, (x1, y1, x2, y2), diff in objs:
            o = ET.SubElement(ann, "object")
            ET.SubElement(o, "name").text = name
            ET.SubElement(o, "pose").text = "Unspecified"
            ET.SubElement(o, "truncated").text = "0"
            ET.SubElement(o, "difficult").text = str(int(diff))
            b = ET.SubElement(o, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)):
                ET.SubElement(b, tag).text = str(v)
        ET.ElementTree(ann).write(root / "VOC2007" / "Annotations" / f"{image_id}.xml")
        cv2.imwrite(str(root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg"), np.zeros((size[1], size[0], 3), np.uint8))
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    return ids


def _eval_py_port(root: Path, ids, all_boxes, classes, W, H):
    """eval.py, written out: results-file lines, parse_rec (minus 1), voc_eval's loop, 11-point AP."""
    aps = []
    for j, cls in enumerate(classes, start=1):
        lines = []
        for i, image_id in enumerate(ids):
            for box, score in all_boxes[j][i]:
                px = np.asarray(box, np.float32) * np.array([W, H, W, H], np.float32)
                lines.append("{:s} {:.3f} {:.1f} {:.1f} {:.1f} {:.1f}".format(
                    image_id, np.float32(score), px[0] + 1, px[1] + 1, px[2] + 1, px[3] + 1))
        recs = {}
        for image_id in ids:
            objs = []
            for o in ET.parse(root / "VOC2007" / "Annotations" / f"{image_id}.xml").findall("object"):
                bb = o.find("bndbox")
                objs.append({"name": o.find("name").text, "difficult": int(o.find("difficult").text),
                             "bbox": [int(bb.find(t).text) - 1 for t in ("xmin", "ymin", "xmax", "ymax")]})
            recs[image_id] = objs
        class_recs, npos = {}, 0
        for image_id in ids:
            R = [o for o in recs[image_id] if o["name"] == cls]
            difficult = np.array([o["difficult"] for o in R]).astype(bool)
            npos += sum(~difficult)
            class_recs[image_id] = {"bbox": np.array([o["bbox"] for o in R]), "difficult": difficult, "det": [False] * len(R)}
        split = [ln.strip().split(" ") for ln in lines]
        image_ids = [x[0] for x in split]
        confidence = np.array([float(x[1]) for x in split])
        BB = np.array([[float(z) for z in x[2:]] for x in split]).reshape(-1, 4)
        sorted_ind = np.argsort(-confidence)
        BB = BB[sorted_ind, :]
        image_ids = [image_ids[x] for x in sorted_ind]
        tp, fp = np.zeros(len(image_ids)), np.zeros(len(image_ids))
        for d, image_id in enumerate(image_ids):
            R, bb, ovmax = class_recs[image_id], BB[d].astype(float), -np.inf
            BBGT = R["bbox"].astype(float)
            if BBGT.size > 0:
                iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]), 0.0)
                ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]), 0.0)
                inters = iw * ih
                uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters
                overlaps = inters / uni
                ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
            if ovmax > 0.5:
                if not R["difficult"][jmax]:
                    if not R["det"][jmax]:
                        tp[d], R["det"][jmax] = 1.0, 1
                    else:
                        fp[d] = 1.0
            else:
                fp[d] = 1.0
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec, prec = tp / float(npos), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])) / 11.0
        aps.append(ap)
    return aps


def test_voc07_matches_eval_py_on_random_detections(tmp_path):
    rng = np.random.default_rng(5)
    classes = ["cat", "dog", "bird"]
    W, H = 120, 90
    objects = []
    for _ in range(12):
        objs = []
        for _ in range(rng.integers(1, 5)):
            x1, y1 = int(rng.integers(1, 80)), int(rng.integers(1, 60))
            objs.append((classes[rng.integers(0, 3)], (x1, y1, x1 + int(rng.integers(10, 40)), y1 + int(rng.integers(10, 30))),
                         rng.random() < 0.2))
        objects.append(objs)
    root = tmp_path / "VOCdevkit"
    ids = _write_voc(root, objects, (W, H))
    ds = read_voc(str(root), [("2007", "test")], class_names=classes, keep_difficult=True)
    assert [r.image_id for r in ds.records] == [f"VOC2007/{i}" for i in ids]
    assert any(r.difficult.any() for r in ds.records)
    all_boxes = [[[] for _ in ids] for _ in range(len(classes) + 1)]
    dets = []
    for i, rec in enumerate(ds.records):
        boxes, scores, labels = [], [], []
        for k in range(len(rec.boxes)):  # a jittered hit and a duplicate per object, sometimes
            for _ in range(rng.integers(0, 3)):
                boxes.append(rec.boxes[k] + rng.normal(0, 0.03, 4))
                labels.append(int(rec.labels[k]) + 1)
        for _ in range(rng.integers(0, 6)):  # false positives anywhere, sometimes off the image
            x1, y1 = rng.uniform(-0.1, 0.8, 2)
            boxes.append([x1, y1, x1 + rng.uniform(0.05, 0.4), y1 + rng.uniform(0.05, 0.4)])
            labels.append(int(rng.integers(1, 4)))
        scores = rng.choice([0.9, 0.9004, 0.8996, 0.7, 0.5, 0.5003, 0.3, 0.1], len(boxes))  # many 3-decimal ties
        order = np.argsort(-scores, kind="stable")
        d = {"boxes": np.array(boxes, np.float32).reshape(-1, 4)[order], "scores": scores.astype(np.float32)[order],
             "labels": np.array(labels, np.int64)[order]}
        dets.append(d)
        for box, score, label in zip(d["boxes"], d["scores"], d["labels"]):
            all_boxes[label][i].append((box, score))
    expected = _eval_py_port(root, ids, all_boxes, classes, W, H)
    result = score_detections(ds, dets, protocol="voc07")
    for name, ap in zip(classes, expected):
        assert result.ap_07[name] == pytest.approx(ap, abs=1e-12), name
    assert result.mAP_07 == pytest.approx(np.mean(expected), abs=1e-12)


# ------------------------------------------------------------------------------ post-processing
def test_voc07_postprocessing_and_presets():
    cfg = load_config(ROOT / "configs" / "voc300.yaml", ["postprocess.preset=torchvision"])
    assert (cfg.postprocess.nms_top_k, cfg.postprocess.clip, cfg.postprocess.top_k) == (400, "before_nms", 200)
    args = DetectArgs.from_config(evaluation_postprocess("voc07", cfg.postprocess), (0.1, 0.2))
    assert (args.conf_thresh, args.nms_thresh, args.nms_top_k, args.top_k, args.clip) == (0.01, 0.45, 200, None, "none")
    assert DetectArgs.from_config(evaluation_postprocess("ssd_ray", cfg.postprocess), (0.1, 0.2)).nms_top_k == 400
    default = DetectArgs.from_config(load_config(ROOT / "configs" / "voc300.yaml").postprocess, (0.1, 0.2))
    assert default == DetectArgs()  # the reference's, as before
    raw = {"name": "x", "data": {"root": "/d"}, "priors": {"feature_maps": [1], "steps": [1], "min_sizes": [1],
           "max_sizes": [1], "aspect_ratios": [[]]}, "postprocess": {"preset": "torchvision", "top_k": None}}
    assert config_from_dict(raw).postprocess.top_k is None  # explicit keys win over the preset

    # No per-image cap: 30 classes x up to 200 each; the per-class candidate cap still holds.
    g = torch.Generator().manual_seed(0)
    priors = torch.cat([torch.rand(400, 2, generator=g), torch.full((400, 2), 0.01)], 1)
    conf = torch.randn(1, 400, 31, generator=g)
    (capped,) = detect(torch.zeros(1, 400, 4), conf, priors, conf_thresh=0.0, top_k=200)
    (uncapped,) = detect(torch.zeros(1, 400, 4), conf, priors, conf_thresh=0.0, top_k=None, nms_top_k=200)
    assert len(capped["scores"]) == 200 and len(uncapped["scores"]) > 2000
    assert max(int((uncapped["labels"] == c).sum()) for c in range(1, 31)) <= 200


def test_clip_before_nms_changes_what_nms_sees():
    # Two class-1 boxes: unclipped IoU 0.6/0.8 = 0.75 (one suppressed); inside the image 0.1/0.3 (both kept).
    priors = torch.tensor([[-0.2, 0.5, 0.6, 1.0], [-0.1, 0.5, 0.8, 1.0]])
    conf = torch.tensor([[[0.0, 3.0], [0.0, 2.0]]])
    (plain,) = detect(torch.zeros(1, 2, 4), conf, priors, nms_thresh=0.45)
    (clipped,) = detect(torch.zeros(1, 2, 4), conf, priors, nms_thresh=0.45, clip_before_nms=True)
    assert len(plain["scores"]) == 1 and len(clipped["scores"]) == 2
    assert clipped["boxes"].min() >= 0 and plain["boxes"].min() < 0


def test_coco_protocol_over_two_val_splits(coco_set, tmp_path):
    """Two annotation files of one dataset score as the one file they were split from."""
    from ssd_ray.config import DataConfig
    from ssd_ray.data.sources import load_split

    ds, ann_file = coco_set
    root = ann_file.parents[1]
    (root / "images" / "a").symlink_to(root / "images" / "val")
    (root / "images" / "b").symlink_to(root / "images" / "val")
    for name, ids in (("a", {7}), ("b", {42, 1000})):
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps({
            "images": [i for i in IMAGES if i["id"] in ids], "categories": CATEGORIES,
            "annotations": [a for a in ANNOTATIONS if a["image_id"] in ids]}))
    both = load_split(DataConfig(format="coco", root=str(root), train_sets=["a"], val_sets=["a", "b"]), "val")
    assert len(both.coco_sources) == 2
    by_id = {d["image_id"]: d for d in coco_detections(ds)}
    merged = score_detections(both, [by_id[r.image_id] for r in both.records], protocol="coco")
    whole = score_detections(ds, coco_detections(ds), protocol="coco")
    assert merged.coco == pytest.approx(whole.coco, abs=1e-12)
    (root / "annotations" / "instances_b.json").write_text(ann_file.read_text())  # now both hold image 7
    clash = load_split(DataConfig(format="coco", root=str(root), train_sets=["a"], val_sets=["a", "b"]), "val")
    with pytest.raises(ValueError, match="share image ids"):
        score_detections(clash, [by_id[r.image_id] for r in clash.records], protocol="coco")
