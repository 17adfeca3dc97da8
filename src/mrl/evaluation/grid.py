"""The layers x dims grid of a 2D Matryoshka model: STS Spearman at every (layer, dim) from one
forward pass of the eval set, its heatmap, and the difference heatmap of two grids; and the
same grid for any sentence-transformers model (eval.py `grid=true`), with the seconds to encode
the benchmark at each depth.

A grid is {layer: {dim: spearman}}; keys are ints in memory, and "L<layer>d<dim>" in logs and
results.json (`grid_key`). Plain torch / numpy / matplotlib (Agg).

For a sentence-transformers model, its Transformer runs once with `output_hidden_states`; each
layer's hidden states are pooled as the model's own Pooling module pools (mean or CLS) and
passed through its Dense modules if it has any (a projection head), so the last layer's row
equals `model.encode`. Normalize modules change no cosine and are skipped. No training code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from mrl.common.errors import ConfigError
from mrl.encoder.depth import layer_list
from mrl.evaluation.metrics import spearman_by_dim

Grid = dict[int, dict[int, float]]
GRID_PNG = "grid.png"


def grid_key(layer: int, dim: int) -> str:
    return f"L{layer}d{dim}"


def spearman_grid(
    left: torch.Tensor, right: torch.Tensor, gold, layers: Sequence[int], dims: Sequence[int]
) -> Grid:
    """Spearman at every (layer, dim): `left`/`right` are (layers x pairs x width) embeddings
    of each pair's two sentences, one slice per entry of `layers`, from one forward pass."""
    return {
        int(layer): spearman_by_dim(left[i], right[i], gold, dims) for i, layer in enumerate(layers)
    }


def flat_grid(grid: Grid) -> dict[str, float]:
    """{"L<layer>d<dim>": value} (results.json, logs)."""
    return {grid_key(layer, d): v for layer, row in grid.items() for d, v in row.items()}


def parse_grid(flat: dict[str, float]) -> Grid:
    grid: Grid = {}
    for key, value in flat.items():
        layer, dim = key[1:].split("d")
        grid.setdefault(int(layer), {})[int(dim)] = float(value)
    return grid


def grid_png(grid: Grid, title: str, reference: Grid | None = None) -> bytes:
    """A heatmap of the grid (layers down, dims across, values printed in the cells); with
    `reference`, of grid minus reference on a diverging scale centred at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrl.artifacts.results import png_bytes

    layers = sorted(grid)
    dims = sorted({d for row in grid.values() for d in row}, reverse=True)
    values = np.array([[grid[layer].get(d, np.nan) for d in dims] for layer in layers])
    if reference is not None:
        values = values - np.array(
            [[reference.get(layer, {}).get(d, np.nan) for d in dims] for layer in layers]
        )
        limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
        cmap, vmin, vmax, fmt = "RdBu", -limit, limit, "{:+.3f}"
    else:
        cmap, vmin, vmax, fmt = "viridis", np.nanmin(values), np.nanmax(values), "{:.3f}"
    fig, ax = plt.subplots(figsize=(1.1 * len(dims) + 2, 0.6 * len(layers) + 1.6))
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("dims (prefix)")
    ax.set_ylabel("layer")
    ax.set_title(title)
    for i in range(len(layers)):
        for j in range(len(dims)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="Spearman" if reference is None else "difference")
    return png_bytes(fig)


def check_grid(grid, transform) -> None:
    if not isinstance(grid, bool):
        raise ConfigError(f"grid={grid!r} must be true or false.")
    if grid and transform:
        raise ConfigError("grid=true scores the model's own layers; drop transform= for it.")


def grid_record(model, ds, dims, batch_size: int) -> dict:
    """What eval.py stores for `grid=true`: the flat grid and encode seconds by depth."""
    grid, seconds = benchmark_grid(model, ds, dims, batch_size)
    return {
        "grid": flat_grid(grid),
        "encode_seconds_by_depth": {str(k): v for k, v in seconds.items()},
    }


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
