"""Sweep reports: runs grouped by what was varied, per-dim Spearman mean +- std over seeds,
retention, area under the curve, differences against a reference beyond seed noise, one plot.

    python -m mrl.report SWEEP_OR_RUN_DIR [...] [--out DIR] [--reference GROUP] [--x dim|bytes]
                         [--wandb-project PROJECT]

Every folder below the given paths that holds a results.json, a failed.json or a Hydra job
record (.hydra/) is a run. Runs are grouped by the overrides that differ between them (seed
aside), so seeds of one setting pool into one row. Runs that failed, never finished or left a
corrupt results.json are listed by name with the reason, and the report goes on without them.
Writes report.md, report.csv and report.png into --out (default: the common folder of the runs).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mrl.errors import ConfigError
from mrl.results import png_bytes, write_atomic

# Overrides that never define a group: the seed is pooled; the rest is bookkeeping or hardware.
NOT_GROUPING = {"seed", "sweep", "exp", "ckpt_path", "callbacks.progress_bar", "logger", "trainer"}
NOT_GROUPING |= {"eval.compare_to"}


@dataclass
class Run:
    path: Path
    status: str  # finished | failed | unfinished | corrupt
    results: dict | None = None
    reason: str = ""
    overrides: dict[str, str] | None = None
    group: str = ""

    @property
    def seed(self):
        if self.results:
            return self.results.get("seed")
        return (self.overrides or {}).get("seed", "?")


@dataclass
class Group:
    label: str
    runs: list[Run]
    matryoshka: bool
    mean: dict[int, float] = field(default_factory=dict)
    std: dict[int, float] = field(default_factory=dict)
    retention_mean: dict[int, float] = field(default_factory=dict)
    retention_std: dict[int, float] = field(default_factory=dict)
    values: dict[int, list[float]] = field(default_factory=dict)
    auc_mean: float = math.nan
    auc_std: float = math.nan

    @property
    def n(self) -> int:
        return len(self.runs)


def _parse_overrides(items: list[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, _, value = item.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def _read_run(path: Path) -> Run:
    overrides = None
    hydra_overrides = path / ".hydra" / "overrides.yaml"
    if hydra_overrides.is_file():
        overrides = _parse_overrides(yaml.safe_load(hydra_overrides.read_text()) or [])
    result_file, failed_file = path / "results.json", path / "failed.json"
    if result_file.is_file():
        try:
            results = json.loads(result_file.read_text())
            if not isinstance(results, dict) or "test" not in results or "dims" not in results:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return Run(path, "corrupt", reason="results.json is not a valid results file")
        if results.get("overrides") is not None:
            overrides = _parse_overrides(results["overrides"])
        return Run(path, "finished", results=results, overrides=overrides)
    if failed_file.is_file():
        try:
            reason = json.loads(failed_file.read_text())["error"]
        except (ValueError, KeyError, TypeError):
            reason = "failed.json is unreadable"
        return Run(path, "failed", reason=reason, overrides=overrides)
    return Run(
        path, "unfinished", reason="no results.json (still running or killed)", overrides=overrides
    )


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run folder at or below `paths`, in path order."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path} does not exist; give sweep or run folders.")
        path = path.resolve()
        if path.is_file():
            found.add(path.parent)
            continue
        for marker in ("results.json", "failed.json", ".hydra/overrides.yaml"):
            for hit in path.rglob(marker):
                found.add(hit.parent.parent if marker.startswith(".hydra") else hit.parent)
    return [_read_run(p) for p in sorted(found)]


def label_runs(runs: list[Run]) -> None:
    """Label = the experiment (if several) + the overrides that differ between runs."""
    experiments = {r.results.get("experiment") for r in runs if r.results}
    with_overrides = all(r.overrides is not None for r in runs)
    if with_overrides:
        keys = {k for r in runs for k in r.overrides if k not in NOT_GROUPING}
        keys = {k for k in keys if not k.startswith("hydra.")}
        varying = sorted(k for k in keys if len({r.overrides.get(k) for r in runs}) > 1)
    root = Path(os.path.commonpath([r.path for r in runs])) if len(runs) > 1 else runs[0].path
    for run in runs:
        exp = (run.results or {}).get("experiment") or _experiment_from_path(run)
        parts = [exp] if len(experiments) > 1 or not with_overrides else []
        if with_overrides:
            parts += [f"{k}={run.overrides.get(k, '-')}" for k in varying]
        else:
            rel = run.path.relative_to(root).parts if run.path != root else ()
            parts = [p for p in rel if not (p.startswith("seed") and p[4:].isdigit())] or [exp]
        run.group = " ".join(parts) or exp


def _experiment_from_path(run: Run) -> str:
    config = run.path / ".hydra" / "config.yaml"
    if config.is_file():
        with open(config) as f:
            return (yaml.safe_load(f) or {}).get("exp_name", run.path.name)
    return run.path.name


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def area_under_curve(scores: dict[int, float], dims: list[int]) -> float:
    """Mean Spearman over the log2(dim) axis (trapezoids), so every halving counts the same."""
    xs = sorted(dims)
    if len(xs) == 1:
        return scores[xs[0]]
    area = sum(
        (math.log2(b) - math.log2(a)) * (scores[a] + scores[b]) / 2
        for a, b in zip(xs, xs[1:], strict=False)
    )
    return area / (math.log2(xs[-1]) - math.log2(xs[0]))


def common_dims(runs: list[Run]) -> list[int]:
    dim_sets = [{int(d) for d in r.results["dims"]} for r in runs]
    return sorted(set.intersection(*dim_sets), reverse=True)


def aggregate(runs: list[Run]) -> tuple[list[Group], list[int]]:
    """Groups of finished runs with per-dim statistics over their seeds, on the common dims."""
    finished = [r for r in runs if r.status == "finished"]
    if not finished:
        raise ConfigError("no finished run (no valid results.json) below the given folders.")
    dims = common_dims(finished)
    if not dims:
        raise ConfigError("the runs share no evaluated dimension; report runs of one backbone.")
    by_label: dict[str, list[Run]] = {}
    for run in finished:
        by_label.setdefault(run.group, []).append(run)
    groups = []
    for label, members in by_label.items():
        group = Group(label, members, matryoshka=bool(members[0].results.get("matryoshka")))
        full = max(dims)
        aucs = []
        for run in members:
            scores = {d: run.results["test"][str(d)] for d in dims}
            aucs.append(area_under_curve(scores, dims))
            for d in dims:
                group.values.setdefault(d, []).append(scores[d])
        for d in dims:
            group.mean[d], group.std[d] = _mean_std(group.values[d])
            ratios = [s / f for s, f in zip(group.values[d], group.values[full], strict=True)]
            group.retention_mean[d], group.retention_std[d] = _mean_std(ratios)
        group.auc_mean, group.auc_std = _mean_std(aucs)
        groups.append(group)
    return groups, dims


def pick_reference(groups: list[Group], requested: str | None) -> Group:
    """The group others are compared with: as requested, else the first baseline, else the first."""
    if requested is not None:
        for group in groups:
            if group.label == requested:
                return group
        names = ", ".join(repr(g.label) for g in groups)
        raise ConfigError(f"--reference {requested!r} is not a group; the groups are {names}.")
    return next((g for g in groups if not g.matryoshka), groups[0])


def beyond_noise(group: Group, reference: Group, dim: int) -> bool | None:
    """|difference of means| > std(group) + std(reference): the mean +- std bands do not
    overlap. None when either side has a single seed (no spread to compare with)."""
    if group.n < 2 or reference.n < 2:
        return None
    diff = abs(group.mean[dim] - reference.mean[dim])
    return diff > group.std[dim] + reference.std[dim]


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


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
        "| group | seeds | " + " | ".join(str(d) for d in dims) + " | AUC |",
        "|" + " --- |" * (len(dims) + 3),
    ]
    untrained = next(
        (r.results for r in runs if r.results and r.results.get("untrained_test")), None
    )
    if untrained:
        cells = [f"{untrained['untrained_test'][str(d)]:.4f}" for d in dims]
        auc = area_under_curve({d: untrained["untrained_test"][str(d)] for d in dims}, dims)
        lines.append(
            f"| {untrained['backbone']} (untrained) | - | " + " | ".join(cells) + f" | {auc:.4f} |"
        )
    for g in groups:
        cells = [_pm(g.mean[d], g.std[d]) for d in dims]
        lines.append(
            f"| {g.label} | {g.n} | " + " | ".join(cells) + f" | {_pm(g.auc_mean, g.auc_std)} |"
        )
    lines += [
        "",
        f"Retention: each run's score at a dim / its score at {full}, mean ± std over seeds "
        f"({small} dims = {100 * small / full:.1f} % of the width).",
        "",
        "| group | " + " | ".join(str(d) for d in dims) + " |",
        "|" + " --- |" * (len(dims) + 1),
    ]
    for g in groups:
        cells = [
            f"{100 * g.retention_mean[d]:.1f} %"
            + ("" if math.isnan(g.retention_std[d]) else f" ± {100 * g.retention_std[d]:.1f}")
            for d in dims
        ]
        lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    others = [g for g in groups if g is not reference]
    if others:
        lines += [
            "",
            f"Difference of mean Spearman against **{reference.label}**; *beyond noise* when "
            "|difference| > std(group) + std(reference), i.e. the mean ± std bands do not "
            "overlap (n/a with a single seed).",
            "",
            "| group | " + " | ".join(str(d) for d in dims) + " |",
            "|" + " --- |" * (len(dims) + 1),
        ]
        for g in others:
            cells = []
            for d in dims:
                verdict = beyond_noise(g, reference, d)
                word = "n/a" if verdict is None else ("beyond noise" if verdict else "within noise")
                cells.append(f"{g.mean[d] - reference.mean[d]:+.4f} ({word})")
            lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    root = Path(root).resolve()
    shown = root.relative_to(Path.cwd()) if root.is_relative_to(Path.cwd()) else root
    lines += ["", f"Runs (below {shown}):", "", "| run | group | seed | status |"]
    lines.append("| --- | --- | --- | --- |")
    for run in runs:
        status = run.status if run.status == "finished" else f"**{run.status}**: {run.reason}"
        name = run.path.relative_to(root) if run.path.is_relative_to(root) else run.path
        lines.append(f"| {name} | {run.group} | {run.seed} | {status} |")
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


def overlay_png(runs: list[Run], groups: list[Group], dims: list[int], x: str = "dim") -> bytes:
    """All groups' mean curves (bands: ± std over seeds); MRL solid, baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [4 * d if x == "bytes" else d for d in dims]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for g in groups:
        means = [g.mean[d] for d in dims]
        style = "-" if g.matryoshka else "--"
        (line,) = ax.plot(xs, means, style, marker="o", label=f"{g.label} (n={g.n})")
        if g.n > 1:
            low = [g.mean[d] - g.std[d] for d in dims]
            high = [g.mean[d] + g.std[d] for d in dims]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    untrained = next(
        (r.results for r in runs if r.results and r.results.get("untrained_test")), None
    )
    if untrained:
        ax.plot(xs, [untrained["untrained_test"][str(d)] for d in dims], ":", color="grey",
                label="backbone before training")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.set_xlabel(
        "bytes per embedding (float32, log2 scale)"
        if x == "bytes"
        else "embedding dimension (log2 scale)"
    )
    ax.set_ylabel("STS-B test Spearman (cosine)")
    ax.set_title("Size vs. performance (solid: Matryoshka loss, dashed: full width only)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def log_to_wandb(
    project: str, group_name: str, groups: list[Group], dims: list[int], out: Path
) -> None:
    """The overlay (line_series) and the table as one wandb run of job_type report."""
    import wandb

    from mrl.hub import wandb_mode

    run = wandb.init(project=project, group=group_name, name=f"report-{group_name}",
                     job_type="report", dir=str(out), mode=wandb_mode("auto"))  # fmt: skip
    try:
        rows = list(csv.reader(io.StringIO((out / "report.csv").read_text())))
        run.log(
            {
                "report/table": wandb.Table(columns=rows[0], data=rows[1:]),
                "report/curves": wandb.plot.line_series(
                    xs=list(dims), ys=[[g.mean[d] for d in dims] for g in groups],
                    keys=[g.label for g in groups], title="STS-B test Spearman vs. dim",
                    xname="dim",
                ),
                "report/png": wandb.Image(str(out / "report.png")),
            }
        )  # fmt: skip
    finally:
        wandb.finish()


