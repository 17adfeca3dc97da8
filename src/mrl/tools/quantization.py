"""Truncation x quantization: STS-B Spearman against bytes per embedding, for every prefix size
stored as float32, float16, int8 or binary.

    python -m mrl.quantization MODEL [MODEL ...] [--out DIR]

int8 and binary are calibrated on a sample of training sentences (the first
`--calibration-size` anchors of $MRL_DATA_DIR/allnli/triplets-train.jsonl): int8 maps each
dim's calibrated [min, max] linearly onto [-128, 127] (values outside are clipped); binary keeps
one bit per dim, whether the value is above the dim's calibrated median, and compares
embeddings by the fraction of equal bits (1 - normalised Hamming distance). float16 is a cast.
A model trained with QAT (`qat=...`) brings its own calibration (qat_calibration.json in its
run folder and export), which is used instead, so evaluation quantizes as training did.
Every prefix is truncated first and quantized second, so one calibration serves all dims; the
float32 rows are `mrl.evaluation.metrics.spearman_by_dim`, the Spearman of training and eval.py.
Data is read through `mrl.data.sources` ($MRL_DATA_DIR, else the Hub). The dims are `--dims`, else
each model's eval dims (a run's own, else the pow2 dims of its width).
Writes quantization.csv, quantization.md and quantization.png (x: bytes, log2 scale), and
pairs/<name>/<kind>.npz: each test pair's similarity at every dim as stored (`mrl.artifacts.pairs`,
the gold scores replaced by their source and hash), for intervals on a difference
(experiments/bytes_intervals.py). A re-run into the same --out replaces its own earlier files
(recognised by the tables' headers); an existing file it does not recognise, or an input, stops it
before any model is loaded.
"""

from __future__ import annotations

import csv
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from mrl.artifacts.results import png_bytes
from mrl.common.cli import OneLineParser
from mrl.common.errors import ConfigError
from mrl.common.files import refuse_overwrite
from mrl.common.numbers import check_finite
from mrl.evaluation.storage import (
    KINDS,
    Calibration,
    bytes_per_embedding,
    qat_calibration,
)

STSB_TEST = {
    "hub_id": "sentence-transformers/stsb", "hub_split": "test", "local_file": "stsb/test.jsonl",
    "columns": ("sentence1", "sentence2", "score"), "local_score_max": 5.0,
}  # fmt: skip
CALIBRATION = {  # the training triplets of conf/data/allnli.yaml; their anchors calibrate
    "hub_id": "sentence-transformers/all-nli", "hub_subset": "triplet", "hub_split": "train",
    "revision": "6de3c20ba0e589d3b5bb9b74bb4c2769fae9864f",
    "local_file": "allnli/triplets-train.jsonl", "columns": ("anchor", "positive", "negative"),
}  # fmt: skip


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


def pair_sims_by_kind(
    left: np.ndarray,
    right: np.ndarray,
    dims: list[int],
    cal: Calibration,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, dict[int, np.ndarray]]:
    """{kind: {dim: each test pair's similarity as stored}}: what the table ranks and what an
    interval resamples. float32 is `mrl.evaluation.metrics.pair_similarities`, as in training and
    eval.py."""
    import torch

    from mrl.evaluation.metrics import pair_similarities

    sims = {}
    for kind in kinds:
        if kind == "float32":
            sims[kind] = pair_similarities(torch.as_tensor(left), torch.as_tensor(right), dims)
        else:
            sims[kind] = {d: pair_similarity(left[:, :d], right[:, :d], kind, cal) for d in dims}
    return sims


def spearman_rows(sims: dict[str, dict[int, np.ndarray]], gold: np.ndarray) -> list[dict]:
    """One row per (kind, dim) of `pair_sims_by_kind`: bytes per embedding and STS Spearman."""
    from mrl.evaluation.metrics import spearman_of_similarities

    rows = []
    for kind, by_dim in sims.items():
        scores = spearman_of_similarities(by_dim, gold)
        rows += [{"kind": kind, "dim": dim, "bytes": bytes_per_embedding(dim, kind),
                  "spearman": scores[dim]} for dim in by_dim]  # fmt: skip
    return rows


def spearman_by_dim_and_kind(
    left: np.ndarray,
    right: np.ndarray,
    gold: np.ndarray,
    dims: list[int],
    cal: Calibration,
    kinds: tuple[str, ...] = KINDS,
) -> list[dict]:
    """One row per (kind, dim): bytes per embedding and STS Spearman of the stored prefixes."""
    return spearman_rows(pair_sims_by_kind(left, right, dims, cal, kinds), gold)


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


