import math

import numpy as np
import pytest
import torch

from ssd_ray.priors import boxes_per_location, prior_boxes

VOC_AR = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]


def test_one_by_one_map_hand_worked():
    p = prior_boxes(300, [1], [300], [100], [200], [[2]], clip=False)
    s = 100 / 300  # s_k = min_size / min_dim
    s_prime = math.sqrt(s * 200 / 300)  # sqrt(1/3 * 2/3) = sqrt(2)/3
    expected = torch.tensor([
        [0.5, 0.5, s, s],  # centre of the only cell: (0 + 0.5) / (300/300)
        [0.5, 0.5, s_prime, s_prime],
        [0.5, 0.5, s * math.sqrt(2), s / math.sqrt(2)],  # ar 2: wide
        [0.5, 0.5, s / math.sqrt(2), s * math.sqrt(2)],  # ar 1/2: tall
    ])
    torch.testing.assert_close(p, expected)


def test_two_by_two_map_order_rows_outer_columns_inner():
    # min_dim 100, step 50 -> f_k = 2, centres at 0.25 and 0.75; s = 20/100 = 0.2,
    # s' = sqrt(0.2 * 45/100) = sqrt(0.09) = 0.3; ar 4 -> (0.2*2, 0.2/2) = (0.4, 0.1) and (0.1, 0.4).
    p = prior_boxes(100, [2], [50], [20], [45], [[4]], clip=True)
    shapes = [[0.2, 0.2], [0.3, 0.3], [0.4, 0.1], [0.1, 0.4]]
    centres = [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]  # (cx, cy): j inner, i outer
    expected = torch.tensor([c + s for c in centres for s in shapes])
    torch.testing.assert_close(p, expected)


def test_clip_caps_sizes_only():
    # s' = sqrt(1.0 * 4.0) = 2 -> clipped to 1; centres untouched.
    p = prior_boxes(10, [1], [10], [10], [40], [[]], clip=True)
    torch.testing.assert_close(p, torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]))


def test_boxes_per_location_derived_from_aspect_ratios():
    assert boxes_per_location(VOC_AR) == [4, 6, 6, 6, 4, 4]


@pytest.mark.parametrize("name", ["voc", "coco"])
@pytest.mark.parametrize("clip", [True, False])
def test_reference_priors(refdata, name, clip):
    ref = np.load(refdata / "priors_voc300.npz")
    p = prior_boxes(300, ref["feature_maps"].tolist(), ref["steps"].tolist(),
                    ref[f"min_sizes_{name}"].tolist(), ref[f"max_sizes_{name}"].tolist(), VOC_AR, clip=clip)
    expected = ref[f"priors_{name}" + ("" if clip else "_unclipped")]
    assert p.shape == (8732, 4) and p.dtype == torch.float32
    np.testing.assert_allclose(p.numpy(), expected, rtol=0, atol=1e-6)
    counts = [f * f * b for f, b in zip(ref["feature_maps"], boxes_per_location(VOC_AR))]
    assert counts == ref["per_layer_counts"].tolist()


def test_config_priors_match_reference_counts():
    from ssd_ray.config import load_config
    from ssd_ray.priors import priors_from_config

    for name, count in [("voc300", 8732), ("coco300", 8732), ("voc512", 24564)]:
        cfg = load_config(f"configs/{name}.yaml")
        assert priors_from_config(cfg.model, cfg.priors).shape == (count, 4)
        assert cfg.priors.num_priors == count


def test_mismatched_lists_raise():
    with pytest.raises(ValueError):
        prior_boxes(300, [38, 19], [8], [30, 60], [60, 111], [[2], [2]])
