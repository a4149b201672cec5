"""read_voc on tiny hand-written VOCdevkit folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssd_ray.data.voc import VOC_CLASSES, annotation_path, read_voc


def _xml(filename: str | None, w: int | None, h: int | None, objects: list[tuple]) -> str:
    """objects: (name, xmin, ymin, xmax, ymax[, difficult])."""
    parts = ["<annotation>", "<folder>VOC</folder>"]
    if filename:
        parts.append(f"<filename>{filename}</filename>")
    if w is not None:
        parts.append(f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>")
    for o in objects:
        name, x1, y1, x2, y2 = o[:5]
        diff = o[5] if len(o) > 5 else 0
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{diff}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def _add(root: Path, year: str, name: str, objects: list[tuple], w: int = 500, h: int = 375,
         ext: str = ".jpg", write_image: bool = True, xml_size: bool = True, xml_text: str | None = None) -> None:
    base = root / f"VOC{year}"
    (base / "Annotations").mkdir(parents=True, exist_ok=True)
    (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
    if write_image:
        cv2.imwrite(str(base / "JPEGImages" / (name + ext)), np.zeros((h, w, 3), np.uint8))
    text = xml_text if xml_text is not None else _xml(
        name + ext, w if xml_size else None, h if xml_size else None, objects)
    (base / "Annotations" / f"{name}.xml").write_text(text)


def _split(root: Path, year: str, split: str, names: list[str]) -> None:
    d = root / f"VOC{year}" / "ImageSets" / "Main"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{split}.txt").write_text("".join(n + "\n" for n in names))


def test_voc_classes_standard_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[11] == "dog" and VOC_CLASSES[14] == "person"
    assert VOC_CLASSES[-1] == "tvmonitor" and len(set(VOC_CLASSES)) == 20


def test_coordinates_one_based_inclusive(tmp_path):
    # The VOC2007 000005-like case: W=500, H=375.
    _add(tmp_path, "2007", "000005", [("dog", 1, 1, 500, 375), ("person", 48, 240, 195, 371)])
    _split(tmp_path, "2007", "trainval", ["000005"])
    ds = read_voc(tmp_path, [("2007", "trainval")])
    assert len(ds) == 1 and ds.class_names == list(VOC_CLASSES) and ds.num_classes == 21
    r = ds.records[0]
    assert r.image_id == "VOC2007/000005"
    assert r.path == str(tmp_path / "VOC2007" / "JPEGImages" / "000005.jpg")
    assert (r.width, r.height) == (500, 375)
    # full image: ((1-1)/500, (1-1)/375, 500/500, 375/375) = [0, 0, 1, 1] exactly
    np.testing.assert_array_equal(r.boxes[0], [0, 0, 1, 1])
    # (48-1)/500, (240-1)/375, 195/500, 371/375
    np.testing.assert_allclose(r.boxes[1], [47 / 500, 239 / 375, 195 / 500, 371 / 375], rtol=1e-6)
    assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64
    np.testing.assert_array_equal(r.labels, [11, 14])  # dog, person in VOC_CLASSES
    assert not ds.skipped


def test_difficult_kept_or_dropped(tmp_path):
    _add(tmp_path, "2007", "a", [("cat", 10, 10, 50, 50, 1), ("cow", 20, 20, 80, 90, 0)])
    _add(tmp_path, "2007", "b", [("cat", 10, 10, 50, 50, 1)])
    _split(tmp_path, "2007", "test", ["a", "b"])
    kept = read_voc(tmp_path, [("2007", "test")], keep_difficult=True)
    np.testing.assert_array_equal(kept.records[0].difficult, [True, False])
    np.testing.assert_array_equal(kept.records[0].labels, [7, 9])  # cat, cow
    dropped = read_voc(tmp_path, [("2007", "test")], keep_difficult=False)
    np.testing.assert_array_equal(dropped.records[0].labels, [9])
    # "b" had only a difficult box: it stays, as a negative
    assert dropped.records[1].image_id == "VOC2007/b" and len(dropped.records[1].boxes) == 0
    assert not dropped.skipped  # dropping difficult boxes is a choice, not a bad record


def test_custom_classes(tmp_path):
    _add(tmp_path, "2007", "x", [("widget", 1, 1, 10, 10), ("gadget", 5, 5, 20, 20), ("dog", 1, 1, 5, 5)])
    _split(tmp_path, "2007", "train", ["x"])
    ds = read_voc(tmp_path, [("2007", "train")], class_names=["gadget", "widget"])
    assert ds.class_names == ["gadget", "widget"] and ds.num_classes == 3
    np.testing.assert_array_equal(ds.records[0].labels, [1, 0])
    assert ds.skipped.summary() == {"unknown_class": 1}  # "dog" is not in the custom list
    with pytest.raises(ValueError, match="duplicates"):
        read_voc(tmp_path, [("2007", "train")], class_names=["a", "a"])


def test_two_years_combined(tmp_path):
    for year in ("2007", "2012"):
        _add(tmp_path, year, "000001", [("bus", 1, 1, 100, 100)])
        _split(tmp_path, year, "trainval", ["000001"])
    ds = read_voc(tmp_path)  # default: 2007 + 2012 trainval
    assert [r.image_id for r in ds.records] == ["VOC2007/000001", "VOC2012/000001"]
    assert ds.records[1].path.endswith(os.path.join("VOC2012", "JPEGImages", "000001.jpg"))


def test_bad_records_skipped_and_counted(tmp_path, caplog):
    _add(tmp_path, "2007", "good", [("car", 1, 1, 10, 10)])
    _add(tmp_path, "2007", "corrupt", [], xml_text="<annotation><size><width>5")  # truncated XML
    _add(tmp_path, "2007", "noimage", [("car", 1, 1, 10, 10)], write_image=False)
    _add(tmp_path, "2007", "mixed", [
        ("spaceship", 1, 1, 10, 10),  # unknown class: box skipped
        ("car", 401, 301, 600, 400),  # outside a 500x375 image: clipped to (400/500, 300/375, 1, 1)
        ("car", 100, 100, 99, 120),  # xmax < xmin: zero width, dropped
        ("car", 501, 10, 520, 20),  # wholly right of the image: zero width after clipping, dropped
        ("car", "abc", 1, 5, 5),  # non-numeric: dropped
    ])
    _add(tmp_path, "2007", "alldropped", [("car", 600, 10, 700, 20)])
    # "noxml" is listed in the split but has no annotation file
    _split(tmp_path, "2007", "trainval", ["good", "corrupt", "noimage", "mixed", "alldropped", "noxml"])
    with caplog.at_level(logging.WARNING):
        ds = read_voc(tmp_path, [("2007", "trainval")])
    assert [r.image_id for r in ds.records] == ["VOC2007/good", "VOC2007/mixed", "VOC2007/alldropped"]
    mixed = ds.records[1]
    np.testing.assert_allclose(mixed.boxes, [[400 / 500, 300 / 375, 1.0, 1.0]], rtol=1e-6)
    assert len(ds.records[2].boxes) == 0  # all boxes dropped: kept as a negative
    assert ds.skipped.summary() == {
        "bad_xml": 1, "missing_image": 1, "missing_annotation": 1, "unknown_class": 1,
        "box_clipped": 3,  # the outside box and the two right-of-image boxes (clipped, then dropped)
        "empty_box": 3,  # xmax<xmin, x right of the image in "mixed", and the one in "alldropped"
        "bad_box": 1,
    }
    assert "corrupt.xml" in caplog.text and "noimage.xml" in caplog.text  # warnings name the file


def test_size_from_image_header_and_png_via_filename(tmp_path):
    # no <size>: the reader takes W,H from the PNG header; <filename> names the .png
    _add(tmp_path, "2012", "p", [("sheep", 1, 1, 32, 24)], w=64, h=48, ext=".png", xml_size=False)
    _split(tmp_path, "2012", "val", ["p"])
    ds = read_voc(tmp_path, [("2012", "val")])
    r = ds.records[0]
    assert r.path.endswith("p.png") and (r.width, r.height) == (64, 48)
    np.testing.assert_allclose(r.boxes, [[0, 0, 0.5, 0.5]])  # (1-1)/64, (1-1)/48, 32/64, 24/48
    assert ds.skipped.summary() == {"size_from_image": 1}


def test_split_file_with_second_column_and_blank_lines(tmp_path):
    _add(tmp_path, "2007", "000009", [("horse", 1, 1, 2, 2)])
    d = tmp_path / "VOC2007" / "ImageSets" / "Main"
    d.mkdir(parents=True)
    (d / "horse_val.txt").write_text("000009  1\n\n")
    assert [r.image_id for r in read_voc(tmp_path, [("2007", "horse_val")]).records] == ["VOC2007/000009"]


def test_structural_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_voc(tmp_path / "nowhere")
    _add(tmp_path, "2007", "a", [])
    _split(tmp_path, "2007", "empty", [])
    with pytest.raises(FileNotFoundError, match=r"VOC2007.ImageSets.Main.train\.txt"):
        read_voc(tmp_path, [("2007", "train")])
    with pytest.raises(ValueError, match=r"empty\.txt"):
        read_voc(tmp_path, [("2007", "empty")])


def test_annotation_path_round_trip(tmp_path):
    _add(tmp_path, "2007", "000005", [("dog", 1, 1, 5, 5)])
    _split(tmp_path, "2007", "test", ["000005"])
    rec = read_voc(tmp_path, [("2007", "test")]).records[0]
    p = annotation_path(str(tmp_path), rec.image_id)
    assert p == os.path.join(str(tmp_path), "VOC2007", "Annotations", "000005.xml") and os.path.isfile(p)
    with pytest.raises(ValueError, match="not a VOC image_id"):
        annotation_path(str(tmp_path), "000005")
