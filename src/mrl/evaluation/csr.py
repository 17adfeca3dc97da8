"""Contrastive Sparse Representation (CSR; Wen et al., ICML 2025, "Beyond Matryoshka: Revisiting
Sparse Coding for Adaptive Representation") as a post-hoc comparator: a top-k sparse
autoencoder on a FROZEN model's embeddings, so that an embedding is stored as k (index, value)
pairs of a wider latent instead of a k-dim prefix. Our own code of the paper's objective.

The coder (`SparseCoder`), one matrix `W` (latent x width) used both ways (tied):
  codes(x, k) = top-k of relu-ed `(x - b_pre) @ W.T + b_lat`, the rest zero   (latent wide)
  decode(z)   = z @ W + b_pre
The objective on a batch of cached rows (anchor, positive[, negatives]), `csr_loss`:
  reconstruction at k and at 4k (MSE of decode(codes(x, k)) and decode(codes(x, 4k)) to x,
  the 4k term weighted 1/8), so the code's leading latents carry most of x; the auxiliary
  dead-latent term (weight `AUX_WEIGHT`): the latents that were in no top-k for `DEAD_STEPS`
  steps reconstruct the k-residual x - decode(codes(x, k)) from their own top `K_AUX`, MSE
  over the residual's variance, which pulls dead latents back into use; and the contrastive
  term: InfoNCE on the k-sparse codes, each anchor's positive against every positive and
  negative of the batch (dot product of codes, scale 1, as the paper).

One coder is trained per k (each eval dim, or `transform_fit.k`), on the cached embeddings of
the training texts (the encoder is frozen, so caching them is the same function as encoding
at every step, at a fraction of the cost), AdamW at a constant rate, seeded init and shuffles.
Similarity is the cosine of two codes. Storage: k (index, value) pairs, a 2-byte index (4 when
the latent is wider than 65,536) and a 4-byte float32 value each (`code_bytes`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.evaluation.adaptor import fit_on_cached

WEIGHTS = "csr.safetensors"
INFO = "csr.json"
K_AUX = 512  # dead latents that reconstruct the residual (at most the latent width)
AUX_WEIGHT = 0.1  # the auxiliary term's weight (sentence-transformers' CSRLoss default)
CONTRASTIVE_WEIGHT = 1.0
WIDE_K_WEIGHT = 1 / 8  # the 4k reconstruction's weight
DEAD_STEPS = 5  # a latent in no code's top k for this many steps is dead
CHUNK = 65536  # rows per pass when benchmark embeddings are coded


class SparseCoder(nn.Module):
    """A tied top-k sparse autoencoder `width -> latent -> width` (see the module docstring)."""

    def __init__(self, width: int, latent: int):
        super().__init__()
        self.width, self.latent = int(width), int(latent)
        self.weight = nn.Parameter(torch.empty(latent, width))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's init
        self.pre_bias = nn.Parameter(torch.zeros(width))
        self.latent_bias = nn.Parameter(torch.zeros(latent))
        self.register_buffer("idle_steps", torch.zeros(latent, dtype=torch.long))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pre_bias) @ self.weight.T + self.latent_bias

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.weight + self.pre_bias

    @torch.no_grad()
    def codes(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The k-sparse codes of embeddings `x` (rows), float32, in chunks, no gradient."""
        self.to(x.device).eval()
        x = x.float()
        if not len(x):
            return x.new_zeros(0, self.latent)
        return torch.cat([top_k(self.pre_activations(c), k) for c in x.split(CHUNK)])


