"""An encoder cut to its first K transformer layers: what a 2D Matryoshka model serves at depth
K. Its plain forward pass gives the layer-K embeddings of the full model (the layers after K
are simply not run), so `mrl.export RUN --layers K` writes a stock sentence-transformers folder
whose backbone has K layers (`num_hidden_layers: K` in its config) and loads with no code of
ours. Also the time to encode at each depth, the speed axis of the layers x dims trade-off.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from mrl.common.errors import ConfigError


def layer_list(backbone: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the backbone's transformer layers and the attribute name: the one
    ModuleList whose length is `config.num_hidden_layers` (BERT, MPNet, RoBERTa: encoder.layer)."""
    depth = backbone.config.num_hidden_layers
    for module in backbone.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == depth:
                return module, name
    raise ConfigError(
        f"{type(backbone).__name__} has no list of {depth} layers to cut; --layers works for "
        "BERT-like encoders (encoder.layer)."
    )


def cut_to_depth(encoder, k: int):
    """A copy of `encoder` (an `mrl.encoder.encoder.Encoder`) that runs only its first k layers."""
    depth = encoder.backbone.config.num_hidden_layers
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= depth:
        raise ConfigError(f"--layers {k!r} must be a whole number in 1..{depth} (the depth).")
    cut = copy.deepcopy(encoder)
    parent, name = layer_list(cut.backbone)
    setattr(parent, name, getattr(parent, name)[:k])
    cut.backbone.config.num_hidden_layers = k
    return cut


@torch.no_grad()
def encode_seconds_by_depth(encoder, batches: list[dict], depths: list[int]) -> dict[int, float]:
    """Seconds to encode `batches` (dicts of input_ids, attention_mask) with the encoder cut
    to each depth, eval mode, best of 2 passes (the first also warms up)."""
    seconds = {}
    device = next(encoder.parameters()).device
    batches = [{k: v.to(device) for k, v in b.items() if k in ("input_ids", "attention_mask")}
               for b in batches]  # fmt: skip
    for k in depths:
        cut = cut_to_depth(encoder, k).eval()
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            for batch in batches:
                cut(batch["input_ids"], batch["attention_mask"])
            best = min(best, time.perf_counter() - start)
        seconds[k] = best
    return seconds
