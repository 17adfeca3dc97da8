"""Per-dimension STS evaluation: Spearman of prefix cosine similarity, from one encode, and
the one-number summaries of a curve (retention, the mean over log2 dims).

Plain torch / numpy / scipy: training validation, test, and any later evaluation script call
`spearman_by_dim` on embeddings they computed once at full width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from mrl.core.losses import truncate_and_normalize


def pair_similarities(
    embeddings1: torch.Tensor, embeddings2: torch.Tensor, dims: Sequence[int], stored=None
) -> dict[int, np.ndarray]:
    """The cosine of each pair's renormalised dims-prefix, per dim: what `spearman_by_dim`
    ranks, kept so intervals can resample the test pairs later (`mrl.evaluation.intervals`).
    `stored` (`mrl.evaluation.storage.Storage.stored`): each prefix as stored (int8, binary...),
    its cosine in float64 (binary codes at equal Hamming distance tie exactly); None: float32,
    as trained."""
    e1, e2 = embeddings1.float(), embeddings2.float()

    def cosine(dim: int) -> torch.Tensor:
        if stored is None:
            return (truncate_and_normalize(e1, dim) * truncate_and_normalize(e2, dim)).sum(-1)
        a, b = stored(e1[..., :dim]).double(), stored(e2[..., :dim]).double()
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)

    return {int(dim): cosine(dim).cpu().numpy().astype(np.float32) for dim in dims}


def spearman_by_dim(
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    gold_scores: Sequence[float] | np.ndarray | torch.Tensor,
    dims: Sequence[int],
) -> dict[int, float]:
    """Spearman correlation between gold scores and the cosine of each dims-prefix pair."""
    return spearman_of_similarities(pair_similarities(embeddings1, embeddings2, dims), gold_scores)


def spearman_of_similarities(
    sims: dict[int, np.ndarray], gold_scores: Sequence[float] | np.ndarray | torch.Tensor
) -> dict[int, float]:
    """Spearman of each dim's pair similarities (`pair_similarities`) against the gold scores,
    for a caller that keeps the similarities too (no second pass over the embeddings)."""
    gold = np.asarray(torch.as_tensor(gold_scores, dtype=torch.float64).cpu())
    return {dim: float(spearmanr(cosine, gold).statistic) for dim, cosine in sims.items()}


def retention(scores: dict[int, float]) -> dict[int, float]:
    """Each dim's score divided by the score at the largest dim (1.0 at full width)."""
    full = scores[max(scores)]
    return {dim: score / full for dim, score in scores.items()}


def mean_over_log2_dims(scores: dict[int, float]) -> float:
    """The curve's mean height on a log2(dim) axis (trapezoids): every halving of the width
    counts the same, so the small prefixes MRL is for weigh as much as the large ones.
    This is the default model-selection objective (`optimized_metric`) on validation."""
    xs = sorted(scores)
    if len(xs) == 1:
        return scores[xs[0]]
    area = sum(
        (math.log2(b) - math.log2(a)) * (scores[a] + scores[b]) / 2
        for a, b in zip(xs, xs[1:], strict=False)
    )
    return area / (math.log2(xs[-1]) - math.log2(xs[0]))
