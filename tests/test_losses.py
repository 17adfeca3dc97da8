import torch
import torch.nn.functional as F

from mrl.losses import (
    matryoshka_mnrl_loss,
    mnrl_loss,
    prefix_cosine_similarities,
    truncate_and_normalize,
)


def _batch(seed=0, n=6, width=32):
    g = torch.Generator().manual_seed(seed)
    anchors = torch.randn(n, width, generator=g)
    candidates = torch.randn(2 * n, width, generator=g)
    return anchors, candidates


def test_truncate_and_normalize():
    x = torch.tensor([[3.0, 4.0, 12.0], [0.0, 2.0, 1.0]])
    out = truncate_and_normalize(x, 2)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert torch.allclose(out.norm(dim=-1), torch.ones(2))


def test_mnrl_matches_hand_computed_cross_entropy():
    a, c = _batch()
    a_n, c_n = F.normalize(a, dim=-1), F.normalize(c, dim=-1)
    logits = 20.0 * a_n @ c_n.T
    expected = -torch.stack([logits[i].log_softmax(0)[i] for i in range(len(a))]).mean()
    assert torch.allclose(mnrl_loss(a, c, 20.0), expected, atol=1e-6)


def test_matryoshka_at_one_full_dim_equals_plain_mnrl():
    a, c = _batch()
    total, per_dim = matryoshka_mnrl_loss(a, c, [32], [1.0], scale=20.0)
    assert torch.allclose(total, mnrl_loss(a, c, 20.0), atol=1e-6)
    assert list(per_dim) == [32]


def test_matryoshka_at_one_smaller_dim_equals_mnrl_on_the_prefix():
    a, c = _batch(1)
    total, _ = matryoshka_mnrl_loss(a, c, [8], [1.0])
    assert torch.allclose(total, mnrl_loss(a[:, :8], c[:, :8]), atol=1e-6)


def test_weighted_loss_is_weighted_sum_of_per_dim_losses():
    a, c = _batch(2)
    dims, weights = [32, 16, 8, 4], [1.0, 0.5, 2.0, 0.25]
    total, per_dim = matryoshka_mnrl_loss(a, c, dims, weights)
    expected = sum(w * mnrl_loss(a[:, :d], c[:, :d]) for d, w in zip(dims, weights, strict=True))
    assert torch.allclose(total, expected, atol=1e-5)
    for d in dims:
        assert torch.allclose(per_dim[d], mnrl_loss(a[:, :d], c[:, :d]), atol=1e-6)


def test_prefix_similarities_equal_slice_then_normalise_including_gradients():
    a, c = _batch(3)
    dims = [32, 24, 8, 3]
    a1, c1 = a.clone().requires_grad_(), c.clone().requires_grad_()
    a2, c2 = a.clone().requires_grad_(), c.clone().requires_grad_()
    fast = prefix_cosine_similarities(a1, c1, dims)
    slow = [truncate_and_normalize(a2, d) @ truncate_and_normalize(c2, d).T for d in dims]
    for f, s in zip(fast, slow, strict=True):
        assert torch.allclose(f, s, atol=1e-6)
    sum(x.square().sum() for x in fast).backward()
    sum(x.square().sum() for x in slow).backward()
    assert torch.allclose(a1.grad, a2.grad, atol=1e-5)
    assert torch.allclose(c1.grad, c2.grad, atol=1e-5)
