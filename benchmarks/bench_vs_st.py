"""Side-by-side benchmark: our training/evaluation against sentence-transformers, in one run.

Usage (offline, from the repository root; needs `pip install -e ".[bench]"`):

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \
        python benchmarks/bench_vs_st.py --part all

Parts (each prints its ratio; `all` runs them in this order):
  train     training samples/s, ours / sentence-transformers' SentenceTransformerTrainer with
            MatryoshkaLoss(MultipleNegativesRankingLoss): same backbone, triplets, batch size,
            sequence length, dims and no-duplicates batches; rounds alternate ours/theirs; in
            fp32 and in bf16 (ours: precision bf16-mixed; theirs: bf16=True, CPU autocast),
            each ratio and ours-best / theirs-best. bf16 only on a CPU with bf16 units.
  overhead  our MRL step / our plain (baseline) step, alternating rounds.
  chunks    our step with 64 texts per encoder call / with the default `model.chunk_size=auto`
            (16 on CPU), alternating rounds: what grouping texts by length in small chunks buys.
  compile   our step with `model.compile=true` (torch.compile, inductor) / the plain step,
            alternating (use --warmup 3: compilation happens in each round's first steps).
  eval      STS-B test at 5 dims: ours (encode once, Spearman per dim) vs theirs
            (one EmbeddingSimilarityEvaluator with truncate_dim per dim), alternating.
  2d        our 2D Matryoshka step (configured like sentence-transformers' Matryoshka2dLoss
            defaults: last layer + 1 random layer, 1 random dim, KL alignment 1) against
            Matryoshka2dLoss itself, alternating; then our step with every (layer, dim) pair
            against our plain MRL step (the 2D overhead).
  memory    peak resident memory during training (sampled every 5 ms) of cached mode at batch
            1024 vs plain mode at batch 64, each in a fresh process (2 steps), total and above
            the memory when training starts (model loaded, data tokenized).

Step times exclude the first `--warmup` steps of each round (start-up, allocator warm-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIMS = [384, 256, 128, 64, 32]
RSS_AT_TRAIN_START: list[float] = []


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=["+exp=allnli_mrl", "model=minilm_l6", *overrides])


# ------------------------------------------------------------------ ours


def our_step_times(
    batch: int, steps: int, seq_len: int, overrides: list[str], precision: str = "32-true"
) -> list[float]:
    import lightning as L

    from mrl.run.build import build_datamodule, build_module

    cfg = compose(
        [
            f"data.batch_size={batch}",
            f"data.max_seq_length={seq_len}",
            f"data.max_train_samples={batch * (steps + 2)}",
            *overrides,
        ]
    )
    times: list[float] = []

    class StepTimer(L.Callback):
        def on_train_start(self, *args):
            RSS_AT_TRAIN_START.append(_current_rss_mb())  # model loaded, data tokenized

        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            times.append(time.perf_counter() - self.start)

    L.seed_everything(0, verbose=False)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[StepTimer()],
    )
    trainer.fit(module, datamodule=datamodule)
    return times


def our_eval_seconds(eval_batch: int) -> tuple[float, dict[int, float]]:
    """Wall time of `trainer.validate` on STS-B test (tokenized once in setup, not timed)."""
    import lightning as L

    from mrl.run.build import build_datamodule, build_module

    cfg = compose([f"eval.batch_size={eval_batch}"])
    cfg.eval.validation = cfg.eval.test  # score STS-B test in the validation loop
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    start = time.perf_counter()
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return time.perf_counter() - start, module.eval_results["val"]


# ------------------------------------------------------------------ sentence-transformers


def _st_model(seq_len: int):
    from sentence_transformers import SentenceTransformer

    from mrl.encoder.backbone import resolve_backbone

    model = SentenceTransformer(
        resolve_backbone("sentence-transformers/all-MiniLM-L6-v2"), device="cpu"
    )
    model.max_seq_length = seq_len
    return model


def st_step_times(
    batch: int, steps: int, seq_len: int, two_d: bool = False, bf16: bool = False
) -> list[float]:
    import datasets
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    from mrl.data.sources import Source, load_source

    cfg = compose([])
    train = load_source(Source.from_config(cfg.data.train)).select(range(batch * (steps + 2)))
    train = datasets.Dataset.from_dict({c: train[c] for c in ("anchor", "positive", "negative")})
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            times.append(time.perf_counter() - self.start)

    model = _st_model(seq_len)
    if two_d:  # its defaults: the last layer + 1 random earlier one, 1 random dim, KL weight 1
        loss = losses.Matryoshka2dLoss(model, losses.MultipleNegativesRankingLoss(model), DIMS)
    else:
        loss = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), DIMS)
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=2e-5,
            warmup_ratio=0.1,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            report_to="none",
            logging_steps=10_000,
            use_cpu=True,
            bf16=bf16,  # on the CPU: torch.autocast("cpu", bfloat16) around the forward
            seed=0,
            disable_tqdm=True,
            dataloader_drop_last=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train, loss=loss, callbacks=[StepTimer()]
        )
        trainer.train()
    return times


def st_eval_seconds(eval_batch: int) -> tuple[float, dict[int, float]]:
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from mrl.data.sources import Source, load_source

    test = load_source(Source.from_config(compose([]).eval.test))
    model = _st_model(128)
    start = time.perf_counter()
    scores = {}
    for dim in DIMS:
        evaluator = EmbeddingSimilarityEvaluator(
            test["sentence1"],
            test["sentence2"],
            test["score"],
            batch_size=2 * eval_batch,
            name=f"sts-test-{dim}",
            truncate_dim=dim,
            write_csv=False,
            similarity_fn_names=["cosine"],
        )
        result = evaluator(model)
        scores[dim] = result[f"sts-test-{dim}_spearman_cosine"]
    return time.perf_counter() - start, scores


# ------------------------------------------------------------------ parts


def steady(times: list[float], warmup: int) -> list[float]:
    return times[warmup:]


def alternate(a, label_a: str, steps_a, label_b: str, steps_b) -> tuple[float, float, int]:
    """`a.rounds` rounds of `steps_a()` then `steps_b()` (each a fresh training run returning
    its step times), printing running medians; returns both medians over the timed steps and
    how many steps each side timed."""
    times_a, times_b = [], []
    for r in range(a.rounds):
        times_a += steady(steps_a(), a.warmup)
        times_b += steady(steps_b(), a.warmup)
        print(f"  round {r + 1}: {label_a} {statistics.median(times_a):.3f} s/step, "
              f"{label_b} {statistics.median(times_b):.3f} s/step", flush=True)  # fmt: skip
    return statistics.median(times_a), statistics.median(times_b), len(times_a)


PRECISIONS = {"fp32": ("32-true", False), "bf16": ("bf16-mixed", True)}


def part_train(a) -> None:
    """Ours and theirs in each precision of --precisions, alternating rounds within each; then
    each side at its best. bf16 is skipped with one line on a CPU without bf16 units (it runs
    in software there, many times slower: timing it says nothing) unless --force-bf16."""
    from mrl.run.precision import cpu_bf16_support

    best: dict[str, tuple[float, str]] = {}
    for name in a.precisions.split(","):
        ours_precision, their_bf16 = PRECISIONS[name]
        if name == "bf16" and cpu_bf16_support() is None and not a.force_bf16:
            print("train bf16: skipped, this CPU has no bf16 units (no avx512_bf16, amx_bf16 or "
                  "Arm bf16 flag); --force-bf16 times it anyway")  # fmt: skip
            continue
        o, t, n = alternate(
            a,
            f"ours {name}", lambda p=ours_precision: our_step_times(
                a.batch, a.steps, a.seq_len, a.ours, p),
            f"theirs {name}", lambda b=their_bf16: st_step_times(
                a.batch, a.steps, a.seq_len, bf16=b),
        )  # fmt: skip
        print(
            f"train {name}: batch {a.batch} triplets, seq {a.seq_len}, {n}+{n} steps: ours "
            f"{o:.3f} s/step ({a.batch / o:.2f} samples/s), sentence-transformers {t:.3f} s/step "
            f"({a.batch / t:.2f} samples/s) -> ours/theirs = {t / o:.2f}x"
        )
        for side, value in (("ours", o), ("theirs", t)):
            if side not in best or value < best[side][0]:
                best[side] = (value, name)
    if len(best) == 2:
        (o, on), (t, tn) = best["ours"], best["theirs"]
        print(f"train at best: ours {o:.3f} s/step ({on}), sentence-transformers {t:.3f} s/step "
              f"({tn}) -> ours-best / theirs-best = {t / o:.2f}x")  # fmt: skip


# our 2D step configured like sentence-transformers' Matryoshka2dLoss defaults
OUR_2D_LIKE_ST = [
    "matryoshka.layers=all", "matryoshka.n_layers_per_step=1", "matryoshka.n_dims_per_step=1",
    "matryoshka.alignment_weight=1.0", "matryoshka.alignment_temperature=0.3",
]  # fmt: skip


def part_2d(a) -> None:
    o, t, n = alternate(
        a,
        "ours 2D", lambda: our_step_times(a.batch, a.steps, a.seq_len, OUR_2D_LIKE_ST),
        "theirs 2D", lambda: st_step_times(a.batch, a.steps, a.seq_len, two_d=True),
    )  # fmt: skip
    full, plain, m = alternate(
        a,
        "ours 2D all pairs", lambda: our_step_times(
            a.batch, a.steps, a.seq_len, ["matryoshka.layers=all"]),
        "ours MRL", lambda: our_step_times(a.batch, a.steps, a.seq_len, []),
    )  # fmt: skip
    print(
        f"2d: batch {a.batch}, seq {a.seq_len}, fp32, {n}+{n} steps: ours (1 layer + 1 dim per "
        f"step, KL 1) {o:.3f} s/step, sentence-transformers Matryoshka2dLoss {t:.3f} s/step -> "
        f"ours/theirs speed = {t / o:.2f}x; ours with every (layer, dim) pair {full:.3f} s/step "
        f"vs plain MRL {plain:.3f} s/step -> 2D overhead {full / plain:.3f}x ({m} steps each)"
    )


def part_overhead(a) -> None:
    plain = ["matryoshka.enabled=false"]
    m, p, n = alternate(
        a,
        "MRL", lambda: our_step_times(a.batch, a.steps, a.seq_len, []),
        "plain", lambda: our_step_times(a.batch, a.steps, a.seq_len, plain),
    )  # fmt: skip
    print(
        f"overhead: MRL step {m:.3f} s, plain step {p:.3f} s (medians of {n} steps each) "
        f"-> MRL / plain = {m / p:.3f}x"
    )


def part_chunks(a) -> None:
    fixed = ["model.chunk_size=64"]
    f, t, n = alternate(
        a,
        "64 texts/call", lambda: our_step_times(a.batch, a.steps, a.seq_len, fixed),
        "auto", lambda: our_step_times(a.batch, a.steps, a.seq_len, []),
    )  # fmt: skip
    print(
        f"chunks: step with 64 texts per encoder call {f:.3f} s, with chunk_size=auto {t:.3f} s "
        f"(medians of {n} steps each) -> auto is {f / t:.2f}x faster"
    )


def part_compile(a) -> None:
    """Our step with the encoder through torch.compile (inductor, dynamic shapes) against the
    plain step, alternating; compilation happens in each round's first steps (--warmup 3)."""
    c, p, n = alternate(
        a,
        "compiled", lambda: our_step_times(a.batch, a.steps, a.seq_len, ["model.compile=true"]),
        "plain", lambda: our_step_times(a.batch, a.steps, a.seq_len, []),
    )  # fmt: skip
    print(
        f"compile: step with model.compile=true {c:.3f} s, plain {p:.3f} s (medians of {n} "
        f"steps each, after {a.warmup} warm-up steps a round) -> compiled / plain = {c / p:.3f}x"
    )


