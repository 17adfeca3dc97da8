"""Base losses at one prefix, and the one-pass prefix similarities they are computed from.

A base loss is declared once in `BASE_LOSSES`: its name, the data it trains on and its function
at ONE dimension. The Matryoshka wrapper (`mrl.core.matryoshka`) adds the dims, weights, the random
subset of dims per step, the DDP-gathered global batch and cached mode, for every base loss.
Two kinds:

- `in_batch` (MNRL, symmetric MNRL): text columns anchor, positive[, hard negatives...]; the
  function gets `InBatchSimilarities` at one dim (cosines of this rank's anchors against every
  candidate of the global batch, and, if it asks, of this rank's positives against every anchor).
- `pairs` (CoSENT, AnglE): two text columns and a gold `score`; the function gets the two
  sides' raw d-prefixes of the global batch's pairs and their scores.

Adding a loss: one function here, one `BaseLoss` entry, one `conf/loss/<name>.yaml`.
Plain torch, no Lightning: the training module, tests and benchmarks call these directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from mrl.common.errors import ConfigError
from mrl.core.batch import global_columns


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
    candidates = torch.cat(global_columns(gathered, n_rows)[1:])
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


def pairs_from_global_batch(
    gathered: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of every rank's scored pairs: (sentence1 rows, sentence2 rows) in rank order.

    `gathered` is world x (2 n_rows) x dim, each rank's n_rows first texts then n_rows second
    texts, gathered once at full width with gradient. Every rank computes the same loss over
    the global batch; the gather's backward sums the world's gradients and DDP averages them,
    which together give the single-process gradient of that loss.
    """
    left, right = global_columns(gathered, n_rows)[:2]
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


def mnrl_at_dim(sims: InBatchSimilarities, scale: float) -> torch.Tensor:
    """MNRL at one prefix: cross-entropy of each anchor's scaled cosines over the candidates."""
    return _cross_entropy_on_diagonal(scale * sims.anchor_candidates, sims.label_offset)


def cosent_at_dim(
    left: torch.Tensor, right: torch.Tensor, scores: torch.Tensor, scale: float
) -> torch.Tensor:
    """CoSENT at one prefix, on the pair cosines of the two sides' d-prefixes."""
    return cosent_loss(pair_cosines(left, right), scores, scale)


def pair_cosines(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The cosine of each pair (left[i], right[i]), with the norm floor of F.normalize."""
    norms = left.norm(dim=-1).clamp_min(1e-12) * right.norm(dim=-1).clamp_min(1e-12)
    return (left * right).sum(-1) / norms


def mnrl_symmetric_at_dim(sims: InBatchSimilarities, scale: float) -> torch.Tensor:
    """Symmetric MNRL at one prefix: the mean of two cross-entropies, each anchor finding its
    positive among all candidates (MNRL) and each positive finding its anchor among all anchors
    of the global batch (hard negatives are candidates in the first direction only)."""
    forward = _cross_entropy_on_diagonal(scale * sims.anchor_candidates, sims.label_offset)
    backward = _cross_entropy_on_diagonal(scale * sims.positive_anchors, sims.label_offset)
    return (forward + backward) / 2


def pair_angle_similarities(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """AnglE's similarity of each pair: |Re + Im| of the complex inner product of the two
    unit-normalised embeddings, read as complex vectors.

    Coordinate k is the real part and coordinate k + ceil(d / 2) the imaginary part of complex
    coordinate k; with an odd d the last real part has no imaginary partner (taken as 0).
    Re is the cosine; Im, sum of (im_l re_r - re_l im_r), is what AnglE adds to it.
    """
    d = left.shape[-1]
    half = (d + 1) // 2  # complex coordinates
    n_imag = d - half  # imaginary parts present: half - 1 when d is odd
    norms = left.norm(dim=-1).clamp_min(1e-12) * right.norm(dim=-1).clamp_min(1e-12)
    real = (left * right).sum(-1)
    imag = (left[:, half:] * right[:, :n_imag] - left[:, :n_imag] * right[:, half:]).sum(-1)
    return ((real + imag) / norms).abs()


def angle_at_dim(
    left: torch.Tensor, right: torch.Tensor, scores: torch.Tensor, scale: float
) -> torch.Tensor:
    """AnglE at one prefix: CoSENT's ranking objective on the pairs' angle similarities."""
    return cosent_loss(pair_angle_similarities(left, right), scores, scale)


class InBatchSimilarities(NamedTuple):
    """What an in-batch base loss sees at one dim (cosines of renormalised d-prefixes).

    `anchor_candidates[i, j]`: this rank's anchor i against candidate j of the global batch
    (all positives of all ranks, then all hard negatives); anchor i's positive is candidate
    `label_offset + i`. `positive_anchors[i, j]`: this rank's positive i against anchor j of
    the global batch (its own anchor is `label_offset + i`); None unless the loss asks for it.
    """

    anchor_candidates: torch.Tensor
    positive_anchors: torch.Tensor | None
    label_offset: int


@dataclass(frozen=True)
class BaseLoss:
    """A base loss as the Matryoshka wrapper needs it.

    `kind`: `in_batch` (texts with in-batch negatives; `at_dim(InBatchSimilarities, scale)`)
    or `pairs` (two texts and a gold score; `at_dim(left, right, scores, scale)`).
    `min_text_columns`/`max_text_columns`: how many text columns the data must have.
    `positive_anchors`: the in-batch loss also needs positives scored against anchors.
    """

    name: str
    kind: Literal["in_batch", "pairs"]
    at_dim: Callable[..., torch.Tensor]
    summary: str
    min_text_columns: int = 2
    max_text_columns: int | None = None
    positive_anchors: bool = False

    @property
    def scored(self) -> bool:
        return self.kind == "pairs"


BASE_LOSSES: dict[str, BaseLoss] = {
    loss.name: loss
    for loss in (
        BaseLoss(
            "mnrl", "in_batch", mnrl_at_dim,
            "MultipleNegativesRankingLoss: anchor -> its positive among all candidates",
        ),
        BaseLoss(
            "cosent", "pairs", cosent_at_dim,
            "CoSENT: pairs ranked by cosine as by gold score", max_text_columns=2,
        ),
        BaseLoss(
            "mnrl_symmetric", "in_batch", mnrl_symmetric_at_dim,
            "Symmetric MNRL: anchor -> its positive and positive -> its anchor",
            positive_anchors=True,
        ),
        BaseLoss(
            "angle", "pairs", angle_at_dim,
            "AnglE: pairs ranked by angle similarity as by gold score", max_text_columns=2,
        ),
    )
}  # fmt: skip


def base_loss(name: str) -> BaseLoss:
    """The declared base loss `name`; one line listing the known ones otherwise."""
    if name not in BASE_LOSSES:
        raise ConfigError(
            f"loss.name={name!r} is unknown; use one of {', '.join(BASE_LOSSES)} "
            "(each has a conf/loss/<name>.yaml)."
        )
    return BASE_LOSSES[name]
