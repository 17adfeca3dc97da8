import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mrl.evaluation.metrics import retention, spearman_by_dim


def test_spearman_by_dim_equals_scipy_on_a_hand_made_example():
    e1 = torch.tensor([[1.0, 0.0, 5.0], [1.0, 1.0, 0.0], [0.5, 1.0, 1.0], [2.0, 1.0, -3.0]])
    e2 = torch.tensor([[1.0, 0.2, -4.0], [0.1, 1.0, 2.0], [0.5, 1.0, 0.0], [1.0, 1.0, 1.0]])
    gold = [4.5, 1.0, 3.0, 2.0]
    got = spearman_by_dim(e1, e2, gold, [3, 2])
    for dim in (3, 2):
        a, b = e1[:, :dim].numpy(), e2[:, :dim].numpy()
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert got[dim] == pytest.approx(spearmanr(cos, gold).statistic)
    # the prefixes really differ: the ranking changes between dims 3 and 2
    assert got[3] != got[2]


def test_retention_is_relative_to_the_largest_dim():
    assert retention({64: 0.8, 32: 0.6, 16: 0.4}) == pytest.approx({64: 1.0, 32: 0.75, 16: 0.5})


def test_mean_over_log2_dims_weighs_every_halving_the_same():
    from mrl.evaluation.metrics import mean_over_log2_dims

    # 32 -> 64 -> 128: two halvings of equal weight; trapezoids give (0.5 + 0.6)/2, (0.6 + 0.9)/2
    assert mean_over_log2_dims({32: 0.5, 64: 0.6, 128: 0.9}) == pytest.approx((0.55 + 0.75) / 2)
    assert mean_over_log2_dims({64: 0.7}) == 0.7
    # a flat curve is its own mean, whatever the spacing
    assert mean_over_log2_dims({384: 0.8, 256: 0.8, 32: 0.8}) == pytest.approx(0.8)
