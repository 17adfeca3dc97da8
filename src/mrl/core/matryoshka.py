"""The Matryoshka wrapper: any base loss of `mrl.core.losses`, summed over nested prefixes with
weights.

It owns what every base loss shares: the schedule dims and their weights, the random subset of
dims per step (`n_dims_per_step`), the global batch under DDP (one full-width gather, sliced per
dim), and float32 similarities under any autocast. Cached mode (`mrl.encoder.cached`) calls it on
cached embeddings like any other loss function. Plain torch, no Lightning.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mrl.core.batch import global_columns, split_columns
from mrl.core.losses import BaseLoss, InBatchSimilarities, base_loss, prefix_cosine_similarities


@dataclass
class GlobalBatch:
    """One step's embeddings as a loss sees them: this rank's columns and every rank's.

    `local[k]`: this rank's rows of text column k. `world[k]`: the same column over all ranks in
    rank order (equal to `local[k]` on one process). `offset`: where this rank's rows start in
    `world[k]`. `scores`: the gold scores of the global batch (scored pairs only).
    """

    local: list[torch.Tensor]
    world: list[torch.Tensor]
    offset: int = 0
    scores: torch.Tensor | None = None

    @classmethod
    def from_embeddings(
        cls,
        local: torch.Tensor,
        n_rows: int,
        gathered: torch.Tensor | None = None,
        rank: int = 0,
        scores: torch.Tensor | None = None,
    ) -> GlobalBatch:
        """From this rank's column-stacked embeddings and their gather (world x rows x dim,
        with gradient; None on one process)."""
        gathered = local[None] if gathered is None else gathered
        return cls(
            split_columns(local, n_rows), global_columns(gathered, n_rows), rank * n_rows, scores
        )

    def float(self) -> GlobalBatch:
        return GlobalBatch(
            [t.float() for t in self.local],
            [t.float() for t in self.world],
            self.offset,
            None if self.scores is None else self.scores.float(),
        )


def matryoshka_loss(
    base: BaseLoss | str,
    batch: GlobalBatch,
    dims: Sequence[int],
    weights: Sequence[float],
    scale: float = 20.0,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Weighted sum over `dims` of the base loss on each prefix, and each dim's own loss.

    Computed in float32 with autocast off, whatever precision the encoder ran in (bf16-mixed
    would otherwise run the prefix matmuls in bf16). A dim with weight 0 is left out of the
    sum (no gradient) but its loss is still returned, so a run that trains some dims (the
    baseline, `n_dims_per_step`) can log all of them. With one dim equal to the full width
    and weight 1 this is the plain base loss.
    """
    base = base_loss(base) if isinstance(base, str) else base
    device_type = batch.local[0].device.type
    with torch.autocast(device_type, enabled=False):
        batch = batch.float()
        if base.kind == "in_batch":
            per_dim = _in_batch(base, batch, dims, scale)
        else:
            left, right = batch.world[0], batch.world[1]
            per_dim = {d: base.at_dim(left[:, :d], right[:, :d], batch.scores, scale) for d in dims}
    total = sum(w * per_dim[d] for d, w in zip(dims, weights, strict=True) if w != 0)
    if isinstance(total, int):  # every weight 0 this step: a zero that still has a graph
        total = 0.0 * sum(per_dim.values())
    return total, per_dim


def _in_batch(
    base: BaseLoss, batch: GlobalBatch, dims: Sequence[int], scale: float
) -> dict[int, torch.Tensor]:
    anchors, candidates = batch.local[0], torch.cat(batch.world[1:])
    anchor_candidates = prefix_cosine_similarities(anchors, candidates, dims)
    positive_anchors = (
        prefix_cosine_similarities(batch.local[1], batch.world[0], dims)
        if base.positive_anchors
        else [None] * len(dims)
    )
    return {
        d: base.at_dim(InBatchSimilarities(ac, pa, batch.offset), scale)
        for d, ac, pa in zip(dims, anchor_candidates, positive_anchors, strict=True)
    }


class MatryoshkaLoss:
    """A base loss over a schedule: `loss(batch)` -> (weighted total, loss per dim).

    `train_weights` are the weights actually trained (the baseline: full width only);
    `step_weights()` draws this step's `n_dims_per_step` of them (Python's `random`, seeded by
    the run's seed, so a resumed run draws the same subsets).
    """

    def __init__(
        self,
        base: BaseLoss | str,
        dims: Sequence[int],
        train_weights: Sequence[float],
        scale: float = 20.0,
        n_dims_per_step: int | None = None,
    ):
        self.base = base_loss(base) if isinstance(base, str) else base
        self.dims, self.train_weights = list(dims), list(train_weights)
        self.scale, self.n_dims_per_step = scale, n_dims_per_step

    def step_weights(self) -> list[float]:
        """This step's weight per dim: all training weights, or `n_dims_per_step` of them
        picked at random with the others set to 0."""
        n = self.n_dims_per_step
        trained = [i for i, w in enumerate(self.train_weights) if w != 0]
        if n is None or n == -1 or n >= len(trained):
            return self.train_weights
        keep = set(random.sample(trained, n))
        return [w if i in keep else 0.0 for i, w in enumerate(self.train_weights)]

    def __call__(
        self, batch: GlobalBatch, weights: Sequence[float] | None = None
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        weights = self.train_weights if weights is None else weights
        return matryoshka_loss(self.base, batch, self.dims, weights, self.scale)


# ---- the two original losses by name, on already split inputs (tests, benchmarks) ----


def matryoshka_mnrl_loss(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    dims: Sequence[int],
    weights: Sequence[float],
    scale: float = 20.0,
    label_offset: int = 0,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """MNRL over prefixes for `anchors` against `candidates` (positives first, then
    negatives); anchor i's positive is candidate `label_offset + i`."""
    batch = GlobalBatch([anchors], [anchors, candidates], label_offset)
    return matryoshka_loss("mnrl", batch, dims, weights, scale)


def matryoshka_cosent_loss(
    left: torch.Tensor,
    right: torch.Tensor,
    scores: torch.Tensor,
    dims: Sequence[int],
    weights: Sequence[float],
    scale: float = 20.0,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """CoSENT over prefixes for the pairs (left[i], right[i]) with gold `scores`."""
    batch = GlobalBatch([left, right], [left, right], 0, scores)
    return matryoshka_loss("cosent", batch, dims, weights, scale)
