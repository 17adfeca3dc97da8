"""Truncation x quantization: STS-B Spearman against bytes per embedding, for every prefix size
stored as float32, float16, int8 or binary.

    python -m mrl.quantization MODEL [MODEL ...] [--out DIR]

int8 and binary are calibrated on a sample of training sentences (the first
`--calibration-size` anchors of $MRL_DATA_DIR/allnli/triplets-train.jsonl): int8 maps each
dim's calibrated [min, max] linearly onto [-128, 127] (values outside are clipped); binary keeps
one bit per dim, whether the value is above the dim's calibrated median, and compares
embeddings by the fraction of equal bits (1 - normalised Hamming distance). float16 is a cast.
Every prefix is truncated first and quantized second, so one calibration serves all dims.
Writes quantization.csv, quantization.md and quantization.png (x: bytes, log2 scale).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from mrl.errors import ConfigError
from mrl.results import png_bytes

KINDS = ("float32", "float16", "int8", "binary")


def bytes_per_embedding(dim: int, kind: str) -> int:
    return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "binary": math.ceil(dim / 8)}[kind]


class Calibration:
    """Per-dim ranges and medians of full-width embeddings of a calibration sample."""

    def __init__(self, sample: np.ndarray):
        if len(sample) < 2:
            raise ConfigError("the calibration sample needs at least 2 embeddings.")
        sample = np.asarray(sample, dtype=np.float32)
        self.low, self.high = sample.min(0), sample.max(0)
        self.median = np.median(sample, axis=0)

    def int8(self, x: np.ndarray) -> np.ndarray:
        d = x.shape[1]
        low, span = self.low[:d], np.maximum(self.high[:d] - self.low[:d], 1e-12)
        return np.clip(np.round((x - low) / span * 255 - 128), -128, 127).astype(np.int8)

    def int8_dequantized(self, q: np.ndarray) -> np.ndarray:
        d = q.shape[1]
        span = np.maximum(self.high[:d] - self.low[:d], 1e-12)
        return (q.astype(np.float32) + 128) / 255 * span + self.low[:d]

    def binary(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > self.median[: x.shape[1]], axis=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def pair_similarity(left: np.ndarray, right: np.ndarray, kind: str, cal: Calibration) -> np.ndarray:
    """Similarity of each (left, right) row pair as stored in `kind` (rows already truncated)."""
    if kind == "float32":
        return _cosine(left, right)
    if kind == "float16":
        return _cosine(left.astype(np.float16), right.astype(np.float16))
    if kind == "int8":
        return _cosine(cal.int8_dequantized(cal.int8(left)), cal.int8_dequantized(cal.int8(right)))
    if kind == "binary":
        dim = left.shape[1]
        differing = np.unpackbits(cal.binary(left) ^ cal.binary(right), axis=1)[:, :dim]
        return 1 - differing.sum(1) / dim
    raise ConfigError(f"quantization {kind!r} is unknown; use one of {', '.join(KINDS)}.")


def spearman_by_dim_and_kind(
    left: np.ndarray,
    right: np.ndarray,
    gold: np.ndarray,
    dims: list[int],
    cal: Calibration,
    kinds: tuple[str, ...] = KINDS,
) -> list[dict]:
    rows = []
    for kind in kinds:
        for dim in dims:
            sim = pair_similarity(left[:, :dim], right[:, :dim], kind, cal)
            rows.append(
                {
                    "kind": kind,
                    "dim": dim,
                    "bytes": bytes_per_embedding(dim, kind),
                    "spearman": float(spearmanr(sim, gold).statistic),
                }
            )
    return rows


def plot(curves: dict[str, list[dict]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    markers = {"float32": "o", "float16": "s", "int8": "^", "binary": "x"}
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for m, (model, rows) in enumerate(curves.items()):
        for k, kind in enumerate(KINDS):
            points = sorted((r["bytes"], r["spearman"]) for r in rows if r["kind"] == kind)
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, styles[m % 4], marker=markers[kind], color=colors[k],
                        label=f"{model} {kind}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per embedding (log2 scale)")
    ax.set_ylabel("STS-B test Spearman")
    ax.set_title("Truncation x quantization (line style: model, colour: storage)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return png_bytes(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="STS-B Spearman vs bytes: truncation x storage.")
    parser.add_argument("models", nargs="+", help="Hub ids, model folders or run folders")
    parser.add_argument("--name", nargs="+", help="a short name per model for the table/plot")
    parser.add_argument("--calibration-size", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("outputs/quantization"))
    args = parser.parse_args(argv)
    names = args.name or [Path(m).name for m in args.models]
    try:
        if len(names) != len(args.models):
            raise ConfigError(f"--name gives {len(names)} names for {len(args.models)} models.")
        data_dir = os.environ.get("MRL_DATA_DIR")
        if not data_dir:
            raise ConfigError("set MRL_DATA_DIR (shared/data layout) for STS-B and calibration.")
        data = Path(data_dir)
        pairs = [json.loads(x) for x in (data / "stsb/test.jsonl").read_text().splitlines() if x]
        triplets = (data / "allnli/triplets-train.jsonl").read_text().splitlines()
        sample = [json.loads(x)["anchor"] for x in triplets[: args.calibration_size] if x]
        from mrl.evaluate import load_model
        from mrl.schedule import dims_from_rule

        curves = {}
        for model_id, name in zip(args.models, names, strict=True):
            with tempfile.TemporaryDirectory() as workdir:
                model = load_model(model_id, None, False, Path(workdir))
                left = model.encode([p["sentence1"] for p in pairs], batch_size=128)
                right = model.encode([p["sentence2"] for p in pairs], batch_size=128)
                cal = Calibration(model.encode(sample, batch_size=128))
            dims = dims_from_rule(left.shape[1])
            gold = np.array([p["score"] for p in pairs])
            curves[name] = spearman_by_dim_and_kind(left, right, gold, dims, cal)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    from mrl.results import write_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["model", "kind", "dim", "bytes", "spearman"])
    for name, rows in curves.items():
        writer.writerows([name, r["kind"], r["dim"], r["bytes"], r["spearman"]] for r in rows)
    write_atomic(args.out / "quantization.csv", table.getvalue())
    md = ["| model | storage | " + " | ".join(f"{d} dims" for d in dims) + " |"]
    md.append("|" + " --- |" * (len(dims) + 2))
    for name, rows in curves.items():
        for kind in KINDS:
            cells = [f"{r['spearman']:.4f} ({r['bytes']} B)" for r in rows if r["kind"] == kind]
            md.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    write_atomic(args.out / "quantization.md", "\n".join(md) + "\n")
    write_atomic(args.out / "quantization.png", plot(curves))
    print("\n".join(md))


if __name__ == "__main__":
    main()
