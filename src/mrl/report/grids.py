"""The layers x dims grids in a report: groups whose runs hold a `grid` (2D Matryoshka runs, or
eval.py `grid=true`) get the mean grid over their seeds as a table and a heatmap, and each
other group's difference from the reference group's grid as a diverging heatmap.

Files: grid_<group>.png and grid_<group>_minus_<reference>.png beside report.md; the markdown
section lists every (layer, dim) cell as mean over seeds (n), so it reads without the images.
"""

from __future__ import annotations

import re
from pathlib import Path

from mrl.common.files import write_atomic
from mrl.evaluation.grid import Grid, grid_png, parse_grid
from mrl.report.stats import Group


def mean_grid(group: Group) -> Grid | None:
    """The mean over the group's runs of their grids (None when a run has none)."""
    grids = [r.results.extra.get("grid") for r in group.runs]
    if not grids or any(g is None for g in grids):
        return None
    parsed = [parse_grid(g) for g in grids]
    cells = set.intersection(*({(a, b) for a in g for b in g[a]} for g in parsed))
    mean: Grid = {}
    for layer, dim in sorted(cells):
        mean.setdefault(layer, {})[dim] = sum(g[layer][dim] for g in parsed) / len(parsed)
    return mean


def _file(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", label).strip("_") or "group"


def grid_files(groups: list[Group], reference: Group) -> list[str]:
    """The names of the heatmaps `grid_section` writes (to check them before anything is)."""
    grids = {g.label for g in groups if mean_grid(g) is not None}
    names = []
    for group in (g for g in groups if g.label in grids):
        names.append(f"grid_{_file(group.label)}.png")
        if reference.label in grids and group.label != reference.label:
            names.append(f"grid_{_file(group.label)}_minus_{_file(reference.label)}.png")
    return names


def grid_section(groups: list[Group], reference: Group, out: Path) -> str:
    """Writes the heatmaps and returns the markdown section ('' when no group has a grid)."""
    grids = {g.label: grid for g in groups if (grid := mean_grid(g)) is not None}
    if not grids:
        return ""
    lines = ["", "## Layers x dims (STS-B test Spearman, mean over seeds)", ""]
    ref_grid = grids.get(reference.label)
    for group in groups:
        grid = grids.get(group.label)
        if grid is None:
            continue
        name = f"grid_{_file(group.label)}.png"
        write_atomic(out / name, grid_png(grid, f"{group.label} (n={group.n})"))
        dims = sorted({d for row in grid.values() for d in row}, reverse=True)
        lines += [f"### {group.label} (n={group.n})", "",
                  "| layer | " + " | ".join(str(d) for d in dims) + " |",
                  "|" + " --- |" * (len(dims) + 1)]  # fmt: skip
        for layer in sorted(grid):
            cells = " | ".join(f"{grid[layer][d]:.4f}" if d in grid[layer] else "-" for d in dims)
            lines.append(f"| {layer} | {cells} |")
        lines += ["", f"![{group.label}]({name})"]
        if ref_grid is not None and group.label != reference.label:
            diff = f"grid_{_file(group.label)}_minus_{_file(reference.label)}.png"
            title = f"{group.label} minus {reference.label}"
            write_atomic(out / diff, grid_png(grid, title, reference=ref_grid))
            lines.append(f"![{title}]({diff})")
        lines.append("")
    return "\n".join(lines)
