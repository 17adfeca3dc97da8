"""The column-stacked batch layout: every text of a batch in one tensor, column after column.

Row i of column k sits at index k * n_rows + i, so one encoder pass serves all columns, and
the embeddings split back into columns by position. The collate function, the losses and the
LightningModule all go through these functions rather than through the index arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def collate_texts(rows: list[dict], text_columns: Sequence[str], pad_id: int) -> dict:
    """Stacks every text of the batch into one padded tensor, column after column.

    Row i of column k sits at index k * n_rows + i, so a single encoder pass serves all
    columns (the first n_rows are the anchors); `scores` is present for STS pairs.
    """
    seqs = [row[f"{col}_ids"] for col in text_columns for row in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, : len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "n_rows": len(rows)}
    if "score" in rows[0]:
        batch["scores"] = torch.tensor([row["score"] for row in rows], dtype=torch.float32)
    return batch


def split_columns(embeddings: torch.Tensor, n_rows: int) -> list[torch.Tensor]:
    """One rank's stacked embeddings (columns x n_rows, dim) -> one tensor per column."""
    return list(embeddings.split(n_rows))


def global_columns(gathered: torch.Tensor, n_rows: int) -> list[torch.Tensor]:
    """Every rank's stacked embeddings (world x (columns x n_rows) x dim) -> one tensor per
    column holding the rows of all ranks in rank order (world x n_rows, dim)."""
    world, rows, dim = gathered.shape
    return [
        gathered[:, c * n_rows : (c + 1) * n_rows].reshape(world * n_rows, dim)
        for c in range(rows // n_rows)
    ]
