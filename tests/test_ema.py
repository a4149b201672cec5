"""The weight average (ssd_ray/train/ema.py): ramped decay worked by hand, buffers, round trip."""

import pytest
import torch
from torch import nn

from ssd_ray import checkpoint as ckpt_io
from ssd_ray.train.ema import WeightEMA


def _net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    nn.init.zeros_(net[0].weight)
    return net


def test_decay_ramps_up_then_holds():
    ema = WeightEMA(_net(), decay=0.99)
    assert ema.decay_at(1) == pytest.approx(2 / 11)  # (1 + 1) / (10 + 1)
    assert ema.decay_at(10) == pytest.approx(11 / 20)  # (1 + 10) / (10 + 10)
    assert ema.decay_at(890) == pytest.approx(0.99)  # 891 / 900 = 0.99 exactly: the cap takes over
    assert ema.decay_at(10_000) == 0.99


def test_update_blends_weights_and_float_buffers_copies_counters():
    net = _net()
    ema = WeightEMA(net, decay=0.5)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].running_mean.fill_(4.0)
    net[1].num_batches_tracked.fill_(7)
    ema.update(net)  # decay_at(1) = 2/11: avg = 2/11 * 0 + 9/11 * 1
    assert ema.module[0].weight.item() == pytest.approx(9 / 11)
    assert ema.module[1].running_mean.item() == pytest.approx(9 / 11 * 4.0)
    assert ema.module[1].num_batches_tracked.item() == 7  # integers are copied, not averaged
    ema.update(net)  # decay_at(2) = 3/12 = 0.25 < 0.5: avg = 0.25 * 9/11 + 0.75 * 1
    assert ema.module[0].weight.item() == pytest.approx(0.25 * 9 / 11 + 0.75)
    assert net[0].weight.item() == 1.0  # the trained model is untouched


def test_state_round_trip_and_inference_weights():
    net = _net()
    ema = WeightEMA(net, decay=0.9)
    with torch.no_grad():
        net[0].weight.fill_(2.0)
    ema.update(net)
    other = WeightEMA(_net(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)
    state = {"model": net.state_dict(), "ema": ema.state_dict()}
    assert ckpt_io.inference_weights(state) is state["ema"]["model"]
    assert ckpt_io.inference_weights({"model": net.state_dict(), "ema": None})["0.weight"].item() == 2.0


def test_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(_net(), decay=1.0)
