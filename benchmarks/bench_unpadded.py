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

import torch
from step_arms import alternate, arguments, header, median, step_seconds, training_batch


def main() -> None:
    a = arguments(__doc__.splitlines()[0])

    from mrl.encoder.encoder import Encoder

    encoder = Encoder(a.backbone, "mean", unpadded=True)
    ids, mask = training_batch(a.backbone, a.batch, a.seq_len)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-6)

    def step(unpadded: bool) -> float:
        encoder.unpadded = unpadded
        return step_seconds(encoder, optimizer, ids, mask)

    times = alternate(step, a.rounds, a.steps)
    unpadded, padded = median(times[True]), median(times[False])
    lengths = mask.sum(1).sort(descending=True).values
    chunk = encoder.texts_per_call(ids.device)
    computed = sum(int(c[0]) * len(c) for c in lengths.split(chunk))
    real = int(lengths.sum())
    print(header(a.name, mask))
    print(f"padded chunks of {chunk} compute {computed} tokens: {1 - real / computed:.1%} padding")
    print(f"chunked transformers forward: {padded:.3f} s/step (median of {len(times[False])})")
    print(f"unpadded forward:             {unpadded:.3f} s/step (median of {len(times[True])})")
    print(f"speed-up: {padded / unpadded:.3f}x")


if __name__ == "__main__":
    main()
