"""Pooling: the token states of one text -> one sentence embedding (`model.pooling`).

- `mean`: the mean over the text's tokens (padding counts for nothing); sentence-tuned encoders.
- `cls`: the first token's state; encoders trained with a [CLS] objective.
- `last`: the state of the text's last token (the EOS token, which `backbone.load_tokenizer`
  makes sure is there); the only token of a causal decoder that has seen the whole text, so the
  pooling of decoder embedders (Qwen3-Embedding, e5-mistral). On a bidirectional encoder it
  works but throws away what mean pooling averages; use it there only to match a model
  trained that way.
- `weighted_mean`: the mean with the k-th token of a text weighted k (SGPT's position-weighted
  mean), so later tokens, which have seen more of a causal decoder's text, count more.

Each works for left- and right-padded batches alike (what is padding is read from the mask),
and each has a sentence-transformers Pooling mode that reproduces it in the export.
"""

from __future__ import annotations

import torch

POOLINGS = ("mean", "cls", "last", "weighted_mean")
# the sentence-transformers Pooling mode of each (`pooling_mode_<mode>` in its config.json)
ST_POOLING_MODES = {
    "mean": "mean_tokens",
    "cls": "cls_token",
    "last": "lasttoken",
    "weighted_mean": "weightedmean_tokens",
}


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(texts x tokens) mask -> the position of each text's last kept token, whichever side
    the padding is on."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(1).to(torch.long).argmax(1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(texts x tokens x hidden) states -> (texts x hidden) by `pooling` (see the module doc)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        rows = torch.arange(len(hidden), device=hidden.device)
        return hidden[rows, last_token_index(attention_mask)]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "weighted_mean":  # the k-th kept token of a text weighs k
        mask = mask * mask.cumsum(1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
