"""Finite numbers or a clear failure: no NaN or infinity goes into a results file.

JSON has no NaN (Python writes a bare `NaN` that strict readers refuse), and a NaN score in a
table reads as a result. Each writer asks `non_finite` before writing; a metric that could not
be computed (e.g. a Spearman over cosines that are all the same) stops the tool in one line
naming it and the likely cause, and nothing is written.
"""

from __future__ import annotations

import json
import math

from mrl.common.errors import ConfigError

# why a Spearman correlation is NaN: one of its two inputs has no spread
CONSTANT_SIMILARITIES = (
    "a Spearman correlation is undefined when every pair gets the same similarity, e.g. when "
    "every text is cut to the same tokens by a max_seq_length this short"
)


def non_finite(value, path: str = "") -> tuple[str, float] | None:
    """The first (key path, value) in `value` (dicts, lists, numbers) that is a NaN or an
    infinity; None when every number is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "value", value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def check_finite(value, what: str, reason: str = CONSTANT_SIMILARITIES) -> None:
    """One ConfigError line naming the first NaN/infinite number of `value` (in `what`)."""
    found = non_finite(value)
    if found:
        raise ConfigError(
            f"{what}: {found[0]} is {found[1]}, not a number ({reason}); nothing was written."
        )


def strict_json(value, what: str, reason: str = CONSTANT_SIMILARITIES, **kwargs) -> str:
    """`json.dumps` that a strict reader reads back: a NaN or infinity is one line first."""
    check_finite(value, what, reason)
    return json.dumps(value, allow_nan=False, **kwargs)
