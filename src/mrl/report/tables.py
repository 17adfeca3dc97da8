"""The report's tables: report.md (scores, retention, differences against the reference with
their intervals, every run with its status) and report.csv (one row per group and dim).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mrl.report.intervals import NO_VALUE, Difference, differences, group_sims, one_seed
from mrl.report.runs import Run
from mrl.report.stats import Group, area_under_curve, untrained_scores

REPORT_MD = "report.md"
REPORT_CSV = "report.csv"
REPORT_PNG = "report.png"


ONE_SEED = "†"  # marks an interval over the test pairs only (one seed on both sides)


def _pm(mean: float | None, std: float, digits: int = 4) -> str:
    if mean is None or math.isnan(mean):
        return NO_VALUE
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def seeds_text(group: Group) -> str:
    """How many seeds a row pools: for a curve, per size (e.g. "3", or "2-3")."""
    counts = sorted({p.n for p in group.parts.values()}) or [group.n]
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def difference_cell(diff: Difference) -> str:
    """`+0.0123 [+0.0040, +0.0201] significant`, `+0.0004 [-0.0030, +0.0041]`, or the
    difference of means with why it has no interval."""
    if diff.mean is None:
        return NO_VALUE
    iv = diff.interval
    if iv is None:
        return f"{diff.mean:+.4f} {diff.reason}"
    cell = f"{iv.estimate:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]"
    cell += " significant" if iv.significant else ""
    return cell + (f" {ONE_SEED}" if one_seed(iv) else "")


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(first: list[str], dims: list[int], last: list[str] = ()) -> list[str]:
    names = [*first, *map(str, dims), *last]
    return [_row(*names), "|" + " --- |" * len(names)]


def _curve_notes(rows: list[Group], dims: list[int]) -> list[str]:
    notes = []
    for c in (g for g in rows if g.parts):
        made = ", ".join(f"{d}: {p.label}" for d, p in c.parts.items())
        gaps = "; – where none was" if len(c.parts) < len(dims) else ""
        notes.append(f"*{c.label}*: at each dim, the group trained for that size alone, "
                     f"scored at it ({made}){gaps}.")  # fmt: skip
    return notes


def _difference_lines(
    rows: list[Group], dims: list[int], reference: Group, diffs: dict, n_boot: int, level: float
) -> list[str]:
    others = [g for g in rows if g is not reference]
    if not others:
        return []
    lines = [
        "",
        f"Difference of mean Spearman against **{reference.label}** with its {100 * level:g} % "
        f"interval (two-level bootstrap, {n_boot} replicates: test pairs paired, seeds within "
        "each group; docs/statistics.md); *significant* where the interval excludes 0.",
        "",
        *_header(["group"], dims),
    ]
    methods = set()
    for g in others:
        cells = [difference_cell(diffs[g.label][d]) for d in dims]
        methods |= {c.interval.method for c in diffs[g.label].values()
                    if c.interval and one_seed(c.interval)}  # fmt: skip
        lines.append(_row(g.label, *cells))
    lines += [f"\n{ONE_SEED} one seed on both sides: {m}." for m in sorted(methods)]
    return lines


def markdown_report(
    runs: list[Run],
    rows: list[Group],
    dims: list[int],
    reference: Group,
    root: Path,
    diffs: dict[str, dict[int, Difference]] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
) -> str:
    """report.md: `rows` are the groups and curves to show (`report_stats.shown_groups`);
    `diffs` come from `report_intervals.differences` (computed here when not given)."""
    if diffs is None:
        groups = [g for g in rows if not g.parts] + [p for c in rows for p in c.parts.values()]
        sims = group_sims(groups, dims)
        diffs = differences(rows, reference, dims, sims, n_boot, level)
    full, small = max(dims), min(dims)
    finished = [r for r in runs if r.status == "finished"]
    groups = [g for g in rows if not g.parts]
    n_groups = len({r.group for r in finished})
    lines = [
        f"# Report: {len(runs)} runs, {len(finished)} finished, {n_groups} groups",
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
    for g in rows:
        cells = [_pm(g.mean.get(d), g.std.get(d, math.nan)) for d in dims]
        lines.append(_row(g.label, seeds_text(g), *cells, _pm(g.auc_mean, g.auc_std)))
    notes = _curve_notes(rows, dims)
    lines += ["", *notes] if notes else []
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
    lines += _difference_lines(rows, dims, reference, diffs, n_boot, level)
    root = Path(root).resolve()
    shown = root.relative_to(Path.cwd()) if root.is_relative_to(Path.cwd()) else root
    lines += ["", f"Runs (below {shown}):", "", _row("run", "group", "seed", "status")]
    lines.append("| --- | --- | --- | --- |")
    for run in runs:
        status = "finished" if run.status == "finished" else f"**{run.status_word}**: {run.reason}"
        name = run.path.relative_to(root) if run.path.is_relative_to(root) else run.path
        lines.append(_row(name, run.group, run.seed, status))
    return "\n".join(lines) + "\n"


def _blank(value) -> object:
    """None and nan as empty CSV cells."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def csv_report(
    rows: list[Group], dims: list[int], reference: Group, diffs: dict[str, dict[int, Difference]]
) -> str:
    """One line per row and dim it has a score at: every group (those trained for one size
    included) and every "trained at each size" curve."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["group", "matryoshka", "fixed_dim", "n_seeds", "dim", "bytes_float32", "spearman_mean",
         "spearman_std", "retention_mean", "retention_std", "auc_mean", "auc_std",
         "diff_vs_reference", "diff_low", "diff_high", "level", "significant", "interval"]
    )  # fmt: skip
    for g in rows:
        for d in (d for d in dims if d in g.mean):
            diff = diffs.get(g.label, {}).get(d) or Difference(0.0)
            iv = diff.interval
            interval = [iv.low, iv.high, iv.level, iv.significant, iv.method] if iv else [
                "", "", "", "", diff.reason]  # fmt: skip
            n = g.parts[d].n if g.parts else g.n
            fixed = d if g.parts else g.fixed_dim
            writer.writerow(
                [g.label, _blank(g.matryoshka), _blank(fixed), n, d, 4 * d, g.mean[d],
                 _blank(g.std[d]), _blank(g.retention_mean.get(d)),
                 _blank(g.retention_std.get(d)), _blank(g.auc_mean), _blank(g.auc_std),
                 iv.estimate if iv else diff.mean, *interval]
            )  # fmt: skip
    return out.getvalue()
