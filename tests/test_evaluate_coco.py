"""COCO metrics through pycocotools: a hand-made COCO set with non-contiguous category ids, the same
set as a DetectionDataset, difficult boxes ignored, and empty detections."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools.coco import COCO

from ssd_ray.data.records import DetectionDataset, ImageRecord
from ssd_ray.evaluate import COCO_STAT_NAMES, coco_evaluate, coco_evaluate_dataset, dataset_to_coco

# Three 100x100 images; categories 3 "cat" and 7 "dog" (not contiguous, not starting at 1).
# Every ground-truth box is medium (32^2 < area < 96^2), so APs and APl have no ground truth (-1).
IMAGES = [11, 12, 13]
GT = [  # (image id, category id, [x, y, w, h])
    (11, 3, [10.0, 10.0, 50.0, 50.0]),  # cat, area 2500
    (12, 3, [40.0, 30.0, 50.0, 50.0]),  # cat
    (13, 7, [10.0, 10.0, 40.0, 40.0]),  # dog, area 1600
]
# cat: an FP on image 13 with the highest score, then both cats exactly.
#   rows FP, TP, TP with 2 GT: recall 0, .5, 1, precision 0, .5, 2/3 -> envelope 2/3 everywhere,
#   so precision is 2/3 at all 101 recall points, at every IoU threshold: AP_cat = 2/3.
# dog: one detection inside the GT, 40 x 25.6 = 1024 px: IoU 1024 / 1600 = 0.64, a TP for IoU
#   thresholds .50, .55, .60 and a miss for .65 ... .95: AP_dog 1 at 3 of 10 thresholds -> 0.3,
#   AP50_dog = 1, AP75_dog = 0. Recall: cat 1 at every threshold, dog 3/10.
RESULTS = [
    {"image_id": 13, "category_id": 3, "bbox": [50.0, 50.0, 40.0, 40.0], "score": 0.95},
    {"image_id": 11, "category_id": 3, "bbox": [10.0, 10.0, 50.0, 50.0], "score": 0.9},
    {"image_id": 12, "category_id": 3, "bbox": [40.0, 30.0, 50.0, 50.0], "score": 0.7},
    {"image_id": 13, "category_id": 7, "bbox": [10.0, 10.0, 40.0, 25.6], "score": 0.8},
]
EXPECTED = {
    "AP": (2 / 3 + 0.3) / 2,  # mean over categories of the mean over 10 IoU thresholds
    "AP50": (2 / 3 + 1) / 2,
    "AP75": (2 / 3 + 0) / 2,
    "APs": -1.0,  # no small ground truth
    "APm": (2 / 3 + 0.3) / 2,  # everything is medium
    "APl": -1.0,
    # At most one detection per image and category already: AR1 = AR10 = AR100 = (1 + 0.3) / 2.
    "AR1": 0.65, "AR10": 0.65, "AR100": 0.65,
}


def _coco_gt() -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in IMAGES],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0} for k, (img, cat, box) in enumerate(GT)],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    coco.createIndex()
    return coco


def _dataset() -> DetectionDataset:
    """The same ground truth as ImageRecords (image_id = COCO id as a string, class ids 0/1)."""
    records = []
    for img in IMAGES:
        rows = [(cat, box) for i, cat, box in GT if i == img]
        records.append(ImageRecord(
            str(img), f"/x/{img}.jpg", 100, 100,
            boxes=[[b[0] / 100, b[1] / 100, (b[0] + b[2]) / 100, (b[1] + b[3]) / 100] for _, b in rows],
            labels=[{3: 0, 7: 1}[c] for c, _ in rows], difficult=[False] * len(rows)))
    return DetectionDataset(class_names=["cat", "dog"], records=records, category_ids=[3, 7])


def _detections_from_results(results, ds) -> dict:
    dets = {r.image_id: {"boxes": [], "scores": [], "labels": []} for r in ds.records}
    for r in results:
        x, y, w, h = r["bbox"]
        d = dets[str(r["image_id"])]
        d["boxes"].append([x / 100, y / 100, (x + w) / 100, (y + h) / 100])
        d["scores"].append(r["score"])
        d["labels"].append(ds.category_ids.index(r["category_id"]) + 1)
    return {k: {kk: np.array(v, dtype=np.float64).reshape(-1, 4) if kk == "boxes" else np.array(v)
                for kk, v in d.items()} for k, d in dets.items()}


def test_coco_hand_case(capsys):
    coco_gt = _coco_gt()
    capsys.readouterr()  # building the ground truth here prints; coco_evaluate itself must not
    stats = coco_evaluate(coco_gt, [dict(r) for r in RESULTS])
    assert list(stats) == list(COCO_STAT_NAMES)
    for k, v in EXPECTED.items():
        assert stats[k] == pytest.approx(v, abs=1e-12), k
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured


def test_coco_evaluation_is_quiet_under_a_print_that_ignores_file(monkeypatch):
    """Ray Train V2 workers replace `builtins.print` with a logger that ignores `file=`: pycocotools'
    prints must not reach it (they flooded the training log)."""
    import builtins

    coco_gt = _coco_gt()
    logged = []
    monkeypatch.setattr(builtins, "print", lambda *a, **k: logged.append(a))
    stats = coco_evaluate(coco_gt, [dict(r) for r in RESULTS])
    assert stats["AP"] == pytest.approx(EXPECTED["AP"], abs=1e-12)
    assert logged == []


def test_coco_results_list_is_not_modified():
    results = [dict(r) for r in RESULTS]
    coco_evaluate(_coco_gt(), results)
    assert results == RESULTS  # loadRes adds "area", "id", "segmentation" to what it gets


def test_coco_perfect_detections():
    perfect = [{"image_id": i, "category_id": c, "bbox": b, "score": 0.9} for i, c, b in GT]
    stats = coco_evaluate(_coco_gt(), perfect)
    assert {k: stats[k] for k in ("AP", "AP50", "AP75", "APm", "AR1", "AR100")} == pytest.approx(
        {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "APm": 1.0, "AR1": 1.0, "AR100": 1.0})


def test_dataset_paths_match_the_real_coco_path():
    ds = _dataset()
    dets = _detections_from_results(RESULTS, ds)
    # (a) real COCO ground truth + category_ids mapping; (b) ground truth converted from records.
    for coco_gt in (_coco_gt(), None):
        stats = coco_evaluate_dataset(ds, dets, coco_gt=coco_gt)
        for k, v in EXPECTED.items():
            assert stats[k] == pytest.approx(v, abs=1e-9), (k, coco_gt is None)


def test_converted_ground_truth():
    ds = _dataset()
    coco, image_ids = dataset_to_coco(ds.records, ds.class_names, ds.category_ids)
    assert image_ids == [1, 2, 3]
    assert [c["id"] for c in coco.dataset["categories"]] == [3, 7]
    ann = coco.dataset["annotations"][1]
    assert ann["id"] == 2 and ann["image_id"] == 2 and ann["category_id"] == 3
    assert ann["bbox"] == pytest.approx([40, 30, 50, 50]) and ann["area"] == pytest.approx(2500)


def test_difficult_boxes_are_ignored():
    # One cat found exactly; a difficult cat with a higher-scoring detection on it, and a difficult
    # cat nobody found. Ignored: AP 1. Counted: the first row would be a TP too, but one GT missed.
    rec = ImageRecord("a", "/x/a.jpg", 100, 100,
                      boxes=[[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.6, 0.1, 0.9, 0.4]],
                      labels=[0, 0, 0], difficult=[False, True, True])
    ds = DetectionDataset(["cat"], [rec])
    dets = [{"boxes": np.array([[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.5, 0.5]]), "scores": np.array([0.9, 0.8]),
             "labels": np.array([1, 1])}]
    stats = coco_evaluate_dataset(ds, dets)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
    # Difficult-only image with a detection: no ground truth to count, the detection is ignored.
    only = DetectionDataset(["cat"], [ImageRecord("b", "/x/b.jpg", 100, 100, [[0.6, 0.6, 0.9, 0.9]], [0], [True])])
    stats = coco_evaluate_dataset(only, [{"boxes": [[0.6, 0.6, 0.9, 0.9]], "scores": [0.9], "labels": [1]}])
    assert all(v == -1.0 for v in stats.values())


def test_empty_detections():
    # pycocotools' loadRes fails on an empty list; here: 0 where ground truth exists, -1 where not.
    stats = coco_evaluate(_coco_gt(), [])
    assert stats == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": -1.0, "APm": 0.0, "APl": -1.0,
                     "AR1": 0.0, "AR10": 0.0, "AR100": 0.0}
    ds = _dataset()
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}
    assert coco_evaluate_dataset(ds, [empty] * 3) == stats
    # No ground truth and no detections at all: nothing defined, no crash.
    blank = DetectionDataset(["cat"], [ImageRecord("z", "/x/z.jpg", 10, 10, np.zeros((0, 4)), [], [])])
    assert all(v == -1.0 for v in coco_evaluate_dataset(blank, [empty]).values())
    assert all(v == -1.0 for v in coco_evaluate_dataset(DetectionDataset(["cat"], []), []).values())


def test_subset_of_images_and_bad_ids():
    # Only image 11 (one cat, found exactly): the other images' ground truth must not count.
    stats = coco_evaluate(_coco_gt(), [RESULTS[1]], image_ids=[11])
    assert stats["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_evaluate(_coco_gt(), [{**RESULTS[0], "image_id": 99}])
    ds = _dataset()
    ds.category_ids = None
    with pytest.raises(ValueError, match="category_ids"):
        coco_evaluate_dataset(ds, _detections_from_results([], _dataset()), coco_gt=_coco_gt())
