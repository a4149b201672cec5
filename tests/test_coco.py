"""read_coco / coco_api on tiny hand-written COCO-format folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from ssd_ray.data.coco import COCO_CLASSES, coco_api, read_coco

SPLIT = "val2017"


def _write(root: Path, data, split: str = SPLIT, layout: str = "images", images: list[str] | None = None) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (root / "annotations" / f"instances_{split}.json").write_text(text)
    img_dir = root / "images" / split if layout == "images" else root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    names = images if images is not None else [im["file_name"] for im in data["images"]]
    for n in names:
        (img_dir / n).write_bytes(b"")  # the reader only checks existence when width/height are given


def _ann(i, image_id, cat, bbox, **kw):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": 1.0, "iscrowd": 0, **kw}


def _dataset():
    return {
        # ids deliberately unsorted and with gaps: labels follow sorted ids
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 8, "file_name": "b.jpg", "width": 100, "height": 100},  # no annotations
            {"id": 9, "file_name": "c.jpg", "width": 100, "height": 50},  # crowd only
        ],
        "annotations": [
            _ann(1, 7, 3, [64, 48, 320, 240]),
            _ann(2, 7, 90, [0, 0, 640, 480]),
            _ann(3, 7, 1, [600, 400, 100, 100]),  # overshoots: clipped to the image
            _ann(4, 9, 1, [10, 10, 20, 20], iscrowd=1),
        ],
    }


def test_coco_classes_list():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    for name in ("traffic light", "motorcycle", "couch", "tv", "hair drier", "dining table"):
        assert name in COCO_CLASSES


def test_category_mapping_round_trip_and_box_conversion(tmp_path):
    _write(tmp_path, _dataset())
    ds = read_coco(tmp_path, SPLIT)
    assert ds.class_names == ["person", "car", "toothbrush"] and ds.num_classes == 4
    assert ds.category_ids == [1, 3, 90]  # label 0,1,2 -> original ids
    a = ds.records[0]
    assert a.image_id == "7" and a.path == str(tmp_path / "images" / SPLIT / "a.jpg")
    assert (a.width, a.height) == (640, 480)
    np.testing.assert_array_equal(a.labels, [1, 2, 0])  # car (3) -> 1, toothbrush (90) -> 2, person (1) -> 0
    assert [ds.category_ids[l] for l in a.labels] == [3, 90, 1]  # and back
    np.testing.assert_allclose(a.boxes, [
        [64 / 640, 48 / 480, 384 / 640, 288 / 480],  # x/W, y/H, (x+w)/W, (y+h)/H = .1,.1,.6,.6
        [0, 0, 1, 1],  # full image
        [600 / 640, 400 / 480, 1, 1],  # (700/640, 500/480) clipped to 1
    ], rtol=1e-6)
    assert not a.difficult.any() and a.boxes.dtype == np.float32
    assert not ds.skipped  # clipping a slight overshoot is routine


def test_iscrowd_dropped_and_empty_images_kept_or_dropped(tmp_path):
    _write(tmp_path, _dataset())
    ds = read_coco(tmp_path, SPLIT, keep_empty=True)
    assert [r.image_id for r in ds.records] == ["7", "8", "9"]
    assert len(ds.records[1].boxes) == 0  # image without annotations
    assert len(ds.records[2].boxes) == 0  # its only annotation is a crowd region
    train = read_coco(tmp_path, SPLIT, keep_empty=False)
    assert [r.image_id for r in train.records] == ["7"]


def test_pycocotools_annotations_not_mutated(tmp_path):
    _write(tmp_path, _dataset())
    api = coco_api(tmp_path, SPLIT)
    before = copy.deepcopy(api.dataset)
    anns_before = copy.deepcopy(api.anns)
    ds = read_coco(tmp_path, SPLIT, api=api)
    assert api.dataset == before and api.anns == anns_before  # the overshooting bbox too
    assert api.anns[3]["bbox"] == [600, 400, 100, 100]
    assert len(ds.records) == 3


def test_both_folder_layouts(tmp_path):
    for layout in ("images", "flat"):
        root = tmp_path / layout
        _write(root, _dataset(), layout=layout)
        ds = read_coco(root, SPLIT)
        expected = root / "images" / SPLIT / "a.jpg" if layout == "images" else root / SPLIT / "a.jpg"
        assert ds.records[0].path == str(expected)
    empty = tmp_path / "noimages"
    (empty / "annotations").mkdir(parents=True)
    (empty / "annotations" / f"instances_{SPLIT}.json").write_text(json.dumps(_dataset()))
    with pytest.raises(FileNotFoundError, match="image folder"):
        read_coco(empty, SPLIT)


def test_malformed_entries_skipped_and_counted(tmp_path):
    data = _dataset()
    data["annotations"] += [
        {"id": 10, "image_id": 7, "category_id": 1},  # no bbox
        _ann(11, 7, 1, [1, 2, 3]),  # bbox of 3 numbers
        _ann(12, 7, 1, [1, 2, "x", 4]),  # non-numeric
        _ann(13, 7, 1, [1, 2, float("nan"), 4]),  # NaN
        _ann(14, 7, 5, [1, 1, 10, 10]),  # category 5 not declared
        {"id": 15, "image_id": 7, "bbox": [1, 1, 10, 10]},  # no category_id: would crash pycocotools
        _ann(16, 7, 1, [10, 10, 0, 5]),  # w = 0
        _ann(17, 7, 1, [700, 10, 20, 20]),  # right of a 640-wide image: zero width after clipping
        _ann(18, 1234, 1, [1, 1, 5, 5]),  # image id not in images
    ]
    data["images"] += [{"id": 20, "file_name": "gone.jpg", "width": 10, "height": 10},  # file missing
                       {"file_name": "noid.jpg"}]  # no id
    _write(tmp_path, data, images=["a.jpg", "b.jpg", "c.jpg"])
    ds = read_coco(tmp_path, SPLIT)
    assert [r.image_id for r in ds.records] == ["7", "8", "9"]
    assert len(ds.records[0].boxes) == 3  # only the three good ones survive
    assert ds.skipped.summary() == {
        "bad_annotation": 5,  # no bbox, 3 numbers, non-numeric, NaN, no category_id
        "unknown_category": 1, "empty_box": 2, "unknown_image": 1,
        "missing_image": 1, "bad_image_entry": 1,
    }


def test_size_from_image_header(tmp_path):
    import cv2

    data = {"categories": [{"id": 1, "name": "thing"}],
            "images": [{"id": 1, "file_name": "z.png"}],
            "annotations": [_ann(1, 1, 1, [0, 0, 16, 12])]}
    _write(tmp_path, data, images=[])
    cv2.imwrite(str(tmp_path / "images" / SPLIT / "z.png"), np.zeros((24, 32, 3), np.uint8))
    ds = read_coco(tmp_path, SPLIT)
    assert (ds.records[0].width, ds.records[0].height) == (32, 24)
    np.testing.assert_allclose(ds.records[0].boxes, [[0, 0, 0.5, 0.5]])  # 16/32, 12/24
    assert ds.skipped.summary() == {"size_from_image": 1}


def test_whole_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json"):
        read_coco(tmp_path, SPLIT)
    _write(tmp_path, '{"images": [', images=[])
    with pytest.raises(ValueError, match=r"instances_val2017\.json.*not valid JSON"):
        read_coco(tmp_path, SPLIT)
    _write(tmp_path, "[]", images=[])
    with pytest.raises(ValueError, match=r"instances_val2017\.json.*JSON object"):
        read_coco(tmp_path, SPLIT)
    _write(tmp_path, json.dumps({"images": [], "categories": [{"name": "x"}]}), images=[])
    with pytest.raises(ValueError, match="malformed category"):
        read_coco(tmp_path, SPLIT)
    with pytest.raises(FileNotFoundError, match="COCO root"):
        read_coco(tmp_path / "missing", SPLIT)
