"""How an embedding prefix is stored: float32, float16, int8 or binary, and what a stored prefix
costs in bytes. Used by eval.py (`storage=[float32,int8,binary]`: every benchmark scored as
stored, from one encode) and by `python -m mrl.quantization` (STS-B against bytes).

int8 and binary need a calibration: per-dim statistics of full-width embeddings of training
texts (`Calibration`). int8 maps each dim's calibrated [min, max] linearly onto [-128, 127]
(values outside are clipped) and is compared after dequantizing; binary keeps one bit per dim,
whether the value is above the dim's calibrated median. float16 is a cast. A prefix is cut
first and stored second, so one calibration (its first d dims) serves every dim. A model trained
with QAT brings its own calibration (`qat_calibration`), so evaluation quantizes as training did.

`Storage.stored` returns float32 vectors whose cosine is the stored form's similarity: the
dequantized int8 values, the float16 values, and for binary ±1 per bit, whose cosine is
1 - 2 h / d (h: differing bits), a monotone map of the share of equal bits, so every rank
(Spearman, a retrieval ranking) is that of Hamming distance. Equal distances must tie exactly
(binary similarities take d + 1 values): pairs are compared in float64
(`mrl.evaluation.metrics.pair_similarities`), an index holds ±1 codes (`Storage.searched`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mrl.common.errors import ConfigError

KINDS = ("float32", "float16", "int8", "binary")


def bytes_per_embedding(dim: int, kind: str) -> int:
    """Bytes of one stored dim-prefix: 4, 2 or 1 per dim, or one bit per dim rounded up."""
    return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "binary": math.ceil(dim / 8)}[kind]


def check_kinds(value, key: str = "storage") -> list[str]:
    """A storage kind or a list of them, checked: one line naming the bad one."""
    kinds = [value] if isinstance(value, str) else list(value or [])
    if not kinds:
        raise ConfigError(f"{key} is empty; give one or more of {', '.join(KINDS)}.")
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"{key}: {kind!r} is not a storage kind; use {', '.join(KINDS)}.")
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"{key}={kinds} names a kind twice; give each once.")
    return kinds


class Calibration:
    """Per-dim ranges and medians of full-width embeddings of a calibration sample."""

    def __init__(self, sample: np.ndarray):
        if len(sample) < 2:
            raise ConfigError("the calibration sample needs at least 2 embeddings.")
        sample = np.asarray(sample, dtype=np.float32)
        self.low, self.high = sample.min(0), sample.max(0)
        self.median = np.median(sample, axis=0)

    @classmethod
    def from_qat(cls, saved: dict) -> Calibration:
        """The calibration a QAT run trained with (its qat_calibration.json: low, high and
        threshold per dim), so evaluation quantizes exactly as training did."""
        cal = cls.__new__(cls)
        cal.low, cal.high, cal.median = (
            np.asarray(saved[k], dtype=np.float32) for k in ("low", "high", "threshold")
        )
        return cal

    def reordered(self, order: np.ndarray) -> Calibration:
        """The calibration of the same embeddings with their coordinates in `order` (a random
        subset's draw): each dim keeps its own statistics."""
        cal = Calibration.__new__(Calibration)
        cal.low, cal.high, cal.median = self.low[order], self.high[order], self.median[order]
        return cal

    def int8(self, x: np.ndarray) -> np.ndarray:
        d = x.shape[1]
        low, span = self.low[:d], np.maximum(self.high[:d] - self.low[:d], 1e-12)
        return np.clip(np.round((x - low) / span * 255 - 128), -128, 127).astype(np.int8)

    def int8_dequantized(self, q: np.ndarray) -> np.ndarray:
        d = q.shape[1]
        span = np.maximum(self.high[:d] - self.low[:d], 1e-12)
        return (q.astype(np.float32) + 128) / 255 * span + self.low[:d]

    def binary(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > self.median[: x.shape[1]], axis=1)


def qat_calibration(model: str) -> Calibration | None:
    """A QAT-trained model's own calibration (run folder or export), else None."""
    from mrl.artifacts.models import saved_calibration

    saved = saved_calibration(model)
    return None if saved is None else Calibration.from_qat(saved)


@dataclass(frozen=True)
class Storage:
    """One storage kind and, for int8 / binary, its calibration."""

    kind: str
    calibration: Calibration | None = None

    def stored(self, prefix):
        """The prefix (rows x d, numpy or torch, not yet renormalised) as stored, as float32
        of the same type, whose cosine is the stored form's similarity (module docstring)."""
        if self.kind == "float32":
            return prefix
        is_torch = isinstance(prefix, torch.Tensor)
        x = prefix.detach().cpu().numpy() if is_torch else np.asarray(prefix)
        x = x.astype(np.float32)
        if self.kind == "float16":
            y = x.astype(np.float16).astype(np.float32)
        elif self.kind == "int8":
            y = self.calibration.int8_dequantized(self.calibration.int8(x))
        else:  # binary: above the calibrated median -> +1, else -1
            y = np.where(x > self.calibration.median[: x.shape[1]], 1.0, -1.0).astype(np.float32)
        return torch.from_numpy(y).to(prefix.device) if is_torch else y

    def searched(self, prefix: np.ndarray) -> np.ndarray:
        """The prefix (rows x d, numpy) as an inner-product index holds it: the stored values
        renormalised (cosine), binary codes as +-1 unnormalised (inner product d - 2h, exact in
        float32, so documents at equal Hamming distance tie and are ordered by id)."""
        y = np.ascontiguousarray(self.stored(prefix), dtype=np.float32)
        if self.kind == "binary":
            return y
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def reordered(self, order) -> Storage:
        """This storage for the embeddings' coordinates taken in `order` (random_subset)."""
        if self.calibration is None:
            return self
        return Storage(self.kind, self.calibration.reordered(np.asarray(order)))


def fit_storage(kinds: list[str], model, model_id: str, cfg, post) -> tuple[dict, dict]:
    """{kind: Storage} for eval.py's `storage` list, and what results.json keeps of the
    calibration. int8 and binary are calibrated on the embeddings of the first
    `storage_calibration` texts of transform_fit.data's first column (training texts; the
    post-hoc map applied, `post.calibration_inputs`); a QAT model without a map uses the
    calibration it trained with."""
    from mrl.data.sources import Source, load_source

    if not {"int8", "binary"} & set(kinds):
        return {kind: Storage(kind) for kind in kinds}, {}
    saved = qat_calibration(model_id) if post.name is None else None
    if saved is not None:
        record = {"calibration": "the model's QAT calibration (qat_calibration.json)"}
        return {kind: Storage(kind, saved) for kind in kinds}, record
    source = Source.from_config(cfg.transform_fit.data)
    column = load_source(source)[source.text_columns[0]]
    texts = list(column[: cfg.storage_calibration])
    if len(texts) < 2:
        raise ConfigError(
            f"storage: int8 and binary are calibrated on training texts, but "
            f"transform_fit.data ({source.local_file}) gives {len(texts)}; it needs 2 or more."
        )
    print(f"storage: calibrating int8 ranges and binary thresholds on {len(texts)} training texts")
    embeddings = model.encode(
        texts,
        batch_size=cfg.batch_size,
        convert_to_tensor=True,
        show_progress_bar=len(texts) >= 1000,
    ).float()
    cal = Calibration(post.calibration_inputs(embeddings).cpu().numpy())
    record = {"calibration": {"data": source.local_file, "hub_id": source.hub_id,
                              "column": source.text_columns[0], "texts": len(texts)}}  # fmt: skip
    return {kind: Storage(kind, cal) for kind in kinds}, record
