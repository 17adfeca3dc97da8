"""Per-dimension retrieval metrics from one encode: each prefix of the full-width query and
document embeddings is renormalised (cosine = inner product), searched with FAISS and scored
as sentence-transformers' InformationRetrievalEvaluator scores its ranking; and eval.py's
retrieval sets (`task: retrieval`), each encoded once at full width (`load_and_encode`) and scored
at every prefix, map and storage kind (metrics as `<set>/<metric>`).

The ranking: the top `DEPTH` documents (100, at most the corpus) by cosine, ties broken by the
ascending string order of the document ids (ST sorts its hits by (-score, corpus_id)). Per
query, averaged over the queries with a relevant document (binary relevance):
  nDCG@10     DCG of the top 10 over the DCG of min(|relevant|, 10) hits at the top
  MRR@10      1 / rank of the first relevant document in the top 10, 0 if there is none
  recall@100  relevant documents in the top 100 / |relevant|
  MAP@100     the precision at the rank of each relevant document in the top 100, summed,
              / min(|relevant|, 100) (ST's denominator; pytrec_eval's is |relevant|)
Every document may be returned, a query's own id included (as ST; BEIR's pytrec_eval setup
drops a document whose id is the query's).

The index is exact (IndexFlatIP) by default; `ivf` or `hnsw` trade exactness for speed on
corpora above ~1M documents (their ties are not re-broken: approximate search is not exact).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.data.beir import BeirSet, BeirSource, load_beir

DEPTH = 100
PROGRESS_MIN = 1000  # texts: an encode this long shows a progress bar
FLAT_MAX_DOCS = 1_000_000  # above this, retrieval.index=hnsw (approximate) is suggested
INDEXES = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    """The FAISS index eval.py searches each prefix with (`retrieval.*` in evaluate.yaml)."""

    index: str = "flat"
    nlist: int | None = None  # ivf: lists; None: 4 * sqrt(documents), >= 39 documents a list
    nprobe: int = 32  # ivf: lists searched per query
    hnsw_m: int = 32  # hnsw: links per node
    ef_construction: int = 200  # hnsw: candidates while building
    ef_search: int = 256  # hnsw: candidates per query (at least DEPTH)

    @classmethod
    def from_config(cls, cfg) -> IndexSpec:
        """The spec, or one ConfigError naming the `retrieval.` option and the fix."""
        values = dict(cfg or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"retrieval has unknown keys {unknown}; it takes "
                f"{', '.join(cls.__dataclass_fields__)}."
            )
        if values.get("index", "flat") not in INDEXES:
            raise ConfigError(
                f"retrieval.index={values['index']!r} is unknown; use flat (exact), ivf or hnsw."
            )
        for key, value in values.items():
            if key == "index" or (key == "nlist" and value is None):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"retrieval.{key}={value!r} must be a whole number >= 1, e.g. "
                    f"retrieval.{key}={getattr(cls, key) or 1024}."
                )
        return cls(**values)


def prefix(x: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` columns, each row renormalised (cosine = inner product)."""
    p = np.ascontiguousarray(x[:, :dim], dtype=np.float32)
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)


