"""Shortlist-then-rerank retrieval: exactness at full width, monotone in k, metrics, bad input."""

import json

import numpy as np
import pytest

from mrl.retrieval import funnel_search, main, ndcg_at_k, recall_at_k, retrieval_table


@pytest.fixture
def embeddings():
    """Matryoshka-like: the variance of dim i decays with i, so prefixes carry most of it."""
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(1 + np.arange(64))
    docs = rng.normal(size=(500, 64)) * scale
    queries = docs[:40] + 0.3 * rng.normal(size=(40, 64)) * scale
    return queries.astype(np.float32), docs.astype(np.float32)


def test_metrics_on_a_hand_example():
    truth = np.array([[1, 2, 3, 4]])
    assert recall_at_k(np.array([[1, 9, 3, 8]]), truth) == 0.5
    assert ndcg_at_k(truth, truth) == 1.0
    # hits at ranks 0 and 2 of 4: (1 + 1/log2(4)) / (1 + 1/log2(3) + 1/log2(4) + 1/log2(5))
    ideal = 1 + 1 / np.log2(3) + 0.5 + 1 / np.log2(5)
    assert ndcg_at_k(np.array([[1, 9, 3, 8]]), truth) == pytest.approx(1.5 / ideal)


def test_full_width_shortlist_is_exact_and_recall_grows_with_k(embeddings):
    queries, docs = embeddings
    rows = retrieval_table(queries, docs, [8, 16, 64], [10, 30, 100, 500], [[(8, 200), (16, 50)]])
    by = {
        (r["d_small"], r["k"]): r
        for r in rows
        if "->" in r["stages"] and r["stages"].count("->") == 1
    }
    assert rows[0]["stages"] == "exact 64"
    assert by[(64, 10)]["recall@10"] == 1.0 and by[(64, 10)]["ndcg@10"] == 1.0
    for d in (8, 16):
        recalls = [by[(d, k)]["recall@10"] for k in (10, 30, 100, 500)]
        assert recalls == sorted(recalls) and recalls[-1] == 1.0  # k = whole corpus: exact
        assert recalls[0] < 1.0  # a 10-doc shortlist on few dims misses some
    assert by[(16, 30)]["recall@10"] >= by[(8, 30)]["recall@10"]
    funnel = rows[-1]
    assert funnel["stages"] == "8:200 -> 16:50 -> 64:10" and 0 < funnel["recall@10"] <= 1
    assert all(r["queries_per_s"] > 0 for r in rows)


def test_funnel_keeps_the_best_of_its_shortlist(embeddings):
    queries, docs = embeddings
    ids = funnel_search(queries, docs, [(64, 10)])
    scores = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        docs / np.linalg.norm(docs, axis=1, keepdims=True)
    ).T
    assert (ids == np.argsort(-scores, axis=1)[:, :10]).all()


def test_empty_or_malformed_corpus_is_one_line(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"text": "a query"}) + "\n")
    empty = tmp_path / "corpus.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match=r"error: .*corpus.jsonl holds no texts"):
        main(["some-model", "--queries", str(queries), "--corpus", str(empty)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentence": "x"}) + "\n")
    with pytest.raises(SystemExit, match=r"error: .*bad.jsonl line 1 has no 'text' field"):
        main(["some-model", "--queries", str(queries), "--corpus", str(bad)])
