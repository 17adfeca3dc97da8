"""Intervals on a retrieval set: each group's mean per-query metric (e.g. SciFact nDCG@10) at
every dim, and its difference from a reference group with the two-level bootstrap interval of
`mrl.evaluation.intervals.mean_difference_interval` (queries paired, seeds within each group).

    python experiments/retrieval_intervals.py FOLDER --reference fp32 [--set scifact] \\
        [--metric ndcg@10] [--out FOLDER/report.md]

FOLDER holds one subfolder per group, each with one subfolder per seed holding eval.py's
`queries/<set>.npz` (or a copy of it beside the seed's results.json). Every run must list the
same queries in the same order (checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mrl.evaluation.intervals import mean_difference_interval
from mrl.evaluation.retrieval import load_query_scores


def query_files(seed_folder: Path, name: str) -> Path | None:
    for path in (seed_folder / "queries" / f"{name}.npz", seed_folder / f"{name}.npz"):
        if path.is_file():
            return path
    return None


def load_groups(folder: Path, name: str, metric: str) -> tuple[list[str], dict]:
    """(query ids, {group: {dim: (seeds, queries)}}) of every group folder with scores."""
    groups: dict[str, dict[int, np.ndarray]] = {}
    ids: list[str] | None = None
    for group in sorted(p for p in folder.iterdir() if p.is_dir()):
        rows: dict[int, list[np.ndarray]] = {}
        for seed in sorted(p for p in group.iterdir() if p.is_dir()):
            path = query_files(seed, name)
            if path is None:
                continue
            scores = load_query_scores(path)
            if ids is None:
                ids = scores.query_ids
            elif scores.query_ids != ids:
                sys.exit(f"error: {path} scores other queries than the first run; re-run eval.py.")
            for dim, values in scores.per_query[metric].items():
                rows.setdefault(dim, []).append(values)
        if rows:
            groups[group.name] = {d: np.stack(v) for d, v in rows.items()}
    return ids or [], groups


def report(folder: Path, reference: str, name: str, metric: str) -> str:
    ids, groups = load_groups(folder, name, metric)
    if reference not in groups:
        sys.exit(f"error: no group {reference!r} with {name} scores in {folder}: {sorted(groups)}.")
    dims = sorted(groups[reference], reverse=True)
    lines = [
        f"{name} {metric}, {len(ids)} queries: mean over seeds (number of seeds in brackets); "
        "difference "
        f"from `{reference}` with its 95 % two-level bootstrap interval (queries paired, seeds "
        "within each group; * = the interval excludes 0).",
        "",
        "| group | " + " | ".join(map(str, dims)) + " |",
        "|" + " --- |" * (len(dims) + 1),
    ]
    for group, by_dim in groups.items():
        n = next(iter(by_dim.values())).shape[0]
        cells = [f"{by_dim[d].mean():.4f}" for d in dims]
        lines.append(f"| {group} ({n}) | " + " | ".join(cells) + " |")
    lines += ["", "| difference | " + " | ".join(map(str, dims)) + " |",
              "|" + " --- |" * (len(dims) + 1)]  # fmt: skip
    for group, by_dim in groups.items():
        if group == reference:
            continue
        cells = []
        for d in dims:
            if d not in by_dim:
                cells.append("–")
                continue
            i = mean_difference_interval(by_dim[d], groups[reference][d], seed=0)
            star = "*" if i.significant else ""
            cells.append(f"{i.estimate:+.4f} [{i.low:+.4f}, {i.high:+.4f}]{star}")
        lines.append(f"| {group} − {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--set", default="scifact", dest="name")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    text = report(a.folder, a.reference, a.name, a.metric)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