def collect(paths: list[Path]) -> tuple[list[Run], list[Group], list[int]]:
    """The runs below `paths` (unfinished ones warned about), their groups and common dims."""
    runs = find_runs([Path(p) for p in paths])
    if not runs:
        raise ConfigError(f"no run folders below {', '.join(map(str, paths))}.")
    label_runs(runs)
    for run in runs:
        if run.status != "finished":
            print(f"warning: {run.path}: {run.status}: {run.reason}", file=sys.stderr)
    groups, dims = aggregate(runs)
    return runs, groups, dims


def runs_from_wandb(wandb_runs) -> list[Run]:
    """Runs of a wandb group (`wandb.Api().runs(project, {"group": name})`) as report runs,
    from each run's config and its test/spearman@<dim> summary metrics."""
    runs = []
    for w in wandb_runs:
        config, summary = dict(w.config), dict(w.summary)
        test = {
            key.split("@")[1]: float(value)
            for key, value in summary.items()
            if key.startswith("test/spearman@")
        }
        overrides = _parse_overrides(config.get("overrides") or [])
        if not test:
            runs.append(Run(Path(w.name), "unfinished", reason="no test metrics in wandb",
                            overrides=overrides))  # fmt: skip
            continue
        results = {
            "experiment": config.get("exp_name", w.name),
            "backbone": config.get("model", {}).get("backbone", "?"),
            "matryoshka": config.get("matryoshka", {}).get("enabled", True),
            "dims": sorted((int(d) for d in test), reverse=True),
            "test": test,
            "seed": config.get("seed"),
        }
        runs.append(Run(Path(w.name), "finished", results=results, overrides=overrides))
    label_runs(runs)
    return runs


