"""Comparison tables across finished runs: per-dim test Spearman and retention, as markdown.

    python -m mrl.report RUN_DIR [RUN_DIR ...] [--out table.md]

The first run's `untrained_test` scores (the backbone before training) are shown as a row of
their own, so a table reads: untrained backbone, then each run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrl.errors import ConfigError
from mrl.results import load_results


def _row(name: str, scores: dict[str, float], dims: list[int]) -> str:
    full = scores[str(max(dims))]
    cells = [f"{scores[str(d)]:.4f}" for d in dims]
    small = min(dims)
    return f"| {name} | " + " | ".join(cells) + f" | {100 * scores[str(small)] / full:.1f} % |"


def markdown_table(runs: list[dict]) -> str:
    dims = sorted(runs[0]["dims"], reverse=True)
    for run in runs[1:]:
        if sorted(run["dims"], reverse=True) != dims:
            raise ConfigError(
                f"runs evaluate different dims ({dims} vs {run['dims']}); compare runs with the "
                "same dimension schedule."
            )
    small, full = min(dims), max(dims)
    header = (
        "| model | "
        + " | ".join(str(d) for d in dims)
        + f" | retention at {small} ({100 * small / full:.1f} % of dims) |"
    )
    lines = [header, "|" + " --- |" * (len(dims) + 2)]
    if runs[0].get("untrained_test"):
        lines.append(_row(f"{runs[0]['backbone']} (untrained)", runs[0]["untrained_test"], dims))
    for run in runs:
        trained = "all dims" if run["matryoshka"] else f"full width only ({max(run['train_dims'])})"
        lines.append(_row(f"{run['experiment']} (loss at {trained})", run["test"], dims))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Per-dim comparison table of finished runs.")
    parser.add_argument("runs", nargs="+", help="run folders (or their results.json)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        table = markdown_table([load_results(Path(r)) for r in args.runs])
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
