"""Intervals on the bytes axis: for two models (each pooled over its seeds), the difference in
STS-B test Spearman of their stored prefixes at every dim, with the two-level bootstrap interval
of `mrl.evaluation.intervals` (test pairs paired, seeds within each model).

    python experiments/bytes_intervals.py experiments/results/qat_cpu \\
        --compare qat_binary:mrl qat_binary:baseline --kinds binary float32

Reads `python -m mrl.quantization`'s pairs/<model>-s<seed>/<kind>.npz of the models its
quantization.csv lists (their gold scores come back from $MRL_DATA_DIR, checked by hash);
writes bytes_intervals.md into the folder.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from mrl.artifacts.pairs import load_pairs
from mrl.evaluation.intervals import intervals_by_dim
from mrl.tools.quantization import bytes_per_embedding


def pooled(folder: Path, kind: str) -> tuple[dict[str, dict[int, np.ndarray]], np.ndarray]:
    """{model: {dim: (seeds, pairs)}} of one storage kind, and the gold scores."""
    by_model: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    gold = None
    listed = folder / "quantization.csv"  # the models of the last mrl.quantization run here
    names = {row["model"] for row in csv.DictReader(listed.open())} if listed.is_file() else None
    for path in sorted((folder / "pairs").glob(f"*/{kind}.npz")):
        if names is not None and path.parent.name not in names:
            continue  # left by an earlier run into the same folder
        pairs = load_pairs(path)
        gold = pairs.gold if gold is None else gold
        model = re.sub(r"-s\d+$", "", path.parent.name)
        for dim, sims in pairs.sims.items():
            by_model[model][dim].append(sims)
    if gold is None:
        raise SystemExit(f"error: no {folder}/pairs/*/{kind}.npz; run python -m mrl.quantization.")
    return {m: {d: np.stack(v) for d, v in dims.items()} for m, dims in by_model.items()}, gold


def cell(iv) -> str:
    if iv is None:
        return "-"
    text = f"{iv.estimate:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]"
    return text + (" significant" if iv.significant else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--compare", nargs="+", required=True, help="A:B, the difference A - B")
    parser.add_argument("--kinds", nargs="+", default=["binary", "float32"])
    parser.add_argument("--n-boot", type=int, default=2000)
    a = parser.parse_args()
    lines = [
        "Difference of mean STS-B test Spearman (A - B) with its 95 % interval (two-level "
        f"bootstrap, {a.n_boot} replicates: test pairs paired, seeds within each model; "
        "mrl.evaluation.intervals); *significant* where the interval excludes 0.",
    ]
    for kind in a.kinds:
        models, gold = pooled(a.folder, kind)
        dims = sorted({d for m in models.values() for d in m}, reverse=True)
        head = [f"{d} dims ({bytes_per_embedding(d, kind)} B)" for d in dims]
        lines += ["", f"### {kind}", "", "| A - B | " + " | ".join(head) + " |",
                  "|" + " --- |" * (len(dims) + 1)]  # fmt: skip
        for pair in a.compare:
            first, _, second = pair.partition(":")
            if first not in models or second not in models:
                raise SystemExit(f"error: --compare {pair}: models here are {sorted(models)}.")
            common = [d for d in dims if d in models[first] and d in models[second]]
            found = intervals_by_dim({d: models[first][d] for d in common},
                                     {d: models[second][d] for d in common}, gold,
                                     n_boot=a.n_boot)  # fmt: skip
            cells = [cell(found.get(d)) for d in dims]
            seeds = f"{models[first][common[0]].shape[0]} vs {models[second][common[0]].shape[0]}"
            lines.append(f"| {first} - {second} ({seeds} seeds) | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (a.folder / "bytes_intervals.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
