"""Shortlist-then-rerank retrieval with Matryoshka prefixes, measured against exact search.

    python -m mrl.retrieval MODEL [--d-small 32 64 128] [--k 20 50 100] [--out results.md]

A FAISS flat inner-product index over the first `d_small` dims (renormalised) shortlists `k`
documents per query; the shortlist is reranked by the full-width cosine and cut to 10. Funnels
(e.g. 32 -> 64 -> 128 -> full) rerank stage by stage. Quality is measured against exact
full-width search of the same model: recall@10 (share of the exact top 10 found) and nDCG@10
(the exact top 10 as relevant documents); speed as queries/s over all queries, search and
rerank included. MODEL is anything eval.py takes (Hub id, folder, run folder).

The default corpus comes from the local data ($MRL_DATA_DIR): queries are the anchors of the
NLI dev triplets (allnli/triplets-dev.jsonl, not used in training); documents are their
entailed and contradicting hypotheses plus every distinct sentence of STS-B test and SICK-R
test as distractors. `--queries` / `--corpus` take JSON Lines files with a `text` field instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrl.errors import ConfigError

FINAL_K = 10


def read_texts(path: Path, field: str = "text") -> list[str]:
    """The `field` of every line of a JSON Lines file, with a one-line error when there is none."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give a JSON Lines file with a {field!r} field.")
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)[field]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{path} line {number} has no {field!r} field; fix the line."
            ) from None
        if isinstance(value, str) and value.strip():
            texts.append(value)
    if not texts:
        raise ConfigError(f"{path} holds no texts (no non-empty {field!r}); give a non-empty file.")
    return texts


def default_corpus(data_dir: Path) -> tuple[list[str], list[str]]:
    """(queries, documents) from NLI dev triplets plus STS-B/SICK-R test sentences."""
    triplets = data_dir / "allnli" / "triplets-dev.jsonl"
    if not triplets.is_file():
        raise ConfigError(f"{triplets} is missing; set MRL_DATA_DIR to the shared/data layout.")
    rows = [json.loads(line) for line in triplets.read_text().splitlines() if line.strip()]
    queries = list(dict.fromkeys(r["anchor"] for r in rows))
    docs = [r["positive"] for r in rows] + [r["negative"] for r in rows]
    for name in ("stsb/test.jsonl", "sts-extra/sickr-test.jsonl"):
        path = data_dir / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    pair = json.loads(line)
                    docs += [pair["sentence1"], pair["sentence2"]]
    query_set = set(queries)
    return queries, [d for d in dict.fromkeys(docs) if d not in query_set]


