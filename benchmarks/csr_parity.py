"""CSR parity: our `eval.py transform=csr` against sentence-transformers' own CSR, same setup.

    python benchmarks/csr_parity.py --seeds 0 1 --out outputs/csr_parity        # full size
    python benchmarks/csr_parity.py --rows 64 --k 8 --epochs 1 --seeds 0 \\
        --stsb-pairs 100 --out /tmp/csr_tiny                                      # a smoke run

Both sides put a top-k sparse autoencoder (latent = `--latent-mult` x 384, tied weights,
k_aux 512) on the FROZEN all-MiniLM-L6-v2 and train it with CSR's objective (reconstruction at
k and 4k, the auxiliary dead-latent term at weight 0.1, InfoNCE on the codes: dot product,
scale 1, in-batch and hard negatives) on the first `--rows` shared NLI triplets, one model per
k and seed, AdamW at a constant `--lr` with weight decay 0.01, no gradient clipping, `--epochs`
passes of `--batch` rows:

- theirs: `SparseEncoder(MiniLM's own modules + SparseAutoEncoder)` with `CSRLoss` and
  `SparseEncoderTrainer`, the transformer's weights frozen and its dropout set to 0 (so each step
  sees exactly the embeddings a frozen model gives; trained as it is it would see dropout noise);
- ours: `python eval.py model=MiniLM benchmarks=stsb transform=csr transform_fit.k=[k]
  transform_fit.seed=s ...` (the embeddings cached once, `mrl.evaluation.csr`).

Both are scored the same way: STS-B test Spearman of the cosine of the k-sparse codes
(`--stsb-pairs`: only the first N pairs, for a smoke run). Printed as a table (k x seed, ours
and theirs, and the mean difference) and written to `<out>/parity.json`. Offline: it reads
`--model` and `--data-dir` (default `../shared`), sets HF_HUB_OFFLINE, and no Hub is needed.
What differs by design (batch order, the dead-latent bookkeeping) is in docs/comparators.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_rows(path: Path, n: int | None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows if n is None else rows[:n]


def spearman_of_codes(left, right, gold) -> float:
    """STS Spearman of the cosine of two sets of codes (rows), our metric code."""
    import torch

    from mrl.evaluation.metrics import pair_similarities, spearman_of_similarities

    left, right = torch.as_tensor(left).float(), torch.as_tensor(right).float()
    width = left.shape[1]
    return spearman_of_similarities(pair_similarities(left, right, [width]), gold)[width]


def train_theirs(a, k: int, seed: int, out: Path) -> float:
    """sentence-transformers' SparseEncoder + CSRLoss at `k`, `seed`; its STS-B Spearman."""
    import datasets
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sparse_encoder import (
        SparseEncoder,
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
    )
    from sentence_transformers.sparse_encoder.losses import CSRLoss
    from sentence_transformers.sparse_encoder.modules.sparse_auto_encoder import (
        SparseAutoEncoder,
    )

    from mrl.evaluation.csr import AUX_WEIGHT, K_AUX

    frozen = SentenceTransformer(str(a.model), device="cpu")
    width = frozen.get_embedding_dimension()
    for module in frozen.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    torch.manual_seed(seed)
    latent = a.latent_mult * width
    sae = SparseAutoEncoder(width, hidden_dim=latent, k=k, k_aux=min(K_AUX, latent))
    model = SparseEncoder(modules=[*frozen, sae], device="cpu")
    rows = first_rows(a.data_dir / "allnli" / "triplets-train.jsonl", a.rows)
    train_set = datasets.Dataset.from_dict(
        {c: [r[c] for r in rows] for c in ("anchor", "positive", "negative")}
    )
    args = SparseEncoderTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=a.epochs,
        per_device_train_batch_size=a.batch,
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        weight_decay=0.01,  # torch.optim.AdamW's default, which ours uses
        max_grad_norm=0.0,  # no clipping, as ours
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        use_cpu=True,
        seed=seed,
    )
    loss = CSRLoss(model, beta=AUX_WEIGHT, gamma=1.0)
    SparseEncoderTrainer(model=model, args=args, train_dataset=train_set, loss=loss).train()
    pairs = first_rows(a.data_dir / "stsb" / "test.jsonl", a.stsb_pairs)
    model.eval()
    sides = [
        model.encode(
            [p[c] for p in pairs],
            batch_size=128,
            convert_to_tensor=True,
            convert_to_sparse_tensor=False,
            max_active_dims=k,
        )  # fmt: skip
        for c in ("sentence1", "sentence2")
    ]
    return spearman_of_codes(*sides, [p["score"] for p in pairs])