def top_k(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k largest entries, relu-ed, in place; every other entry 0 (at most k
    non-zeros a row; fewer where a kept entry is negative)."""
    values, indices = pre.topk(min(k, pre.shape[-1]), dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def code_bytes(k: int, latent: int) -> int:
    """Bytes of one stored code: k (index, float32 value) pairs, the index 2 bytes while the
    latent fits in uint16, else 4."""
    return int(k) * ((2 if latent <= 2**16 else 4) + 4)


def check_k(values, latent: int | None = None) -> list[int]:
    """The k values as a list, largest first; one line for a k that is not a whole number
    >= 1, or (with `latent`) is larger than the latent width."""
    example = "e.g. transform_fit.k=[128,64,32,16,8]"
    if isinstance(values, (str, bytes, int, float)) or not isinstance(values, Sequence):
        raise ConfigError(f"transform_fit.k={values!r} must be a list of k values, {example}.")
    values = list(values)
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"transform_fit.k={values!r} must be distinct k values, {example}.")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(
                f"transform_fit.k holds {k!r}; every k must be a whole number >= 1 (the active "
                f"latents of a code), {example}."
            )
        if latent is not None and k > latent:
            raise ConfigError(
                f"transform_fit.k holds {k}, larger than the latent width {latent} "
                "(transform_fit.latent_mult x the embedding width); use k <= "
                f"{latent} or raise transform_fit.latent_mult."
            )
    return sorted(values, reverse=True)


def csr_loss(
    coder: SparseCoder, columns: Sequence[torch.Tensor], k: int, track: bool = True
) -> torch.Tensor:
    """CSR's objective on one batch, one tensor per text column (rows x width; anchors,
    positives, then any negatives); see the module docstring. `track`: count each latent's
    steps since it was last in a top k (the dead-latent bookkeeping of training)."""
    dead = coder.idle_steps >= DEAD_STEPS
    reconstruction, fired, codes = 0.0, torch.zeros_like(dead), []
    for x in columns:
        pre = coder.pre_activations(x)
        z = top_k(pre, k)
        rebuilt = coder.decode(z)
        wide = coder.decode(top_k(pre, 4 * k))
        term = F.mse_loss(rebuilt, x) + WIDE_K_WEIGHT * F.mse_loss(wide, x)
        if dead.any():
            residual = (x - rebuilt).detach()
            aux = top_k(pre.masked_fill(~dead, float("-inf")), min(K_AUX, int(dead.sum())))
            error = ((aux @ coder.weight - residual) ** 2).sum(-1).mean()
            spread = residual.var(0, unbiased=False).sum().clamp_min(1e-12)
            term = term + AUX_WEIGHT * error / spread  # the residual's share left unexplained
        reconstruction = reconstruction + term
        fired |= (z > 0).any(0)
        codes.append(z)
    reconstruction = reconstruction / len(columns)
    anchors, candidates = codes[0], torch.cat(codes[1:])
    logits = anchors @ candidates.T
    contrastive = F.cross_entropy(logits, torch.arange(len(anchors), device=logits.device))
    if track:
        with torch.no_grad():
            coder.idle_steps.add_(1).masked_fill_(fired, 0)
    return reconstruction + CONTRASTIVE_WEIGHT * contrastive


def train_coder(
    coder: SparseCoder,
    columns: Sequence[torch.Tensor],
    k: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Train `coder` in place at `k` on cached embeddings (one tensor per text column), AdamW
    at a constant `lr`, rows shuffled each epoch by a generator seeded by `seed`; returns the
    mean loss of each epoch."""
    return fit_on_cached(coder, columns, lambda batch: csr_loss(coder, batch, k), epochs, lr,
                         batch_size, seed, f"csr k={k}", progress)  # fmt: skip


def new_coder(width: int, latent: int, seed: int) -> SparseCoder:
    """A coder whose random init comes from `seed` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return SparseCoder(width, latent)


def save_coders(coders: dict[int, SparseCoder], folder: Path, info: dict) -> None:
    """csr.safetensors (each k's weights as `k<k>.<name>`) and csr.json (`info`)."""
    state = {
        f"k{k}.{name}": value.detach().cpu().contiguous()
        for k, coder in coders.items()
        for name, value in coder.state_dict().items()
    }
    write_atomic(Path(folder) / WEIGHTS, save(state))
    write_atomic(Path(folder) / INFO, json.dumps(info, indent=2))


def load_coders(folder: Path) -> dict[int, SparseCoder]:
    """The coders `save_coders` wrote, by k."""
    tensors = load_file(str(Path(folder) / WEIGHTS))
    coders = {}
    for k in sorted({int(name.split(".")[0][1:]) for name in tensors}, reverse=True):
        state = {n.split(".", 1)[1]: v for n, v in tensors.items() if n.startswith(f"k{k}.")}
        coder = SparseCoder(state["weight"].shape[1], state["weight"].shape[0])
        coder.load_state_dict(state)
        coders[k] = coder.eval()
    return coders
