"""Pooling: the token states of one text -> one sentence embedding (`model.pooling`)."""

from __future__ import annotations

import torch

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(texts x tokens x hidden) states -> (texts x hidden): the first token's state (`cls`)
    or the mean over the tokens the mask keeps (`mean`; padding counts for nothing)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