def run_ours(a, ks: list[int], seed: int, out: Path) -> dict[int, float]:
    """eval.py transform=csr at every k for `seed`; k -> STS-B Spearman."""
    benchmark = "benchmarks=stsb"
    if a.stsb_pairs is not None:  # the first N pairs as a local file of their own
        subset = out / "data" / "stsb" / "test.jsonl"
        subset.parent.mkdir(parents=True, exist_ok=True)
        pairs = first_rows(a.data_dir / "stsb" / "test.jsonl", a.stsb_pairs)
        subset.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        benchmark = f"benchmarks.stsb.local_file={subset}"
    run_dir = out / "ours" / f"seed{seed}"
    command = [
        sys.executable, str(ROOT / "eval.py"), f"model={a.model}", "benchmarks=stsb", benchmark,
        "transform=csr", f"transform_fit.k=[{','.join(map(str, ks))}]",
        f"transform_fit.max_samples={a.rows}", f"transform_fit.epochs={a.epochs}",
        f"transform_fit.lr={a.lr}", f"transform_fit.batch_size={a.batch}",
        f"transform_fit.seed={seed}", f"transform_fit.latent_mult={a.latent_mult}",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "MRL_DATA_DIR": str(a.data_dir), "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    results = json.loads((run_dir / "results.json").read_text())
    return {int(k): v for k, v in results["test"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = ROOT.parent / "shared"
    parser.add_argument("--model", type=Path, default=shared / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", type=Path, default=shared / "data")
    parser.add_argument("--rows", type=int, default=4000, help="first N training triplets")
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--latent-mult", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--stsb-pairs", type=int, default=None, help="first N test pairs only")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip-theirs", action="store_true")
    a = parser.parse_args()
    from mrl.evaluation.csr import code_bytes

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_DISABLED", "true")
    a.model, a.data_dir, a.out = a.model.resolve(), a.data_dir.resolve(), a.out.resolve()
    ks = sorted(set(a.k), reverse=True)
    table: dict[str, dict] = {"ours": {}, "theirs": {}}
    for seed in a.seeds:
        table["ours"][seed] = run_ours(a, ks, seed, a.out)
        if not a.skip_theirs:
            table["theirs"][seed] = {
                k: train_theirs(a, k, seed, a.out / "theirs" / f"k{k}-seed{seed}") for k in ks
            }
    lines = ["| k | bytes | " + " | ".join(
        f"{side} s{s}" for side in table if table[side] for s in a.seeds
    ) + " | mean ours - theirs |", ""]  # fmt: skip
    lines[1] = "|" + " --- |" * (lines[0].count("|") - 1)
    for k in ks:
        cells = [f"{table[side][s][k]:.4f}" for side in table if table[side] for s in a.seeds]
        diff = "n/a"
        if table["theirs"]:
            diff = sum(table["ours"][s][k] - table["theirs"][s][k] for s in a.seeds)
            diff = f"{diff / len(a.seeds):+.4f}"
        size = code_bytes(k, a.latent_mult * 384)
        lines.append(f"| {k} | {size} | " + " | ".join(cells) + f" | {diff} |")
    settings = {key: str(v) if isinstance(v, Path) else v for key, v in vars(a).items()}
    record = {"settings": settings, "spearman": table}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "parity.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\nSTS-B test Spearman (cosine of the k-sparse codes):\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
