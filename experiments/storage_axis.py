"""The storage axis: for each representation, the best score it reaches within a byte budget,
with two-level intervals on its difference from a reference representation.

    python experiments/storage_axis.py experiments/results/storage_cpu --reference mrl \\
        --budgets 4 8 16 32 64 128 256 --out experiments/results/storage_cpu

Reads eval.py folders laid out as <folder>/<representation>/seed<S>/ (results.json, and for each
further storage kind storage/<kind>/), scored on STS-B test (`stsb`, with test_pairs.npz), BEIR
SciFact (`scifact`, queries/scifact.npz) and STS-B validation (`stsb_dev`). A random subset's
draws (draws/<i>/) count as runs beside the seeds; a CSR code's size is its k (index, value)
pairs. At each budget a representation's form (storage kind and dim, or k) is the one of at most
that many bytes with the highest STS-B *validation* Spearman (mean over runs), so nothing is
picked on a test split; that form's STS-B test Spearman and SciFact nDCG@10 are reported, and
their difference from the reference's form at the same budget, with the two-level bootstrap of
`mrl.evaluation.intervals` (test pairs or queries paired, runs within each representation).
Writes storage_axis.md, storage_axis.csv (every form's means) and storage_axis.png.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrl.artifacts.pairs import PAIRS, load_pairs
from mrl.artifacts.results import png_bytes
from mrl.evaluation.intervals import mean_difference_interval, spearman_difference_interval
from mrl.evaluation.retrieval import load_query_scores

TEST, DEV, RETRIEVAL = "stsb", "stsb_dev", "scifact/ndcg@10"


@dataclass
class Form:
    """One representation stored one way at one size, over its runs (seeds x draws)."""

    kind: str
    dim: int
    bytes: int
    test: list[float] = field(default_factory=list)
    dev: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    pairs: list[np.ndarray] = field(default_factory=list)  # per run: test pair similarities
    queries: list[np.ndarray] = field(default_factory=list)  # per run: per-query nDCG@10
    gold: np.ndarray | None = None  # the test pairs' gold scores

    @property
    def label(self) -> str:
        return f"csr k={self.dim}" if self.kind == "csr" else f"{self.kind} {self.dim}d"


def run_folders(folder: Path) -> list[Path]:
    """One eval folder's scored runs: itself, or its draws/<i>/ (random_subset)."""
    draws = sorted((folder / "draws").glob("*"), key=lambda p: int(p.name))
    return draws or [folder]


def load_representation(root: Path) -> dict[tuple[str, int], Form]:
    """{(kind, dim): Form} of one representation, every seed and storage kind below `root`."""
    forms: dict[tuple[str, int], Form] = {}
    for results_path in sorted(root.glob("seed*/**/results.json")):
        folder = results_path.parent
        results = json.loads(results_path.read_text())
        kind = results["storage"]["kind"]
        if results.get("posthoc", {}).get("transform") == "csr":
            kind = "csr"
        sizes = {int(d): int(b) for d, b in results["storage"]["bytes_per_embedding"].items()}
        per_draw = results.get("posthoc", {}).get("per_draw")
        for i, run in enumerate(run_folders(folder)):
            pairs = load_pairs(run / PAIRS)
            queries = load_query_scores(run / "queries" / "scifact.npz").per_query["ndcg@10"]
            for dim, size in sizes.items():
                form = forms.setdefault((kind, dim), Form(kind, dim, size, gold=pairs.gold))
                for name, scores in ((TEST, form.test), (DEV, form.dev), (RETRIEVAL, form.ndcg)):
                    drawn = per_draw[name] if per_draw else None
                    scores.append(
                        drawn[str(dim)][i] if drawn else results["benchmarks"][name][str(dim)]
                    )
                form.pairs.append(pairs.sims[dim])
                form.queries.append(queries[dim])
    return forms


def pick(forms: dict, budget: int) -> Form | None:
    """The form of at most `budget` bytes with the highest mean validation Spearman (ties: the
    smaller one)."""
    fitting = [f for f in forms.values() if f.bytes <= budget]
    if not fitting:
        return None
    return max(fitting, key=lambda f: (float(np.mean(f.dev)), -f.bytes))


