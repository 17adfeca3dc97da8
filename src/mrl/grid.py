"""The layers x dims grid of a 2D Matryoshka model: STS Spearman at every (layer, dim) from one
forward pass of the eval set, its heatmap, and the difference heatmap of two grids.

A grid is {layer: {dim: spearman}}; keys are ints in memory, and "L<layer>d<dim>" in logs and
results.json (`grid_key`). Plain torch / numpy / matplotlib (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mrl.errors import ConfigError
from mrl.metrics import spearman_by_dim

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

    from mrl.results import png_bytes

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
    from mrl.grid_eval import benchmark_grid

    grid, seconds = benchmark_grid(model, ds, dims, batch_size)
    return {
        "grid": flat_grid(grid),
        "encode_seconds_by_depth": {str(k): v for k, v in seconds.items()},
    }