def prefix(x: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` columns, each row renormalised (cosine = inner product)."""
    p = np.ascontiguousarray(x[:, :dim], dtype=np.float32)
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)


def exact_search(queries: np.ndarray, docs: np.ndarray, k: int = FINAL_K) -> np.ndarray:
    import faiss

    full = queries.shape[1]
    index = faiss.IndexFlatIP(full)
    index.add(prefix(docs, full))
    return index.search(prefix(queries, full), k)[1]


def funnel_search(
    queries: np.ndarray, docs: np.ndarray, stages: list[tuple[int, int]], k: int = FINAL_K
) -> np.ndarray:
    """FAISS shortlist of stages[0][1] docs on the first stages[0][0] dims; each later stage
    (dim, keep) reranks the survivors on `dim` dims and keeps `keep`; then the full width
    picks the final `k`."""
    import faiss

    first_dim, first_k = stages[0]
    index = faiss.IndexFlatIP(first_dim)
    index.add(prefix(docs, first_dim))
    ids = index.search(prefix(queries, first_dim), min(first_k, len(docs)))[1]
    for dim, keep in [*stages[1:], (queries.shape[1], k)]:
        q, d = prefix(queries, dim), prefix(docs, dim)
        scores = np.einsum("qd,qkd->qk", q, d[ids])
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(keep, ids.shape[1])]
        ids = np.take_along_axis(ids, order, axis=1)
    return ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def ndcg_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Binary relevance: a document is relevant when exact full-width search ranks it top-k."""
    ideal = sum(1 / math.log2(r + 2) for r in range(truth.shape[1]))
    values = []
    for f, t in zip(found, truth, strict=True):
        relevant = set(t)
        values.append(sum(1 / math.log2(r + 2) for r, i in enumerate(f) if i in relevant) / ideal)
    return float(np.mean(values))


def retrieval_table(
    queries: np.ndarray,
    docs: np.ndarray,
    d_smalls: list[int],
    ks: list[int],
    funnels: list[list[tuple[int, int]]],
    repeats: int = 3,
) -> list[dict]:
    """One row per (d_small, k) and per funnel, plus exact full-width search as the reference."""

    def timed(fn):
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - start)
        return out, len(queries) / best

    full = queries.shape[1]
    truth, exact_qps = timed(lambda: exact_search(queries, docs))
    rows = [{"stages": f"exact {full}", "d_small": full, "k": FINAL_K, "recall@10": 1.0,
             "ndcg@10": 1.0, "queries_per_s": exact_qps}]  # fmt: skip
    plans = [[(d, k)] for d in d_smalls for k in ks if d <= full] + funnels
    for stages in plans:
        found, qps = timed(lambda stages=stages: funnel_search(queries, docs, stages))
        rows.append(
            {
                "stages": " -> ".join(f"{d}:{k}" for d, k in stages) + f" -> {full}:{FINAL_K}",
                "d_small": stages[0][0],
                "k": stages[0][1],
                "recall@10": recall_at_k(found, truth),
                "ndcg@10": ndcg_at_k(found, truth),
                "queries_per_s": qps,
            }
        )
    return rows


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| stages (dim:shortlist) | recall@10 | nDCG@10 | queries/s |"]
    lines.append("| --- | --- | --- | --- |")
    for r in rows:
        lines.append(
            f"| {r['stages']} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
            f"{r['queries_per_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Shortlist-then-rerank retrieval by prefix size.")
    parser.add_argument("model", help="Hub id, model folder or run folder")
    parser.add_argument("--d-small", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--k", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument(
        "--funnel", action="append", help="stages dim:k,... e.g. 32:200,64:100,128:50 (repeatable)"
    )
    parser.add_argument("--queries", type=Path, help="JSON Lines with a text field")
    parser.add_argument("--corpus", type=Path, help="JSON Lines with a text field")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, help="write the table here (markdown) and as .json")
    args = parser.parse_args(argv)
    try:
        if args.corpus or args.queries:
            if not (args.corpus and args.queries):
                raise ConfigError("--queries and --corpus go together; give both files.")
            queries, docs = read_texts(args.queries), read_texts(args.corpus)
        else:
            data_dir = os.environ.get("MRL_DATA_DIR")
            if not data_dir:
                raise ConfigError(
                    "set MRL_DATA_DIR (shared/data layout) or give --queries/--corpus."
                )
            queries, docs = default_corpus(Path(data_dir))
        funnels = [
            [tuple(int(x) for x in stage.split(":")) for stage in spec.split(",")]
            for spec in (args.funnel or ["32:200,64:100,128:50"])
        ]
        from mrl.evaluate import load_model

        with tempfile.TemporaryDirectory() as workdir:
            model = load_model(args.model, None, False, Path(workdir))
            encode = lambda texts: model.encode(  # noqa: E731
                texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=True
            )
            q, d = encode(queries), encode(docs)
        if max(s[0] for f in funnels for s in f) > q.shape[1] or max(args.d_small) > q.shape[1]:
            raise ConfigError(f"--d-small/--funnel dims must be <= the model's width {q.shape[1]}.")
    except ConfigError as err:
        sys.exit(f"error: {err}")
    rows = retrieval_table(q, d, args.d_small, args.k, funnels)
    title = f"{args.model}: {len(queries)} queries, {len(docs)} documents"
    table = markdown(rows, title)
    print(table)
    if args.out:
        from mrl.results import write_atomic

        write_atomic(args.out, table)
        payload = {"title": title, "rows": rows}
        write_atomic(args.out.with_suffix(".json"), json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
