"""Shortlist-then-rerank retrieval with Matryoshka prefixes, measured against exact search.

    python -m mrl.retrieval MODEL [--d-small 32 64 128] [--k 20 50 100] [--out results.md]

A FAISS flat inner-product index over the first `d_small` dims (renormalised) shortlists `k`
documents per query; the shortlist is reranked by the full-width cosine and cut to 10. Funnels
(e.g. 32 -> 64 -> 128 -> full) rerank stage by stage. Quality is measured against exact
full-width search of the same model: recall@10 (share of the exact top 10 found) and nDCG@10
(the exact top 10 as relevant documents; a corpus under 10 documents: all of them); speed as
queries/s over all queries, search and rerank included. MODEL is anything eval.py takes (Hub
id, folder, run folder); without --d-small / --funnel its three smallest eval dims are used.

The default corpus is read through `mrl.data.sources` from $MRL_DATA_DIR: queries are the anchors of
the NLI dev triplets (allnli/triplets-dev.jsonl, not used in training); documents are their
entailed and contradicting hypotheses plus every distinct sentence of STS-B test and SICK-R
test as distractors. `--queries` / `--corpus` take JSON Lines files with a `text` field instead
(e.g. BEIR's corpus.jsonl / queries.jsonl). `--binary 64 128` adds binary shortlists
(Hamming on 1-bit codes of the prefix, `mrl.tools.binary_search`) reranked at full width.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrl.common.cli import OneLineParser
from mrl.common.errors import ConfigError
from mrl.common.numbers import strict_json
from mrl.evaluation.retrieval import prefix
from mrl.tools.binary_search import binary_rerank_search, model_thresholds

FINAL_K = 10
SHORTLIST_KS = (200, 100, 50)  # the default funnel's shortlists, stage by stage
# the default corpus: NLI dev triplets (queries: anchors) and STS test sentences (distractors)
TRIPLETS_DEV = {
    "hub_id": "sentence-transformers/all-nli", "hub_subset": "triplet", "hub_split": "dev",
    "local_file": "allnli/triplets-dev.jsonl", "columns": ("anchor", "positive", "negative"),
}  # fmt: skip
DISTRACTORS = (
    {"hub_id": "sentence-transformers/stsb", "hub_split": "test", "local_file": "stsb/test.jsonl",
     "columns": ("sentence1", "sentence2", "score"), "local_score_max": 5.0},
    {"hub_id": "mteb/sickr-sts", "hub_split": "test", "local_file": "sts-extra/sickr-test.jsonl",
     "columns": ("sentence1", "sentence2", "score"), "hub_score_max": 5.0,
     "local_score_max": 5.0},
)  # fmt: skip


def read_texts(path: Path, field: str = "text") -> list[str]:
    """The `field` of every line of a JSON Lines file (e.g. a BEIR corpus or queries file),
    with a one-line error naming the file and line when one cannot be read."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give a JSON Lines file with a {field!r} field.")
    from mrl.data.sources import json_objects

    texts = []
    for number, row in json_objects(path, (field,)):
        if field not in row:
            raise ConfigError(f"{path} line {number} has no {field!r} field; fix the line.")
        value = row[field]
        if value is not None and not isinstance(value, str):
            bad = json.dumps(value)[:40]
            raise ConfigError(f"{path} line {number}: {field!r} is {bad}, not a string.")
        if value and value.strip():
            texts.append(value)
    if not texts:
        raise ConfigError(f"{path} holds no texts (no non-empty {field!r}); give a non-empty file.")
    return texts


