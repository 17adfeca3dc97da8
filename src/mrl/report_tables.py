"""The report's tables: report.md (scores, retention, differences against the reference, every
run with its status) and report.csv (one row per group and dim).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mrl.report_runs import Run
from mrl.report_stats import Group, area_under_curve, beyond_noise, untrained_scores

REPORT_MD = "report.md"
REPORT_CSV = "report.csv"
REPORT_PNG = "report.png"


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(first: list[str], dims: list[int], last: list[str] = ()) -> list[str]:
    names = [*first, *map(str, dims), *last]
    return [_row(*names), "|" + " --- |" * len(names)]


def markdown_report(
    runs: list[Run], groups: list[Group], dims: list[int], reference: Group, root: Path
) -> str:
    full, small = max(dims), min(dims)
    finished = sum(r.status == "finished" for r in runs)
    lines = [
        f"# Report: {len(runs)} runs, {finished} finished, {len(groups)} groups",
        "",
        "STS-B test Spearman (cosine) by embedding dimension, mean ± sample std over seeds. "
        "AUC: mean Spearman over the log2(dim) axis.",
        "",
        *_header(["group", "seeds"], dims, ["AUC"]),
    ]
    untrained = untrained_scores(runs, dims)
    if untrained:
        backbone, scores = untrained
        auc = area_under_curve(scores, dims)
        cells = [f"{scores[d]:.4f}" for d in dims]
        lines.append(_row(f"{backbone} (untrained)", "-", *cells, f"{auc:.4f}"))
    for g in groups:
        cells = [_pm(g.mean[d], g.std[d]) for d in dims]
        lines.append(_row(g.label, g.n, *cells, _pm(g.auc_mean, g.auc_std)))
    lines += [
        "",
        f"Retention: each run's score at a dim / its score at {full}, mean ± std over seeds "
        f"({small} dims = {100 * small / full:.1f} % of the width).",
        "",
        *_header(["group"], dims),
    ]
    for g in groups:
        cells = [
            f"{100 * g.retention_mean[d]:.1f} %"
            + ("" if math.isnan(g.retention_std[d]) else f" ± {100 * g.retention_std[d]:.1f}")
            for d in dims
        ]
        lines.append(_row(g.label, *cells))
    others = [g for g in groups if g is not reference]
    if others:
        lines += [
            "",
            f"Difference of mean Spearman against **{reference.label}**; *beyond noise* when "
            "|difference| > std(group) + std(reference), i.e. the mean ± std bands do not "
            "overlap (n/a with a single seed).",
            "",
            *_header(["group"], dims),
        ]
        for g in others:
            cells = []
            for d in dims:
                verdict = beyond_noise(g, reference, d)
                word = "n/a" if verdict is None else ("beyond noise" if verdict else "within noise")
                cells.append(f"{g.mean[d] - reference.mean[d]:+.4f} ({word})")
            lines.append(_row(g.label, *cells))
    root = Path(root).resolve()
    shown = root.relative_to(Path.cwd()) if root.is_relative_to(Path.cwd()) else root
    lines += ["", f"Runs (below {shown}):", "", _row("run", "group", "seed", "status")]
    lines.append("| --- | --- | --- | --- |")
    for run in runs:
        status = "finished" if run.status == "finished" else f"**{run.status_word}**: {run.reason}"
        name = run.path.relative_to(root) if run.path.is_relative_to(root) else run.path
        lines.append(_row(name, run.group, run.seed, status))
    return "\n".join(lines) + "\n"


def csv_report(groups: list[Group], dims: list[int], reference: Group) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["group", "matryoshka", "n_seeds", "dim", "bytes_float32", "spearman_mean", "spearman_std",
         "retention_mean", "retention_std", "auc_mean", "auc_std", "diff_vs_reference",
         "beyond_seed_noise"]
    )  # fmt: skip
    for g in groups:
        for d in dims:
            verdict = None if g is reference else beyond_noise(g, reference, d)
            writer.writerow(
                [g.label, g.matryoshka, g.n, d, 4 * d, g.mean[d], g.std[d], g.retention_mean[d],
                 g.retention_std[d], g.auc_mean, g.auc_std, g.mean[d] - reference.mean[d],
                 "" if verdict is None else verdict]
            )  # fmt: skip
    return out.getvalue()
