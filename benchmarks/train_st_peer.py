"""Train the peer: sentence-transformers' own trainer on our training setup, for a study table.

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \\
        python benchmarks/train_st_peer.py --loss matryoshka --out outputs/st_peer/matryoshka-s42

`--loss matryoshka` is `MatryoshkaLoss(MultipleNegativesRankingLoss)` at MiniLM's schedule
(384/256/128/64/32, weight 1 each, like `+exp=allnli_mrl`); `--loss mnrl` is the plain loss
(like `+exp=allnli_baseline`); `--loss matryoshka2d` is `Matryoshka2dLoss(MNRL)` with its
defaults (per step the last layer and one random shallower layer, one random dim, KL alignment
to the last layer) at the same dims, the peer of our 2D runs. Same backbone
(all-MiniLM-L6-v2), the first `--triplets` rows of the shared NLI triplets in file order (our
`data.max_train_samples`), batch, sequence length, 1 epoch, lr, 10 % linear warm-up, weight
decay 0.01, no-duplicate batches, fp32 on the CPU. The saved folder is a plain
sentence-transformers model: score it with
`python eval.py model=FOLDER` like any other. Writes `peer.json` (the settings and the time)
into it; a folder that already holds a model is refused (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DIMS = [384, 256, 128, 64, 32]


def train(loss_name: str, triplets: int, batch: int, seq_len: int, lr: float, seed: int, out: Path):
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers

    from mrl.data.sources import Source, load_source
    from mrl.encoder.backbone import resolve_backbone

    backbone = "sentence-transformers/all-MiniLM-L6-v2"
    source = Source(
        hub_id="sentence-transformers/all-nli",
        hub_subset="triplet",
        hub_split="train",
        revision="6de3c20ba0e589d3b5bb9b74bb4c2769fae9864f",
        local_file="allnli/triplets-train.jsonl",
        columns=("anchor", "positive", "negative"),
    )
    rows = load_source(source)
    rows = rows.select(range(min(triplets, len(rows))))
    train_set = datasets.Dataset.from_dict({c: rows[c] for c in ("anchor", "positive", "negative")})
    model = SentenceTransformer(resolve_backbone(backbone), device="cpu")
    model.max_seq_length = seq_len
    base = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    if loss_name == "matryoshka":
        loss = losses.MatryoshkaLoss(model, base, DIMS)
    elif loss_name == "matryoshka2d":
        loss = losses.Matryoshka2dLoss(model, base, DIMS)
    else:
        loss = base
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=1,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        warmup_ratio=0.1,
        weight_decay=0.01,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        use_cpu=True,
        seed=seed,
        dataloader_drop_last=True,
    )
    start = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train_set, loss=loss).train()
    seconds = time.perf_counter() - start
    model.save(str(out))
    settings = {
        "loss": loss_name, "dims": [384] if loss_name == "mnrl" else DIMS,
        "backbone": backbone, "triplets": len(train_set), "batch": batch,
        "max_seq_length": seq_len, "lr": lr, "seed": seed, "train_seconds": round(seconds, 1),
    }  # fmt: skip
    (out / "peer.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(f"trained {loss_name} in {seconds:.0f} s -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=["matryoshka", "matryoshka2d", "mnrl"], required=True)
    parser.add_argument("--triplets", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    if (a.out / "config_sentence_transformers.json").exists():
        print(f"error: {a.out} already holds a model; give another --out.", file=sys.stderr)
        raise SystemExit(2)
    train(a.loss, a.triplets, a.batch, a.seq_len, a.lr, a.seed, a.out)


if __name__ == "__main__":
    main()
