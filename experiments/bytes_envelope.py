"""The bytes axis of a quantization study: for each model (mean over its seeds) the best STS-B
test Spearman any stored form (float32/16, int8, binary, any prefix) reaches within a byte budget.

    python experiments/bytes_envelope.py experiments/results/qat_cpu/quantization.csv \
        --budgets 4 8 16 32 64 --out experiments/results/qat_cpu

Reads `python -m mrl.quantization`'s quantization.csv (model names ending in -s<seed>); writes
bytes_envelope.md (a table, budgets as columns, the form that reaches it in brackets) and
bytes_envelope.png.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path


def envelope(rows: list[dict], budgets: list[int]) -> dict[str, dict[int, tuple[float, str]]]:
    by_model: dict[str, dict[tuple[str, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        model = re.sub(r"-s\d+$", "", r["model"])
        by_model[model][(r["kind"], int(r["dim"]))].append(float(r["spearman"]))
    sizes = {(r["kind"], int(r["dim"])): int(r["bytes"]) for r in rows}
    out = {}
    for model, forms in by_model.items():
        means = {form: statistics.mean(v) for form, v in forms.items()}
        out[model] = {}
        for budget in budgets:
            fitting = [(s, f) for f, s in means.items() if sizes[f] <= budget]
            best, form = max(fitting) if fitting else (float("nan"), None)
            out[model][budget] = (best, f"{form[0]} {form[1]}d" if form else "-")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    rows = list(csv.DictReader(a.csv.open()))
    table = envelope(rows, a.budgets)
    n_seeds = {re.sub(r"-s\d+$", "", r["model"]) for r in rows}
    lines = ["| model | " + " | ".join(f"{b} B" for b in a.budgets) + " |",
             "|" + " --- |" * (len(a.budgets) + 1)]  # fmt: skip
    for model, cells in table.items():
        lines.append(
            f"| {model} | " + " | ".join(f"{s:.4f} ({f})" for s, f in cells.values()) + " |"
        )
    head = "Best STS-B test Spearman within each byte budget, mean over seeds "
    head += f"({len(rows)} rows, models: {', '.join(sorted(n_seeds))}).\n\n"
    text = head + "\n".join(lines) + "\n"
    (a.out / "bytes_envelope.md").write_text(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, cells in table.items():
        ax.plot(a.budgets, [s for s, _ in cells.values()], marker="o", label=model)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per embedding (budget, log2)")
    ax.set_ylabel("best STS-B test Spearman within budget")
    ax.set_title("Size vs. performance on the bytes axis (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "bytes_envelope.png")
    print(text)


if __name__ == "__main__":
    main()
