"""Retrieval as a validation signal during training: a (small) BEIR set scored at every eval
dim at each validation, logged as `val/<set>/ndcg@10@<dim>` (and MRR@10, recall@100, MAP@100).

Configured by `eval.retrieval` (e.g. `eval=stsb_scifact`); the set is read through the same
validated loader as `eval.py benchmarks=...` (`mrl.data.beir`), cut to `max_queries` queries and at
most `max_docs` documents (the relevant ones of those queries first), tokenized once, and encoded
with the model being trained. Every rank computes the same numbers (simple, and the sets are
small); the encoder is in eval mode, as for the STS validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from tqdm.auto import tqdm

from mrl.core.batch import collate_texts
from mrl.data.beir import BeirSet, BeirSource, load_beir
from mrl.evaluation.retrieval import retrieval_by_dim


def bounded(data: BeirSet, max_queries: int | None, max_docs: int | None) -> BeirSet:
    """The first `max_queries` queries (file order) and at most `max_docs` documents: every
    document relevant to a kept query, then the others in file order. Deterministic, so every
    validation (and every rank) scores the same set."""
    keep_q = [q for q in data.query_ids if data.relevant.get(q)][: max_queries or None]
    relevant = {q: data.relevant[q] for q in keep_q}
    needed = set().union(*relevant.values()) if relevant else set()
    budget = max(0, (max_docs or len(data.corpus_ids)) - len(needed))
    docs, extra = [], 0
    for doc_id, text in zip(data.corpus_ids, data.corpus, strict=True):
        if doc_id in needed:
            docs.append((doc_id, text))
        elif extra < budget:
            docs.append((doc_id, text))
            extra += 1
    texts = dict(zip(data.query_ids, data.queries, strict=True))
    return BeirSet(
        corpus_ids=[d for d, _ in docs],
        corpus=[t for _, t in docs],
        query_ids=keep_q,
        queries=[texts[q] for q in keep_q],
        relevant=relevant,
    )


@dataclass
class TokenizedSet:
    data: BeirSet
    queries: list[list[int]]
    docs: list[list[int]]


class RetrievalValidation(L.Callback):
    """Scores each configured BEIR set at every eval dim after each validation epoch."""

    def __init__(
        self,
        sets: dict[str, dict],
        max_queries: int | None = 100,
        max_docs: int | None = 2000,
        batch_size: int = 128,
    ):
        self.sources = {name: BeirSource.from_config(cfg, name) for name, cfg in sets.items()}
        self.max_queries, self.max_docs, self.batch_size = max_queries, max_docs, batch_size
        self.sets: dict[str, TokenizedSet] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.sets:
            return
        datamodule = trainer.datamodule
        datamodule.setup(stage)
        tokenizer, max_len = datamodule.tokenizer, datamodule.hparams.max_seq_length
        for name, source in self.sources.items():
            data = bounded(load_beir(source), self.max_queries, self.max_docs)
            ids = [
                tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
                for texts in (data.queries, data.corpus)
            ]
            self.sets[name] = TokenizedSet(data, *ids)
        self.pad_id = tokenizer.pad_token_id

    def _encode(self, pl_module, token_ids: list[list[int]], what: str) -> np.ndarray:
        rows = [{"text_ids": ids} for ids in token_ids]
        chunks = range(0, len(rows), self.batch_size)
        pieces = []
        for start in tqdm(chunks, desc=what, disable=len(rows) < 2000, leave=False):
            batch = collate_texts(rows[start : start + self.batch_size], ["text"], self.pad_id)
            ids = batch["input_ids"].to(pl_module.device)
            mask = batch["attention_mask"].to(pl_module.device)
            pieces.append(pl_module.encoder(ids, mask).float().cpu())
        return torch.cat(pieces).numpy()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, tokenized in self.sets.items():
            with torch.no_grad():
                queries = self._encode(pl_module, tokenized.queries, f"{name} queries")
                docs = self._encode(pl_module, tokenized.docs, f"{name} documents")
            scores = retrieval_by_dim(queries, docs, tokenized.data, pl_module.eval_dims)
            for metric, by_dim in scores.items():
                for dim, value in by_dim.items():
                    pl_module.log(f"val/{name}/{metric}@{dim}", value, sync_dist=True)
