"""Per-pair test similarities: the cosine of every STS test pair at every eval dim, saved
beside results.json (`test_pairs.npz`) so a report can put a confidence interval on a
difference between runs by resampling the test pairs (`mrl.intervals`), not just the seeds.

One .npz of float32 arrays: `gold` (the human scores, n pairs) and `sim@<dim>` (n pairs) per
dim. Plain numpy, written atomically; read back with `load_pairs`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.errors import ConfigError
from mrl.run_folder import write_atomic

PAIRS = "test_pairs.npz"


@dataclass
class TestPairs:
    """Gold scores and, per dim, the similarity of each pair (the same pairs in each)."""

    __test__ = False  # not a pytest class

    gold: np.ndarray
    sims: dict[int, np.ndarray]


def write_pairs(path: str | Path, gold, sims: dict[int, np.ndarray]) -> None:
    gold = np.asarray(gold, dtype=np.float32)
    arrays = {"gold": gold}
    for dim, values in sims.items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != gold.shape:
            raise ValueError(f"sim@{dim} has {values.shape} values for {gold.shape} gold scores")
        arrays[f"sim@{int(dim)}"] = values
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(Path(path), buffer.getvalue())


def load_pairs(path: str | Path) -> TestPairs:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; runs save their per-pair test similarities since "
            "2026-12-01, re-run older ones (or evaluate their export with eval.py)."
        )
    with np.load(path, allow_pickle=False) as data:
        sims = {int(k.split("@", 1)[1]): data[k] for k in data.files if k.startswith("sim@")}
        return TestPairs(gold=data["gold"], sims=dict(sorted(sims.items(), reverse=True)))
