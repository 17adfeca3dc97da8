"""eval.py's retrieval sets: a BEIR set (`task: retrieval`) encoded once at full width, every
prefix searched with FAISS (`mrl.retrieval_metrics`), its metrics as `<set>/<metric>`."""

from __future__ import annotations

import numpy as np

from mrl.beir import BeirSource, load_beir
from mrl.errors import ConfigError
from mrl.retrieval_metrics import retrieval_by_dim

PROGRESS_MIN = 1000  # texts: an encode this long shows a progress bar
FLAT_MAX_DOCS = 1_000_000  # above this, retrieval.index=hnsw (approximate) is suggested


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


def score_retrieval(model, name, source_cfg, dims, batch_size, spec, apply) -> dict[str, dict]:
    """`<name>/<metric>` -> dim -> value for one BEIR set (`apply`: the post-hoc map)."""
    data = load_beir(BeirSource.from_config(source_cfg, name))
    if spec.index == "flat" and len(data.corpus) > FLAT_MAX_DOCS:
        print(f"{name}: {len(data.corpus)} documents; retrieval.index=hnsw searches faster.")
    queries, docs = map(apply, encode_retrieval(model, data, batch_size))
    scores = retrieval_by_dim(queries, docs, data, dims, spec)
    ndcg = scores["ndcg@10"][dims[0]]
    print(f"{name}: {len(queries)} queries, {len(docs)} docs, nDCG@10 at {dims[0]}: {ndcg:.4f}")
    return {f"{name}/{metric}": by_dim for metric, by_dim in scores.items()}
