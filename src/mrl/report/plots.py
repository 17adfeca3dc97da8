"""The report's pictures: the overlay of every group's mean curve (report.png) and the wandb
run that carries the table, the curves and the image.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mrl.artifacts.results import png_bytes
from mrl.report.runs import Run
from mrl.report.stats import Group, untrained_scores
from mrl.report.tables import REPORT_CSV, REPORT_PNG, seeds_text


def overlay_png(runs: list[Run], rows: list[Group], dims: list[int], x: str = "dim") -> bytes:
    """The mean curve of every row (bands: ± std over seeds): MRL solid, baseline dashed,
    unknown (eval.py results) dash-dotted, "trained at each size" as its own line of squares
    with ± std error bars at the sizes that were trained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def x_of(d: int) -> int:
        return 4 * d if x == "bytes" else d

    xs = [x_of(d) for d in dims]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for g in rows:
        if g.parts:
            at = [d for d in dims if d in g.parts]
            ax.errorbar([x_of(d) for d in at], [g.mean[d] for d in at],
                        yerr=[0 if math.isnan(g.std[d]) else g.std[d] for d in at], fmt="-s",
                        color="black", markersize=6, capsize=3,
                        label=f"{g.label} (n={seeds_text(g)} per size)")  # fmt: skip
            continue
        means = [g.mean[d] for d in dims]
        style = {True: "-", False: "--"}.get(g.matryoshka, "-.")
        (line,) = ax.plot(xs, means, style, marker="o", label=f"{g.label} (n={g.n})")
        if g.n > 1:
            low = [g.mean[d] - g.std[d] for d in dims]
            high = [g.mean[d] + g.std[d] for d in dims]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    untrained = untrained_scores(runs, dims)
    if untrained:
        ax.plot(xs, [untrained[1][d] for d in dims], ":", color="grey",
                label="backbone before training")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.set_xlabel(
        "bytes per embedding (float32, log2 scale)"
        if x == "bytes"
        else "embedding dimension (log2 scale)"
    )
    ax.set_ylabel("STS-B test Spearman (cosine)")
    title = "Size vs. performance (solid: Matryoshka loss, dashed: full width only"
    each_size = any(g.parts for g in rows)
    ax.set_title(title + ("; black squares: trained at each size)" if each_size else ")"),
                 **({"fontsize": 9} if each_size else {}))  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def log_to_wandb(
    project: str, group_name: str, groups: list[Group], dims: list[int], out: Path
) -> None:
    """The overlay (line_series) and the table as one wandb run of job_type report."""
    import wandb

    from mrl.common.hub import wandb_mode

    run = wandb.init(project=project, group=group_name, name=f"report-{group_name}",
                     job_type="report", dir=str(out), mode=wandb_mode("auto"))  # fmt: skip
    try:
        rows = list(csv.reader(io.StringIO((out / REPORT_CSV).read_text())))
        run.log(
            {
                "report/table": wandb.Table(columns=rows[0], data=rows[1:]),
                "report/curves": wandb.plot.line_series(
                    xs=list(dims), ys=[[g.mean[d] for d in dims] for g in groups],
                    keys=[g.label for g in groups], title="STS-B test Spearman vs. dim",
                    xname="dim",
                ),
                "report/png": wandb.Image(str(out / REPORT_PNG)),
            }
        )  # fmt: skip
    finally:
        wandb.finish()
