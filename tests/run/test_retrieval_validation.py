"""A BEIR set as a validation signal during training (eval=stsb_scifact): bounded, scored at
every eval dim, logged as val/<set>/<metric>@<dim>."""

import csv
import json

from mrl.data.beir import BeirSet
from mrl.run.retrieval_validation import bounded
from tests.conftest import FAST


def _write_beir(root, n_docs=30, n_queries=12):
    folder = root / "beir" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"doc {i}", "text": f"a dog number {i} runs"}
        for i in range(n_docs)
    ]
    queries = [{"_id": f"q{i}", "text": f"which dog {i} runs"} for i in range(n_queries)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n_queries))
    (folder / "qrels" / "train.tsv").write_text(qrels)
    (folder / "qrels" / "test.tsv").write_text(qrels)


def test_bounded_keeps_the_relevant_documents_of_the_kept_queries():
    data = BeirSet(
        corpus_ids=[f"d{i}" for i in range(10)],
        corpus=[f"text {i}" for i in range(10)],
        query_ids=["q0", "q1", "q2", "q3"],
        queries=["a", "b", "c", "d"],
        relevant={"q0": {"d9"}, "q1": {"d8", "d0"}, "q3": {"d1"}},  # q2 has no relevant doc
    )
    small = bounded(data, max_queries=2, max_docs=4)
    assert small.query_ids == ["q0", "q1"] and small.queries == ["a", "b"]
    assert set(small.corpus_ids) >= {"d9", "d8", "d0"} and len(small.corpus_ids) == 4
    assert small.corpus_ids == ["d0", "d1", "d8", "d9"]  # file order: d1 is the one extra
    assert bounded(data, None, None).query_ids == ["q0", "q1", "q3"]


def test_training_logs_retrieval_at_every_eval_dim(data_dir, run_main, tmp_path):
    _write_beir(data_dir)
    run_dir = tmp_path / "run"
    run_main(["+exp=allnli_mrl", *FAST, "eval=stsb_scifact", "data.batch_size=16"], run_dir)
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    for dim in (32, 16, 8, 4):
        for metric in ("ndcg@10", "mrr@10", "recall@100", "map@100"):
            values = [
                float(r[f"val/scifact/{metric}@{dim}"])
                for r in rows
                if r.get(f"val/scifact/{metric}@{dim}")
            ]
            assert len(values) >= 1 and all(0 <= v <= 1 for v in values), (metric, dim)
    # every document is in the corpus of 30, so recall@100 is 1 at every dim
    recall = [
        float(r["val/scifact/recall@100@4"]) for r in rows if r.get("val/scifact/recall@100@4")
    ]
    assert recall and all(v == 1.0 for v in recall)
