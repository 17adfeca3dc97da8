"""One word-embedding lookup per training step against one per chunk, side by side in one run.

    MRL_MODEL_DIR=../shared/models python benchmarks/bench_lookup.py [--batch 32] [--seq-len 128]

The encoder splits a batch into length-grouped chunks (16 texts a call on CPU). Each chunk that
looks up its own ids gives the word-embedding table its own dense gradient (vocabulary x hidden,
zero-filled, then summed into the others): six times a step for 32 triplets. Since 2026-12-07
the chunks share one lookup (`Encoder._shared_lookup`). This times a MiniLM training step
(encoder forward and backward of the Matryoshka MNRL loss at 384..32, AdamW step) both ways on
the same model and batch of real-length texts (the shared triplets when $MRL_DATA_DIR is set,
else synthetic sentences of the same lengths), alternating the two in each round, and prints
each one's median step time and the ratio. Run it on idle cores. (It times the transformers
forward in chunks; BERT-style backbones now run unpadded by default: bench_unpadded.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch


def batch_texts(n: int) -> list[str]:
    """The first n triplets' texts (anchor, positive, negative), or stand-ins of like length."""
    data = os.environ.get("MRL_DATA_DIR")
    path = Path(data or "") / "allnli" / "triplets-train.jsonl"
    if data and path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
        return [r[c] for c in ("anchor", "positive", "negative") for r in rows]
    words = [
        "a",
        "man",
        "is",
        "playing",
        "a",
        "guitar",
        "on",
        "the",
        "stage",
        "while",
        "people",
        "watch",
        "him",
    ]
    return [" ".join(words[: 4 + (7 * i) % 11] * (1 + i % 3)) for i in range(3 * n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="triplets per step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    a = parser.parse_args()

    from mrl.core.matryoshka import matryoshka_mnrl_loss
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    encoder = Encoder(a.backbone, "mean", unpadded=False)  # the chunked transformers forward
    tokenizer = load_tokenizer(a.backbone)
    texts = batch_texts(a.batch)
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=a.seq_len,
                       return_tensors="pt")  # fmt: skip
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-6)
    dims, n = [384, 256, 128, 64, 32], a.batch
    shared = encoder._shared_lookup

    def step(one_lookup: bool) -> float:
        encoder._shared_lookup = shared if one_lookup else (lambda _ids: None)
        start = time.perf_counter()
        out = encoder(ids, mask)
        loss, _ = matryoshka_mnrl_loss(out[:n], out[n:], dims, [1.0] * len(dims))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {True: [], False: []}
    for arm in (True, False):
        step(arm)  # warm-up
    for r in range(a.rounds):
        for arm in (True, False) if r % 2 == 0 else (False, True):
            times[arm] += [step(arm) for _ in range(a.steps)]
    one, per_chunk = statistics.median(times[True]), statistics.median(times[False])
    real = int(mask.sum())
    print(f"{a.backbone} step, {n} triplets, {real} real tokens, {torch.get_num_threads()} threads")
    print(f"one lookup per chunk: {per_chunk:.3f} s/step (median of {len(times[False])})")
    print(f"one lookup per step:  {one:.3f} s/step (median of {len(times[True])})")
    print(f"speed-up: {per_chunk / one:.3f}x")


if __name__ == "__main__":
    main()
