"""Peak memory and step time of one training step with gradient checkpointing and LoRA (issue 28).

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \\
        python benchmarks/bench_backbones.py --batch 64 --seq-len 128 --steps 4

Each variant (full fine-tuning, + gradient checkpointing, LoRA r=16 on every linear layer,
LoRA + checkpointing) runs in a fresh process, so its peak resident memory (`ru_maxrss`) is its
own: the encoder (all-MiniLM-L6-v2 by default), AdamW over what trains, and MRL steps
(MNRL at 384/256/128/64/32) on the first `--batch` shared triplets. Printed: peak RSS, the
part of it above the RSS after loading (activations, gradients, optimizer state), the median
step time over the steps after the first, and each against full fine-tuning. Run it alone:
the times are only comparable on idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "full fine-tuning": {},
    "full + gradient checkpointing": {"gradient_checkpointing": True},
    "LoRA r=16 (all linear)": {"lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"}},
    "LoRA r=16 + gradient checkpointing": {
        "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "gradient_checkpointing": True,
    },
}


def rss_mib() -> float:
    """The process's resident memory now (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_variant(args, options: dict) -> dict:
    """Runs in the child: load, then `args.steps` steps; returns the measurements."""
    import torch

    from mrl.core.matryoshka import matryoshka_mnrl_loss
    from mrl.data.sources import Source, load_source
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder(args.backbone, **options)
    encoder.train()
    tokenizer = load_tokenizer(args.backbone)
    tokenizer.padding_side = "right"
    source = Source(hub_id="-", hub_split="train", local_file="allnli/triplets-train.jsonl",
                    columns=["anchor", "positive", "negative"])  # fmt: skip
    rows = load_source(source).select(range(args.batch))
    texts = list(rows["anchor"]) + list(rows["positive"]) + list(rows["negative"])
    batch = tokenizer(texts, padding=True, truncation=True, max_length=args.seq_len,
                      return_tensors="pt")  # fmt: skip
    trained = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-5)
    loaded = rss_mib()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        emb = encoder(batch["input_ids"], batch["attention_mask"])
        n = args.batch
        loss, _ = matryoshka_mnrl_loss(emb[:n], emb[n:], [384, 256, 128, 64, 32], [1.0] * 5, 20.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "peak_mib": peak, "after_load_mib": loaded, "step_s": statistics.median(times[1:]),
        "trained_params": sum(p.numel() for p in trained),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch", type=int, default=64, help="triplets per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per text (at most)")
    parser.add_argument("--steps", type=int, default=4, help="steps per variant (first untimed)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_variant(args, VARIANTS[args.variant])))
        return
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    print(f"{args.backbone}, {args.batch} triplets x {args.seq_len} tokens, {args.steps} steps, "
          f"{os.environ.get('OMP_NUM_THREADS', 'all')} threads")  # fmt: skip
    rows = {}
    for name in VARIANTS:
        child = [sys.executable, __file__, "--variant", name, "--backbone", args.backbone,
                 "--batch", str(args.batch), "--seq-len", str(args.seq_len),
                 "--steps", str(args.steps)]  # fmt: skip
        out = subprocess.run(child, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"error: {name} failed: {out.stderr.strip().splitlines()[-1]}")
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = rows["full fine-tuning"]
    print("| variant | trained params | peak RSS | above load | vs full | step | vs full |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        above = r["peak_mib"] - r["after_load_mib"]
        base_above = base["peak_mib"] - base["after_load_mib"]
        print(f"| {name} | {r['trained_params']:,} | {r['peak_mib']:.0f} MiB | {above:.0f} MiB "
              f"| {above / base_above:.2f}x | {r['step_s']:.2f} s "
              f"| {r['step_s'] / base['step_s']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
