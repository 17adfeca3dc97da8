"""Does bf16-mixed training track fp32? Two `gpu_throughput.py --out` files of the same seed,
data and steps, one per precision: per dim, the mean training loss over windows of steps and
the largest relative gap between the two runs' windows.

    python benchmarks/compare_precisions.py FP32.json BF16.json [--window 25] [--tolerance 0.05]

Exit status 1 when a window's gap exceeds the tolerance (bf16 does not track fp32), 0 else.
Windows, not single steps: the two precisions round differently, so their losses part step by
step while the trajectories should agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def window_means(losses: list[dict], key: str, window: int) -> list[float]:
    values = [step[key] for step in losses if key in step]
    return [sum(values[i : i + window]) / len(values[i : i + window])
            for i in range(0, len(values), window)]  # fmt: skip


def compare(reference: dict, other: dict, window: int) -> dict[str, float]:
    """Per loss key: the largest |other - reference| / |reference| over the windows."""
    keys = sorted({k for step in reference["losses_per_step"] for k in step})
    gaps = {}
    for key in keys:
        ref = window_means(reference["losses_per_step"], key, window)
        got = window_means(other["losses_per_step"], key, window)
        gaps[key] = max(abs(g - r) / max(abs(r), 1e-12) for r, g in zip(ref, got, strict=False))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="the fp32 run's JSON")
    parser.add_argument("other", type=Path, help="the bf16-mixed run's JSON")
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    reference, other = (json.loads(p.read_text()) for p in (a.reference, a.other))
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
    sys.exit(0 if result["tracks"] else 1)


if __name__ == "__main__":
    main()