def default_corpus() -> tuple[list[str], list[str]]:
    """(queries, documents) from NLI dev triplets plus STS-B/SICK-R test sentences, read through
    the validated loader (`mrl.data.sources`) from $MRL_DATA_DIR, else the Hub; a distractor file
    the mirror lacks is left out."""
    from mrl.data.sources import Source, load_source

    mirror = Path(os.environ["MRL_DATA_DIR"]) if os.environ.get("MRL_DATA_DIR") else None
    triplets = mirror / TRIPLETS_DEV["local_file"] if mirror else None
    if triplets is not None and not triplets.is_file():
        raise ConfigError(f"{triplets} is missing; set MRL_DATA_DIR to the shared/data layout.")
    rows = load_source(Source(**TRIPLETS_DEV))
    queries = list(dict.fromkeys(rows["anchor"]))
    docs = list(rows["positive"]) + list(rows["negative"])
    for fields in DISTRACTORS:
        if mirror is not None and not (mirror / fields["local_file"]).is_file():
            continue
        pairs = load_source(Source(**fields))
        for first, second in zip(pairs["sentence1"], pairs["sentence2"], strict=True):
            docs += [first, second]
    query_set = set(queries)
    return queries, [d for d in dict.fromkeys(docs) if d not in query_set]


def exact_search(queries: np.ndarray, docs: np.ndarray, k: int = FINAL_K) -> np.ndarray:
    """The exact full-width top `k` (at most the whole corpus) of every query."""
    import faiss

    full = queries.shape[1]
    index = faiss.IndexFlatIP(full)
    index.add(prefix(docs, full))
    return index.search(prefix(queries, full), min(k, len(docs)))[1]


def funnel_search(
    queries: np.ndarray, docs: np.ndarray, stages: list[tuple[int, int]], k: int = FINAL_K
) -> np.ndarray:
    """FAISS shortlist of stages[0][1] docs on the first stages[0][0] dims; each later stage
    (dim, keep) reranks the survivors on `dim` dims and keeps `keep`; then the full width
    picks the final `k`. Every shortlist is capped at the corpus size, so FAISS never pads
    with -1."""
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


def _found(ids) -> list[int]:
    """Document ids of one result row without FAISS's -1 padding (a corpus smaller than k)."""
    return [int(i) for i in ids if i >= 0]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of each query's exact top-k found, averaged (a -1 pad is no document)."""
    hits = []
    for f, t in zip(found, truth, strict=True):
        relevant = set(_found(t))
        hits.append(len(set(_found(f)) & relevant) / len(relevant) if relevant else 1.0)
    return float(np.mean(hits))


