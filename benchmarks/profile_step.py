"""Where a CPU training step spends its time: `torch.profiler` over a few `+exp=allnli_mrl` steps
of MiniLM, summarised by op (self CPU time) and by kind of work.

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \\
        python benchmarks/profile_step.py [--precision 32-true|bf16-mixed] [--batch 32] \\
        [--seq-len 128] [--steps 4] [--override model.compile=true ...] [--out FILE.md]

The first step is not profiled (warm-up). Prints (and with --out writes as markdown) the top ops
by self CPU time and the shares of matrix multiplies, attention, normalisation / activations /
dropout, elementwise work, the optimizer and everything else: what is worth optimising,
measured rather than guessed. Run on idle cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# op name fragments -> kind of work (first match wins; names are aten ops' and mkldnn's)
KINDS = [
    ("matrix multiplies", ("addmm", "::mm", "bmm", "matmul", "linear", "mkldnn_")),
    ("attention", ("attention", "softmax", "_flash")),
    ("normalisation, activations, dropout", ("layer_norm", "gelu", "tanh", "dropout", "bernoulli")),
    ("optimizer", ("Optimizer", "_foreach", "adamw", "lerp", "addcdiv", "addcmul")),
    ("copies, casts, layout", ("copy_", "to_copy", "contiguous", "clone", "cat", "index")),
    ("elementwise", ("add", "mul", "div", "sub", "sum", "mean", "where", "fill_", "sqrt")),
]


def kind_of(name: str) -> str:
    for kind, fragments in KINDS:
        if any(f in name for f in fragments):
            return kind
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--override", nargs="*", default=[], help="more train.py overrides")
    parser.add_argument("--model", default="minilm_l6", help="a conf/model/ name")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    if not os.environ.get("MRL_DATA_DIR"):
        sys.exit("error: set MRL_DATA_DIR (e.g. ../shared/data) and MRL_MODEL_DIR.")
    import lightning as L
    from hydra import compose, initialize_config_dir
    from torch.profiler import ProfilerActivity, profile

    from mrl.run.build import build_datamodule, build_module

    overrides = ["+exp=allnli_mrl", f"model={a.model}", f"data.batch_size={a.batch}",
                 f"data.max_seq_length={a.seq_len}",
                 f"data.max_train_samples={a.batch * (a.steps + 3)}", *a.override]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    prof = profile(activities=[ProfilerActivity.CPU])

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 1:
                prof.__enter__()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == a.steps:
                prof.__exit__(None, None, None)

    L.seed_everything(0, verbose=False)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=a.precision, max_steps=a.steps + 1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Window()],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)

    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "mkldnn", "Optim"))]
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = {}
    for e in events:
        by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + e.self_cpu_time_total
    steps = a.steps
    lines = [
        f"Profile: model={a.model} `+exp=allnli_mrl`, batch {a.batch} triplets, "
        f"{a.seq_len} tokens, {a.precision}, {torch.get_num_threads()} threads, {steps} steps "
        "after 1 warm-up; "
        f"overrides: {' '.join(a.override) or 'none'}. Self CPU time of aten ops: "
        f"{total / 1e6 / steps:.3f} s per step.",
        "",
        "| kind of work | s per step | share |",
        "| --- | --- | --- |",
    ]
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {t / 1e6 / steps:.3f} | {t / total:.1%} |")
    lines += ["", f"Top {a.top} ops by self CPU time:", "", "| op | calls per step | s per step "
              "| share |", "| --- | --- | --- | --- |"]  # fmt: skip
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.top]:
        lines.append(
            f"| `{e.key}` | {e.count / steps:.0f} | {e.self_cpu_time_total / 1e6 / steps:.3f} "
            f"| {e.self_cpu_time_total / total:.1%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