def part_eval(a) -> None:
    ours, theirs = [], []
    for _ in range(a.rounds):
        seconds, our_scores = our_eval_seconds(a.eval_batch)
        ours.append(seconds)
        seconds, their_scores = st_eval_seconds(a.eval_batch)
        theirs.append(seconds)
    diff = max(abs(our_scores[d] - their_scores[d]) for d in DIMS)
    print(
        f"eval: STS-B test (1379 pairs) at {len(DIMS)} dims: ours {min(ours):.1f} s, "
        f"sentence-transformers {min(theirs):.1f} s (best of {a.rounds}) -> "
        f"ours is {min(theirs) / min(ours):.1f}x faster; max |Spearman difference| {diff:.1e}"
    )


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def part_memory_child(a) -> None:
    """Runs in a fresh process: prints the resident memory when training starts and its peak
    during 2 training steps (sampled every 5 ms by a thread)."""
    import threading

    overrides = [f"loss.cached_mini_batch_size={a.cached}"] if a.cached else []
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.is_set():
            if RSS_AT_TRAIN_START:
                peak[0] = max(peak[0], _current_rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    our_step_times(a.batch, 2, a.seq_len, overrides)
    done.set()
    sampler.join()
    print(f"RSS {RSS_AT_TRAIN_START[0]:.0f} {peak[0]:.0f}")


def part_memory(a) -> None:
    runs = {"plain, batch 64": (64, 0), f"cached (mini-batch {a.mini}), batch 1024": (1024, a.mini)}
    peaks = {}
    for name, (batch, cached) in runs.items():
        cmd = [sys.executable, __file__, "--part", "memory-child", "--batch", str(batch),
               "--cached", str(cached), "--seq-len", str(a.seq_len)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        before, after = (float(x) for x in out.strip().splitlines()[-1].split()[1:])
        peaks[name] = (before, after)
        print(f"  {name}: peak RSS during training {after:.0f} MB ({after - before:.0f} MB "
              f"above the {before:.0f} MB when training starts)", flush=True)  # fmt: skip
    (pb, pa), (cb, ca) = peaks.values()
    added = (
        f"{(ca - cb) / (pa - pb):.2f}x counting only what training adds"
        if pa > pb
        else "(plain training stayed below the loading peak, so only totals compare)"
    )
    print(f"memory: cached batch 1024 / plain batch 64 = {ca / pa:.2f}x peak RSS during "
          f"training, {added}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = ["all", "train", "overhead", "chunks", "compile", "eval", "memory", "2d"]
    parts.append("memory-child")
    parser.add_argument("--part", default="all", choices=parts)
    parser.add_argument("--batch", type=int, default=32, help="triplets per step")
    parser.add_argument("--steps", type=int, default=6, help="steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="steps per round not timed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=64, help="pairs per eval batch")
    parser.add_argument("--mini", type=int, default=32, help="cached mode mini-batch (texts)")
    parser.add_argument("--cached", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--precisions", default="fp32,bf16", help="train: fp32, bf16 or both")
    parser.add_argument(
        "--force-bf16", action="store_true", help="train: time bf16 without bf16 units"
    )
    parser.add_argument("--ours", nargs="*", default=[], help="train: overrides for our side")
    a = parser.parse_args()
    if not os.environ.get("MRL_DATA_DIR") or not os.environ.get("MRL_MODEL_DIR"):
        sys.exit(
            "error: set MRL_DATA_DIR and MRL_MODEL_DIR (e.g. ../shared/data, ../shared/models)."
        )
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if a.part == "memory-child":
        return part_memory_child(a)
    threads = f"{torch.get_num_threads()} threads | {os.cpu_count()} cores"
    print(f"{time.strftime('%Y-%m-%d %H:%M')} | torch {torch.__version__} | {threads}")
    print(f"command: {' '.join(sys.argv)}")
    parts = ["train", "overhead", "chunks", "eval", "memory"] if a.part == "all" else [a.part]
    for part in parts:
        globals()[f"part_{part}"](a)


if __name__ == "__main__":
    main()
