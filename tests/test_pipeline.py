"""The training sample maker's decode cache (`data.decode_cache_mb`): same samples, fewer decodes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import ssd_ray.data.pipeline as pipeline
from ssd_ray.data.augment import SSDAugmentation
from ssd_ray.data.pipeline import TrainSampleMaker, sample_schedule
from ssd_ray.data.records import ImageRecord


@pytest.fixture
def records(tmp_path):
    """4 random 64 x 48 JPEGs (9 kB decoded each) with one box."""
    recs = []
    for i in range(4):
        path = str(tmp_path / f"{i}.jpg")
        cv2.imwrite(path, np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8))
        recs.append(ImageRecord(f"r{i}", path, 64, 48, [[0.1, 0.2, 0.6, 0.9]], [i % 2], [False]))
    return recs


def _count_decodes(monkeypatch) -> list:
    calls = []
    real = pipeline.decode_image

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(pipeline, "decode_image", counting)
    return calls


def test_cache_gives_the_same_samples_with_one_decode_per_image(records, monkeypatch):
    aug = SSDAugmentation(32, photometric=True, expand=True, crop=True, mirror=True)
    epochs, index = sample_schedule(len(records), 0, 0, 3 * len(records))  # three epochs
    batch = {"epoch": epochs, "index": index}
    plain = TrainSampleMaker(records, aug, seed=0, max_boxes=4)(batch)
    calls = _count_decodes(monkeypatch)
    maker = TrainSampleMaker(records, aug, seed=0, max_boxes=4, cache_mb=1)
    cached = maker(batch)
    for k in ("image", "boxes", "labels", "skipped"):
        np.testing.assert_array_equal(cached[k], plain[k])
    assert len(calls) == 4 and maker.cache_bytes == 4 * 48 * 64 * 3  # each image decoded once, all kept
    assert not any(im.flags.writeable for im in maker.cache.values())  # an in-place write would raise


def test_cache_stops_at_its_budget(records, monkeypatch):
    calls = _count_decodes(monkeypatch)
    maker = TrainSampleMaker(records, SSDAugmentation(32, photometric=False, expand=False, crop=False),
                             seed=0, max_boxes=4, cache_mb=0)
    maker.cache_budget = 2 * 48 * 64 * 3 + 100  # room for two images
    batch = {"epoch": np.zeros(8, np.int64), "index": np.array([0, 1, 2, 3, 0, 1, 2, 3])}
    maker(batch)
    assert sorted(maker.cache) == [0, 1]  # the first two decoded; 2 and 3 do not fit
    assert len(calls) == 6  # 4 first time, then 2 and 3 again
    none = TrainSampleMaker(records, SSDAugmentation(32), seed=0, max_boxes=4)  # default: no cache
    none(batch)
    assert none.cache == {} and len(calls) == 14
