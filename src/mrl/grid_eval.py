"""The layers x dims grid for any sentence-transformers model (eval.py `grid=true`): STS-B
Spearman at every (layer, dim) from one forward pass per text, and the seconds to encode the
benchmark at each depth.

The model's Transformer runs once with `output_hidden_states`; each layer's hidden states are
pooled as the model's own Pooling module pools (mean or CLS) and passed through its Dense
modules if it has any (a projection head), so the last layer's row equals `model.encode`.
Normalize modules change no cosine and are skipped. No training code.
"""

from __future__ import annotations

import time

import torch

from mrl.errors import ConfigError
from mrl.grid import Grid, spearman_grid


def _modules(model):
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    modules = list(model)
    if not modules or not isinstance(modules[0], Transformer):
        raise ConfigError("grid=true needs a model whose first module is a Transformer.")
    pooling = next((m for m in modules if isinstance(m, Pooling)), None)
    mode = getattr(pooling, "pooling_mode", None) if pooling else None
    if mode not in ("mean", "cls"):
        raise ConfigError(f"grid=true supports mean or CLS pooling; this model pools by {mode!r}.")
    rest = [m for m in modules[1:] if not isinstance(m, (Pooling, Normalize))]
    if any(not isinstance(m, Dense) for m in rest):
        names = [type(m).__name__ for m in rest if not isinstance(m, Dense)]
        raise ConfigError(f"grid=true cannot pass layer states through {names}.")
    return modules[0], mode, rest


def depth_of(model) -> int:
    return _modules(model)[0].auto_model.config.num_hidden_layers


@torch.no_grad()
def layer_embeddings(model, texts: list[str], layers: list[int], batch_size: int = 64):
    """(layers x texts x width) pooled embeddings of `texts`, one forward pass per batch."""
    transformer, mode, dense = _modules(model)
    device = next(transformer.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        features = model.tokenize(texts[start : start + batch_size])
        features = {k: v.to(device) for k, v in features.items() if torch.is_tensor(v)}
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask",
                                                             "token_type_ids")}  # fmt: skip
        states = transformer.auto_model(**inputs, output_hidden_states=True).hidden_states
        mask = features["attention_mask"].unsqueeze(-1).float()
        pooled = []
        for layer in layers:
            hidden = states[layer].float()
            if mode == "cls":
                pooled.append(hidden[:, 0])
            else:
                pooled.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9))
        x = torch.stack(pooled)
        for module in dense:
            x = torch.stack(
                [module({"sentence_embedding": row})["sentence_embedding"] for row in x]
            )
        out.append(x.cpu())
    return torch.cat(out, dim=1)


def benchmark_grid(model, ds, dims: list[int], batch_size: int) -> tuple[Grid, dict[int, float]]:
    """The grid on an STS set (each distinct text encoded once) and the seconds to encode its
    texts at each depth (the backbone cut to that many layers, best of 2)."""
    from mrl.depth import layer_list

    texts = list(dict.fromkeys([*ds["sentence1"], *ds["sentence2"]]))
    at = {t: i for i, t in enumerate(texts)}
    depth = depth_of(model)
    layers = list(range(1, depth + 1))
    emb = layer_embeddings(model, texts, layers, batch_size)
    left = emb[:, [at[t] for t in ds["sentence1"]]]
    right = emb[:, [at[t] for t in ds["sentence2"]]]
    grid = spearman_grid(left, right, list(ds["score"]), layers, dims)
    backbone = model[0].auto_model
    parent, name = layer_list(backbone)
    full = getattr(parent, name)
    seconds = {}
    try:
        for k in layers:
            setattr(parent, name, full[:k])
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                model.encode(
                    texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
                )
                best = min(best, time.perf_counter() - start)
            seconds[k] = round(best, 3)
    finally:
        setattr(parent, name, full)
    return grid, seconds
