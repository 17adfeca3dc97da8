"""The layer schedule of 2D Matryoshka training: which encoder layers are trained, at which
dims, with which weights (2D Matryoshka Sentence Embeddings, Li et al. 2024; Starbucks'
fixed (layer, dim) pairs).

Layers count from 1 (the first transformer layer) to the backbone's depth L; layer 0 would be
the embedding output, which no one serves. The last layer always trains at every dim of the
schedule, so a 2D run is never worse served at full depth than its dimension schedule says.
`matryoshka.layers: null` is today's training (the last layer only) and gives exactly the
plain Matryoshka loss. Plain Python, no torch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mrl.common.errors import ConfigError

LAYER_WEIGHTINGS = ("uniform", "by_depth")
PAIR_MODES = ("grid", "diagonal")


def resolve_layers(spec, depth: int) -> list[int]:
    """The trained layers, ascending, the last (`depth`) always included.

    `spec`: null (the last layer only), "all", a whole number k (every k-th layer counted back
    from the last: k=2 on 6 layers -> 2, 4, 6), or a list of layers (1-based)."""
    option = "matryoshka.layers"
    if spec is None:
        return [depth]
    if spec == "all":
        return list(range(1, depth + 1))
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise ConfigError(f"{option}={spec} must be >= 1 (every k-th layer), a list or all.")
        return sorted(range(depth, 0, -spec))
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise ConfigError(
            f"{option}={spec!r} must be null, all, a whole number k (every k-th layer) or a list "
            "of layers, e.g. [2,4,6]."
        )
    layers = list(spec)
    if not layers:
        raise ConfigError(f"{option} is empty; give at least one layer, e.g. [{depth}], or null.")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ConfigError(f"{option} holds {layer!r}; layers are whole numbers 1..{depth}.")
        if layer == 0:
            raise ConfigError(
                f"{option} holds 0, the embedding output; layers count from 1 to {depth}."
            )
        if not 1 <= layer <= depth:
            raise ConfigError(
                f"{option} holds {layer}, beyond the backbone's {depth} layers; use 1..{depth}."
            )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"{option} repeats a layer ({layers}); list each layer once.")
    return sorted(set(layers) | {depth})


def layer_weights(layers: Sequence[int], depth: int, weighting: str = "uniform") -> list[float]:
    """One weight per layer: `uniform` 1 each; `by_depth` layer / depth (deeper counts more,
    the last layer 1)."""
    if weighting not in LAYER_WEIGHTINGS:
        raise ConfigError(
            f"matryoshka.layer_weighting={weighting!r} is unknown; use one of "
            f"{', '.join(LAYER_WEIGHTINGS)}."
        )
    if weighting == "uniform":
        return [1.0] * len(layers)
    return [layer / depth for layer in layers]


def layer_dim_pairs(layers: Sequence[int], dims: Sequence[int], mode: str = "grid") -> list:
    """The trained (layer, dim) pairs. `grid`: every layer at every dim. `diagonal`
    (Starbucks-style): the last layer at every dim; the shallower layers, shallowest first,
    each at one dim, paired in order with the dims smallest first (spread evenly when the
    counts differ), so a shallow encoder serves a small embedding. A list of [layer, dim]:
    those pairs, besides the last layer at every dim."""
    last = max(layers)
    pairs = [(last, d) for d in dims]
    if not isinstance(mode, str):  # explicit [[layer, dim], ...] (Starbucks' fixed pairs)
        return pairs + [p for p in _explicit_pairs(mode, layers, dims) if p not in pairs]
    if mode not in PAIR_MODES:
        raise ConfigError(
            f"matryoshka.layer_pairs={mode!r} is unknown; use one of {', '.join(PAIR_MODES)} "
            "or a list of [layer, dim] pairs."
        )
    shallow = sorted(layer for layer in layers if layer != last)
    if mode == "grid":
        return pairs + [(layer, d) for layer in shallow for d in dims]
    ascending = sorted(dims)
    for i, layer in enumerate(shallow):
        index = round(i * (len(ascending) - 1) / max(len(shallow) - 1, 1))
        pairs.append((layer, ascending[index]))
    return pairs


def _explicit_pairs(spec, layers: Sequence[int], dims: Sequence[int]) -> list[tuple[int, int]]:
    option = "matryoshka.layer_pairs"
    pairs = []
    for item in spec if isinstance(spec, Sequence) else [spec]:
        if not (
            isinstance(item, Sequence)
            and len(item) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            raise ConfigError(f"{option} holds {item!r}; give [layer, dim] pairs, e.g. [[2,64]].")
        layer, dim = item
        if layer not in layers:
            raise ConfigError(
                f"{option} names layer {layer}, not a trained layer {list(layers)}; add it to "
                "matryoshka.layers."
            )
        if dim not in dims:
            raise ConfigError(
                f"{option} names dim {dim}, not in the schedule {list(dims)}; use a schedule dim."
            )
        pairs.append((layer, dim))
    if not pairs:
        raise ConfigError(f"{option} is empty; give grid, diagonal or [layer, dim] pairs.")
    return pairs


def step_layers(layers: Sequence[int], n_per_step: int | None, rng: random.Random) -> list[int]:
    """This step's layers: all, or the last plus `n_per_step` shallower ones drawn at random
    (2DMSE draws one per step), ascending."""
    check_n_layers_per_step(n_per_step)
    last = max(layers)
    shallow = [layer for layer in layers if layer != last]
    if n_per_step is None or n_per_step >= len(shallow):
        return list(layers)
    return sorted(rng.sample(shallow, n_per_step)) + [last]


def check_n_layers_per_step(n_per_step) -> None:
    if n_per_step is None:
        return
    if isinstance(n_per_step, bool) or not isinstance(n_per_step, int) or n_per_step < 0:
        raise ConfigError(
            f"matryoshka.n_layers_per_step={n_per_step!r} must be null or a whole number >= 0 "
            "(shallow layers drawn per step besides the last)."
        )
