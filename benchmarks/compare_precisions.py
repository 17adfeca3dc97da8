"""Does bf16-mixed training track fp32? Two runs of the same seed, data and steps, one per
precision, each a `gpu_throughput.py --out` file or a train.py run folder (its
csv/metrics.csv: the logged steps): per dim, the mean training loss over windows of logged
steps and the largest relative gap between the two runs' windows.

    python benchmarks/compare_precisions.py FP32 BF16 [--window 25] [--tolerance 0.05] \
        [--out FILE.json] [--plot FILE.png]

Exit status 1 when a window's gap exceeds the tolerance (bf16 does not track fp32), 0 else.
Windows, not single steps: the two precisions round differently, so their losses part step by
step while the trajectories should agree.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def load_run(path: Path) -> dict:
    """{"precision", "losses_per_step": [{"train/loss@<dim>": value, ...}, ...]} from a
    gpu_throughput.py JSON or a run folder (the rows of csv/metrics.csv that hold losses)."""
    if path.is_file():
        return json.loads(path.read_text())
    metrics = path / "csv" / "metrics.csv"
    if not metrics.is_file():
        sys.exit(
            f"error: {path} is neither a gpu_throughput.py JSON nor a run folder with "
            "csv/metrics.csv."
        )
    steps = []
    with metrics.open() as f:
        for row in csv.DictReader(f):
            losses = {k: float(v) for k, v in row.items() if k.startswith("train/loss@") and v}
            if losses:
                steps.append({"step": int(row["step"]), **losses})
    config = path / ".hydra" / "config.yaml"  # what the run was started with
    precision = "?"
    if config.is_file():
        from omegaconf import OmegaConf

        precision = str(OmegaConf.load(config).trainer.precision)
    return {"precision": precision, "losses_per_step": steps}


def plot(reference: dict, other: dict, window: int, out: Path) -> None:
    """The windowed loss of both runs at each dim, one panel per dim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for step in reference["losses_per_step"] for k in step if "@" in k},
                  key=lambda k: -int(k.split("@")[1]))  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), sharey=True)
    for ax, key in zip(list(axes) if len(keys) > 1 else [axes], keys, strict=True):
        for run, style in ((reference, "-"), (other, "--")):
            values = window_means(run["losses_per_step"], key, window)
            ax.plot(range(1, len(values) + 1), values, style, label=run["precision"])
        ax.set_title(key.replace("train/", ""))
        ax.set_xlabel(f"window of {window} logged steps")
    axes_list = list(axes) if len(keys) > 1 else [axes]
    axes_list[0].set_ylabel("training loss")
    axes_list[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def window_means(losses: list[dict], key: str, window: int) -> list[float]:
    values = [step[key] for step in losses if key in step]
    return [sum(values[i : i + window]) / len(values[i : i + window])
            for i in range(0, len(values), window)]  # fmt: skip


def compare(reference: dict, other: dict, window: int) -> dict[str, float]:
    """Per loss key: the largest |other - reference| / |reference| over the windows."""
    keys = sorted({k for step in reference["losses_per_step"] for k in step if k != "step"})
    gaps = {}
    for key in keys:
        ref = window_means(reference["losses_per_step"], key, window)
        got = window_means(other["losses_per_step"], key, window)
        gaps[key] = max(abs(g - r) / max(abs(r), 1e-12) for r, g in zip(ref, got, strict=False))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="the fp32 run: JSON or run folder")
    parser.add_argument("other", type=Path, help="the bf16 run: JSON or run folder")
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="a PNG of both loss curves per dim")
    a = parser.parse_args()
    reference, other = (load_run(p) for p in (a.reference, a.other))
    gaps = compare(reference, other, a.window)
    if not gaps:
        sys.exit("error: the files hold no train/loss@<dim> values (run with --out).")
    worst = max(gaps.values())
    result = {"reference": reference["precision"], "other": other["precision"],
              "window": a.window, "max_relative_gap_by_key": gaps, "worst": worst,
              "tolerance": a.tolerance, "tracks": worst <= a.tolerance}  # fmt: skip
    for key, gap in gaps.items():
        print(f"{key:>18}: largest window gap {gap:.2%}")
    print(f"bf16 tracks fp32: {result['tracks']} (worst {worst:.2%}, tolerance {a.tolerance:.0%})")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    if a.plot:
        plot(reference, other, a.window, a.plot)
    sys.exit(0 if result["tracks"] else 1)


if __name__ == "__main__":
    main()
