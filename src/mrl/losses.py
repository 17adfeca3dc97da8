"""Losses on Matryoshka prefixes: MNRL (triplets, in-batch negatives) and CoSENT (scored pairs),
each as a weighted sum over nested dims.

Plain torch, no Lightning: the training module, tests and benchmarks call these directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def truncate_and_normalize(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first `dim` coordinates of each embedding, re-scaled to unit L2 norm."""
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


def mnrl_loss(anchors: torch.Tensor, candidates: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """MultipleNegativesRankingLoss at full width: anchor i's positive is candidate i.

    `candidates` stacks the positives (first len(anchors) rows) and any hard negatives; every
    other candidate in the batch is a negative. Similarity is cosine times `scale`.
    """
    scores = scale * F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T
    return _cross_entropy_on_diagonal(scores)


def _cross_entropy_on_diagonal(scores: torch.Tensor, label_offset: int = 0) -> torch.Tensor:
    labels = label_offset + torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores.float(), labels)


def split_global_batch(
    local: torch.Tensor, gathered: torch.Tensor, n_rows: int, rank: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's anchors, the candidates of the GLOBAL batch, and the anchors' label offset.

    `local` is this rank's embeddings (columns stacked: n_rows anchors, n_rows positives, then
    n_rows hard negatives if any); `gathered` is the same from every rank (world x rows x dim),
    gathered once at full width with gradient. Candidates are all positives of all ranks, then
    all negatives, so anchor i of rank r has its positive at r * n_rows + i. Each rank's loss
    is the mean over its own anchors; DDP's gradient average then equals the gradient of the
    single-process loss over the global batch.
    """
    world, rows, dim = gathered.shape
    n_columns = rows // n_rows
    candidates = torch.cat(
        [
            gathered[:, c * n_rows : (c + 1) * n_rows].reshape(world * n_rows, dim)
            for c in range(1, n_columns)
        ]
    )
    return local[:n_rows], candidates, rank * n_rows


def prefix_cosine_similarities(
    anchors: torch.Tensor, candidates: torch.Tensor, dims: Sequence[int]
) -> list[torch.Tensor]:
    """Cosine-similarity matrices of the `dims`-prefixes of both sides, largest dim first.

    One pass: the embedding is cut into the blocks between consecutive dims, each block gives
    one partial matmul, and the running sum over blocks is the prefix dot product. Prefix norms
    come the same way from squared coordinates. The total cost is one full-width matmul, the
    same as the plain loss, whatever the number of dims.
    """
    ascending = sorted(dims)
    dots, sq_a, sq_c = [], [], []
    dot = norm_a = norm_c = 0
    start = 0
    for end in ascending:
        block_a, block_c = anchors[:, start:end], candidates[:, start:end]
        dot = dot + block_a @ block_c.T
        norm_a = norm_a + block_a.pow(2).sum(-1)
        norm_c = norm_c + block_c.pow(2).sum(-1)
        dots.append(dot)
        sq_a.append(norm_a)
        sq_c.append(norm_c)
        start = end
    eps = 1e-12  # same floor as F.normalize
    by_dim = {
        d: dot / (na.sqrt().clamp_min(eps)[:, None] * nc.sqrt().clamp_min(eps)[None, :])
        for d, dot, na, nc in zip(ascending, dots, sq_a, sq_c, strict=True)
    }
    return [by_dim[d] for d in dims]


def matryoshka_mnrl_loss(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    dims: Sequence[int],
    weights: Sequence[float],
    scale: float = 20.0,
    label_offset: int = 0,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Weighted sum over `dims` of MNRL on each re-normalised prefix, and each dim's own loss.

    A dim with weight 0 is left out of the sum (no gradient) but its loss is still returned,
    so a run that trains some dims (the baseline, `n_dims_per_step`) can log all of them.
    With a single dim equal to the full width and weight 1 this is exactly `mnrl_loss`.
    `label_offset` is where anchor 0's positive sits among the candidates (see
    `split_global_batch`).
    """
    sims = prefix_cosine_similarities(anchors, candidates, dims)
    per_dim = {
        d: _cross_entropy_on_diagonal(scale * sim, label_offset)
        for d, sim in zip(dims, sims, strict=True)
    }
    total = sum(w * per_dim[d] for d, w in zip(dims, weights, strict=True) if w != 0)
    return total, per_dim


def pairs_from_global_batch(
    gathered: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of every rank's scored pairs: (sentence1 rows, sentence2 rows) in rank order.

    `gathered` is world x (2 n_rows) x dim, each rank's n_rows first texts then n_rows second
    texts, gathered once at full width with gradient. Every rank computes the same loss over
    the global batch; the gather's backward sums the world's gradients and DDP averages them,
    which together give the single-process gradient of that loss.
    """
    world, _, dim = gathered.shape
    left = gathered[:, :n_rows].reshape(world * n_rows, dim)
    right = gathered[:, n_rows : 2 * n_rows].reshape(world * n_rows, dim)
    return left, right


def prefix_pair_cosines(
    left: torch.Tensor, right: torch.Tensor, dims: Sequence[int]
) -> list[torch.Tensor]:
    """The cosine of each pair (left[i], right[i]) at every `dims`-prefix, largest dim first.

    One pass: running sums of the coordinate products and squares give every prefix's dot
    product and norms at once.
    """
    dots = (left * right).cumsum(-1)
    norm_left = left.pow(2).cumsum(-1).sqrt().clamp_min(1e-12)  # same floor as F.normalize
    norm_right = right.pow(2).cumsum(-1).sqrt().clamp_min(1e-12)
    return [dots[:, d - 1] / (norm_left[:, d - 1] * norm_right[:, d - 1]) for d in dims]


def cosent_loss(cosines: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT: every pair with a higher gold score than another should have the higher cosine.

    log(1 + sum over (i, j) with scores[i] > scores[j] of exp(scale * (cos[j] - cos[i]))).
    Only the order of the scores matters, so their scale (0-1 or 0-5) does not.
    """
    cosines = cosines.float()
    lower_minus_higher = scale * (cosines[None, :] - cosines[:, None])  # [i, j]: cos_j - cos_i
    ranked = scores[:, None] > scores[None, :]
    terms = lower_minus_higher.masked_fill(~ranked, float("-inf")).flatten()
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def matryoshka_cosent_loss(
    left: torch.Tensor,
    right: torch.Tensor,
    scores: torch.Tensor,
    dims: Sequence[int],
    weights: Sequence[float],
    scale: float = 20.0,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Weighted sum over `dims` of CoSENT on each prefix's pair cosines, and each dim's own loss
    (weight 0: returned, not summed, as in `matryoshka_mnrl_loss`)."""
    cosines = prefix_pair_cosines(left, right, dims)
    per_dim = {d: cosent_loss(c, scores, scale) for d, c in zip(dims, cosines, strict=True)}
    total = sum(w * per_dim[d] for d, w in zip(dims, weights, strict=True) if w != 0)
    return total, per_dim
