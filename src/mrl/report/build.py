"""Sweep reports (the CLI): runs grouped by what was varied, per-dim Spearman mean +- std over
seeds, retention, area under the curve, differences against a reference with their bootstrap
intervals, one plot.

    python -m mrl.report SWEEP_OR_RUN_DIR [...] [--out DIR] [--reference GROUP] [--x dim|bytes]
                         [--group-by overrides|folder] [--n-boot 2000] [--level 0.95]
                         [--wandb-project PROJECT]

Every folder below the given paths that holds a results.json, a failed.json or a Hydra job
record (.hydra/) is a run (mrl.report.runs); each results.json is read as a `RunResults`. Runs
are grouped by the overrides that differ between them (seed aside), or with --group-by folder
by their first folder below the path given, so seeds of one setting pool into one row
(mrl.report.stats). Groups trained for one size alone (matryoshka.fixed_dim) also make one
"trained at each size" row. Differences against the reference carry an interval from the runs'
test_pairs.npz (mrl.report.intervals). Runs that failed, never finished or left a corrupt
results.json are listed by name with the reason, and the report goes on without them; debug
runs (trainer.fast_dev_run, or "debug": true) are listed as "debug (not a real run)" and never
grouped. Writes report.md, report.csv (mrl.report.tables) and report.png (mrl.report.plots)
into --out (default: the common folder of the runs). A re-run into the same folder replaces its
own earlier report (recognised by the headers of report.md / report.csv); an existing file it
does not recognise, or one of its inputs, stops it before anything is written. Bad input: one
`error:` line, status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from mrl.artifacts.run_folder import RESULTS
from mrl.common.errors import ConfigError
from mrl.common.files import first_line, refuse_overwrite, write_atomic
from mrl.report.grids import grid_files, grid_section
from mrl.report.intervals import differences, group_sims
from mrl.report.plots import log_to_wandb, overlay_png
from mrl.report.runs import (
    Run,
    find_runs,
    label_by_folder,
    label_runs,
)
from mrl.report.stats import (
    EACH_SIZE,
    Group,
    aggregate,
    each_size_curves,
    pick_reference,
    shown_groups,
)
from mrl.report.tables import REPORT_CSV, REPORT_MD, REPORT_PNG, csv_report, markdown_report

GROUP_BY = ("overrides", "folder")


def collect(
    paths: list[Path], group_by: str = "overrides"
) -> tuple[list[Run], list[Group], list[int]]:
    """The runs below `paths` (the ones that are not finished warned about), their groups and
    common dims; `group_by` "folder" labels each run by its first folder below its path."""
    runs = find_runs([Path(p) for p in paths])
    if not runs:
        raise ConfigError(f"no run folders below {', '.join(map(str, paths))}.")
    if group_by == "folder":
        label_by_folder(runs, [Path(p) for p in paths])
    else:
        label_runs(runs)
    for run in runs:
        if run.status != "finished":
            print(f"warning: {run.path}: {run.status_word}: {run.reason}", file=sys.stderr)
    groups, dims = aggregate(runs)
    return runs, groups, dims


def earlier_report(out: Path):
    """Whether a file in `out` is the report's own earlier output: report.md and report.csv by
    their headers; the plot and grid heatmaps when the folder's report.md or .csv is ours."""
    header = r"# Report: \d+ runs?, \d+ finished, \d+ groups?"
    md_ours = re.fullmatch(header, first_line(out / REPORT_MD))
    csv_ours = first_line(out / REPORT_CSV).startswith("group,matryoshka,")

    def ours(path: Path) -> bool:
        if path.name == REPORT_MD:
            return bool(md_ours)
        if path.name == REPORT_CSV:
            return csv_ours
        return bool(md_ours) or csv_ours

    return ours


def build_report(
    paths: list[Path],
    out: Path | None = None,
    reference: str | None = None,
    x: str = "dim",
    group_by: str = "overrides",
    n_boot: int = 2000,
    level: float = 0.95,
) -> tuple[str, Path, list[Group], list[int]]:
    """Find, group and aggregate the runs, put intervals on the differences against the
    reference; write report.md/.csv/.png into `out`."""
    if n_boot < 1:
        raise ConfigError(f"--n-boot {n_boot} must be a positive number of replicates.")
    if not 0 < level < 1:
        raise ConfigError(f"--level {level} must be in (0, 1), e.g. 0.95.")
    runs, groups, dims = collect(paths, group_by)
    curves = each_size_curves(groups, dims)
    ref = pick_reference(groups + curves, reference)
    rows = shown_groups(groups, curves, ref)
    sims = group_sims(groups, dims)
    diffs = differences(groups + curves, ref, dims, sims, n_boot, level)
    root = Path(os.path.commonpath([Path(p).resolve() for p in paths]))
    if root.is_file() or any(r.path == root for r in runs):  # a single run: its parent folder
        root = root.parent
    out = root if out is None else Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"--out {str(out)!r} cannot be made ({os.strerror(err.errno or 0)}); give a "
            "writable folder."
        ) from None
    # a re-run replaces its own earlier report; an input or a foreign file stops it first
    names = [REPORT_CSV, REPORT_PNG, REPORT_MD, *grid_files(groups, ref)]
    refuse_overwrite([out / n for n in names], earlier_report(out), paths)
    markdown = markdown_report(runs, rows, dims, ref, root, diffs, n_boot, level)
    write_atomic(out / REPORT_CSV, csv_report(groups + curves, dims, ref, diffs))
    write_atomic(out / REPORT_PNG, overlay_png(runs, rows, dims, x))
    grids = grid_section(groups, ref, out)  # 2D runs: layers x dims heatmaps
    write_atomic(out / REPORT_MD, markdown + f"\n![size vs. performance]({REPORT_PNG})\n" + grids)
    return markdown, out, groups, dims


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error:` line and status 2, like a ConfigError."""

    def error(self, message: str):
        print(f"error: {message} (see python -m mrl.report --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(
        prog="python -m mrl.report", description="One report over the runs of a sweep (or runs)."
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, help=f"sweep folders, run folders or {RESULTS} files"
    )
    parser.add_argument(
        "--out", type=Path, help="folder for report.md/.csv/.png (default: the runs' common folder)"
    )
    parser.add_argument(
        "--reference",
        help=f"group (or '{EACH_SIZE}') to compare the others with (default: the first baseline)",
    )
    parser.add_argument("--x", choices=["dim", "bytes"], default="dim", help="x axis of the plot")
    parser.add_argument(
        "--group-by", choices=GROUP_BY, default="overrides",
        help="group runs by the overrides that differ, or by their first folder below the path",
    )  # fmt: skip
    parser.add_argument(
        "--n-boot", type=int, default=2000, help="bootstrap replicates per interval (2000)"
    )
    parser.add_argument("--level", type=float, default=0.95, help="interval level (0.95)")
    parser.add_argument(
        "--wandb-project", help="also log the table and overlay to this wandb project"
    )
    args = parser.parse_args(argv)
    try:
        markdown, out, groups, dims = build_report(
            args.paths, args.out, args.reference, args.x, args.group_by, args.n_boot, args.level
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown, end="")
    print(f"wrote {out / REPORT_MD}, {REPORT_CSV}, {REPORT_PNG}", file=sys.stderr)
    if args.wandb_project:
        log_to_wandb(args.wandb_project, out.name, groups, dims, out)


if __name__ == "__main__":
    main()