def build_index(docs: np.ndarray, spec: IndexSpec):
    """A FAISS inner-product index over `docs` (unit rows): exact, IVF or HNSW."""
    import faiss

    n, dim = docs.shape
    if spec.index == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.index == "hnsw":
        index = faiss.index_factory(dim, f"HNSW{spec.hnsw_m},Flat", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = max(spec.ef_search, DEPTH)
    else:
        nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(docs)
        index.nprobe = min(spec.nprobe, nlist)
    index.add(docs)
    return index


def id_order(ids: Sequence[str]) -> np.ndarray:
    """Each id's position in ascending string order: the tie-break of ST's ranking."""
    order = np.empty(len(ids), dtype=np.int64)
    order[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    return order


def ranked(index, queries: np.ndarray, docs: np.ndarray, order: np.ndarray, exact: bool):
    """Document positions [queries, min(DEPTH, documents)], best first, equal scores in id
    `order`; -1 where an approximate index found fewer. Exact search fetches one more than it
    keeps, and re-ranks a query over the whole corpus when scores tie across the cut."""
    n = docs.shape[0]
    keep = min(DEPTH, n)
    scores, ids = index.search(queries, min(keep + 1, n) if exact else keep)
    scores = np.where(ids < 0, -np.inf, scores)
    ties = np.where(ids < 0, n, order[ids])
    sort = np.lexsort((ties, -scores), axis=1)
    ids, scores = np.take_along_axis(ids, sort, 1), np.take_along_axis(scores, sort, 1)
    if exact and ids.shape[1] > keep:
        for row in np.flatnonzero(scores[:, keep - 1] == scores[:, keep]):
            full = docs @ queries[row]
            ids[row, :keep] = np.lexsort((order, -full))[:keep]
    return ids[:, :keep]


def relevance(top: np.ndarray, data: BeirSet) -> tuple[np.ndarray, np.ndarray]:
    """(hits, n_relevant): whether each ranked document is relevant to its query [queries,
    depth], and how many documents are relevant to each query."""
    n = len(data.corpus_ids)
    position = {doc_id: i for i, doc_id in enumerate(data.corpus_ids)}
    pairs = [q * n + position[d] for q, i in enumerate(data.query_ids) for d in data.relevant[i]]
    keys = np.where(top >= 0, np.arange(len(top))[:, None] * n + top, -1)
    hits = np.isin(keys, np.asarray(pairs, dtype=np.int64))
    return hits, np.array([len(data.relevant[qid]) for qid in data.query_ids])


def ndcg_per_query(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Each query's nDCG@k, binary gains, the ideal DCG from min(|relevant|, k) hits at the top."""
    discount = 1 / np.log2(np.arange(k) + 2)
    top = hits[:, :k]
    dcg = (top * discount[: top.shape[1]]).sum(1)
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
    return dcg / ideal


def mrr_per_query(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Each query's reciprocal rank of its first relevant document in the top k (0 if none)."""
    top = hits[:, :k]
    return np.where(top.any(1), 1 / (top.argmax(1) + 1), 0.0)


def recall_per_query(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Each query's share of its relevant documents found in its top k."""
    return hits[:, :k].sum(1) / n_relevant


def map_per_query(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Each query's average precision at k, divided by min(|relevant|, k) as ST does."""
    top = hits[:, :k]
    precision = np.cumsum(top, 1) / np.arange(1, top.shape[1] + 1)
    return (precision * top).sum(1) / np.minimum(n_relevant, k)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean nDCG@k over the queries (`ndcg_per_query`)."""
    return float(np.mean(ndcg_per_query(hits, n_relevant, k)))


def mrr_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean reciprocal rank at k (`mrr_per_query`)."""
    return float(np.mean(mrr_per_query(hits, n_relevant, k)))


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean recall at k (`recall_per_query`)."""
    return float(np.mean(recall_per_query(hits, n_relevant, k)))


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean average precision at k (`map_per_query`)."""
    return float(np.mean(map_per_query(hits, n_relevant, k)))


METRICS = {
    "ndcg@10": (ndcg_per_query, 10),
    "mrr@10": (mrr_per_query, 10),
    "recall@100": (recall_per_query, 100),
    "map@100": (map_per_query, 100),
}


def retrieval_per_query(
    queries: np.ndarray,
    docs: np.ndarray,
    data: BeirSet,
    dims: Sequence[int],
    spec: IndexSpec | None = None,
    searched=None,
) -> dict[str, dict[int, np.ndarray]]:
    """metric -> dim -> each query's value (in the order of `data.query_ids`) for full-width
    query and document embeddings (rows in the order of `data.query_ids` / `data.corpus_ids`),
    each dim's prefix renormalised and searched. The per-query values are what a bootstrap
    over queries resamples (`mrl.evaluation.intervals.mean_difference_interval`). `searched`
    (`mrl.evaluation.storage.Storage.searched`): each prefix as stored, queries and documents
    alike, as the index holds it; None: float32, renormalised."""
    spec = spec or IndexSpec()
    order = id_order(data.corpus_ids)
    scores: dict[str, dict[int, np.ndarray]] = {name: {} for name in METRICS}
    for dim in dims:
        if searched is None:
            q, d = prefix(queries, dim), prefix(docs, dim)
        else:
            q, d = searched(queries[:, :dim]), searched(docs[:, :dim])
        top = ranked(build_index(d, spec), q, d, order, exact=spec.index == "flat")
        hits, n_relevant = relevance(top, data)
        for name, (metric, k) in METRICS.items():
            scores[name][int(dim)] = metric(hits, n_relevant, k)
    return scores


def mean_by_dim(per_query: dict[str, dict[int, np.ndarray]]) -> dict[str, dict[int, float]]:
    """metric -> dim -> the mean over queries: the figures BEIR and MTEB report."""
    return {m: {d: float(np.mean(v)) for d, v in by.items()} for m, by in per_query.items()}


def retrieval_by_dim(
    queries: np.ndarray,
    docs: np.ndarray,
    data: BeirSet,
    dims: Sequence[int],
    spec: IndexSpec | None = None,
) -> dict[str, dict[int, float]]:
    """metric -> dim -> mean over queries (`retrieval_per_query`)."""
    return mean_by_dim(retrieval_per_query(queries, docs, data, dims, spec))


def is_retrieval(name: str, source_cfg) -> bool:
    """True for a BEIR set (`task: retrieval`), False for STS pairs (no `task`)."""
    task = source_cfg.get("task")
    if task is not None and task != "retrieval":
        raise ConfigError(
            f"benchmarks.{name}.task={task!r} is unknown; use task: retrieval (a BEIR set) or "
            "leave it out (STS pairs)."
        )
    return task == "retrieval"


def encode_retrieval(model, data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-width query and document embeddings, each text encoded once, with the model's
    query / document prompts if it has them (as ST's InformationRetrievalEvaluator)."""
    sides = []
    for encode, texts in ((model.encode_query, data.queries), (model.encode_document, data.corpus)):
        embeddings = encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=len(texts) >= PROGRESS_MIN,
        )
        sides.append(np.asarray(embeddings, dtype=np.float32))
    return sides[0], sides[1]


@dataclass(frozen=True)
class QueryScores:
    """One BEIR set's per-query metrics: metric -> dim -> (queries,), in `query_ids` order."""

    query_ids: list[str]
    per_query: dict[str, dict[int, np.ndarray]]


def load_and_encode(model, name, source_cfg, batch_size, spec) -> tuple:
    """One BEIR set (`mrl.data.beir`) and its full-width query and document embeddings
    (`encode_retrieval`), encoded once for every dim, map and storage kind that scores it."""
    data = load_beir(BeirSource.from_config(source_cfg, name))
    if spec.index == "flat" and len(data.corpus) > FLAT_MAX_DOCS:
        print(f"{name}: {len(data.corpus)} documents; retrieval.index=hnsw searches faster.")
    queries, docs = encode_retrieval(model, data, batch_size)
    return data, queries, docs


def write_query_scores(path: Path, scores: QueryScores) -> None:
    """`<metric>/<dim>` arrays and the query ids in one .npz, written atomically."""
    arrays = {
        f"{m}/{d}": v.astype(np.float64)
        for m, by in scores.per_query.items()
        for d, v in by.items()
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, query_ids=np.asarray(scores.query_ids), **arrays)
    write_atomic(path, buffer.getvalue())


def load_query_scores(path: Path) -> QueryScores:
    """What `write_query_scores` wrote."""
    with np.load(path, allow_pickle=False) as saved:
        per_query: dict[str, dict[int, np.ndarray]] = {}
        for key in saved.files:
            if key == "query_ids":
                continue
            metric, dim = key.rsplit("/", 1)
            per_query.setdefault(metric, {})[int(dim)] = saved[key]
        return QueryScores([str(q) for q in saved["query_ids"]], per_query)
