"""User albumentations transforms (`data.augment.extra`, ssd_ray/data/extra_augment.py): strict config
validation, boxes that follow the pixels, what happens to boxes leaving the image, seeding, the
bit-identical empty case, the training stream's actor path and the preview command."""

import pickle
import subprocess
import sys
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import yaml

from ssd_ray.cli import load_config_or_exit
from ssd_ray.config import ConfigError, config_from_dict, config_to_dict, load_config
from ssd_ray.data.augment import SSDAugmentation, decode_image
from ssd_ray.data.extra_augment import ExtraAugment, ExtraAugmentError, SSDWithExtra, check_entry
from ssd_ray.data.pipeline import TrainSampleMaker, make_augmentation, sample_schedule
from ssd_ray.data.records import ImageRecord

ROOT = Path(__file__).resolve().parents[1]
PRIORS = {"feature_maps": [1], "steps": [64], "min_sizes": [16], "max_sizes": [32], "aspect_ratios": [[]]}
THREE = [  # the README's example
    {"name": "GaussianBlur", "p": 0.2, "blur_limit": [3, 5]},
    {"name": "ImageCompression", "p": 0.3, "quality_range": [40, 90]},
    {"name": "Affine", "p": 0.3, "rotate": [-10, 10], "fill": [124, 116, 104]},
]


def raw_config(root="/tmp/none", **augment) -> dict:
    return {"name": "t", "data": {"root": str(root), "train_sets": ["2007/train"], "val_sets": ["2007/val"],
                                  "augment": augment},
            "model": {"backbone": "light", "min_dim": 64}, "priors": PRIORS}


def white_rect(w=120, h=90, rect=(30, 20, 70, 60)):
    """Black image with a white rectangle at pixel xyxy `rect` (exclusive end) and its relative box."""
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = rect
    img[y0:y1, x0:x1] = 255
    return img, np.array([[x0 / w, y0 / h, x1 / w, y1 / h]], np.float32)


def bright_bbox_px(img, threshold=128):
    """Pixel xyxy (exclusive end) of the bright pixels."""
    ys, xs = np.nonzero(img.mean(axis=2) > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def rng(*seed):
    return np.random.default_rng(list(seed))


# --------------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("entry, message", [
    ({"name": "GaussianBlurr", "p": 0.2}, r"extra\.0: unknown albumentations transform 'GaussianBlurr' \(did you "
                                          r"mean GaussianBlur"),
    ({"name": "GaussianBlur", "p": 0.2, "blurr_limit": 3}, r"extra\.0: GaussianBlur: unknown argument 'blurr_limit'; "
                                                           r"GaussianBlur takes: blur_limit, sigma_limit, p"),
    ({"name": "GaussianBlur", "blur_limit": 3}, r"GaussianBlur: 'p' is required"),
    ({"name": "GaussianBlur", "p": 0.2, "blur_limit": "big"}, r"GaussianBlur: blur_limit='big': Input should be"),
    ({"name": "GaussianBlur", "p": 1.5}, r"GaussianBlur: p=1.5: Input should be less than or equal to 1"),
    ({"name": "Normalize", "p": 1.0}, r"Normalize: must return a uint8 \[H,W,3\] RGB image .* float32"),
    ({"name": "ToGray", "p": 0.1, "num_output_channels": 1}, r"ToGray: must return a uint8 \[H,W,3\]"),
    ({"name": "Compose", "p": 1.0, "transforms": []}, r"Compose is not an entry here"),
    ({"name": "Lambda", "p": 1.0}, r"Lambda takes Python functions"),
    ({"name": "OneOf", "p": 0.5, "transforms": [{"name": "Blur", "p": 1}, {"name": "MotionBlur", "p": 1, "x": 2}]},
     r"OneOf\.transforms\[1\] \(MotionBlur\): unknown argument 'x'"),
    ({"blur_limit": 3, "p": 0.5}, r"needs 'name'"),
    ({"transform": {"__class_fullname__": "GaussianBlur", "p": 0.2, "blur_limt": [3, 5]}},
     r"GaussianBlur: unknown argument 'blur_limt'"),
    ({"transform": {"__class_fullname__": "GaussianBlur", "p": 0.2}, "seed": 3}, r"only 'transform'"),
])
def test_bad_extra_is_a_config_error_naming_transform_and_argument(entry, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw_config(extra=[entry]))