def interval_text(a: Form, b: Form, what: str, n_boot: int) -> str:
    if what == "test":
        iv = spearman_difference_interval(np.stack(a.pairs), np.stack(b.pairs), a.gold, n_boot)
    else:
        iv = mean_difference_interval(np.stack(a.queries), np.stack(b.queries), n_boot)
    star = " *" if iv.significant else ""
    return f"{iv.estimate:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]{star}"


def report(reps: dict[str, dict], reference: str, budgets: list[int], n_boot: int) -> str:
    lines = [
        f"At each budget each representation's form (storage kind x dim, or CSR's k) is chosen on "
        f"STS-B validation; cells: the form's mean over runs, then its difference from "
        f"`{reference}` at the same budget with the 95 % two-level interval (* excludes 0).",
        "",
    ]
    for what, title in (("test", "STS-B test Spearman"), ("ndcg", "SciFact nDCG@10")):
        lines += [f"### {title}", "", "| representation | " + " | ".join(f"{b} B" for b in budgets)
                  + " |", "|" + " --- |" * (len(budgets) + 1)]  # fmt: skip
        for name, forms in reps.items():
            cells = []
            for budget in budgets:
                form, ref = pick(forms, budget), pick(reps[reference], budget)
                if form is None:
                    cells.append("-")
                    continue
                mean = float(np.mean(form.test if what == "test" else form.ndcg))
                cell = f"{mean:.4f} ({form.label}, n={len(form.test)})"
                if name != reference and ref is not None:
                    cell += f"<br>{interval_text(form, ref, what, n_boot)}"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        best = []
        for budget in budgets:
            picked = {n: pick(f, budget) for n, f in reps.items()}
            means = {n: float(np.mean(f.test if what == "test" else f.ndcg))
                     for n, f in picked.items() if f is not None}  # fmt: skip
            scored = sorted(((m, n) for n, m in means.items()), reverse=True)
            (top, first), (_, second) = scored[0], scored[1]
            lead = interval_text(picked[first], picked[second], what, n_boot)
            best.append(f"{budget} B: **{first}** {top:.4f}, ahead of {second} by {lead}")
        lines += [f"Highest {title} at each budget (lead over the runner-up; the two are picked "
                  "by their test means, so read the interval as descriptive):", "",
                  *[f"- {b}" for b in best], ""]  # fmt: skip
    return "\n".join(lines)


def points_csv(reps: dict[str, dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["representation", "kind", "dim", "bytes", "runs", "stsb_test", "stsb_dev",
                     "scifact_ndcg@10"])  # fmt: skip
    for name, forms in reps.items():
        for form in sorted(forms.values(), key=lambda f: (f.kind, -f.dim)):
            means = (f"{np.mean(v):.6f}" for v in (form.test, form.dev, form.ndcg))
            writer.writerow([name, form.kind, form.dim, form.bytes, len(form.test), *means])
    return out.getvalue()


def plot(reps: dict[str, dict], budgets: list[int]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120)
    for ax, what, title in zip(axes, ("test", "ndcg"), ("STS-B test Spearman", "SciFact nDCG@10"),
                               strict=True):  # fmt: skip
        for name, forms in reps.items():
            xs, ys = [], []
            for budget in budgets:
                form = pick(forms, budget)
                if form is not None:
                    xs.append(budget)
                    ys.append(float(np.mean(form.test if what == "test" else form.ndcg)))
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per embedding (budget, log2 scale)")
        ax.set_title(f"{title}: best form within the budget (picked on STS-B validation)",
                     fontsize=8)  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    axes[1].legend(fontsize=7)
    return png_bytes(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reference", default="mrl")
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    reps = {p.name: load_representation(p) for p in sorted(a.folder.iterdir())
            if p.is_dir() and any(p.glob("seed*/results.json"))}  # fmt: skip
    if a.reference not in reps:
        raise SystemExit(f"error: --reference {a.reference} is not a folder of {a.folder}.")
    reps = {a.reference: reps.pop(a.reference), **reps}
    md = report(reps, a.reference, a.budgets, a.n_boot)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "storage_axis.md").write_text(md)
    (a.out / "storage_axis.csv").write_text(points_csv(reps))
    (a.out / "storage_axis.png").write_bytes(plot(reps, a.budgets))
    print(md)


if __name__ == "__main__":
    main()
