"""Retrieval at every dim, side by side in one run: ours (queries and corpus encoded once at
full width, each prefix renormalised and searched with FAISS) against sentence-transformers'
InformationRetrievalEvaluator (one evaluator per dim with truncate_dim, each encoding the
queries and the corpus again), on BEIR SciFact test with all-MiniLM-L6-v2.

Usage (offline, from the repository root):

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \
        python benchmarks/bench_retrieval.py

Both sides use the same model object (CPU, fp32, its max_seq_length of 256), the same batch
size and the same documents, title + " " + text: ours through `mrl.data.beir` and
conf/evaluate/benchmarks/scifact.yaml, theirs read from the raw files the way ST's evaluator
docstring reads a BEIR set. Ours is timed from reading the files to the last metric, theirs
from reading the files to the last evaluator's result. Ours runs first, then theirs (one round
each: an encode of the corpus takes minutes on a 2-core CPU). Prints the metrics of both per
dim, both times, the ratio and the largest metric difference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")


def load_model(name: str, max_seq_length: int | None):
    from sentence_transformers import SentenceTransformer

    folder = Path(os.environ.get("MRL_MODEL_DIR", "")) / name
    model = SentenceTransformer(str(folder) if folder.is_dir() else name, device="cpu")
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def ours(model, batch_size: int, dims: list[int]) -> tuple[float, dict, str]:
    """eval.py's path: the validated loader, one encode, `retrieval_by_dim` at every dim."""
    from omegaconf import OmegaConf

    from mrl.data.beir import BeirSource, load_beir
    from mrl.evaluation.retrieval import encode_retrieval, retrieval_by_dim

    start = time.perf_counter()
    cfg = OmegaConf.load(ROOT / "conf" / "evaluate" / "benchmarks" / "scifact.yaml")
    data = load_beir(BeirSource.from_config(cfg.scifact, "scifact"))
    queries, docs = encode_retrieval(model, data, batch_size)
    scores = retrieval_by_dim(queries, docs, data, dims)
    size = f"{len(data.queries):,} queries, {len(data.corpus):,} documents"
    return time.perf_counter() - start, scores, size


def st_inputs(folder: Path) -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant docs) as ST's evaluator docstring builds them."""
    with (folder / "corpus.jsonl").open(encoding="utf-8") as file:
        rows = [json.loads(line) for line in file if line.strip()]
    corpus = {r["_id"]: (r["title"] + " " + r["text"]).strip() for r in rows}
    with (folder / "queries.jsonl").open(encoding="utf-8") as file:
        queries = {r["_id"]: r["text"] for r in map(json.loads, file)}
    relevant: dict[str, set[str]] = {}
    with (folder / "qrels" / "test.tsv").open(encoding="utf-8") as file:
        next(file)
        for line in file:
            qid, cid, score = line.rstrip("\r\n").split("\t")
            if int(score) > 0:
                relevant.setdefault(qid, set()).add(cid)
    return queries, corpus, relevant


def theirs(model, batch_size: int, dims: list[int]) -> tuple[float, dict]:
    """One InformationRetrievalEvaluator(truncate_dim=d) per dim."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    start = time.perf_counter()
    inputs = st_inputs(Path(os.environ["MRL_DATA_DIR"]) / "beir" / "scifact")
    scores: dict[str, dict[int, float]] = {m: {} for m in METRICS}
    for dim in dims:
        evaluator = InformationRetrievalEvaluator(
            *inputs, truncate_dim=dim, precision_recall_at_k=[100], batch_size=batch_size,
            show_progress_bar=True, write_csv=False, name=f"scifact-{dim}",
        )  # fmt: skip
        found = evaluator(model)
        for metric in METRICS:
            scores[metric][dim] = found[f"scifact-{dim}_{model.similarity_fn_name}_{metric}"]
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="$MRL_MODEL_DIR/<name>")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64, 32])
    parser.add_argument("--batch-size", type=int, default=128, help="eval.py's default")
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the model's")
    a = parser.parse_args()
    if not os.environ.get("MRL_DATA_DIR"):
        raise SystemExit("error: set MRL_DATA_DIR to a folder holding beir/scifact/.")
    model = load_model(a.model, a.max_seq_length)
    print(f"{a.model}: max_seq_length {model.max_seq_length}, batch {a.batch_size}, CPU fp32")
    our_s, our_scores, size = ours(model, a.batch_size, a.dims)
    their_s, their_scores = theirs(model, a.batch_size, a.dims)
    print("\n| dim | " + " | ".join(f"{m} ours / ST" for m in METRICS) + " |")
    print("|" + " --- |" * (len(METRICS) + 1))
    for dim in a.dims:
        cells = [f"{our_scores[m][dim]:.4f} / {their_scores[m][dim]:.4f}" for m in METRICS]
        print(f"| {dim} | " + " | ".join(cells) + " |")
    diffs = {m: max(abs(our_scores[m][d] - their_scores[m][d]) for d in a.dims) for m in METRICS}
    print(
        f"\nSciFact test ({size}) at {len(a.dims)} dims: ours {our_s:.1f} s "
        f"(one encode), sentence-transformers {their_s:.1f} s ({len(a.dims)} evaluators) -> "
        f"ours is {their_s / our_s:.2f}x faster; max |metric difference| "
        f"{max(diffs.values()):.1e} ({', '.join(f'{m} {v:.1e}' for m, v in diffs.items())})"
    )


if __name__ == "__main__":
    main()
