"""Value checks for single config options: each takes one value and returns None when it is
fine, else the phrase that ends the error line ("must be a whole number >= 1").

`mrl.run.checks.OPTIONS` pairs each option with one of these; the builders (`whole`, `number`,
`one_of`) make a check for a range or a set of choices. In Python `True` is an `int`, so
whole numbers exclude booleans throughout (`data.batch_size=true` is refused).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from omegaconf import ListConfig

from mrl.core.schedule import WEIGHT_SCHEMES


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def whole(low: int, high: int | None = None, optional: bool = False) -> Callable:
    def check(value):
        if value is None and optional:
            return None
        if not is_int(value) or value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"between {low} and {high}"
            return f"must be a whole number {span}" + (" or null" if optional else "")
        return None

    return check


def number(low: float, *, above: bool = False, below: float | None = None, optional=False):
    def check(value):
        if value is None and optional:
            return None
        bad = not is_number(value) or (value <= low if above else value < low)
        if below is not None and is_number(value) and value >= below:
            bad = True
        if bad:
            span = f"> {low}" if above else f">= {low}"
            span += f" and < {below}" if below is not None else ""
            return f"must be a number {span}" + (" or null" if optional else "")
        return None

    return check


def one_of(*choices) -> Callable:
    def check(value):
        if value not in choices:
            return f"must be one of {', '.join(str(c) for c in choices)}"
        return None

    return check


def boolean(value):
    return None if isinstance(value, bool) else "must be true or false"


def auto_or_boolean(value):
    return None if value == "auto" or isinstance(value, bool) else "must be auto, true or false"


def chunk_size(value):
    if value in ("auto", None) or (is_int(value) and value >= 1):
        return None
    return "must be a whole number >= 1, auto, or null (no chunks)"


def devices(value):
    if value == "auto" or (is_int(value) and (value >= 1 or value == -1)):
        return None
    if isinstance(value, (list, ListConfig)) and value and all(is_int(v) for v in value):
        return None
    return "must be a whole number >= 1, -1, auto, or a list of device ids"


def batches(value):
    if value is None or (is_int(value) and value >= 0) or (is_number(value) and 0 <= value <= 1):
        return None
    return "must be null, a fraction in [0, 1] or a whole number of batches"


def dims_list(value):
    if value is None:
        return None
    if not isinstance(value, (list, ListConfig)) or not value:
        return "must be a non-empty list of dimensions (e.g. [384,64]) or null for the rule"
    if not all(is_int(d) and d >= 1 for d in value):
        return "must hold positive whole numbers only"
    return None


def weights(value):
    if value is None or value in WEIGHT_SCHEMES:
        return None
    if isinstance(value, (list, ListConfig)):
        if not all(is_number(w) and w >= 0 for w in value):
            return "must hold finite numbers >= 0 only"
        if not any(w > 0 for w in value):
            return "must have at least one weight > 0 (all zero trains nothing)"
        return None
    return f"must be null, one of {', '.join(WEIGHT_SCHEMES)}, or a list with one weight per dim"


def n_dims_per_step(value):
    if value is None or value == -1 or (is_int(value) and value >= 1):
        return None
    return "must be a whole number >= 1, or null (or -1) for all dims"


def optimized_metric(value):
    valid = r"val/spearman_mean_log2|val/spearman@[1-9]\d*"
    if isinstance(value, str) and re.fullmatch(valid, value):
        return None
    return (
        "must be a validation quantity: val/spearman_mean_log2 or val/spearman@<dim> (never test)"
    )
