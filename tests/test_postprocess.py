import torch
from torchvision.ops import nms

from ssd_ray.boxes import decode
from ssd_ray.postprocess import detect

PRIORS = torch.tensor([
    [0.30, 0.30, 0.20, 0.20],
    [0.31, 0.30, 0.20, 0.20],  # almost the same box as prior 0: IoU ~0.90
    [0.70, 0.70, 0.20, 0.20],  # far away
])


def _logits(probs):
    return torch.tensor(probs).log()[None]


def test_nms_within_class_not_across_classes():
    loc = torch.zeros(1, 3, 4)  # boxes are the priors themselves
    # class 1 on priors 0 and 1 (overlapping: one suppressed); class 2 on prior 1 survives beside class 1.
    conf = _logits([[0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    (out,) = detect(loc, conf, PRIORS, conf_thresh=0.3, nms_thresh=0.45)
    assert out["labels"].tolist() == [1, 2]  # 0.8 (class 1, prior 0), 0.4 (class 2, prior 1)
    torch.testing.assert_close(out["scores"], torch.tensor([0.8, 0.4]))
    torch.testing.assert_close(out["boxes"][0], torch.tensor([0.2, 0.2, 0.4, 0.4]))


def test_threshold_is_strict_and_top_k_caps_across_classes():
    loc = torch.zeros(1, 3, 4)
    conf = _logits([[0.1, 0.5, 0.4], [0.2, 0.4, 0.4], [0.1, 0.3, 0.6]])
    assert all(len(o["scores"]) == 0 for o in detect(loc, conf, PRIORS, conf_thresh=0.7))
    (out,) = detect(loc, conf, PRIORS, conf_thresh=0.01, nms_thresh=1.0, top_k=2)
    torch.testing.assert_close(out["scores"], torch.tensor([0.6, 0.5]))  # the two best of six


def test_empty_batch_entries_and_shapes():
    out = detect(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), PRIORS, conf_thresh=0.9)
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape == (0, 4) and o["scores"].shape == (0,) and o["labels"].dtype == torch.int64


def _reference_detect(loc, conf, priors, conf_thresh, nms_thresh, nms_top_k):
    """The reference's per-image, per-class loop (with torchvision's nms for the greedy step)."""
    out = []
    for b in range(loc.shape[0]):
        boxes = decode(loc[b], priors)
        scores = conf[b].softmax(-1)
        dets = set()
        for c in range(1, conf.shape[-1]):
            m = scores[:, c] > conf_thresh
            s, bx = scores[m, c], boxes[m]
            order = s.argsort(descending=True)[:nms_top_k]
            s, bx = s[order], bx[order]
            for k in nms(bx, s, nms_thresh).tolist():
                dets.add((c, round(s[k].item(), 6)))
        out.append(dets)
    return out


def test_matches_a_per_class_loop_on_random_outputs():
    g = torch.Generator().manual_seed(0)
    priors = torch.cat([torch.rand(500, 2, generator=g), 0.05 + torch.rand(500, 2, generator=g) * 0.3], 1)
    loc = torch.randn(3, 500, 4, generator=g) * 0.5
    conf = torch.randn(3, 500, 6, generator=g) * 2
    ours = detect(loc, conf, priors, conf_thresh=0.05, nms_thresh=0.45, top_k=10_000, nms_top_k=200)
    ref = _reference_detect(loc, conf, priors, 0.05, 0.45, 200)
    for o, r in zip(ours, ref):
        got = {(c, round(s, 6)) for c, s in zip(o["labels"].tolist(), o["scores"].tolist())}
        assert got == r and len(r) > 20
        assert torch.all(o["scores"][:-1] >= o["scores"][1:])  # sorted by score


def test_never_more_than_top_k():
    g = torch.Generator().manual_seed(1)
    priors = torch.cat([torch.rand(300, 2, generator=g), torch.full((300, 2), 0.02)], 1)
    out = detect(torch.zeros(2, 300, 4), torch.randn(2, 300, 21, generator=g), priors, conf_thresh=0.0, top_k=50)
    assert [len(o["scores"]) for o in out] == [50, 50]