def test_bad_extra_exits_2_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw_config(extra=[THREE[0], {"name": "ImageCompression", "p": 0.3,
                                                               "quality_rnge": [40, 90]}])))
    with pytest.raises(SystemExit) as e:
        load_config_or_exit(str(cfg), [])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "data.augment.extra.1: ImageCompression: unknown argument 'quality_rnge'" in err
    # the same through --set, and a good list passes
    with pytest.raises(SystemExit):
        load_config_or_exit(str(cfg), ["data.augment.extra=[{name: RandomRain}]"])
    assert "'p' is required" in capsys.readouterr().err
    ok = load_config_or_exit(str(cfg), ["data.augment.extra=[{name: CLAHE, p: 0.3}]"])
    assert ok.data.augment.extra == [{"name": "CLAHE", "p": 0.3}]


def test_good_extras_validate_round_trip_and_accept_albumentations_serialised_form():
    serial = A.to_dict(A.Compose([A.GaussianBlur(p=0.2, blur_limit=(3, 5)),
                                  A.OneOf([A.HorizontalFlip(p=1), A.Rotate(limit=10, p=1)], p=0.3)],
                                 bbox_params=A.BboxParams(format="pascal_voc")))
    single = A.to_dict(A.CLAHE(p=0.3))
    cfg = config_from_dict(raw_config(extra=[*THREE, serial, single], extra_min_visibility=0.3))
    assert cfg.data.augment.extra[:3] == THREE
    # A.to_dict writes tuples; the config keeps plain lists, so it round-trips through YAML/JSON
    assert cfg.data.augment.extra[3]["transform"]["transforms"][0]["blur_limit"] == [3, 5]
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg
    with pytest.raises(ConfigError, match="extra_min_visibility"):
        config_from_dict(raw_config(extra_min_visibility=1.5))


