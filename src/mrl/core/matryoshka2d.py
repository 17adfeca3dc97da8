"""The 2D Matryoshka loss: the Matryoshka loss at several encoder layers, from one forward pass.

Each trained layer's pooled embeddings come from the same forward (`Encoder(..., layers=...)`),
so a shallow layer costs a pooling and a loss, not a re-encode. At each layer the base loss
runs at that layer's dims of the (layer, dim) pairs (`mrl.core.layers.layer_dim_pairs`) through
`mrl.core.matryoshka.matryoshka_loss` (one-pass prefix similarities, float32), weighted by the
layer's weight times the dim's weight. With the last layer alone this is exactly the plain
Matryoshka loss.

Optional alignment (2DMSE): each shallow layer's similarity distribution (softmax over the
candidates of each anchor, at full width, temperature `alignment_temperature`) is pulled
toward the last layer's by KL divergence, with the last layer detached so the alignment
never drags the full model toward its shallow copies. Plain torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mrl.core.losses import BaseLoss, base_loss, prefix_cosine_similarities
from mrl.core.matryoshka import GlobalBatch, matryoshka_loss


def layer_similarities(base: BaseLoss, batch: GlobalBatch) -> torch.Tensor:
    """Full-width cosine logits a layer's alignment compares: anchors x candidates (in-batch
    losses) or the batch's pair cosines as one row (pair losses)."""
    if base.kind == "in_batch":
        anchors, candidates = batch.local[0], torch.cat(batch.world[1:])
        return prefix_cosine_similarities(anchors, candidates, [anchors.shape[1]])[0]
    left, right = batch.world[0], batch.world[1]
    return F.cosine_similarity(left, right, dim=-1)[None, :]


def alignment_loss(
    base: BaseLoss, shallow: GlobalBatch, last: GlobalBatch, temperature: float
) -> torch.Tensor:
    """KL(last || shallow) of the rows' softmax distributions, last detached, batch mean."""
    target = F.log_softmax(layer_similarities(base, last.float()).detach() / temperature, -1)
    pred = F.log_softmax(layer_similarities(base, shallow.float()) / temperature, -1)
    return F.kl_div(pred, target, log_target=True, reduction="batchmean")


def matryoshka_2d_loss(
    base: BaseLoss | str,
    batches: dict[int, GlobalBatch],
    pairs: Sequence[tuple[int, int]],
    dim_weights: dict[int, float],
    layer_weights: dict[int, float],
    scale: float = 20.0,
    alignment_weight: float = 0.0,
    alignment_temperature: float = 0.3,
) -> tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor]]:
    """Weighted sum over the (layer, dim) pairs of the layers in `batches`, and each pair's loss.

    `batches[layer]` is that layer's GlobalBatch (only this step's layers); `pairs` may name
    other layers (left out this step). A pair's weight is layer_weights[layer] x
    dim_weights[dim]; a dim with weight 0 is logged but not trained, as in `matryoshka_loss`.
    """
    base = base_loss(base) if isinstance(base, str) else base
    total, per_pair = 0.0, {}
    for layer, batch in batches.items():
        dims = [d for pair_layer, d in pairs if pair_layer == layer]
        if not dims:
            continue
        weights = [layer_weights[layer] * dim_weights[d] for d in dims]
        layer_total, per_dim = matryoshka_loss(base, batch, dims, weights, scale)
        total = total + layer_total
        per_pair.update({(layer, d): value for d, value in per_dim.items()})
    last = max(batches)
    if alignment_weight:
        shallow = [layer for layer in batches if layer != last]
        for layer in shallow:
            term = alignment_loss(base, batches[layer], batches[last], alignment_temperature)
            per_pair[(layer, 0)] = term  # dim 0: the alignment term, logged as align@L<layer>
            total = total + alignment_weight * term / len(shallow)
    return total, per_pair
