"""A MiniLM training step against this machine's physical limit: achieved model FLOP/s over the
measured fp32 matrix-multiply rate, and the share of computed tokens that is padding.

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \\
        python benchmarks/cpu_step_flops.py [--batch 32] [--steps 8] [--seq-len 128] [--out FILE]

1. The fp32 matmul rate: the best of several (n x n) @ (n x n) products (2 n^3 FLOPs each) at
   the threads torch uses: what the cores can do on the dense kernel training spends its time in.
2. `+exp=allnli_mrl model=minilm_l6` on the shared triplets, fp32, default chunking: per step
   the real tokens (attention mask) and the computed tokens (each encoder call pads its texts to
   the call's longest: the same length-sorted chunks the encoder forms). Model FLOPs per text of
   T tokens: 3 x (2 N T + 4 L H T^2) (N: parameters outside the embeddings, L layers, H width;
   forward once, backward twice), over real tokens (the model's work) and over computed tokens
   (the machine's work, padding included). A backbone that runs unpadded (`model.unpadded`,
   BERT-style: MiniLM by default) computes padding in attention only: its computed FLOPs
   count the 2 N T term on real tokens and the attention term on padded ones.
3. The bf16 matmul rate the same way (on a CPU without bf16 units, a 512^3 product: bf16 runs
   in software there), and the step's model FLOP/s against it: with `--precision bf16-mixed`
   the limit a bf16 step is measured against.
Prints the rates, their ratios to the matmul rates, and the padding share of the tokens the
per-token layers compute; run on idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def computed_lengths(lengths: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Each text's padded length as the encoder computes it (chunks of similar length)."""
    if chunk_size is None or len(lengths) <= chunk_size:
        return torch.full_like(lengths, int(lengths.max()))
    order = lengths.argsort(descending=True)
    padded = torch.empty_like(lengths)
    for chunk in order.split(chunk_size):
        padded[chunk] = lengths[chunk].max()
    return padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--model", default="minilm_l6", help="a conf/model/ name")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--override", nargs="*", default=[], help="more train.py overrides")
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    if not os.environ.get("MRL_DATA_DIR"):
        sys.exit("error: set MRL_DATA_DIR (e.g. ../shared/data) and MRL_MODEL_DIR.")
    import lightning as L
    from hydra import compose, initialize_config_dir

    from mrl.run.build import build_datamodule, build_module
    from mrl.run.precision import cpu_bf16_support

    peak = max(matmul_gflops() for _ in range(2))
    bf16_units = cpu_bf16_support()
    # without bf16 units a 2048^3 bf16 product takes about a minute: a smaller one says as much
    size, repeats = (2048, 5) if bf16_units else (512, 2)
    peak_bf16 = max(matmul_gflops(size, repeats, torch.bfloat16) for _ in range(2))
    overrides = ["+exp=allnli_mrl", f"model={a.model}", f"data.batch_size={a.batch}",
                 f"data.max_seq_length={a.seq_len}",
                 f"data.max_train_samples={a.batch * (a.steps + 2)}", *a.override]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    times, real, computed = [], [], []

    class StepTimer(L.Callback):
        def on_train_start(self, trainer, module):
            backbone = module.encoder.backbone
            emb = sum(p.numel() for n, p in backbone.named_parameters() if "embeddings" in n)
            self.n = sum(p.numel() for p in backbone.parameters()) - emb
            self.layers, self.hidden = (
                backbone.config.num_hidden_layers,
                backbone.config.hidden_size,
            )
            self.chunk = module.encoder.texts_per_call(torch.device("cpu"))
            self.unpadded = module.encoder.unpadded

        def flops(self, lengths: torch.Tensor, attended: torch.Tensor) -> float:
            t, a = lengths.double(), attended.double()
            return 3 * float((2 * self.n * t + 4 * self.layers * self.hidden * a**2).sum())

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            lengths = batch["attention_mask"].sum(1)
            padded = computed_lengths(lengths, self.chunk)
            per_token = lengths if self.unpadded else padded  # what the linear layers see
            real.append((int(lengths.sum()), self.flops(lengths, lengths)))
            computed.append((int(per_token.sum()), self.flops(per_token, padded)))
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            times.append(time.perf_counter() - self.start)

    L.seed_everything(0, verbose=False)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=a.precision, max_steps=a.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer := StepTimer()],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    timed = slice(a.warmup, None)
    seconds = sum(times[timed])
    model_rate = sum(f for _, f in real[timed]) / seconds / 1e9
    machine_rate = sum(f for _, f in computed[timed]) / seconds / 1e9
    padding = 1 - sum(t for t, _ in real[timed]) / sum(t for t, _ in computed[timed])
    result = {
        "threads": torch.get_num_threads(), "matmul_fp32_gflops": peak,
        "matmul_bf16_gflops": peak_bf16, "cpu_bf16_units": bf16_units or "none",
        "precision": a.precision, "overrides": " ".join(a.override) or "none",
        "model": a.model, "batch_triplets": a.batch, "seq_len": a.seq_len,
        "timed_steps": len(times[timed]), "median_step_s": statistics.median(times[timed]),
        "model_gflops_per_s": model_rate, "computed_gflops_per_s": machine_rate,
        "model_share_of_matmul_rate": model_rate / peak,
        "computed_share_of_matmul_rate": machine_rate / peak,
        "model_share_of_bf16_matmul_rate": model_rate / peak_bf16,
        "unpadded": timer.unpadded,
        "padding_share_of_tokens": padding,  # of the tokens the per-token layers compute
    }  # fmt: skip
    for key, value in result.items():
        print(f"{key:>30}: {value:.4g}" if isinstance(value, float) else f"{key:>30}: {value}")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
