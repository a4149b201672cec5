import math

import numpy as np
import pytest
import torch

from ssd_ray.boxes import match_batch
from ssd_ray.loss import MultiBoxLoss, largest_per_row_sorted, largest_per_row_topk, log_softmax_classes


def test_two_prior_hand_worked():
    # Prior 0 positive (class 1), prior 1 negative. C = 2.
    loc_p = torch.tensor([[[0.5, 2.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    loc_t = torch.zeros(1, 2, 4)
    conf_p = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]]])
    conf_t = torch.tensor([[1, 0]])
    loss_l, loss_c = MultiBoxLoss(neg_pos=3)(loc_p, conf_p, loc_t, conf_t)
    # Smooth-L1 on prior 0 only: 0.5*0.5^2 = 0.125 plus 2.0-0.5 = 1.5 -> 1.625; N = 1.
    assert loss_l.item() == pytest.approx(1.625)
    # CE(prior 0, class 1) = log 2; num_neg = min(3*1, P-1 = 1) = 1 -> prior 1, CE(bg) = log(1+3) = log 4.
    assert loss_c.item() == pytest.approx(math.log(2) + math.log(4))


def test_hard_negative_count_and_ranking():
    # One positive, five negatives with increasing background loss; neg_pos 2 keeps the two hardest.
    conf_p = torch.zeros(1, 6, 2)
    conf_p[0, 1:, 1] = torch.tensor([0.1, 0.5, 0.2, 3.0, 1.0])  # bg loss grows with the class-1 logit
    conf_t = torch.tensor([[1, 0, 0, 0, 0, 0]])
    crit = MultiBoxLoss(neg_pos=2)
    neg = crit.hard_negatives(conf_p, conf_t, conf_t > 0, (conf_t > 0).sum(1))
    assert neg[0].tolist() == [False, False, False, False, True, True]


def test_reference_loss(refdata):
    ref = np.load(refdata / "multibox_loss.npz")
    priors = torch.from_numpy(ref["priors"])
    rows = torch.from_numpy(ref["targets_padded"])
    labels = rows[..., 4].long()
    for b, n in enumerate(ref["targets_count"].tolist()):
        labels[b, n:] = -1
    loc_t, conf_t = match_batch(rows[..., :4], labels, priors)
    np.testing.assert_array_equal(conf_t.numpy(), ref["conf_t"])
    loc = torch.from_numpy(ref["loc_data"]).requires_grad_()
    conf = torch.from_numpy(ref["conf_data"]).requires_grad_()
    crit = MultiBoxLoss(neg_pos=3)
    loss_l, loss_c = crit(loc, conf, loc_t, conf_t)
    assert loss_l.item() == pytest.approx(float(ref["loss_l"]), rel=1e-5)
    assert loss_c.item() == pytest.approx(float(ref["loss_c"]), rel=1e-5)
    pos = conf_t > 0
    neg = crit.hard_negatives(conf.detach(), conf_t, pos, pos.sum(1))
    np.testing.assert_array_equal(neg.numpy(), ref["neg_mask"])
    assert neg.sum(1).tolist() == ref["num_neg"].tolist()

    # The fused backward equals autograd through plain cross-entropy on the same selection.
    (loss_l + loss_c).backward()
    conf2 = torch.from_numpy(ref["conf_data"]).requires_grad_()
    sel = pos | neg
    (torch.nn.functional.cross_entropy(conf2[sel], conf_t[sel], reduction="sum") / int(ref["N"])).backward()
    torch.testing.assert_close(conf.grad, conf2.grad, atol=1e-7, rtol=1e-5)


def test_zero_positives_is_finite():
    loc = torch.randn(2, 10, 4, requires_grad=True)
    conf = torch.randn(2, 10, 3, requires_grad=True)
    loss_l, loss_c = MultiBoxLoss()(loc, conf, torch.zeros(2, 10, 4), torch.zeros(2, 10, dtype=torch.long))
    assert loss_l.item() == 0.0 and loss_c.item() == 0.0
    (loss_l + loss_c).backward()
    assert torch.isfinite(conf.grad).all()


def test_bf16_predictions_give_float32_loss():
    loc = torch.randn(1, 4, 4).bfloat16()
    conf = torch.randn(1, 4, 3).bfloat16()
    conf_t = torch.tensor([[1, 0, 0, 2]])
    loss_l, loss_c = MultiBoxLoss()(loc, conf, torch.zeros(1, 4, 4), conf_t)
    assert loss_l.dtype == loss_c.dtype == torch.float32 and torch.isfinite(loss_c)


def test_nan_predictions_propagate_so_the_loop_can_skip():
    conf = torch.zeros(1, 3, 2)
    conf[0, 0, 0] = float("nan")
    _, loss_c = MultiBoxLoss()(torch.zeros(1, 3, 4), conf, torch.zeros(1, 3, 4), torch.tensor([[1, 0, 0]]))
    assert not torch.isfinite(loss_c)


def test_neg_pos_below_one_rejected():
    with pytest.raises(ValueError, match="neg_pos"):
        MultiBoxLoss(neg_pos=0.5)


@pytest.mark.parametrize("classes", [2, 6, 21])
def test_log_softmax_classes_equals_torch_and_stays_finite(classes):
    # 6 classes takes the CPU's logsumexp path, 21 torch's kernel; both must be log_softmax, also at
    # logits large enough that a naive exp overflows float32 (e^100 = inf).
    logits = torch.randn(4, 50, classes) * 5
    logits[0, 0] = 100.0
    logits[1, 1, 0] = -100.0
    out = log_softmax_classes(logits)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.log_softmax(logits, dim=-1), atol=1e-5)


@pytest.mark.parametrize("neg_pos", [3.0, 2.5])
def test_topk_and_sorted_hard_negative_masks_agree(neg_pos):
    # The CPU's partial sort and the accelerators' full sort pick the same priors (no ties here:
    # continuous random losses); a fractional quota rounds up in both (rank < 2.5 keeps ranks 0, 1, 2).
    g = torch.Generator().manual_seed(0)
    values = torch.rand(5, 300, generator=g)
    counts = torch.tensor([0, 1, 7, 120, 299]) * (neg_pos / 3.0)
    topk = largest_per_row_topk(values, counts)
    assert torch.equal(topk, largest_per_row_sorted(values, counts))
    assert topk.sum(1).tolist() == [math.ceil(c) for c in counts.tolist()]
    row = 2  # its 7·neg_pos/3 largest values, by hand
    assert torch.equal(topk[row].nonzero().flatten().sort().values,
                       values[row].argsort(descending=True)[: math.ceil(float(counts[row]))].sort().values)


def test_topk_hard_negatives_with_no_positive_in_the_batch():
    mask = largest_per_row_topk(torch.rand(2, 10), torch.zeros(2))
    assert mask.shape == (2, 10) and not mask.any()
