import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from mrl.core.losses import (
    cosent_loss,
    mnrl_loss,
    pairs_from_global_batch,
    prefix_cosine_similarities,
    prefix_pair_cosines,
    truncate_and_normalize,
)
from mrl.core.matryoshka import matryoshka_cosent_loss, matryoshka_mnrl_loss


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


# ---- CoSENT on scored pairs ----


def test_cosent_matches_hand_computed_sum_over_ranked_couples():
    cos = torch.tensor([0.9, 0.1, 0.5])
    scores = torch.tensor([1.0, 0.2, 0.2])  # pair 0 above pairs 1 and 2; 1 and 2 tie
    expected = torch.log(
        1 + torch.exp(torch.tensor(20 * (0.1 - 0.9))) + torch.exp(torch.tensor(20 * (0.5 - 0.9)))
    )
    assert torch.allclose(cosent_loss(cos, scores, 20.0), expected, atol=1e-6)
    # only the order of the scores matters (0-1 and 0-5 scales give the same loss)
    assert torch.allclose(cosent_loss(cos, 5 * scores), cosent_loss(cos, scores))
    # all scores equal: nothing to rank, log(1) = 0
    assert cosent_loss(cos, torch.ones(3)).item() == 0.0


def test_prefix_pair_cosines_equal_slice_then_cosine():
    g = torch.Generator().manual_seed(4)
    left, right = torch.randn(7, 32, generator=g), torch.randn(7, 32, generator=g)
    dims = [32, 16, 5, 1]
    for d, got in zip(dims, prefix_pair_cosines(left, right, dims), strict=True):
        assert torch.allclose(got, F.cosine_similarity(left[:, :d], right[:, :d]), atol=1e-6)


def test_matryoshka_cosent_is_the_weighted_sum_over_prefixes():
    g = torch.Generator().manual_seed(5)
    left, right = torch.randn(9, 32, generator=g), torch.randn(9, 32, generator=g)
    scores = torch.rand(9, generator=g)
    dims, weights = [32, 16, 8], [1.0, 0.0, 2.5]  # weight 0: logged, not trained
    total, per_dim = matryoshka_cosent_loss(left, right, scores, dims, weights)
    for d in dims:
        cos = F.cosine_similarity(left[:, :d], right[:, :d])
        assert torch.allclose(per_dim[d], cosent_loss(cos, scores), atol=1e-5)
    assert torch.allclose(total, per_dim[32] + 2.5 * per_dim[8], atol=1e-5)


def test_minimising_cosent_at_a_small_prefix_orders_its_cosines_like_the_scores():
    torch.manual_seed(0)
    left = torch.randn(40, 16, requires_grad=True)
    right = torch.randn(40, 16, requires_grad=True)
    scores = torch.rand(40)
    optimizer = torch.optim.Adam([left, right], lr=0.05)

    def spearman_at(d):
        cos = F.cosine_similarity(left[:, :d], right[:, :d]).detach()
        return spearmanr(cos, scores).statistic

    before = spearman_at(4)
    for _ in range(200):
        optimizer.zero_grad()
        matryoshka_cosent_loss(left, right, scores, [16, 4], [1.0, 1.0])[0].backward()
        optimizer.step()
    assert abs(before) < 0.5 and spearman_at(4) > 0.95 and spearman_at(16) > 0.95


def test_pairs_from_global_batch_puts_each_ranks_pairs_in_rank_order():
    n_rows, dim = 3, 4
    ranks = [torch.full((2 * n_rows, dim), float(r)) for r in range(2)]
    for r in ranks:
        r[n_rows:] += 0.5  # second texts
    left, right = pairs_from_global_batch(torch.stack(ranks), n_rows)
    assert left[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert right[:, 0].tolist() == [0.5, 0.5, 0.5, 1.5, 1.5, 1.5]


@pytest.mark.parametrize("n", [1, 2])
def test_cosent_on_too_few_pairs_is_zero_or_finite(n):
    cos = torch.linspace(0, 1, n, requires_grad=True)
    loss = cosent_loss(cos, torch.arange(n, dtype=torch.float))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cos.grad).all()


def test_cosent_equals_sentence_transformers_cosent_loss_at_every_prefix():
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.losses import CoSENTLoss

    g = torch.Generator().manual_seed(6)
    left, right = torch.randn(12, 32, generator=g), torch.randn(12, 32, generator=g)
    scores = torch.randint(0, 6, (12,), generator=g).float() / 5  # ties included
    theirs = CoSENTLoss(model=torch.nn.Identity(), scale=20.0)
    _, per_dim = matryoshka_cosent_loss(left, right, scores, [32, 8], [1.0, 1.0])
    for d in (32, 8):
        expected = theirs.compute_loss_from_embeddings([left[:, :d], right[:, :d]], scores)
        assert torch.allclose(per_dim[d], expected, atol=1e-5)
