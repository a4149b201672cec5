"""The one training step (ssd_ray/train/step.py): finite and non-finite paths, clipping, EMA, loss
scaling, bf16 autocast on the CPU, and torch.compile (under DDP) agreeing with eager."""

from __future__ import annotations

import copy

import pytest
import torch

from ssd_ray.config import config_from_dict
from ssd_ray.loss import MultiBoxLoss
from ssd_ray.model import build_ssd
from ssd_ray.priors import priors_from_config
from ssd_ray.train.ema import WeightEMA
from ssd_ray.train.step import StepSettings, TrainStep, autocast_dtype

CFG = config_from_dict({
    "name": "step", "data": {"root": "/nonexistent", "train_sets": ["2007/x"], "val_sets": ["2007/x"]},
    "model": {"backbone": "light", "min_dim": 64, "width": 4, "num_classes": 3},
    "priors": {"feature_maps": [8, 4], "steps": [8, 16], "min_sizes": [10, 30], "max_sizes": [30, 64],
               "aspect_ratios": [[2], [2]]},
    "train": {"warmup_iters": 0, "max_iter": 10},
})


def _parts(seed: int = 0, channels_last: bool = False):
    torch.manual_seed(seed)
    model = build_ssd(CFG.model, CFG.priors)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    priors = priors_from_config(CFG.model, CFG.priors)
    return model, priors


def _batch(seed: int = 0):
    """4 images [64,64,3] uint8, each with one or two boxes; image 3 has none (all padding)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.8]],
                          [[0.2, 0.3, 0.4, 0.9], [0, 0, 0, 0]],
                          [[0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.45, 0.5]],
                          [[0, 0, 0, 0], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 1], [1, -1], [0, 0], [-1, -1]])
    return images, boxes, labels


def _sgd(model, lr=0.1, momentum=0.0):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_finite_step_updates_weights_and_reports_the_loss_of_the_batch():
    model, priors = _parts()
    before = copy.deepcopy(model)
    step = TrainStep(model, priors, _sgd(model), StepSettings(), criterion=MultiBoxLoss(3.0))
    out = step(*_batch())
    assert out.finite and out.loss.ndim == 0 and float(out.loss) > 0
    assert not torch.equal(_flat(model), _flat(before))
    # The reported loss is the loss of the weights *before* the update, computed independently.
    from ssd_ray.boxes import match_batch
    from ssd_ray.model import normalize

    images, boxes, labels = _batch()
    loc_t, conf_t = match_batch(boxes, labels, priors, 0.5, (0.1, 0.2))
    before.train()
    loc, conf = before(normalize(images))
    ref_l, ref_c = MultiBoxLoss(3.0)(loc, conf, loc_t, conf_t)
    torch.testing.assert_close(out.loss_l, ref_l.detach())
    torch.testing.assert_close(out.loss_c, ref_c.detach())
    assert step.calls == 1 and step.first_call_s == out.seconds


def test_non_finite_loss_skips_optimizer_and_ema():
    model, priors = _parts()
    ema = WeightEMA(model, 0.9)
    optimizer = _sgd(model, momentum=0.9)
    before = _flat(model).clone()
    step = TrainStep(model, priors, optimizer, StepSettings(), ema=ema)
    out = step(*_batch(), inject_nan=True)
    assert not out.finite and torch.isnan(out.grad_norm)  # the NaN reached the gradient
    assert torch.equal(_flat(model), before)  # no update
    assert ema.updates == 0 and torch.equal(_flat(ema.module), before)
    assert optimizer.state_dict()["state"] == {}  # no momentum buffer was created
    assert step(*_batch()).finite  # the next good batch trains again
    assert ema.updates == 1


def test_grad_clip_bounds_the_update_and_reports_the_unclipped_norm():
    # Plain SGD without momentum or decay: the update is -lr * g, and with clipping |g| = grad_clip.
    model, priors = _parts()
    before = _flat(model).clone()
    clip, lr = 1e-3, 0.5
    out = TrainStep(model, priors, _sgd(model, lr=lr), StepSettings(grad_clip=clip))(*_batch())
    assert out.finite and float(out.grad_norm) > 100 * clip  # the norm before clipping
    moved = float((_flat(model) - before).norm())
    assert moved == pytest.approx(lr * clip, rel=1e-3)


def test_ema_follows_the_step_with_the_ramped_decay():
    model, priors = _parts()
    initial = _flat(model).clone()
    ema = WeightEMA(model, 0.5)
    TrainStep(model, priors, _sgd(model), StepSettings(), ema=ema)(*_batch())
    # First update: decay min(0.5, 2/11) = 2/11, so ema = initial + (new - initial) * 9/11.
    expected = initial + (_flat(model) - initial) * (9 / 11)
    torch.testing.assert_close(_flat(ema.module), expected)


def test_grad_scaler_path_equals_unscaled_step_and_backs_off_on_overflow():
    # Loss scaling by a power of two and unscaling before the clip is exact in float32: the scaled
    # step must give bit-identical weights to the plain one.
    plain, priors = _parts()
    scaled = copy.deepcopy(plain)
    TrainStep(plain, priors, _sgd(plain), StepSettings(grad_clip=5.0))(*_batch())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    step = TrainStep(scaled, priors, _sgd(scaled), StepSettings(grad_clip=5.0), scaler=scaler)
    assert step(*_batch()).finite
    assert torch.equal(_flat(scaled), _flat(plain))
    frozen = _flat(scaled).clone()
    assert not step(*_batch(), inject_nan=True).finite
    assert torch.equal(_flat(scaled), frozen) and scaler.get_scale() == 2.0 ** 11  # backoff 0.5


def test_bf16_autocast_on_cpu_runs_the_network_in_bf16():
    model, priors = _parts()
    reference = copy.deepcopy(model)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o[1].dtype))  # conf logits
    out = TrainStep(model, priors, _sgd(model), StepSettings(amp_dtype=torch.bfloat16))(*_batch())
    assert seen == [torch.bfloat16] and out.finite and out.loss.dtype == torch.float32  # loss in float32
    ref = TrainStep(reference, priors, _sgd(reference), StepSettings())(*_batch())
    assert float(out.loss) == pytest.approx(float(ref.loss), rel=0.05)


def test_autocast_dtype_follows_train_amp_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert autocast_dtype("bf16", cuda) is torch.bfloat16 and autocast_dtype("fp16", cuda) is torch.float16
    assert autocast_dtype("none", cuda) is None and autocast_dtype("bf16", cpu) is None


def test_settings_from_config():
    cfg = CFG.model_copy(deep=True)
    cfg.train.grad_clip, cfg.train.compile, cfg.train.compile_mode = 7.0, True, "max-autotune"
    s = StepSettings.from_config(cfg, torch.device("cpu"))
    assert s == StepSettings(overlap_thresh=0.5, variance=(0.1, 0.2), grad_clip=7.0, amp_dtype=None,
                             channels_last=True, compile=True, compile_mode="max-autotune")


@pytest.mark.slow
def test_compiled_step_under_ddp_matches_eager_and_checkpoints_bare_keys(tmp_path):
    """torch.compile of DDP(model) in a one-rank gloo group, channels_last, with an EMA: three steps
    give the eager weights (to float tolerance), and state dicts carry no wrapper prefixes."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        runs = {}
        for compiled in (False, True):
            model, priors = _parts(seed=3, channels_last=True)
            ema = WeightEMA(model, 0.9)
            step = TrainStep(model, priors, _sgd(model, momentum=0.9), StepSettings(channels_last=True,
                             compile=compiled, grad_clip=10.0), net=DDP(model), ema=ema)
            losses = [float(step(*_batch(k)).loss) for k in range(3)]
            runs[compiled] = (losses, _flat(model), _flat(ema.module), model.state_dict())
        (l0, w0, e0, _), (l1, w1, e1, sd) = runs[False], runs[True]
        assert l1 == pytest.approx(l0, rel=1e-4)
        torch.testing.assert_close(w1, w0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(e1, e0, rtol=1e-4, atol=1e-5)
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in sd)
    finally:
        dist.destroy_process_group()


