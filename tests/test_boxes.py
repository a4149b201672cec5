import numpy as np
import pytest
import torch

from ssd_ray.boxes import center_size, decode, encode, match, match_batch, point_form
from ssd_ray.priors import prior_boxes


def test_point_center_round_trip():
    b = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(center_size(b), torch.tensor([[0.3, 0.55, 0.4, 0.7], [0.5, 0.5, 1.0, 1.0]]))
    torch.testing.assert_close(point_form(center_size(b)), b)


def test_encode_hand_worked():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    gt = torch.tensor([[0.42, 0.35, 0.62, 0.75]])  # centre (0.52, 0.55), size (0.2, 0.4)
    # dx = (0.52-0.5)/(0.1*0.2) = 1.0; dy = (0.55-0.5)/(0.1*0.4) = 1.25; log(1)/0.2 = 0 for both sizes
    torch.testing.assert_close(encode(gt, prior), torch.tensor([[1.0, 1.25, 0.0, 0.0]]))


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    priors = prior_boxes(300, [5], [60], [60], [111], [[2, 3]])
    lo = torch.rand(len(priors), 2, generator=g) * 0.5
    gt = torch.cat([lo, lo + 0.05 + torch.rand(len(priors), 2, generator=g) * 0.4], dim=1)
    torch.testing.assert_close(decode(encode(gt, priors), priors), gt, atol=1e-6, rtol=0)


def _two_priors():
    # Two unit-variance-friendly priors: the left and right halves of the image.
    return torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0]])


def test_match_threshold_and_forced_best_prior():
    priors = _two_priors()
    # GT covers the left half exactly: IoU 1 with prior 0, 0 with prior 1.
    loc_t, conf_t = match(torch.tensor([[0.0, 0.0, 0.5, 1.0]]), torch.tensor([3]), priors)
    assert conf_t.tolist() == [4, 0]  # label 3 -> class 4; prior 1 background
    torch.testing.assert_close(loc_t, torch.zeros(2, 4))  # exact fit encodes to 0; background rows are 0
    # A tiny GT (IoU 0.02 with prior 0) is still positive through its forced best prior.
    _, conf_t = match(torch.tensor([[0.1, 0.1, 0.2, 0.2]]), torch.tensor([0]), priors)
    assert conf_t.tolist() == [1, 0]


def test_match_tie_goes_to_later_gt():
    priors = _two_priors()
    # Both GTs have prior 0 as their best prior; the later one (label 7) takes it, as the reference.
    gt = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.4, 1.0]])
    _, conf_t = match(gt, torch.tensor([2, 7]), priors)
    assert conf_t.tolist() == [8, 0]


def test_match_no_objects_is_all_background():
    priors = _two_priors()
    loc_t, conf_t = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), priors)
    assert conf_t.tolist() == [0, 0] and torch.isfinite(loc_t).all()


def test_match_rejects_nan_and_bad_shapes():
    priors = _two_priors()
    with pytest.raises(ValueError, match="NaN"):
        match(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.tensor([1]), priors)
    with pytest.raises(ValueError, match=r"\[n,4\]"):
        match(torch.zeros(3), torch.zeros(3, dtype=torch.long), priors)


def test_match_batch_treats_nonfinite_rows_as_padding():
    priors = _two_priors()
    gt = torch.tensor([[[0.0, 0.0, 0.5, 1.0], [float("inf"), 0, 1, 1]]])
    _, conf_t = match_batch(gt, torch.tensor([[0, 5]]), priors)
    assert conf_t.tolist() == [[1, 0]]


@pytest.mark.parametrize("i", [0, 1, 2])
def test_match_reference(refdata, i):
    ref = np.load(refdata / "match_encode.npz")
    priors = torch.from_numpy(ref["priors"])
    loc_t, conf_t = match(torch.from_numpy(ref[f"gt_boxes_{i}"]), torch.from_numpy(ref[f"gt_labels_{i}"]).long(),
                          priors, threshold=float(ref["threshold"]), variance=ref["variance"].tolist())
    np.testing.assert_array_equal(conf_t.numpy(), ref["conf_t"][i])
    pos = ref["conf_t"][i] > 0
    assert pos.sum() == [27, 10, 25][i]
    np.testing.assert_allclose(loc_t.numpy()[pos], ref["loc_t"][i][pos], rtol=0, atol=1e-6)


def test_match_batch_equals_per_image_match(refdata):
    ref = np.load(refdata / "multibox_loss.npz")
    priors = torch.from_numpy(ref["priors"])
    rows = torch.from_numpy(ref["targets_padded"])  # [4,3,5] x1,y1,x2,y2,label, zero-padded
    counts = ref["targets_count"].tolist()
    labels = rows[..., 4].long()
    for b, n in enumerate(counts):
        labels[b, n:] = -1
    loc_b, conf_b = match_batch(rows[..., :4], labels, priors)
    np.testing.assert_array_equal(conf_b.numpy(), ref["conf_t"])
    for b, n in enumerate(counts):
        loc_1, conf_1 = match(rows[b, :n, :4], labels[b, :n], priors)
        assert torch.equal(conf_1, conf_b[b]) and torch.equal(loc_1, loc_b[b])
