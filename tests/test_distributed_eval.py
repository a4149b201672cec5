"""Distributed evaluation: the Ray actor-pool path gives exactly the in-process result; the CLI report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_ray.config import config_from_dict
from ssd_ray.data.shapes import SHAPE_CLASSES, write_shapes
from ssd_ray.data.sources import load_split
from ssd_ray.evaluate.distributed import _source_blocks, evaluate_distributed, predict_distributed
from ssd_ray.evaluate.run import evaluate_model, score_detections
from test_predict import save_tiny_checkpoint, tiny_config  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("deval")
    root = write_shapes(str(d / "shapes"), "voc", n_train=0, n_val=8, seed=1, size=96)
    cfg = config_from_dict(tiny_config(root))
    ckpt = save_tiny_checkpoint(d / "model.pt", seed=1)
    return cfg, load_split(cfg.data, "val"), ckpt


def _reference(cfg, ds, ckpt):
    from ssd_ray.checkpoint import load_model

    m = load_model(ckpt)
    return evaluate_model(m.model, m.priors, ds, 96, batch_size=3, detect_args=m.detect_args_for(cfg.postprocess))


def test_source_blocks_hold_whole_batches():
    recs = [type("R", (), {"path": f"/x/{i}.jpg"})() for i in range(10)]
    # 10 records, batch 3 -> 4 batches; 2 workers allow up to 8 blocks, so 4 blocks of 3 rows (last: 1).
    blocks = _source_blocks(recs, num_workers=2, batch_size=3)
    assert [b.num_rows for b in blocks] == [3, 3, 3, 1]
    assert np.concatenate([b["index"].to_numpy() for b in blocks]).tolist() == list(range(10))
    # 1 worker -> at most 4 blocks of whole batches: 4 batches in 4 blocks.
    assert [b.num_rows for b in _source_blocks(recs, 1, 3)] == [3, 3, 3, 1]
    # batch 2, 1 worker -> 5 batches in at most 4 blocks: ceil(5/4) = 2 batches = 4 rows per block.
    assert [b.num_rows for b in _source_blocks(recs, 1, 2)] == [4, 4, 2]


def test_in_process_path_equals_evaluate_model(setup):
    cfg, ds, ckpt = setup
    got = evaluate_distributed(ckpt, ds, cfg, num_workers=1, batch_size=3)
    ref = _reference(cfg, ds, ckpt)
    assert got.to_json() == ref.to_json()


def test_class_mismatch_is_refused(setup):
    cfg, ds, ckpt = setup
    from ssd_ray.data.records import DetectionDataset

    other = DetectionDataset(list(SHAPE_CLASSES[::-1]), ds.records)
    with pytest.raises(ValueError, match="predicts classes"):
        evaluate_distributed(ckpt, other, cfg, num_workers=1)


def _planted(ds, dets):
    """The same images with ground truth = each image's top in-process detection (a guaranteed hit),
    so the comparison below is between non-zero mAPs whatever the random weights detect."""
    from ssd_ray.data.records import DetectionDataset, ImageRecord

    recs = [ImageRecord(r.image_id, r.path, r.width, r.height, d["boxes"][:1], d["labels"][:1] - 1,
                        np.zeros(min(1, len(d["labels"])), bool)) for r, d in zip(ds.records, dets)]
    return DetectionDataset(ds.class_names, recs)


@pytest.mark.slow
def test_two_ray_workers_equal_in_process(setup, tmp_path):
    """The key correctness test: 2 actors, gathered and scored once == predict_records + score_detections."""
    import ray
    import yaml

    from pipelines.evaluate import main

    cfg, ds, ckpt = setup
    ref = _reference(cfg, ds, ckpt)
    ref_dets = predict_distributed(ckpt, ds, cfg, num_workers=1, batch_size=3)  # in-process
    assert sum(len(d["scores"]) for d in ref_dets) > 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        dets = predict_distributed(ckpt, ds, cfg, num_workers=2, batch_size=3)
        assert [d["image_id"] for d in dets] == [r.image_id for r in ds.records]
        for a, b in zip(dets, ref_dets):
            np.testing.assert_array_equal(a["labels"], b["labels"])
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
            np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-6)
        from ssd_ray.postprocess import DetectArgs

        # the post-processing used is recorded with the metrics (ref: evaluate_model records it)
        got = score_detections(ds, dets, detect_args=DetectArgs.from_config(cfg.postprocess, cfg.priors.variance))
        assert got.to_json() == ref.to_json()
        planted = _planted(ds, ref_dets)
        got_p, ref_p = score_detections(planted, dets), score_detections(planted, ref_dets)
        assert ref_p.mAP_area > 0 and got_p.mAP_area == ref_p.mAP_area and got_p.coco == ref_p.coco

        # The CLI on the same Ray: report files, and the same numbers in metrics.json.
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(tiny_config(cfg.data.root)))
        out = tmp_path / "report"
        main(["--config", str(cfg_path), "--checkpoint", ckpt, "--num-workers", "2", "--batch-size", "3",
              "--out", str(out), "--score", "0.1"])
    finally:
        ray.shutdown()
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "ap_table.txt", "detections.png"} <= names
    assert {f"pr_{c}.png" for c in SHAPE_CLASSES} <= names
    assert json.loads((out / "metrics.json").read_text()) == ref.to_json()


# ------------------------------------------------------- the train workers' path (periodic evaluation)
def test_shard_indices_stride_over_ranks():
    from ssd_ray.evaluate.gather import shard_indices

    # 7 images on 3 ranks: rank 0 -> 0, 3, 6; rank 1 -> 1, 4; rank 2 -> 2, 5 (sizes differ by <= 1).
    assert [shard_indices(7, r, 3).tolist() for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard_indices(1, 1, 2).tolist() == []  # more ranks than images: an empty shard
    with pytest.raises(ValueError, match="rank"):
        shard_indices(7, 3, 3)


def test_assemble_detections_restores_order_and_refuses_gaps():
    from ssd_ray.data.records import ImageRecord
    from ssd_ray.evaluate.gather import assemble_detections

    recs = [ImageRecord(f"im{i}", f"/x/{i}.jpg", 10, 10, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                        np.zeros(0, bool)) for i in range(3)]
    det = {i: {"image_id": f"im{i}"} for i in range(3)}
    # Shards arrive out of order (rank 1 first): the result is in record order.
    got = assemble_detections(recs, [(np.array([1]), [det[1]]), (np.array([0, 2]), [det[0], det[2]])])
    assert [d["image_id"] for d in got] == ["im0", "im1", "im2"]
    with pytest.raises(RuntimeError, match="lost 1 of 3 images.*im1"):
        assemble_detections(recs, [(np.array([0, 2]), [det[0], det[2]])])
    with pytest.raises(RuntimeError, match="im0 was predicted by two shards"):
        assemble_detections(recs, [(np.array([0, 1, 2]), [det[0], det[1], det[2]]), (np.array([0]), [det[0]])])


def _validate_on_rank(rank, world, port, cfg_dict, root, ckpt, out_dir):
    """One gloo rank of `run_validation`; rank 0 writes its result for the parent to compare.

    Rank 1 starts with BatchNorm statistics of its own (as after DDP steps on other batches, or a
    per-rank EMA) and channels_last weights: validation must still predict with rank 0's network.
    """
    import pickle

    import torch
    import torch.distributed as dist

    from ssd_ray.checkpoint import load_model
    from ssd_ray.loss import MultiBoxLoss
    from ssd_ray.train.validation import run_validation

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = config_from_dict(cfg_dict)
        m = load_model(ckpt)
        m.model.to(memory_format=torch.channels_last)
        if rank == 1:
            with torch.no_grad():
                for mod in m.model.modules():
                    if isinstance(mod, torch.nn.BatchNorm2d):
                        mod.running_mean.add_(0.5)
                        mod.running_var.mul_(3.0)
        result, val_loss = run_validation(m.model, m.priors, load_split(cfg.data, "val"), cfg, "cpu",
                                          MultiBoxLoss(3), rank, world)
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
            pickle.dump((None if result is None else result.to_json(), val_loss), f)
    finally:
        dist.destroy_process_group()


def test_validation_split_over_two_ranks_equals_one_rank(setup, tmp_path):
    """Training's periodic evaluation on 2 gloo ranks (each predicts half, rank 0 scores all) gives
    the single-rank mAP exactly and the same val loss; rank 1 gets the loss but no result. Rank 1's
    diverged BatchNorm statistics are replaced by rank 0's before predicting."""
    import pickle
    import socket

    import torch.multiprocessing as mp

    from ssd_ray.checkpoint import load_model
    from ssd_ray.loss import MultiBoxLoss
    from ssd_ray.train.validation import run_validation

    cfg, ds, ckpt = setup
    m = load_model(ckpt)
    ref, ref_loss = run_validation(m.model, m.priors, ds, cfg, "cpu", MultiBoxLoss(3))
    assert ref.num_images == 8 and ref_loss > 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from ssd_ray.config import config_to_dict

    mp.spawn(_validate_on_rank, args=(2, port, config_to_dict(cfg), cfg.data.root, ckpt, str(tmp_path)),
             nprocs=2, join=True)
    (r0, loss0), (r1, loss1) = (pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1))
    assert r0 == ref.to_json() and r1 is None
    # eval batch 3: one rank sees batches (3, 1), the other (3, 1) of its 4 images, the single rank
    # (3, 3, 2): batch-normalised losses differ by batching only, so a loose tolerance.
    assert loss0 == loss1 and abs(loss0 - ref_loss) / ref_loss < 0.2


def test_training_validation_scores_coco_ap_on_coco_format_data_only():
    from pathlib import Path

    from ssd_ray.config import load_config
    from ssd_ray.train.validation import validation_iou_types

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert validation_iou_types(load_config(configs / "voc300.yaml")) == ("voc",)  # pycocotools: 4.5 s of 4.7
    assert validation_iou_types(load_config(configs / "coco300.yaml")) == ("voc", "coco")  # the official numbers
