"""The unpadded forward against the chunked transformers forward: a training step, side by side
in one run.

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \\
        python benchmarks/bench_unpadded.py [--batch 32] [--seq-len 128] [--steps 4] [--rounds 3]

Both arms are the same encoder (MiniLM, mean pooling, 16 texts per chunk on CPU) and the same
batch of real texts (the shared triplets; synthetic sentences of like length without
$MRL_DATA_DIR): `model.unpadded=false` runs each length-grouped chunk through the transformers
forward, padded to its longest text (with one word-embedding lookup per step); `unpadded` (the
default for BERT-style backbones, `mrl.encoder.unpadded`) runs the per-token layers once on the
real tokens and attention per chunk. A step is the forward and backward of the Matryoshka MNRL
loss at 384..32 and an AdamW step; the arms alternate in each round. Prints each arm's median
step time, the ratio, and the padding share the chunks compute. Run it on idle cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_lookup import batch_texts


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

    encoder = Encoder(a.backbone, "mean", unpadded=True)
    tokenizer = load_tokenizer(a.backbone)
    texts = batch_texts(a.batch)
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=a.seq_len,
                       return_tensors="pt")  # fmt: skip
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-6)
    dims, n = [384, 256, 128, 64, 32], a.batch

    def step(unpadded: bool) -> float:
        encoder.unpadded = unpadded
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
    unpadded, padded = statistics.median(times[True]), statistics.median(times[False])
    lengths = mask.sum(1).sort(descending=True).values
    chunk = encoder.texts_per_call(ids.device)
    computed = sum(int(c[0]) * len(c) for c in lengths.split(chunk))
    real = int(lengths.sum())
    print(f"{a.backbone} step, {n} triplets, {real} real tokens, {torch.get_num_threads()} threads")
    print(f"padded chunks of {chunk} compute {computed} tokens: {1 - real / computed:.1%} padding")
    print(f"chunked transformers forward: {padded:.3f} s/step (median of {len(times[False])})")
    print(f"unpadded forward:             {unpadded:.3f} s/step (median of {len(times[True])})")
    print(f"speed-up: {padded / unpadded:.3f}x")


if __name__ == "__main__":
    main()
