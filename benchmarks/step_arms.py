"""What the side-by-side step benchmarks share (`bench_lookup.py`, `bench_unpadded.py`): a batch
of real-length texts, one timed MiniLM training step, and two arms timed in alternation."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

DIMS = [384, 256, 128, 64, 32]
WORDS = ["a", "man", "is", "playing", "a", "guitar", "on", "the", "stage", "while", "people",
         "watch", "him"]  # fmt: skip


def arguments(description: str):
    """The options both scripts take; parsed."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch", type=int, default=32, help="triplets per step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument(
        "--arch", help="instead of --backbone: random weights of an architecture of "
        "gpu_throughput.py's ARCHS (e.g. mpnet-base) with a word-level tokenizer",
    )  # fmt: skip
    a = parser.parse_args()
    a.name = f"{a.arch} (random weights)" if a.arch else a.backbone  # what the header says
    if a.arch:
        a.backbone = random_backbone(a.arch, batch_texts(a.batch))
    return a


def random_backbone(arch: str, texts: list[str]) -> str:
    """A folder holding a random-init `arch` and a tokenizer over the words of `texts`."""
    import atexit
    import shutil
    import tempfile

    from gpu_throughput import random_backbone as build

    folder = Path(tempfile.mkdtemp(prefix="mrl_step_arms_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    build(folder, arch, sorted({w for t in texts for w in t.split()}))
    return str(folder)


def batch_texts(n: int) -> list[str]:
    """The first n triplets' texts (anchor, positive, negative), or stand-ins of like length."""
    data = os.environ.get("MRL_DATA_DIR")
    path = Path(data or "") / "allnli" / "triplets-train.jsonl"
    if data and path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
        return [r[c] for c in ("anchor", "positive", "negative") for r in rows]
    return [" ".join(WORDS[: 4 + (7 * i) % 11] * (1 + i % 3)) for i in range(3 * n)]


def training_batch(backbone: str, n: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and mask of n triplets' texts (anchors, then positives, then negatives), right-padded."""
    from mrl.encoder.backbone import load_tokenizer

    tokens = load_tokenizer(backbone)(
        batch_texts(n), padding=True, truncation=True, max_length=seq_len, return_tensors="pt"
    )
    return tokens["input_ids"], tokens["attention_mask"]


def step_seconds(encoder, optimizer, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """One training step: encode, the Matryoshka MNRL loss at DIMS (those within the encoder's
    width; anchors against positives and negatives), backward, AdamW; its wall time."""
    from mrl.core.matryoshka import matryoshka_mnrl_loss

    n, dims = len(ids) // 3, [d for d in DIMS if d <= encoder.width] or [encoder.width]
    start = time.perf_counter()
    out = encoder(ids, mask)
    loss, _ = matryoshka_mnrl_loss(out[:n], out[n:], dims, [1.0] * len(dims))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def alternate(step: Callable[[bool], float], rounds: int, steps: int) -> dict[bool, list[float]]:
    """The step times of arm True and arm False: one warm-up step each, then `rounds` rounds of
    `steps` steps an arm, the order flipped every round."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for arm in (True, False):
        step(arm)
    for r in range(rounds):
        for arm in (True, False) if r % 2 == 0 else (False, True):
            times[arm] += [step(arm) for _ in range(steps)]
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def header(backbone: str, mask: torch.Tensor) -> str:
    """The first line both scripts print: what was timed, on how many threads."""
    n, real = len(mask) // 3, int(mask.sum())
    return f"{backbone} step, {n} triplets, {real} real tokens, {torch.get_num_threads()} threads"
