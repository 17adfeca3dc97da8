"""Cached (GradCache-style) training step: a large contrastive batch at the memory of a small one.

1. Encode the whole batch in mini-batches without a graph; keep only the embeddings.
2. Compute the loss for every Matryoshka dim at once on those embeddings and its gradient with
   respect to them (under DDP, through the one full-width gather).
3. Re-encode each mini-batch with a graph, replaying the random state of step 1 so dropout
   masks match, and back-propagate the cached embedding gradient into the parameters.

The parameter gradient equals that of the plain step on the same batch; peak activation memory
is one mini-batch's. Plain torch: the caller passes in how to encode, score and back-propagate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replay_rng(state: tuple, device: torch.device):
    cpu, cuda = state
    devices = [device] if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


def cached_step(
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mini_batch_size: int,
    loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Runs steps 1-3 above; returns the (detached) loss and the per-dim losses.

    `loss_fn(embeddings)` maps all texts' embeddings (batch order; texts x width, or layers x
    texts x width when `encode` pools several layers) to `(loss, per_dim)`.
    `backward` back-propagates a scalar into the parameters (e.g. `manual_backward`);
    `no_sync()` suppresses the DDP gradient all-reduce, used for every mini-batch but the last.
    Mini-batches group texts of similar length, so each is cut to its own longest text.
    """
    lengths = attention_mask.sum(1)
    chunks = lengths.argsort(descending=True).split(mini_batch_size)
    device = input_ids.device

    states, pieces = [], []
    with torch.no_grad():
        for idx in chunks:
            width = int(lengths[idx].max())
            states.append(_rng_state(device))
            pieces.append(encode(input_ids[idx, :width], attention_mask[idx, :width]).float())
    order = torch.cat(chunks)
    shape = (*pieces[0].shape[:-2], len(input_ids), pieces[0].shape[-1])  # [layers,] texts, width
    cached = torch.empty(shape, device=pieces[0].device)
    cached[..., order, :] = torch.cat(pieces, dim=-2)
    cached.requires_grad_()

    loss, per_dim = loss_fn(cached)
    (embedding_grad,) = torch.autograd.grad(loss, cached)

    for i, idx in enumerate(chunks):
        width = int(lengths[idx].max())
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync, _replay_rng(states[i], device):
            emb = encode(input_ids[idx, :width], attention_mask[idx, :width]).float()
            backward((emb * embedding_grad[..., idx, :]).sum())
    return loss.detach(), {d: v.detach() for d, v in per_dim.items()}
