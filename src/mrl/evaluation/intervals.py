"""Confidence intervals for the difference in STS Spearman (or in a per-query retrieval metric)
between two groups of runs.

"MRL beats the baseline at dim 64" should rest on an interval that holds both sources of
chance: which seeds were trained, and which finite set of test pairs they were scored on.
`spearman_difference_interval` gives a two-level (hierarchical) percentile bootstrap of
mean-over-seeds Spearman(a) minus mean-over-seeds Spearman(b); `intervals_by_dim` does it at
every Matryoshka dim. Plain numpy / scipy; see docs/statistics.md for the method and its
measured coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from mrl.common.errors import ConfigError

# Upper bound on the number of float64 cells ranked at once (replicates x rows x pairs):
# about 32 MB, whatever n_boot is.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A difference (a minus b) with its bootstrap interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float
    n_seeds_a: int
    n_seeds_b: int
    method: str

    @property
    def significant(self) -> bool:
        """True iff the interval excludes 0 (both ends strictly on the same side)."""
        return self.low > 0 or self.high < 0


def _as_runs(sims, name: str) -> np.ndarray:
    array = np.asarray(sims, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1:
        raise ConfigError(
            f"{name} must be a (seeds, pairs) array of similarities, got shape {array.shape}."
        )
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} contains NaN or infinite similarities; drop those runs.")
    return array


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (x and y broadcast); NaN where one is constant."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=-1) / denominator


def _spearman_rows(sims: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman of each row of sims (..., pairs) with gold (..., pairs), average-rank ties."""
    return _pearson_rows(rankdata(sims, axis=-1), rankdata(gold, axis=-1))