def _half_batch_on_rank(rank, world, init_file, out_dir):
    """One gloo rank: DDP over the light model, this rank's half of `_crowded_batch`, one step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, priors = _parts(seed=5)
        model.eval()  # BatchNorm on running statistics: batch statistics would differ between halves
        images, boxes, labels = (t[rank * 2:(rank + 1) * 2] for t in _crowded_batch())
        step = TrainStep(model, priors, _sgd(model), StepSettings(), net=DDP(model), world_size=world)
        out = step(images, boxes, labels)
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.save({"grads": grads, "loss": out.loss}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _crowded_batch():
    """4 images: the first two hold one box each, the last two five each (uneven positives per half)."""
    images, _, _ = _batch(7)
    boxes = torch.zeros(4, 5, 4)
    labels = torch.full((4, 5), -1)
    boxes[0, 0], boxes[1, 0] = torch.tensor([0.1, 0.1, 0.6, 0.6]), torch.tensor([0.3, 0.2, 0.9, 0.7])
    labels[0, 0], labels[1, 0] = 0, 1
    for i in (2, 3):
        for k in range(5):
            x, y = 0.05 + 0.18 * k, 0.1 + 0.15 * (k % 3)
            boxes[i, k] = torch.tensor([x, y, x + 0.15, y + 0.2])
            labels[i, k] = k % 2
    return images, boxes, labels


def test_two_ranks_give_the_single_process_gradient_of_the_global_batch(tmp_path):
    """Split invariance: the global batch on 1 process vs its halves on 2 gloo ranks, same weights.
    The halves hold different numbers of positives, so per-rank normalisation would not agree."""
    import torch.multiprocessing as mp

    model, priors = _parts(seed=5)
    model.eval()
    single = TrainStep(model, priors, _sgd(model), StepSettings())
    out = single(*_crowded_batch())
    ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    mp.spawn(_half_batch_on_rank, args=(2, str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # DDP averages the ranks' gradients: both hold the same all-reduced gradient. Float32 sums in a
    # different order: relative tolerance 1e-4 of the gradient's norm.
    torch.testing.assert_close(r0["grads"], r1["grads"])
    assert float((r0["grads"] - ref).norm()) <= 1e-4 * float(ref.norm())
    # The ranks' losses average to the global batch's loss.
    assert float((r0["loss"] + r1["loss"]) / 2) == pytest.approx(float(out.loss), rel=1e-5)
