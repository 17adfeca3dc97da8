"""Shortlist-then-rerank retrieval: exactness at full width, monotone in k, metrics, any corpus
size, the validated loaders, bad input in one line (exit 2)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mrl.tools.retrieval import (
    default_corpus,
    exact_search,
    funnel_search,
    main,
    ndcg_at_k,
    read_texts,
    recall_at_k,
    retrieval_table,
)


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


def test_a_corpus_smaller_than_10_is_exact_when_shortlists_hold_all_of_it():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(3, 16)).astype(np.float32)
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    assert exact_search(queries, docs).shape == (5, 3)  # no -1 padding
    rows = retrieval_table(queries, docs, [2, 8], [3, 10, 100], [[(2, 10), (4, 5)]], repeats=1)
    for row in rows:  # every shortlist holds the whole corpus: all found, in order
        assert row["recall@10"] == 1.0 and row["ndcg@10"] == pytest.approx(1.0), row
    one = retrieval_table(queries, docs, [2], [1], [], repeats=1)[1]
    assert one["recall@10"] == pytest.approx(1 / 3) and one["ndcg@10"] < 1


def test_metrics_ignore_faiss_padding():
    truth, found = np.array([[2, 0, 1, -1, -1]]), np.array([[0, 1, 2, -1, -1]])
    assert recall_at_k(found, truth) == 1.0 and ndcg_at_k(found, truth) == pytest.approx(1.0)
    assert recall_at_k(np.array([[2, -1, -1]]), np.array([[2, 0, -1]])) == 0.5


def test_empty_or_malformed_corpus_is_one_line(tmp_path, capsys):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"text": "a query"}) + "\n")
    empty = tmp_path / "corpus.jsonl"
    empty.write_text("\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentence": "x"}) + "\n")
    for corpus, message in [(empty, "corpus.jsonl holds no texts"),
                            (bad, "bad.jsonl line 1 has no 'text' field")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["some-model", "--queries", str(queries), "--corpus", str(corpus)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err
        assert err.count("\n") == 1
    lines = {"cut.jsonl": b'{"text": "a"}\n{"text": "b\n', "latin.jsonl": b'{"text": "caf\xe9"}\n',
             "number.jsonl": b'{"text": "a"}\n\n{"text": 3}\n'}  # fmt: skip
    for name, data in lines.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(
        ValueError,
        match=r"cut.jsonl could not be read as JSON Lines: line 2 is cut off or not JSON",
    ):
        read_texts(tmp_path / "cut.jsonl")
    with pytest.raises(
        ValueError, match=r"latin.jsonl could not be read as JSON Lines: line 1 is not valid UTF-8"
    ):
        read_texts(tmp_path / "latin.jsonl")
    with pytest.raises(ValueError, match=r"number.jsonl line 3: 'text' is 3, not a string"):
        read_texts(tmp_path / "number.jsonl")
    for spec in ("32:abc", "32", "32:0"):
        with pytest.raises(SystemExit):
            main(["m", "--queries", str(queries), "--corpus", str(queries), "--funnel", spec])
        assert "must be stages dim:shortlist" in capsys.readouterr().err


def test_default_corpus_reads_through_the_validated_loader(data_dir):
    rows = [json.loads(line) for line in (data_dir / "allnli/triplets-dev.jsonl").open()]
    queries, docs = default_corpus()
    assert queries == [r["anchor"] for r in rows]
    assert {r["positive"] for r in rows} <= set(docs) and len(docs) == len(set(docs))
    stsb = [json.loads(line) for line in (data_dir / "stsb/test.jsonl").open()]
    assert {p["sentence1"] for p in stsb} - set(queries) <= set(docs)
    with (data_dir / "allnli/triplets-dev.jsonl").open("a") as f:
        f.write('{"anchor": "a", "positive": 5, "negative": "c"}\n')
    with pytest.raises(ValueError, match=r"triplets-dev.jsonl line 9: field positive is 5"):
        default_corpus()


def test_cli_on_three_documents_is_exact_quiet_and_refuses_bad_models(tiny_model, tmp_path, capsys):
    from transformers import BertModel

    from mrl.encoder.backbone import tiny_config

    queries, corpus = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    queries.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a dog", "a cat"]))
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["dogs", "cats", "cars"]))
    bare = tmp_path / "bare"
    BertModel(tiny_config()).save_pretrained(bare)  # no tokenizer files
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def cli(*args):
        command = [sys.executable, "-m", "mrl.retrieval", *args, "--queries", str(queries),
                   "--corpus", str(corpus)]  # fmt: skip
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    done = cli(str(tiny_model), "--k", "3", "10", "--out", str(tmp_path / "r.md"))
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["stages"] for r in rows[:3]] == ["exact 32", "4:3 -> 32:10", "4:10 -> 32:10"]
    assert all(r["recall@10"] == 1.0 for r in rows), rows  # 3 documents: every shortlist
    assert not [line for line in (done.stdout + done.stderr).splitlines() if "wandb" in line]
    refused = [
        ((str(bare),), f"{bare} has no tokenizer files (tokenizer.json"),
        ((str(tiny_model), "--d-small", "64"), "--d-small holds 64, larger"),
        ((str(tiny_model), "--funnel", "8:5,33:2"), "--funnel holds 33"),
    ]
    from mrl.tools.retrieval import main

    files = ["--queries", str(queries), "--corpus", str(corpus)]
    for args, message in refused:  # in-process: main() is what `python -m mrl.retrieval` calls
        with pytest.raises(SystemExit) as stop:
            main([*args, *files])
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert stop.value.code == 2 and len(errors) == 1 and message in errors[0], stderr
        assert "Traceback" not in stderr


def test_a_nan_metric_is_one_line_and_nothing_is_shown_or_written(
    tiny_model, tmp_path, capsys, monkeypatch
):
    import mrl.tools.retrieval as retrieval

    queries, corpus = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    queries.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a dog", "a cat"]))
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["dogs", "cats", "cars"]))
    real = retrieval.retrieval_table

    def with_a_nan(*args, **kwargs):  # e.g. a metric over queries that have no relevant doc
        rows = real(*args, **kwargs)
        rows[-1]["recall@10"] = float("nan")
        return rows

    monkeypatch.setattr(retrieval, "retrieval_table", with_a_nan)
    out = tmp_path / "r.md"
    with pytest.raises(SystemExit) as stop:
        retrieval.main([str(tiny_model), "--k", "3", "10", "--out", str(out),
                        "--queries", str(queries), "--corpus", str(corpus)])  # fmt: skip
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert stop.value.code == 2 and len(errors) == 1, captured.err
    assert "recall@10 is nan, not a number" in errors[0] and "nothing was written" in errors[0]
    assert "| exact 32 |" not in captured.out and not out.exists()
    assert not out.with_suffix(".json").exists()