def ndcg_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Binary relevance: a document is relevant when exact full-width search ranks it top-k."""
    values = []
    for f, t in zip(found, truth, strict=True):
        relevant = set(_found(t))
        ideal = sum(1 / math.log2(r + 2) for r in range(len(relevant)))
        gain = sum(1 / math.log2(r + 2) for r, i in enumerate(_found(f)) if i in relevant)
        values.append(gain / ideal if ideal else 1.0)
    return float(np.mean(values))


def retrieval_table(
    queries: np.ndarray,
    docs: np.ndarray,
    d_smalls: list[int],
    ks: list[int],
    funnels: list[list[tuple[int, int]]],
    repeats: int = 3,
    binary: tuple[list[int], np.ndarray] | None = None,
) -> list[dict]:
    """One row per (d_small, k) and per funnel, plus exact full-width search as the reference;
    with `binary` (dims, thresholds), one row per (dim, k) of binary shortlist + float rerank."""

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
    for dim, k in [(d, k) for d in binary[0] for k in ks] if binary else []:
        search = lambda dim=dim, k=k: binary_rerank_search(queries, docs, dim, k, binary[1])  # noqa: E731
        found, qps = timed(search)
        rows.append({"stages": f"binary {dim}:{k} -> {full}:{FINAL_K}", "d_small": dim, "k": k,
                     "recall@10": recall_at_k(found, truth), "ndcg@10": ndcg_at_k(found, truth),
                     "queries_per_s": qps})  # fmt: skip
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


def parse_funnel(spec: str) -> list[tuple[int, int]]:
    """`32:200,64:100` -> [(32, 200), (64, 100)], with a one-line error for anything else."""
    try:
        stages = [tuple(int(x) for x in stage.split(":")) for stage in spec.split(",")]
    except ValueError:
        stages = []
    if not stages or any(len(s) != 2 or s[1] < 1 for s in stages):
        raise ConfigError(
            f"--funnel {spec!r} must be stages dim:shortlist joined by commas, each shortlist "
            ">= 1, e.g. --funnel 32:200,64:100,128:50."
        )
    return stages


def plan(model: str, width: int, d_small: list[int] | None, funnels: list | None):
    """The shortlist dims and funnels, checked against the model's width. Not given: the three
    smallest of the model's eval dims below its width (a run's own, else the pow2 dims: 32, 64,
    128 for a 384-wide model), and one funnel through them (32:200 -> 64:100 -> 128:50)."""
    from mrl.artifacts.models import model_eval_dims
    from mrl.core.schedule import check_dims

    smallest = sorted(d for d in model_eval_dims(model, width) if d < width)[:3] or [width]
    if d_small is None:
        d_small = smallest
    check_dims(d_small, width, "--d-small")
    funnels = funnels or [list(zip(smallest, SHORTLIST_KS, strict=False))]
    for stages in funnels:
        check_dims([d for d, _ in stages], width, "--funnel")
    return d_small, funnels


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description="Shortlist-then-rerank retrieval by prefix size.")
    parser.add_argument("model", help="Hub id, model folder or run folder")
    parser.add_argument(
        "--d-small",
        type=int,
        nargs="+",
        help="shortlist dims (default: see mrl.tools.retrieval.plan)",
    )
    parser.add_argument(
        "--k", type=int, nargs="+", default=[20, 50, 100], help="shortlist sizes (20 50 100)"
    )
    parser.add_argument(
        "--funnel", action="append", help="stages dim:k,... e.g. 32:200,64:100,128:50 (repeatable)"
    )
    parser.add_argument(
        "--binary", type=int, nargs="+", help="binary shortlist dims (x8), reranked"
    )
    parser.add_argument("--queries", type=Path, help="JSON Lines with a text field")
    parser.add_argument("--corpus", type=Path, help="JSON Lines with a text field")
    parser.add_argument("--batch-size", type=int, default=128, help="texts per encode call (128)")
    parser.add_argument("--out", type=Path, help="write the table here (markdown) and as .json")
    args = parser.parse_args(argv)
    try:
        if args.corpus or args.queries:
            if not (args.corpus and args.queries):
                raise ConfigError("--queries and --corpus go together; give both files.")
            queries, docs = read_texts(args.queries), read_texts(args.corpus)
        elif not os.environ.get("MRL_DATA_DIR"):
            raise ConfigError("set MRL_DATA_DIR (shared/data layout) or give --queries/--corpus.")
        else:
            queries, docs = default_corpus()
        funnels = [parse_funnel(spec) for spec in args.funnel] if args.funnel else None
        if any(k < 1 for k in args.k):
            raise ConfigError(f"--k {args.k} must all be >= 1 (shortlist sizes).")
        from mrl.artifacts.models import embedding_width, load_model

        with tempfile.TemporaryDirectory() as workdir:
            model = load_model(args.model, None, False, Path(workdir))
            d_small, funnels = plan(args.model, embedding_width(model), args.d_small, funnels)
            how = {"batch_size": args.batch_size, "convert_to_numpy": True}
            q, d = model.encode(queries, **how), model.encode(docs, **how)
        cal = model_thresholds(args.model)  # a QAT model's own; else the corpus median
        binary = (
            (args.binary, np.median(d, axis=0) if cal is None else cal) if args.binary else None
        )
        rows = retrieval_table(q, d, d_small, args.k, funnels, binary=binary)
        title = f"{args.model}: {len(queries)} queries, {len(docs)} documents"
        # a NaN metric is one line before the table is shown or anything is written
        payload = strict_json({"title": title, "rows": rows}, "retrieval", indent=2)
        table = markdown(rows, title)
        print(table)
        if args.out:
            from mrl.common.files import write_atomic

            for path in (args.out, args.out.with_suffix(".json")):
                if path.exists():  # an input, or a file this run did not make
                    raise ConfigError(f"--out: {path} exists; give a new file name.")
            write_atomic(args.out, table)
            write_atomic(args.out.with_suffix(".json"), payload)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
