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

import torch
from step_arms import alternate, arguments, header, median, step_seconds, training_batch


def main() -> None:
    a = arguments(__doc__.splitlines()[0])

    from mrl.encoder.encoder import Encoder

    encoder = Encoder(a.backbone, "mean", unpadded=False)  # the chunked transformers forward
    ids, mask = training_batch(a.backbone, a.batch, a.seq_len)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-6)
    shared = encoder._shared_lookup

    def step(one_lookup: bool) -> float:
        encoder._shared_lookup = shared if one_lookup else (lambda _ids: None)
        return step_seconds(encoder, optimizer, ids, mask)

    times = alternate(step, a.rounds, a.steps)
    one, per_chunk = median(times[True]), median(times[False])
    print(header(a.name, mask))
    print(f"one lookup per chunk: {per_chunk:.3f} s/step (median of {len(times[False])})")
    print(f"one lookup per step:  {one:.3f} s/step (median of {len(times[True])})")
    print(f"speed-up: {per_chunk / one:.3f}x")


if __name__ == "__main__":
    main()
