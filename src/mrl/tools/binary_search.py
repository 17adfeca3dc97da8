"""Binary shortlist, float rerank: search one bit per dim of a prefix by Hamming distance, then
rerank the shortlist by the full-width float cosine (the "rescoring" recipe for binary codes).

A code bit is 1 where the value is above the dim's threshold: the model's own QAT calibration
when it has one (`qat_calibration.json` in its folder, what training quantized with), else the
per-dim median of the corpus embeddings (an index-time calibration that sees no query). The
Hamming distance of d-bit codes is d * (1 - cosine of the +-1 codes) / 2, so this is the search
`mrl.core.qat` trains binary prefixes for. FAISS `IndexBinaryFlat` searches exactly.
"""

from __future__ import annotations

import numpy as np

from mrl.artifacts.models import saved_calibration
from mrl.common.errors import ConfigError
from mrl.evaluation.retrieval import prefix


def model_thresholds(model: str) -> np.ndarray | None:
    """The per-dim binary thresholds of a model folder (or run folder) trained with QAT."""
    saved = saved_calibration(model)
    return None if saved is None else np.asarray(saved["threshold"], dtype=np.float32)


def packed_codes(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Bits (x > threshold) of each row, 8 per byte (the layout FAISS binary indexes take)."""
    if x.shape[1] % 8:
        raise ConfigError(
            f"a binary prefix of {x.shape[1]} dims is not a whole number of bytes; use a "
            "multiple of 8."
        )
    return np.packbits(x > thresholds[: x.shape[1]], axis=1)


def binary_rerank_search(
    queries: np.ndarray,
    docs: np.ndarray,
    dim: int,
    shortlist: int,
    thresholds: np.ndarray,
    k: int = 10,
) -> np.ndarray:
    """Top `k` doc ids per query: Hamming shortlist of `shortlist` on `dim`-bit codes of the
    raw prefixes, reranked by the full-width cosine."""
    import faiss

    if not 8 <= dim <= queries.shape[1]:
        raise ConfigError(f"--binary {dim} must be between 8 and the width {queries.shape[1]}.")
    index = faiss.IndexBinaryFlat(dim)
    index.add(packed_codes(docs[:, :dim], thresholds))
    n = min(shortlist, len(docs))
    ids = index.search(packed_codes(queries[:, :dim], thresholds), n)[1]
    full = queries.shape[1]
    q, d = prefix(queries, full), prefix(docs, full)
    scores = np.einsum("qd,qkd->qk", q, d[ids])
    order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, n)]
    return np.take_along_axis(ids, order, axis=1)
