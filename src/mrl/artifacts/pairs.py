"""Per-pair test similarities: the cosine of every STS test pair at every eval dim, saved
beside results.json (`test_pairs.npz`) so a report can put a confidence interval on a
difference between runs by resampling the test pairs (`mrl.evaluation.intervals`), not just the
seeds.

One .npz of float32 arrays: `gold` (the human scores, n pairs) and `sim@<dim>` (n pairs) per
dim. Plain numpy, written atomically; read back with `load_pairs`.

A copy committed with a study must not carry the benchmark's scores (they are the data's, not
ours): `strip_gold` replaces `gold` by the data source it came from and a SHA-256 of it, and
`load_pairs` then reads the scores back from that source (`$MRL_DATA_DIR` or the Hub) and
checks the hash, so a report over committed studies needs the data, as the study did.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic

PAIRS = "test_pairs.npz"


@dataclass
class TestPairs:
    """Gold scores and, per dim, the similarity of each pair (the same pairs in each)."""

    __test__ = False  # not a pytest class

    gold: np.ndarray
    sims: dict[int, np.ndarray]


def write_pairs(path: str | Path, gold, sims: dict[int, np.ndarray], source=None) -> None:
    """Write the pairs; with `source` (the Source fields the gold scores came from) the file
    holds their hash and source instead of the scores, as `strip_gold` leaves it."""
    gold = np.asarray(gold, dtype=np.float32)
    arrays = {"gold": gold} if source is None else _gold_reference(gold, source)
    for dim, values in sims.items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != gold.shape:
            raise ValueError(f"sim@{dim} has {values.shape} values for {gold.shape} gold scores")
        arrays[f"sim@{int(dim)}"] = values
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(Path(path), buffer.getvalue())


def _digest(gold: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(gold, dtype=np.float32).tobytes()).hexdigest()


def _gold_reference(gold: np.ndarray, source: dict) -> dict[str, np.ndarray]:
    return {"gold_sha256": np.array(_digest(gold)),
            "gold_source": np.array(json.dumps(source, sort_keys=True))}  # fmt: skip


def strip_gold(path: str | Path, source: dict) -> None:
    """Rewrite `path` without its gold scores: `source` (the Source fields of the test set
    they came from, e.g. a run's `eval.test`) and their SHA-256 instead."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "gold"}
        if "gold" in data.files:
            arrays.update(_gold_reference(data["gold"], source))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def _gold_from_source(path: Path, source_json: str, digest: str) -> np.ndarray:
    from mrl.data.sources import Source, load_source

    fields = json.loads(source_json)
    gold = np.asarray(load_source(Source.from_config(fields))["score"], dtype=np.float32)
    if _digest(gold) != digest:
        raise ConfigError(
            f"{path}: the gold scores of {fields.get('local_file')} differ from the ones the "
            "pairs were scored on; point MRL_DATA_DIR at the data the study used."
        )
    return gold


def load_pairs(path: str | Path) -> TestPairs:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; runs save their per-pair test similarities since "
            "2026-12-01, re-run older ones (or evaluate their export with eval.py)."
        )
    with np.load(path, allow_pickle=False) as data:
        sims = {int(k.split("@", 1)[1]): data[k] for k in data.files if k.startswith("sim@")}
        if "gold" in data.files:
            gold = data["gold"]
        else:  # a committed copy: the scores come from the data itself
            gold = _gold_from_source(path, str(data["gold_source"]), str(data["gold_sha256"]))
        return TestPairs(gold=gold, sims=dict(sorted(sims.items(), reverse=True)))