def test_no_albumentations_without_extras(tmp_path):
    """An empty `extra`: the config, augmentation and sample maker never import albumentations (or torch)."""
    img_path = tmp_path / "a.png"
    cv2.imwrite(str(img_path), np.full((40, 50, 3), 90, np.uint8))
    code = f"""
import sys
import numpy as np
from ssd_ray.config import config_from_dict
from ssd_ray.data.pipeline import TrainSampleMaker, make_augmentation
from ssd_ray.data.records import ImageRecord
cfg = config_from_dict({raw_config()!r})
aug = make_augmentation(cfg)
rec = ImageRecord("a", {str(img_path)!r}, 50, 40, np.array([[0.1, 0.1, 0.5, 0.5]], np.float32),
                  np.array([0]), np.zeros(1, bool))
out = TrainSampleMaker([rec], aug, 0, 4)({{"epoch": np.array([0]), "index": np.array([0])}})
assert out["image"].shape == (1, 64, 64, 3)
print(type(aug).__name__, "albumentations" in sys.modules, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["SSDAugmentation", "False", "False"], out.stdout + out.stderr


# ------------------------------------------------------------------------------------ boxes and pixels
def test_flip_and_shift_move_the_box_exactly_with_the_pixels():
    img, box = white_rect()  # white x 30..70, y 20..60 of 120x90
    flip = ExtraAugment([{"name": "HorizontalFlip", "p": 1.0}])
    out, b, lab, dropped = flip(img, box, np.array([4]), rng(0))
    # x -> 120 - x: the white block is now x 50..90
    np.testing.assert_allclose(b[0] * [120, 90, 120, 90], [50, 20, 90, 60], atol=1e-4)
    np.testing.assert_array_equal(bright_bbox_px(out), [50, 20, 90, 60])
    assert lab.tolist() == [4] and dropped == 0 and b.dtype == np.float32 and lab.dtype == np.int64
    shift = ExtraAugment([{"name": "Affine", "p": 1.0, "translate_px": {"x": [17, 17], "y": [-9, -9]}}])
    out, b, lab, dropped = shift(img, box, np.array([4]), rng(0))
    np.testing.assert_allclose(b[0] * [120, 90, 120, 90], [47, 11, 87, 51], atol=1e-4)
    np.testing.assert_array_equal(bright_bbox_px(out), [47, 11, 87, 51])


@pytest.mark.parametrize("angle", [-25.0, 12.0, 30.0])
def test_rotation_returns_the_box_enclosing_the_rotated_object(angle):
    """albumentations' `largest_box`: the box of the rotated corners, which for a filled rectangle is the
    extent of its rotated pixels. Tolerance 1.5 px (pixel-centre conventions, bilinear edges)."""
    img, box = white_rect(160, 120, (50, 40, 100, 70))
    rot = ExtraAugment([{"name": "Affine", "p": 1.0, "rotate": [angle, angle]}])
    out, b, lab, dropped = rot(img, box, np.array([1]), rng(1))
    assert dropped == 0 and lab.tolist() == [1]
    got = b[0].astype(np.float64) * [160, 120, 160, 120]
    np.testing.assert_allclose(got, bright_bbox_px(out), atol=1.5)
    # and analytically: corners rotated about the image centre
    c = np.array([80.0, 60.0])
    t = np.deg2rad(angle)
    corners = np.array([[50, 40], [100, 40], [100, 70], [50, 70]], np.float64) - c
    rotm = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # image y points down
    r = corners @ rotm.T + c
    expected = [r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()]
    np.testing.assert_allclose(got, expected, atol=1.5)
    assert got[2] - got[0] > 50 + 1  # really rotated: wider than the upright box


def test_extras_then_ssd_keep_boxes_on_the_pixels():
    """Extras on the source image, then the SSD geometry: the final box still matches the white pixels."""
    ssd = SSDAugmentation(96, mean_pixel=(0, 0, 0), photometric=False)
    aug = SSDWithExtra(ssd, ExtraAugment([
        {"name": "Affine", "p": 1.0, "translate_px": {"x": [-20, 20], "y": [-15, 15]}},
        {"name": "HorizontalFlip", "p": 0.5}]))
    img, box = white_rect()
    compared = 0
    for seed in range(40):
        out, b, lab = aug(img, box, np.array([5]), rng(seed))
        if len(b) == 0:  # the SSD crop dropped it (its centre left the patch)
            continue
        assert lab.tolist() == [5]
        np.testing.assert_allclose(b[0], bright_bbox_px(out) / 96, atol=2 / 96)
        compared += 1
    assert compared >= 25


def test_boxes_leaving_the_image_are_clipped_or_dropped_by_visibility_and_counted():
    img, box = white_rect()  # box x 30..70 (40 px wide) on a 120 px wide image
    boxes = np.concatenate([box, [[0.05, 0.1, 0.2, 0.3]]]).astype(np.float32)  # second box x 6..24
    labels = np.array([7, 8])

    def shift(dx, min_visibility=0.5):
        return ExtraAugment([{"name": "Affine", "p": 1.0, "translate_px": {"x": [dx, dx], "y": [0, 0]}}],
                            min_visibility)(img, boxes, labels, rng(2))

    # +60 px: box 1 -> x 90..130, clipped to 90..120 (visible 30/40 = 0.75): kept; box 2 -> 66..84
    _, b, lab, dropped = shift(60)
    np.testing.assert_allclose(b[:, [0, 2]] * 120, [[90, 120], [66, 84]], atol=1e-3)
    np.testing.assert_allclose(b[:, [1, 3]], boxes[:, [1, 3]], atol=1e-6)  # y untouched
    assert lab.tolist() == [7, 8] and dropped == 0
    # +80 px: box 1 -> 110..150, visible 10/40 = 0.25 < 0.5: dropped with its label and counted
    _, b, lab, dropped = shift(80)
    assert lab.tolist() == [8] and dropped == 1
    np.testing.assert_allclose(b[0, [0, 2]] * 120, [86, 104], atol=1e-3)
    # a lower visibility keeps it, clipped
    _, b, lab, dropped = shift(80, min_visibility=0.2)
    assert lab.tolist() == [7, 8] and dropped == 0
    np.testing.assert_allclose(b[0, [0, 2]] * 120, [110, 120], atol=1e-3)
    # -40 px: box 2 -> x -34..-16, entirely outside: dropped
    _, b, lab, dropped = shift(-40)
    assert lab.tolist() == [7] and dropped == 1


def test_images_without_boxes_pass_through():
    aug = SSDWithExtra(SSDAugmentation(48), ExtraAugment(THREE))
    img, _ = white_rect()
    for i in range(20):
        out, b, lab = aug(img, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng(3, i))
        assert out.shape == (48, 48, 3) and b.shape == (0, 4) and lab.shape == (0,)


# ------------------------------------------------------------------------------------------ seeding
def test_same_seed_same_sample_and_extras_leave_the_ssd_draws_alone():
    img = cv2.resize(np.random.default_rng(5).integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120))
    boxes = np.array([[0.2, 0.2, 0.7, 0.8], [0.1, 0.5, 0.3, 0.9]], np.float32)
    labels = np.array([1, 2])
    aug = SSDWithExtra(SSDAugmentation(64), ExtraAugment([*THREE, {"name": "GaussNoise", "p": 0.5}]))
    first = [aug(img, boxes, labels, rng(0, 3, k)) for k in range(12)]
    again = pickle.loads(pickle.dumps(aug))  # as shipped to a data actor: rebuilt there
    for k in range(12):
        for x, y in zip(first[k], again(img, boxes, labels, rng(0, 3, k))):
            assert np.array_equal(x, y)
    assert sum(not np.array_equal(first[0][0], f[0]) for f in first[1:]) == 11

    # The extras draw from a spawned child: the SSD's own draws (crop, mirror) are the same with and
    # without them. A colour-only extra therefore leaves every box exactly where the plain recipe puts it.
    plain = SSDAugmentation(64, expand=False)  # no mean-pixel fill: a grey source stays grey
    grey = SSDWithExtra(plain, ExtraAugment([{"name": "ToGray", "p": 1.0}]))
    moved = 0
    for k in range(30):
        a, b = grey(img, boxes, labels, rng(1, 0, k)), plain(img, boxes, labels, rng(1, 0, k))
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        assert np.ptp(a[0].astype(int), axis=2).max() <= 2  # the extra ran (grey, up to HSV rounding)
        moved += not np.array_equal(a[1], boxes[:len(a[1])])
    assert moved >= 10  # and the SSD geometry did move the boxes on many draws


def test_extras_that_never_fire_are_bit_identical_to_the_plain_recipe():
    img = cv2.resize(np.random.default_rng(6).integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120))
    boxes = np.array([[0.2, 0.2, 0.7, 0.8]], np.float32)
    plain = SSDAugmentation(64)
    never = SSDWithExtra(plain, ExtraAugment([{**e, "p": 0.0} for e in THREE]))
    for k in range(40):
        for x, y in zip(never(img, boxes, np.array([3]), rng(2, 0, k)), plain(img, boxes, np.array([3]), rng(2, 0, k))):
            assert np.array_equal(x, y)


def test_shorthand_and_serialised_forms_give_the_same_samples():
    img, box = white_rect()
    short = [{"name": "GaussianBlur", "p": 0.5, "blur_limit": [3, 5]},
             {"name": "Affine", "p": 0.5, "rotate": [-10, 10]}]
    blur, affine = A.GaussianBlur(p=0.5, blur_limit=(3, 5)), A.Affine(p=0.5, rotate=(-10, 10))
    pairs = [(short, [A.to_dict(blur), A.to_dict(affine)]),
             # a serialised Compose is a Sequential of its transforms
             ([{"name": "Sequential", "p": 1.0, "transforms": short}], [A.to_dict(A.Compose([blur, affine]))])]
    for one, other in pairs:
        a, b = ExtraAugment(one), ExtraAugment(other)
        outs = [a(img, box, np.array([0]), rng(4, k)) for k in range(12)]
        for k, out_a in enumerate(outs):
            for x, y in zip(out_a, b(img, box, np.array([0]), rng(4, k))):
                assert np.array_equal(np.asarray(x), np.asarray(y))
        assert len({o[0].tobytes() for o in outs}) >= 3  # the transforms really fired


def test_pixel_only_extras_skip_box_processing_with_the_same_result():
    img = cv2.resize(np.random.default_rng(8).integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120))
    boxes = np.array([[0.2, 0.2, 0.7, 0.8], [0.0, 0.5, 1.0, 1.0]], np.float32)
    pixel = [THREE[0], THREE[1], {"name": "GaussNoise", "p": 0.5}, {"name": "CLAHE", "p": 0.5}]
    fast = ExtraAugment(pixel)
    # a never-firing flip, last, makes albumentations process the boxes without changing any draw before it
    slow = ExtraAugment([*pixel, {"name": "HorizontalFlip", "p": 0.0}])
    changed = 0
    for k in range(20):
        a, b = fast(img, boxes, np.array([1, 2]), rng(5, k)), slow(img, boxes, np.array([1, 2]), rng(5, k))
        for x, y in zip(a, b):
            assert np.array_equal(np.asarray(x), np.asarray(y))
        changed += not np.array_equal(a[0], img)
    assert fast.moves_boxes is False and slow.moves_boxes is True and changed >= 10


# ------------------------------------------------------------------------------- the training stream
@pytest.fixture(scope="module")
def jpeg_records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    r = np.random.default_rng(7)
    recs = []
    for i in range(6):
        w, h = int(r.integers(90, 140)), int(r.integers(70, 110))
        img = cv2.resize(r.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h))
        path = folder / f"{i}.jpg"
        cv2.imwrite(str(path), img)
        xy = r.uniform(0, 0.5, (3, 2))
        boxes = np.concatenate([xy, xy + r.uniform(0.1, 0.5, (3, 2))], axis=1).clip(0, 1).astype(np.float32)
        recs.append(ImageRecord(str(i), str(path), w, h, boxes, np.array([0, 1, 2]), np.zeros(3, bool)))
    return recs


def test_empty_extra_leaves_the_training_stream_bit_identical(jpeg_records):
    """With `extra: []` the sample maker gives exactly what the plain recipe gives (today's code path)."""
    cfg = config_from_dict(raw_config(extra=[]))
    aug = make_augmentation(cfg)
    assert type(aug) is SSDAugmentation
    epochs, index = sample_schedule(len(jpeg_records), 0, 0, 10)
    out = TrainSampleMaker(jpeg_records, aug, 0, 4)({"epoch": epochs, "index": index})
    ref = SSDAugmentation(64)
    for row, (e, i) in enumerate(zip(epochs, index)):
        rec = jpeg_records[i]
        img, b, lab = ref(decode_image(rec.path), rec.boxes, rec.labels, rng(0, int(e), int(i)))
        assert np.array_equal(out["image"][row], img)
        k = len(lab)
        assert np.array_equal(out["boxes"][row, :k], b) and np.array_equal(out["labels"][row, :k], lab)
        assert (out["labels"][row, k:] == -1).all() and (out["boxes"][row, k:] == 0).all()
    assert (out["skipped"] == 0).all() and (out["extra_dropped"] == 0).all()


def test_sample_maker_applies_extras_and_counts_dropped_boxes(jpeg_records):
    shift = {"name": "Affine", "p": 1.0, "translate_percent": {"x": [0.45, 0.45], "y": [0, 0]}}
    cfg = config_from_dict(raw_config(extra=[shift], crop=False, expand=False, mirror=False, photometric=False))
    aug = make_augmentation(cfg)
    assert isinstance(aug, SSDWithExtra)
    epochs, index = sample_schedule(len(jpeg_records), 0, 0, 6)
    out = TrainSampleMaker(jpeg_records, aug, 0, 4)({"epoch": epochs, "index": index})
    for row, i in enumerate(index):
        rec = jpeg_records[i]
        # shifted right by 0.45 of the width: visible share of x0..x1 is (1 - (x0 + .45)) / (x1 - x0)
        x0, x1 = rec.boxes[:, 0] + 0.45, rec.boxes[:, 2] + 0.45
        visible = np.clip(1 - x0, 0, None) / (x1 - x0)
        kept = np.minimum(visible, 1) >= 0.5
        assert out["extra_dropped"][row] == (~kept).sum()
        assert out["labels"][row][out["labels"][row] >= 0].tolist() == rec.labels[kept].tolist()
        np.testing.assert_allclose(out["boxes"][row, :kept.sum(), 0], np.minimum(x0[kept], 1), atol=0.02)
    assert out["extra_dropped"].sum() > 0


@pytest.mark.slow
def test_ray_data_actors_apply_the_extras_like_the_local_path(jpeg_records, tmp_path):
    """The Ray Data actor path (pickled augmentation, albumentations imported in the actor) gives the same
    samples as the in-process sample maker, in order."""
    import ray

    from ssd_ray.data.pipeline import build_train_dataset, data_execution_options
    from ssd_ray.data.records import DetectionDataset

    raw = raw_config(extra=THREE)
    raw["train"] = {"batch_size": 4, "max_iter": 3, "warmup_iters": 0}
    raw["ray"] = {"data_cpus": 1, "data_concurrency": 1}
    cfg = config_from_dict(raw)
    ds = DetectionDataset(["a", "b", "c"], jpeg_records)
    if ray.is_initialized():
        ray.shutdown()  # another test's local Ray
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        data = build_train_dataset(ds, cfg)
        data.context.execution_options = data_execution_options(cfg, preserve_order=True)
        rows = list(data.iter_batches(batch_size=4, batch_format="numpy"))
    finally:
        ray.shutdown()
    got = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    epochs, index = sample_schedule(len(jpeg_records), 0, 0, 12)
    local = TrainSampleMaker(jpeg_records, make_augmentation(cfg), 0, cfg.data.max_boxes)(
        {"epoch": epochs, "index": index})
    assert set(local) <= set(got)
    for k in local:
        assert np.array_equal(got[k], local[k]), k


# ---------------------------------------------------------------------------------------- preview
def test_preview_draws_the_training_samples(tmp_path):
    from pipelines import preview_augment

    raw = raw_config(root=tmp_path / "shapes", extra=THREE)
    raw["data"]["synthetic"] = {"train": 6, "val": 1, "seed": 0, "size": 64}
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    out = preview_augment.main(["--config", str(cfg_path), "--n", "5", "--out", str(tmp_path / "g" / "grid.png")])
    grid = cv2.imread(str(out))
    # make_grid: 3 tiles per row (ceil sqrt 5), 2 rows, 64 px tiles, 2 px padding
    assert grid.shape == (2 + 2 * 66, 2 + 3 * 66, 3)
    # the first tile is the first training sample, exactly
    cfg = load_config(cfg_path)
    from ssd_ray.data.sources import load_split

    train = load_split(cfg.data, "train")
    e, i = sample_schedule(len(train.records), 0, 0, 1)
    sample = TrainSampleMaker(train.records, make_augmentation(cfg), 0, 100)({"epoch": e, "index": i})
    tile = cv2.cvtColor(grid[2:66, 2:66], cv2.COLOR_BGR2RGB)
    unboxed = np.abs(tile.astype(int) - sample["image"][0]).max(axis=2) == 0
    assert unboxed.mean() > 0.6  # PNG is lossless: everything but the drawn box outlines is the sample

    with pytest.raises(SystemExit) as ex:
        preview_augment.main(["--config", str(cfg_path), "--n", "4", "--out", str(tmp_path / "x.png"),
                              "--set", "data.augment.extra=[{name: Blur, p: 0.5, size: 3}]"])
    assert ex.value.code == 2 and not (tmp_path / "x.png").exists()