def evaluate_models(args, names: list[str]) -> tuple[dict[str, list[dict]], dict, np.ndarray]:
    """Every model's rows (see `spearman_by_dim_and_kind`) and per-pair similarities
    (`pair_sims_by_kind`), each model encoded once; and the gold scores."""
    from mrl.artifacts.models import embedding_width, load_model, model_eval_dims
    from mrl.core.schedule import check_dims
    from mrl.data.sources import Source, load_source

    if args.calibration_size < 2:
        raise ConfigError(f"--calibration-size={args.calibration_size} must be >= 2.")
    pairs = load_source(Source(**STSB_TEST))
    anchors = load_source(Source(**CALIBRATION))["anchor"]
    sample = list(anchors[: args.calibration_size])
    gold = np.array(pairs["score"])
    curves, sims = {}, {}
    for model_id, name in zip(args.models, names, strict=True):
        with tempfile.TemporaryDirectory() as workdir:
            model = load_model(model_id, None, False, Path(workdir))
            width = embedding_width(model)
            if args.dims is None:
                dims = model_eval_dims(model_id, width)
            else:
                dims = check_dims(args.dims, width, "--dims")
            left = model.encode(list(pairs["sentence1"]), batch_size=128)
            right = model.encode(list(pairs["sentence2"]), batch_size=128)
            cal = qat_calibration(model_id) or Calibration(model.encode(sample, batch_size=128))
        sims[name] = pair_sims_by_kind(left, right, dims, cal)  # computed once, ranked
        curves[name] = spearman_rows(sims[name], gold)  # here and kept for intervals
    return curves, sims, gold


def write_pair_sims(out: Path, sims: dict, gold: np.ndarray) -> None:
    """out/pairs/<name>/<kind>.npz per model and storage, without a copy of the gold scores."""
    from mrl.artifacts.pairs import write_pairs

    for name, by_kind in sims.items():
        (out / "pairs" / name).mkdir(parents=True, exist_ok=True)
        for kind, by_dim in by_kind.items():
            write_pairs(out / "pairs" / name / f"{kind}.npz", gold, by_dim, source=STSB_TEST)


def markdown(curves: dict[str, list[dict]]) -> str:
    """Models x storage kinds, one column per dim any model has ('-' where it lacks it)."""
    dims = sorted({r["dim"] for rows in curves.values() for r in rows}, reverse=True)
    md = ["| model | storage | " + " | ".join(f"{d} dims" for d in dims) + " |"]
    md.append("|" + " --- |" * (len(dims) + 2))
    for name, rows in curves.items():
        for kind in KINDS:
            by_dim = {r["dim"]: r for r in rows if r["kind"] == kind}
            cells = [f"{by_dim[d]['spearman']:.4f} ({by_dim[d]['bytes']} B)" if d in by_dim
                     else "-" for d in dims]  # fmt: skip
            md.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


CSV_HEADER = ("model", "kind", "dim", "bytes", "spearman")


def outputs(out: Path, names: list[str]) -> list[Path]:
    """Every file a run writes into `out`."""
    tables = [out / f"quantization.{ext}" for ext in ("csv", "md", "png")]
    return tables + [out / "pairs" / name / f"{kind}.npz" for name in names for kind in KINDS]


def earlier_output(out: Path):
    """Whether a file in `out` is this tool's own earlier output: quantization.csv and .md by
    their header; the plot and the pairs when the folder's table is ours."""
    from mrl.common.files import first_line

    csv_ours = first_line(out / "quantization.csv") == ",".join(CSV_HEADER)
    md_ours = first_line(out / "quantization.md").startswith("| model | storage |")

    def ours(path: Path) -> bool:
        if path.name == "quantization.csv":
            return csv_ours
        if path.name == "quantization.md":
            return md_ours
        return csv_ours or md_ours

    return ours


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description="STS-B Spearman vs bytes: truncation x storage.")
    parser.add_argument("models", nargs="+", help="Hub ids, model folders or run folders")
    parser.add_argument("--name", nargs="+", help="a short name per model for the table/plot")
    parser.add_argument("--dims", type=int, nargs="+", help="default: each model's eval dims")
    parser.add_argument(
        "--calibration-size", type=int, default=2000,
        help="training anchors whose embeddings set the int8 ranges and binary thresholds (2000)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/quantization"),
        help="folder for quantization.csv/.md/.png and pairs/ (outputs/quantization)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    names = args.name or [Path(m).name for m in args.models]
    try:
        if len(names) != len(args.models):
            raise ConfigError(f"--name gives {len(names)} names for {len(args.models)} models.")
        for name in names:  # each names a folder pairs/<name>/ under --out
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise ConfigError(f"--name {name!r} must be a plain name (no '/'), e.g. mrl.")
        if len(set(names)) != len(names):
            raise ConfigError(
                f"the model names {' '.join(names)} repeat one; give each its own with --name."
            )
        # a re-run replaces its own earlier files; an input or a foreign file stops it first
        refuse_overwrite(outputs(args.out, names), earlier_output(args.out), args.models)
        curves, sims, gold = evaluate_models(args, names)
        check_finite(curves, "quantization")  # a NaN Spearman: one line, nothing written
        from mrl.common.files import write_atomic

        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {args.out} cannot be made ({err.strerror}).") from None
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(CSV_HEADER)
        for name, rows in curves.items():
            writer.writerows([name, r["kind"], r["dim"], r["bytes"], r["spearman"]] for r in rows)
        write_atomic(args.out / "quantization.csv", table.getvalue())
        md = markdown(curves)
        write_atomic(args.out / "quantization.md", md)
        write_atomic(args.out / "quantization.png", plot(curves))
        write_pair_sims(args.out, sims, gold)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(md, end="")


if __name__ == "__main__":
    main()
