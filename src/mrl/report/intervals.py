"""The report's differences: each row against the reference at every dim, the difference of
mean Spearman with its bootstrap interval (mrl.evaluation.intervals) over the runs' per-pair test
similarities (test_pairs.npz), stacked per group into (seeds, pairs); an eval.py random subset's
draws (draws/<i>/test_pairs.npz) are rows beside its seeds.

Every run must have been scored on the same test pairs (one gold array): otherwise pairing
the bootstrap over pairs means nothing, and the report stops with one line naming the run.
A group with a run that has no test_pairs.npz (runs made before they were saved) gets its
difference without an interval. A "trained at each size" curve takes, at dim d, the
similarities of the group trained at d.
"""

from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass

import numpy as np

from mrl.artifacts.pairs import PAIRS, load_pairs
from mrl.common.errors import ConfigError
from mrl.evaluation.intervals import Interval, intervals_by_dim
from mrl.report.stats import Group

NO_PAIRS = f"no interval (no {PAIRS})"
NO_VALUE = "–"  # a curve with no group trained at this dim

# What a group's similarities are: {dim: (seeds, pairs)}, or why it has none.
Sims = dict[int, np.ndarray] | str


@dataclass(frozen=True)
class PairSims:
    """The gold scores all runs share (None: no run has test_pairs.npz) and each group's
    similarities, by label."""

    gold: np.ndarray | None
    by_group: dict[str, Sims]


@dataclass(frozen=True)
class Difference:
    """A row minus the reference at one dim: the difference of means (results.json) and its
    interval, or why there is none (`reason`)."""

    mean: float | None
    interval: Interval | None = None
    reason: str = ""


def group_sims(groups: list[Group], dims: list[int]) -> PairSims:
    """Each group's per-pair similarities at `dims`, by label; ConfigError when two runs were
    scored on different test pairs."""
    first: tuple[str, np.ndarray] | None = None
    found: dict[str, Sims] = {}
    for group in groups:
        rows: dict[int, list[np.ndarray]] = {d: [] for d in dims}
        for run in group.runs:
            why = _add_rows(run.path, dims, rows)
            if isinstance(why, str):
                found[group.label] = why
                break
            first = first or (str(run.path), why)
            _check_gold(run.path, why, *first)
        else:
            found[group.label] = {d: np.stack(rows[d]) for d in dims}
    return PairSims(first[1] if first else None, found)


def run_pairs(folder) -> list:
    """A run's test_pairs.npz, or an eval.py random_subset's one per draw (draws/<i>/), each
    draw a row beside the seeds, as a seed is: the draws are part of that comparator's chance."""
    if (folder / PAIRS).is_file():
        return [folder / PAIRS]
    draws = sorted((folder / "draws").glob(f"*/{PAIRS}"), key=lambda p: int(p.parent.name))
    return draws or [folder / PAIRS]


def _add_rows(folder, dims: list[int], rows: dict[int, list]) -> np.ndarray | str:
    """Append the run's similarities (each draw's) at `dims` to `rows`; its gold scores, or
    why it has no interval."""
    for path in run_pairs(folder):
        if not path.is_file():
            return NO_PAIRS
        try:
            pairs = load_pairs(path)
        except ConfigError as err:  # a committed copy whose gold scores need the data
            print(f"warning: {err}", file=sys.stderr)
            return "no interval (its gold scores need the data, MRL_DATA_DIR)"
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return f"no interval ({PAIRS} of {folder.name} unreadable)"
        missing = [d for d in dims if d not in pairs.sims]
        if missing:
            return f"no interval ({PAIRS} has no dim {missing[0]})"
        for d in dims:
            rows[d].append(pairs.sims[d])
    return np.asarray(pairs.gold)


def _check_gold(path, gold: np.ndarray, first_path: str, first: np.ndarray) -> None:
    """ConfigError naming the run when its test pairs are not those of the first run."""
    if gold.shape == first.shape and np.array_equal(gold, first):
        return
    detail = "its gold scores differ" if gold.shape == first.shape else (
        f"{gold.size} gold scores, not {first.size}")  # fmt: skip
    raise ConfigError(
        f"{path} was scored on other test pairs than {first_path} ({detail}); report runs of "
        "one test set."
    )


def _source(row: Group, dim: int) -> Group | None:
    """The group whose runs stand for `row` at `dim`: itself, or for a curve the group trained
    at that dim (None where there is none)."""
    return row.parts.get(dim) if row.parts else row


def differences(
    rows: list[Group],
    reference: Group,
    dims: list[int],
    sims: PairSims,
    n_boot: int = 2000,
    level: float = 0.95,
) -> dict[str, dict[int, Difference]]:
    """Every row but the reference minus the reference, by label and dim. The bootstrap seed
    is fixed (0), so a report is reproducible; each pair of groups is bootstrapped once per
    dim (a curve reuses the intervals of the groups it is made of)."""
    done: dict[tuple[str, str, int], Interval | str] = {}

    def bootstrap(a: Group, b: Group, wanted: list[int]) -> None:
        todo = [d for d in wanted if (a.label, b.label, d) not in done]
        sims_a = sims.by_group.get(a.label, NO_PAIRS)
        sims_b = sims.by_group.get(b.label, NO_PAIRS)
        got: dict[int, Interval | str] = {}
        if todo and not isinstance(sims_a, str) and not isinstance(sims_b, str):
            try:
                got = intervals_by_dim({d: sims_a[d] for d in todo}, {d: sims_b[d] for d in todo},
                                       sims.gold, n_boot=n_boot, level=level, seed=0)  # fmt: skip
            except ConfigError as err:
                got = dict.fromkeys(todo, f"no interval ({err})")
        why = sims_a if isinstance(sims_a, str) else sims_b
        for d in todo:
            done[a.label, b.label, d] = got.get(d, why)

    out = {}
    for row in rows:
        if row is reference:
            continue
        sources = {d: (_source(row, d), _source(reference, d)) for d in dims}
        batches: dict[tuple[int, int], list[int]] = {}  # dims by the pair of groups they need
        for d, (a, b) in sources.items():
            if a is not None and b is not None:
                batches.setdefault((id(a), id(b)), []).append(d)
        for batch in batches.values():
            bootstrap(*sources[batch[0]], batch)
        cells = {}
        for d, (a, b) in sources.items():
            if a is None or b is None:
                cells[d] = Difference(None, reason=NO_VALUE)
                continue
            found = done[a.label, b.label, d]
            mean = row.mean[d] - reference.mean[d]
            if isinstance(found, str):
                cells[d] = Difference(mean, reason=found)
            else:
                cells[d] = Difference(mean, found)
        out[row.label] = cells
    return out


def one_seed(interval: Interval) -> bool:
    """True when neither side had seeds to resample (the interval covers the test set only)."""
    return interval.n_seeds_a == 1 and interval.n_seeds_b == 1
