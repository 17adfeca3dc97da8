"""The Matryoshka dimension schedule: the prefix sizes a run trains and evaluates, with weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mrl.common.errors import ConfigError

RULES = ("pow2", "halving", "dense", "ends")
WEIGHT_SCHEMES = ("uniform", "increasing", "decreasing")


def dims_from_rule(
    hidden_size: int, rule: str = "pow2", min_dim_ratio: float = 1 / 12
) -> list[int]:
    """Dimensions derived from the backbone width, largest first.

    `pow2`: the full width, then every power of two below it down to `hidden_size * min_dim_ratio`
    (768 -> 768/512/256/128/64, 384 -> 384/256/128/64/32 with the default ratio 1/12 = 8.3 %).
    `halving`: the full width halved while it stays an integer >= the minimum
    (768 -> 768/384/192/96/48 with ratio 1/16).
    `dense`: every multiple of the minimum up to the full width (384 -> 384/352/.../64/32).
    `ends`: the full width and the minimum only (384 -> 384/32).
    The minimum is never below 2 (a width of 16 stops at 2, not 1).
    """
    if rule not in RULES:
        raise ConfigError(f"matryoshka.rule={rule!r} is unknown; use one of {', '.join(RULES)}.")
    if not 0 < min_dim_ratio <= 1:
        raise ConfigError(
            f"matryoshka.min_dim_ratio={min_dim_ratio} must be in (0, 1], e.g. 0.0833 for 1/12."
        )
    # never below 2 (for a width of 2 or more): a one-dim prefix, renormalised, is its sign, so
    # every cosine is +-1 and a Spearman over them is undefined or meaningless
    min_dim = min(hidden_size, max(2, round(hidden_size * min_dim_ratio)))
    dims = [hidden_size]
    if rule == "dense":
        return [hidden_size, *range((hidden_size - 1) // min_dim * min_dim, 0, -min_dim)]
    if rule == "ends":
        return [hidden_size, min_dim] if min_dim < hidden_size else dims
    if rule == "pow2":
        power = 2 ** math.floor(math.log2(hidden_size))
        if power == hidden_size:
            power //= 2
        while power >= min_dim:
            dims.append(power)
            power //= 2
    else:
        dim = hidden_size
        while dim % 2 == 0 and dim // 2 >= min_dim:
            dim //= 2
            dims.append(dim)
    return dims


def check_dims(
    dims, width: int, option: str = "dims", width_source: str | None = None
) -> list[int]:
    """The one validator for a list of dims (training schedule, eval.py, retrieval,
    quantization, demo): a non-empty list of distinct whole numbers in [1, width], returned
    largest first. Anything else is one ConfigError naming `option` and the fix.
    `width_source` names the option that set the width when it is not the backbone's
    hidden size (`model.projection_dim`), so a too-large dim points at the right option."""
    example = f"e.g. {option}=[{width},{max(1, width // 12)}]"
    if isinstance(dims, (str, bytes, int, float)) or not isinstance(dims, Sequence):
        raise ConfigError(f"{option}={dims!r} must be a list of dimensions, {example}.")
    dims = list(dims)
    if not dims:
        raise ConfigError(f"{option} is empty; give at least one dimension, {example}.")
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(
                f"{option} holds {dim!r}; every entry must be a positive whole number, {example}."
            )
        if dim > width:
            limit = f"the backbone's hidden size {width}"
            if width_source:
                limit = f"the embedding width {width} ({width_source})"
            raise ConfigError(f"{option} holds {dim}, larger than {limit}; use dims <= {width}.")
    if len(set(dims)) != len(dims):
        dup = sorted({d for d in dims if dims.count(d) > 1})
        raise ConfigError(f"{option} repeats {dup}; list each dimension once.")
    return sorted(dims, reverse=True)


def resolve_dims(
    hidden_size: int,
    dims: Sequence[int] | None = None,
    rule: str = "pow2",
    min_dim_ratio: float = 1 / 12,
    width_source: str | None = None,
) -> list[int]:
    """The schedule dims: the explicit `dims` list if given (checked, largest first), else the
    rule's dims. The schedule always holds the full width: the baseline trains at it and every
    retention is relative to it, so a list without it is refused rather than silently changed.
    `hidden_size` is the embedding width (see `check_dims` for `width_source`)."""
    if dims is None:
        return dims_from_rule(hidden_size, rule, min_dim_ratio)
    dims = check_dims(dims, hidden_size, "matryoshka.dims", width_source)
    if dims[0] != hidden_size:
        raise ConfigError(
            f"matryoshka.dims={dims} lacks the full width {hidden_size}: the schedule always "
            f"trains the whole embedding (the baseline trains at it, retention is relative to "
            f"it); add it, e.g. matryoshka.dims={[hidden_size, *dims]}."
        )
    return dims


def scheme_weights(dims: Sequence[int], scheme: str) -> list[float]:
    """Named weightings, scaled to mean 1 so the loss keeps the uniform weighting's size.

    `uniform`: 1 each (the MRL paper). `increasing`: toward small dims, 1 + log2(full / dim)
    before scaling (384/256/128/64/32 -> 0.37/0.59/0.97/1.34/1.72: the smallest prefix weighs
    most). `decreasing`: the same weights in reverse order (the full width weighs most).
    """
    if scheme not in WEIGHT_SCHEMES:
        raise ConfigError(
            f"matryoshka.weights={scheme!r} is unknown; use one of {', '.join(WEIGHT_SCHEMES)} "
            "or a list with one weight per dim."
        )
    full = max(dims)
    raw = [1.0 + math.log2(full / d) for d in sorted(dims, reverse=True)]
    if scheme == "uniform":
        raw = [1.0] * len(raw)
    elif scheme == "decreasing":
        raw = raw[::-1]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


def resolve_weights(
    dims: Sequence[int],
    weights: Sequence[float] | str | None,
    given_dims: Sequence[int] | None = None,
) -> list[float]:
    """One weight per dim (default 1.0), in the order of `dims` (largest first).

    `weights` is a list, or the name of a scheme (see `scheme_weights`). When the user gave
    an explicit, unsorted `dims` list, their weights follow their order; `given_dims` is that
    original order so each weight stays with its dimension.
    """
    if weights is None:
        return [1.0] * len(dims)
    if isinstance(weights, str):
        return scheme_weights(dims, weights)
    weights = [float(w) for w in weights]
    if len(weights) != len(dims):
        raise ConfigError(
            f"matryoshka.weights has {len(weights)} entries but there are {len(dims)} dims "
            f"{list(dims)}; give one weight per dim."
        )
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ConfigError(f"matryoshka.weights={weights} must all be finite and >= 0.")
    if given_dims is not None:
        by_dim = dict(zip(given_dims, weights, strict=True))
        weights = [by_dim[d] for d in dims]
    return weights


def check_n_dims_per_step(n_dims_per_step: int | None, n_dims: int) -> None:
    """`n_dims_per_step` must be None/-1 (all dims) or between 1 and the number of dims."""
    if n_dims_per_step is None or n_dims_per_step == -1:
        return
    if not 1 <= n_dims_per_step <= n_dims:
        raise ConfigError(
            f"matryoshka.n_dims_per_step={n_dims_per_step} must be between 1 and the number of "
            f"dims ({n_dims}), or null for all."
        )


def eval_dims(
    hidden_size: int, schedule: Sequence[int], min_dim_ratio: float = 1 / 12
) -> list[int]:
    """The eval dims of a run: its schedule dims plus the standard pow2 dims of the width,
    largest first, so runs with different schedules on one backbone share columns.
    Tools given no dims use a run's own eval dims (its results or export)."""
    return sorted(
        set(schedule) | set(dims_from_rule(hidden_size, "pow2", min_dim_ratio)), reverse=True
    )