def _seed_mean(rho: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw of the mean over seeds for each replicate's row of rho (size, n).

    Drawing n seeds with replacement is weighting them by multinomial counts / n. Its spread
    around the row mean is rescaled by sqrt(n / (n - 1)), so its variance is the unbiased
    s^2 / n rather than the plain bootstrap's (n - 1) / n of it (2/3 with 3 seeds); with one
    seed there is no seed-to-seed variation to draw and the row mean is returned.
    """
    size, n = rho.shape
    centre = rho.mean(axis=1)
    if n == 1:
        return centre
    weights = rng.multinomial(n, np.full(n, 1 / n), size=size) / n
    return centre + np.sqrt(n / (n - 1)) * ((weights * rho).sum(axis=1) - centre)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1) (e.g. 0.95), got {level}.")


def _check_inputs(a: np.ndarray, b: np.ndarray, gold: np.ndarray, n_boot: int) -> None:
    if gold.ndim != 1:
        raise ConfigError(f"gold must be a 1-D array of scores, got shape {gold.shape}.")
    if a.shape[1] != gold.size or b.shape[1] != gold.size:
        raise ConfigError(
            f"mismatched pair counts: sims_a has {a.shape[1]}, sims_b {b.shape[1]} and gold "
            f"{gold.size}; score both groups on the same test pairs."
        )
    if gold.size < 3:
        raise ConfigError(f"need at least 3 test pairs for a Spearman interval, got {gold.size}.")
    if not np.isfinite(gold).all():
        raise ConfigError("gold contains NaN or infinite scores; drop those pairs.")
    if np.ptp(gold) == 0:
        raise ConfigError("gold scores are all equal, so Spearman is undefined; check the data.")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be a positive number of replicates, got {n_boot}.")


def spearman_difference_interval(
    sims_a,
    sims_b,
    gold,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean-over-seeds Spearman of group a minus that of group b, with a percentile interval.

    `sims_a` is (seeds_a, pairs): one row of per-pair cosine similarities per seed, all on the
    test pairs of `gold` (pairs,); `sims_b` likewise (seeds_b may differ; a 1-D array is one
    seed). Each bootstrap replicate draws the test pairs with replacement, the same indices for
    both groups (they are scored on the same pairs, so pair difficulty cancels in the
    difference), and draws each group's seeds with replacement; every replicate is re-ranked
    with average ties, since resampled pairs repeat. With one seed per group only the test
    set is resampled, and `method` says so.
    """
    _check_level(level)
    a, b = _as_runs(sims_a, "sims_a"), _as_runs(sims_b, "sims_b")
    gold = np.asarray(gold, dtype=np.float64)
    n_boot = int(n_boot)
    _check_inputs(a, b, gold, n_boot)
    n_a, n_b, n_pairs = a.shape[0], b.shape[0], gold.size

    rho_a = _spearman_rows(a, gold)
    rho_b = _spearman_rows(b, gold)
    if np.isnan(rho_a).any() or np.isnan(rho_b).any():
        raise ConfigError("a run has constant similarities, so its Spearman is undefined.")
    estimate = float(rho_a.mean() - rho_b.mean())

    rng = np.random.default_rng(seed)
    runs = np.concatenate([a, b])  # (n_a + n_b, pairs): ranked together, split after
    chunk = max(1, _CHUNK_CELLS // ((n_a + n_b + 1) * n_pairs))
    replicates = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        pairs = rng.integers(0, n_pairs, size=(size, n_pairs))
        # Spearman of every seed on each replicate's pairs: (size, n_a + n_b)
        rho = _spearman_rows(runs[:, pairs].transpose(1, 0, 2), gold[pairs][:, None, :])
        replicates[start : start + size] = _seed_mean(rho[:, :n_a], rng) - _seed_mean(
            rho[:, n_a:], rng
        )

    # a replicate whose draws are all tied (possible only with very few pairs) has no Spearman
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        raise ConfigError("every bootstrap replicate was degenerate; use more test pairs.")
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    if n_a == 1 and n_b == 1:
        method = "paired bootstrap over test pairs (1 seed: test-set variation only)"
    else:
        method = "two-level bootstrap: paired over test pairs, and over seeds within each group"
    return Interval(estimate, float(low), float(high), float(level), n_a, n_b, method)


def intervals_by_dim(
    sims_a: dict[int, np.ndarray],
    sims_b: dict[int, np.ndarray],
    gold,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[int, Interval]:
    """`spearman_difference_interval` at each dim both groups have ({dim: (seeds, pairs)}).

    The same `seed` at every dim draws the same pair and seed indices at every dim (same
    shapes), so the intervals of neighbouring dims are comparable replicate by replicate.
    """
    if set(sims_a) != set(sims_b):
        raise ConfigError(
            f"sims_a and sims_b must have the same dims, got {sorted(sims_a)} and {sorted(sims_b)}."
        )
    return {
        int(dim): spearman_difference_interval(
            sims_a[dim], sims_b[dim], gold, n_boot=n_boot, level=level, seed=seed
        )
        for dim in sorted(sims_a)
    }


def mean_difference_interval(
    scores_a,
    scores_b,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean-over-seeds of the mean per-query score of group a minus that of group b (e.g.
    nDCG@10 on a BEIR set), with a two-level percentile interval.

    `scores_a` is (seeds_a, queries): one row of per-query values per seed, all on the same
    queries (`mrl.evaluation.retrieval.retrieval_per_query`); `scores_b` likewise. Each
    replicate draws the queries with replacement, the same indices for both groups (query
    difficulty cancels in the difference), and each group's seeds with replacement, rescaled
    as in the Spearman interval (`_seed_mean`).
    """
    _check_level(level)
    a, b = _as_runs(scores_a, "scores_a"), _as_runs(scores_b, "scores_b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"mismatched query counts: scores_a has {a.shape[1]}, scores_b {b.shape[1]}; score "
            "both groups on the same queries."
        )
    if a.shape[1] < 2 or int(n_boot) < 1:
        raise ConfigError("need at least 2 queries and n_boot >= 1 for an interval.")
    n_a, n_queries = a.shape[0], a.shape[1]
    estimate = float(a.mean(axis=1).mean() - b.mean(axis=1).mean())
    rng = np.random.default_rng(seed)
    runs = np.concatenate([a, b])
    chunk = max(1, _CHUNK_CELLS // ((runs.shape[0] + 1) * n_queries))
    replicates = np.empty(int(n_boot))
    for start in range(0, int(n_boot), chunk):
        size = min(chunk, int(n_boot) - start)
        drawn = rng.integers(0, n_queries, size=(size, n_queries))
        means = runs[:, drawn].mean(axis=-1).T  # (size, seeds_a + seeds_b)
        replicates[start : start + size] = _seed_mean(means[:, :n_a], rng) - _seed_mean(
            means[:, n_a:], rng
        )
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    if n_a == 1 and b.shape[0] == 1:
        method = "paired bootstrap over queries (1 seed: test-set variation only)"
    else:
        method = "two-level bootstrap: paired over queries, and over seeds within each group"
    return Interval(estimate, float(low), float(high), float(level), n_a, b.shape[0], method)
