"""Per-query retrieval scores (what a bootstrap over queries resamples) and the interval of a
difference in a per-query metric, pinned to their definitions."""

import numpy as np
import pytest

from mrl.data.beir import BeirSet
from mrl.evaluation.intervals import mean_difference_interval
from mrl.evaluation.retrieval import (
    QueryScores,
    load_query_scores,
    retrieval_by_dim,
    retrieval_per_query,
    write_query_scores,
)


def _toy_set(rng: np.random.Generator, n_docs: int = 40, n_queries: int = 12) -> BeirSet:
    corpus_ids = [f"d{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    relevant = {
        q: {corpus_ids[j] for j in rng.choice(n_docs, size=rng.integers(1, 4), replace=False)}
        for q in query_ids
    }
    return BeirSet(corpus_ids, ["doc"] * n_docs, query_ids, ["query"] * n_queries, relevant)


def test_per_query_scores_average_to_the_reported_means_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = _toy_set(rng)
    queries, docs = rng.normal(size=(12, 16)), rng.normal(size=(40, 16))
    per_query = retrieval_per_query(queries, docs, data, [16, 4])
    means = retrieval_by_dim(queries, docs, data, [16, 4])
    for metric, by_dim in per_query.items():
        for dim, values in by_dim.items():
            assert values.shape == (12,)
            assert values.mean() == pytest.approx(means[metric][dim], abs=1e-12)
    # nDCG@10 by hand for the first query at 4 dims: binary gains, log2 discounts
    q = queries[0, :4] / np.linalg.norm(queries[0, :4])
    d = docs[:, :4] / np.linalg.norm(docs[:, :4], axis=1, keepdims=True)
    order = np.argsort(-(d @ q), kind="stable")[:10]
    gains = np.array([f"d{i}" in data.relevant["q0"] for i in order], dtype=float)
    dcg = (gains / np.log2(np.arange(2, 12))).sum()
    ideal = (1 / np.log2(np.arange(2, 2 + min(len(data.relevant["q0"]), 10)))).sum()
    assert per_query["ndcg@10"][4][0] == pytest.approx(dcg / ideal)

    path = tmp_path / "queries" / "toy.npz"
    path.parent.mkdir()
    write_query_scores(path, QueryScores(data.query_ids, per_query))
    loaded = load_query_scores(path)
    assert loaded.query_ids == data.query_ids
    for metric, by_dim in per_query.items():
        for dim, values in by_dim.items():
            np.testing.assert_array_equal(loaded.per_query[metric][dim], values)


def test_mean_difference_interval_matches_the_paired_normal_interval_with_one_seed():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=400)
    b = np.clip(a - 0.05 + rng.normal(scale=0.1, size=400), 0, 1)
    interval = mean_difference_interval(a, b, n_boot=4000, seed=0)
    diff = a - b
    half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert interval.estimate == pytest.approx(diff.mean())
    assert interval.low == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert interval.high == pytest.approx(diff.mean() + half, abs=0.15 * half)
    assert interval.significant and "1 seed" in interval.method


def test_mean_difference_interval_widens_with_seed_spread():
    rng = np.random.default_rng(2)
    base = rng.uniform(size=300)
    a = np.stack([base + s for s in (-0.03, 0.0, 0.03)])  # seeds that disagree
    b = np.stack([base] * 3)
    spread = mean_difference_interval(a, b, seed=0)
    same = mean_difference_interval(a[[1, 1, 1]], b, seed=0)
    assert spread.estimate == pytest.approx(0.0, abs=1e-12)
    assert spread.low < -0.01 and spread.high > 0.01  # the seeds' spread is in the interval
    assert same.high - same.low < 1e-9  # identical seeds, identical queries: no variation
    assert "two-level" in spread.method
