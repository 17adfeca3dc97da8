"""Evaluating any encoder at every dimension: STS-B, STS12-16 and SICK-R, each encoded once.

`python eval.py model=<hub id | local folder | run folder>` (the root shim) calls `main`.
Models load through sentence-transformers (so any of its models works, ours exported
included); a run folder uses its `sentence-transformers/` export, or exports its checkpoint.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mrl.encoder import resolve_backbone
from mrl.errors import ConfigError
from mrl.evaluation import spearman_by_dim
from mrl.export import EXPORT_DIR, export_run
from mrl.redact import redact
from mrl.results import write_atomic, write_run_outputs
from mrl.schedule import dims_from_rule
from mrl.sources import Source, load_source

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def slug(text: str | None) -> str:
    """A folder name for a model id or path: other characters than [A-Za-z0-9._=-] -> '_'."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text or "")).strip("_") or "model"


if not OmegaConf.has_resolver("slug"):
    OmegaConf.register_new_resolver("slug", slug)


def load_model(model: str, device: str | None, trust_remote_code: bool, workdir: Path):
    """A SentenceTransformer for a run folder, a model folder or a Hub id (with one-line errors)."""
    from sentence_transformers import SentenceTransformer

    from mrl.hub import MIRROR_HINT, hub_reachable

    path = Path(model)
    if (path / "results.json").is_file():  # one of our runs
        export = path / EXPORT_DIR
        path = export if export.is_dir() else export_run(path, workdir / EXPORT_DIR)
    elif not path.is_dir():
        resolved = resolve_backbone(model)
        if resolved != model:
            path = Path(resolved)
        elif not hub_reachable():
            raise ConfigError(
                f"model={model!r} is neither a local folder nor reachable on the Hub; "
                f"{MIRROR_HINT} (MRL_MODEL_DIR must hold a folder named {model.split('/')[-1]!r})."
            )
    if path.is_dir() and not any(next(path.rglob(name), None) for name in WEIGHT_FILES):
        raise ConfigError(
            f"model={model!r}: {path} holds no weights ({', '.join(WEIGHT_FILES[:2])}); "
            "give a trained model folder, a run folder or a Hub id."
        )
    source = str(path) if path.is_dir() else model
    try:
        return SentenceTransformer(source, device=device, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ConfigError(
                f"model={model!r} ships its own code; read it, then set trust_remote_code=true."
            ) from None
        raise
    except OSError as err:
        raise ConfigError(
            f"model={model!r} could not be loaded: {str(err).splitlines()[0]}"
        ) from None


def evaluation_dims(requested, width: int) -> list[int]:
    if requested is None:
        return dims_from_rule(width)
    dims = sorted({int(d) for d in requested}, reverse=True)
    if not dims or dims[-1] < 1 or dims[0] > width:
        raise ConfigError(
            f"dims={list(requested)} must be between 1 and the model's width {width}; "
            f"e.g. dims=[{width},{max(1, width // 12)}] or dims=null for the pow2 dims."
        )
    return dims


def encode_benchmark(model, ds, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides' full-width embeddings, each distinct text encoded once."""
    first, second = list(ds["sentence1"]), list(ds["sentence2"])
    texts = list(dict.fromkeys(first + second))
    embeddings = model.encode(
        texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    ).float()
    index = {t: i for i, t in enumerate(texts)}
    left = embeddings[[index[t] for t in first]]
    right = embeddings[[index[t] for t in second]]
    return left, right


def benchmark_table(scores: dict[str, dict[int, float]], dims: list[int]) -> str:
    lines = [
        "| benchmark | " + " | ".join(str(d) for d in dims) + " |",
        "|" + " --- |" * (len(dims) + 1),
    ]
    for name, by_dim in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_dim[d]:.4f}" for d in dims) + " |")
    mean = {d: sum(s[d] for s in scores.values()) / len(scores) for d in dims}
    lines.append("| **mean** | " + " | ".join(f"{mean[d]:.4f}" for d in dims) + " |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, run_dir: Path) -> dict:
    if not cfg.model:
        raise ConfigError(
            "no model given; run python eval.py model=<Hub id | local folder | run folder>."
        )
    done = run_dir / "results.json"
    if done.is_file():
        print(f"{done} exists: this evaluation is done (delete it to re-run).")
        return json.loads(done.read_text())
    with tempfile.TemporaryDirectory() as workdir:
        model = load_model(cfg.model, cfg.device, cfg.trust_remote_code, Path(workdir))
        if cfg.max_seq_length is not None:
            model.max_seq_length = cfg.max_seq_length
        width = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        width = width()
        dims = evaluation_dims(cfg.dims, width)
        scores = {}
        for name, source_cfg in cfg.benchmarks.items():
            ds = load_source(Source.from_config(source_cfg))
            left, right = encode_benchmark(model, ds, cfg.batch_size)
            scores[name] = spearman_by_dim(left, right, list(ds["score"]), dims)
            print(f"{name}: {len(ds)} pairs, Spearman at {dims[0]}: {scores[name][dims[0]]:.4f}")
    first = next(iter(scores))
    results = {
        "experiment": f"eval {cfg.model}",
        "model": cfg.model,
        "backbone": cfg.model,
        "run_dir": str(run_dir),
        "matryoshka": None,
        "dims": dims,
        "test": {str(d): v for d, v in scores[first].items()},
        "test_benchmark": first,
        "benchmarks": {name: {str(d): v for d, v in s.items()} for name, s in scores.items()},
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
    }
    table = benchmark_table(scores, dims)
    write_atomic(run_dir / "benchmarks.md", table)
    write_run_outputs(run_dir, results)
    print(f"\nSpearman (cosine) by dimension, {cfg.model}:\n{table}run folder: {run_dir}")
    return results


def main(cfg: DictConfig) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, run_dir)
    except ConfigError as err:
        from mrl.train import remove_startup_files

        remove_startup_files(run_dir)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