def build_report(paths: list[Path], out: Path | None = None, reference: str | None = None,
                 x: str = "dim") -> tuple[str, Path, list[Group], list[int]]:  # fmt: skip
    """Find, group and aggregate the runs; write report.md/.csv/.png into `out`."""
    runs, groups, dims = collect(paths)
    ref = pick_reference(groups, reference)
    root = Path(os.path.commonpath([Path(p).resolve() for p in paths]))
    if root.is_file() or (root / "results.json").is_file():  # a single run: its parent folder
        root = root.parent
    out = root if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    markdown = markdown_report(runs, groups, dims, ref, root)
    write_atomic(out / "report.csv", csv_report(groups, dims, ref))
    write_atomic(out / "report.png", overlay_png(runs, groups, dims, x))
    write_atomic(out / "report.md", markdown + "\n![size vs. performance](report.png)\n")
    return markdown, out, groups, dims


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One report over the runs of a sweep (or runs).")
    parser.add_argument(
        "paths", nargs="+", type=Path, help="sweep folders, run folders or results.json files"
    )
    parser.add_argument(
        "--out", type=Path, help="folder for report.md/.csv/.png (default: the runs' common folder)"
    )
    parser.add_argument(
        "--reference", help="group to compare the others with (default: the first baseline)"
    )
    parser.add_argument("--x", choices=["dim", "bytes"], default="dim", help="x axis of the plot")
    parser.add_argument(
        "--wandb-project", help="also log the table and overlay to this wandb project"
    )
    args = parser.parse_args(argv)  # fmt: skip
    try:
        markdown, out, groups, dims = build_report(args.paths, args.out, args.reference, args.x)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(markdown, end="")
    print(f"wrote {out / 'report.md'}, report.csv, report.png", file=sys.stderr)
    if args.wandb_project:
        log_to_wandb(args.wandb_project, out.name, groups, dims, out)


if __name__ == "__main__":
    main()