def fixed_dim_schedule(
    schedule: Sequence[int], matryoshka: dict, width: int, width_source: str | None = None
) -> tuple[list[int], list[float]]:
    """A model trained for one size only (the MRL paper's fixed-feature baseline): the loss at
    the `fixed_dim` prefix alone, weight 1 there and 0 at every other schedule dim (which are
    still logged and evaluated). The fixed dim joins the schedule if it is not in it.
    `matryoshka` is the config group (`fixed_dim`, `enabled`, `n_dims_per_step`); `width` is
    the embedding width (see `check_dims` for `width_source`)."""
    fixed_dim = matryoshka["fixed_dim"]
    if isinstance(fixed_dim, (list, tuple)) or fixed_dim is None:
        raise ConfigError(f"matryoshka.fixed_dim={fixed_dim!r} must be one dimension, e.g. 64.")
    (fixed_dim,) = check_dims([fixed_dim], width, "matryoshka.fixed_dim", width_source)
    if not matryoshka["enabled"]:
        raise ConfigError(
            "matryoshka.fixed_dim trains one prefix with the Matryoshka loss, but "
            "matryoshka.enabled=false trains the full width; use one or the other."
        )
    if matryoshka["n_dims_per_step"] not in (None, -1):
        raise ConfigError(
            "matryoshka.fixed_dim trains one dim, so matryoshka.n_dims_per_step has nothing to "
            "pick from; leave it null."
        )
    dims = sorted(set(schedule) | {fixed_dim}, reverse=True)
    return dims, [1.0 if d == fixed_dim else 0.0 for d in dims]


def training_schedule(
    matryoshka: dict, width: int, width_source: str | None = None
) -> tuple[list[int], list[float], list[float]]:
    """A run's schedule dims, their weights, and the weights its loss trains with, from the
    `matryoshka` config group and the embedding width: the MatryoshkaModule's schedule, and the
    check pass's (which holds the QAT terms to the trained dims, `mrl.core.qat`). The baseline
    (`enabled: false`) trains the full width only; `fixed_dim` trains that prefix only."""
    m = matryoshka
    dims = resolve_dims(width, m["dims"], m["rule"], m["min_dim_ratio"], width_source)
    weights = resolve_weights(dims, m["weights"], given_dims=m["dims"])
    if m["fixed_dim"] is not None:  # trained for one size: the loss at that prefix only
        dims, weights = fixed_dim_schedule(dims, m, width, width_source)
    trained = weights if m["enabled"] else [1.0] + [0.0] * (len(dims) - 1)
    return dims, weights, trained


def why_untrained(matryoshka: dict) -> str:
    """Why a schedule dim has train weight 0 (for error lines about the dims a run trains)."""
    if not matryoshka.get("enabled", True):
        return "matryoshka.enabled=false trains the full width only"
    if matryoshka.get("fixed_dim") is not None:
        return f"matryoshka.fixed_dim={matryoshka['fixed_dim']} trains that prefix only"
    return "matryoshka.weights gives it weight 0"
