"""Training throughput of `+exp=allnli_mrl` on one device: samples/s, tokens/s, model FLOPs
utilisation (MFU) and peak memory, over a few hundred optimizer steps.

Made for a lent GPU machine, which reaches neither the Hub nor ../shared: the backbone is built
from its architecture with random weights (speed does not depend on the weights), the data is
synthetic triplets with NLI-like lengths (anchors 6-30 words, positives/negatives 4-16) and a
word-level tokenizer over their vocabulary, one token per word. Everything else is the normal
path: the composed `+exp=allnli_mrl` config, our data module, LightningModule and Trainer.

    python benchmarks/gpu_throughput.py --arch mpnet-base --steps 300 --precision bf16-mixed
    python benchmarks/gpu_throughput.py --arch tiny --steps 4 --batch 8 --device cpu  # a check

Model FLOPs per step count the real (unpadded) tokens of every text: forward
2 * N * T + 4 * layers * hidden * T^2 per text (N: parameters outside the embeddings; the T^2
term: attention scores and their weighted sum), training = 3 x forward. MFU = model FLOPs/s
over the card's dense bf16 peak (H100 SXM / H200: 989 TFLOP/s, H100 PCIe: 756, A100: 312).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ARCHS = {  # model_type, config fields (others: the transformers defaults of that type)
    "mpnet-base": ("mpnet", {}),
    "minilm-l6": (
        "bert",
        {
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 12,
            "intermediate_size": 1536,
        },
    ),
    "tiny": (
        "bert",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
    ),
}
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}


def synthetic_data(root: Path, n_triplets: int, seed: int = 0) -> list[str]:
    """Writes allnli/triplets-train.jsonl and small STS-B splits; returns the vocabulary."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(low, high)))

    def write(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(
        root / "allnli" / "triplets-train.jsonl",
        [
            {"anchor": sentence(6, 30), "positive": sentence(4, 16),
             "negative": sentence(4, 16)}
            for _ in range(n_triplets)
        ],
    )  # fmt: skip
    for split in ("validation", "test"):
        pairs = [
            {"sentence1": sentence(5, 20), "sentence2": sentence(5, 20), "score": rng.uniform(0, 5)}
            for _ in range(64)
        ]
        write(root / "stsb" / f"{split}.jsonl", pairs)
    return vocab


def random_backbone(folder: Path, arch: str, vocab: list[str]) -> None:
    """A randomly initialised backbone of `arch` and a word-level tokenizer, saved to `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = {tok: i for i, tok in enumerate(specials + vocab)}
    tok = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    ).save_pretrained(folder)  # fmt: skip
    model_type, fields = ARCHS[arch]
    config = AutoConfig.for_model(model_type, **fields)  # the type's own vocabulary size
    assert config.vocab_size >= len(ids)
    import torch

    torch.manual_seed(0)  # the same weights in every process: runs compare (precision checks)
    AutoModel.from_config(config).save_pretrained(folder)


def count_non_embedding_params(backbone) -> int:
    embeddings = sum(p.numel() for n, p in backbone.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in backbone.parameters()) - embeddings


def peak_tflops(device_name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in device_name:
            return PEAK_BF16_TFLOPS[key]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mpnet-base", choices=sorted(ARCHS))
    parser.add_argument("--batch", type=int, default=128, help="triplets per step")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="first steps not timed")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--compile", action="store_true", help="model.compile=true")
    parser.add_argument("--cached-mini-batch", type=int, default=None)
    parser.add_argument(
        "--chunk-size", default="auto", help="model.chunk_size: auto, a number, or null"
    )
    parser.add_argument(
        "--unpadded", default="auto", choices=["auto", "true", "false"], help="model.unpadded"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    a = parser.parse_args()
    if a.steps <= a.warmup:
        parser.error(f"--steps {a.steps} must be larger than --warmup {a.warmup}")

    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir

    from mrl.run.build import build_datamodule, build_module

    if a.device == "gpu" and not torch.cuda.is_available():
        sys.exit("error: --device gpu but no CUDA device is visible; use --device cpu.")
    work = Path(tempfile.mkdtemp(prefix="mrl_gpu_bench_"))  # the backbone alone is ~0.4 GB
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    vocab = synthetic_data(work / "data", n_triplets=a.batch * (a.steps + 4))
    random_backbone(work / "backbone", a.arch, vocab)
    os.environ["MRL_DATA_DIR"] = str(work / "data")
    os.environ.pop("MRL_MODEL_DIR", None)
    overrides = [
        "+exp=allnli_mrl",
        f"model.backbone={work / 'backbone'}",
        f"model.compile={str(a.compile).lower()}",
        f"data.batch_size={a.batch}",
        f"data.max_seq_length={a.seq_len}",
        f"loss.cached_mini_batch_size={a.cached_mini_batch or 'null'}",
        f"model.chunk_size={a.chunk_size}",
        f"model.unpadded={a.unpadded}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)

    times: list[float] = []
    losses: list[dict[str, float]] = []  # every step's train/loss@<dim> (precision checks)
    tokens: list[int] = []
    flops: list[float] = []
    cuda = a.device == "gpu"

    class StepTimer(L.Callback):
        def on_train_start(self, trainer, module):
            backbone = module.encoder.backbone
            self.n_params = count_non_embedding_params(backbone)
            self.layers = backbone.config.num_hidden_layers
            self.hidden = backbone.config.hidden_size
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            lengths = batch["attention_mask"].sum(1).double()
            tokens.append(int(lengths.sum()))
            per_text = 2 * self.n_params * lengths + 4 * self.layers * self.hidden * lengths**2
            flops.append(3 * float(per_text.sum()))
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, *args):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            metrics = trainer.callback_metrics
            losses.append({k: float(v) for k, v in metrics.items() if k.startswith("train/loss@")})

    L.seed_everything(a.seed, verbose=False)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    trainer = L.Trainer(
        accelerator=a.device,
        devices=1,
        precision=a.precision,
        max_steps=a.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[timer := StepTimer()],
    )
    trainer.fit(module, datamodule=datamodule)

    timed = slice(a.warmup, None)
    seconds = sum(times[timed])
    n_steps = len(times[timed])
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(device_name) if cuda else None
    achieved = sum(flops[timed]) / seconds / 1e12
    result = {
        "device": device_name,
        "arch": a.arch,
        "non_embedding_params": timer.n_params,
        "attention": module.encoder.backbone.config._attn_implementation,
        "precision": a.precision,
        "compile": a.compile,
        "chunk_size": a.chunk_size,
        "unpadded": module.encoder.unpadded,
        "seed": a.seed,
        "cached_mini_batch": a.cached_mini_batch,
        "batch_triplets": a.batch,
        "timed_steps": n_steps,
        "median_step_s": statistics.median(times[timed]),
        "samples_per_s": a.batch * n_steps / seconds,
        "tokens_per_s": sum(tokens[timed]) / seconds,
        "mean_tokens_per_text": sum(tokens[timed]) / (3 * a.batch * n_steps),
        "model_tflops_per_s": achieved,
        "mfu": achieved / peak if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        ),
    }
    printed = dict(result)
    result["losses_per_step"] = losses
    for key, value in printed.items():
        print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
