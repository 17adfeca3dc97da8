"""Run outputs: results.json, curve.csv and curve.png (size vs. performance), written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from mrl.errors import ConfigError


def default_file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp would give 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename: readers see old or new, never half."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, default_file_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def curve_rows(results: dict) -> list[dict]:
    """One row per dim: Spearman on test (and validation, untrained), retention, fraction."""
    full = max(results["dims"])
    test = results["test"]
    rows = []
    for dim in sorted(results["dims"], reverse=True):
        key = str(dim)
        row = {
            "dim": dim,
            "fraction_of_full": dim / full,
            "test_spearman": test[key],
            "test_retention": test[key] / test[str(full)],
            "validation_spearman": results.get("validation", {}).get(key),
        }
        if results.get("untrained_test"):
            row["untrained_test_spearman"] = results["untrained_test"][key]
        rows.append(row)
    return rows


def curve_csv(results: dict) -> str:
    rows = curve_rows(results)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def load_results(run_dir: str | Path, field: str | None = None) -> dict:
    """A finished run's results.json (a run folder or the file itself); `field` names the
    option the path came from, for the error message."""
    path = Path(run_dir)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        given = f"{field}={str(run_dir)!r}" if field else str(run_dir)
        raise ConfigError(f"{given} holds no results.json; give a finished run folder.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{path} is not valid JSON; re-run that experiment.") from None


def curve_png(results: dict, compare: list[dict] | None = None) -> bytes:
    """Spearman vs. dimension on a log2 axis, retention annotated; other runs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    runs = [results, *(compare or [])]
    for i, run in enumerate(runs):
        rows = curve_rows(run)
        dims = [r["dim"] for r in rows]
        scores = [r["test_spearman"] for r in rows]
        label = run.get("experiment", f"run {i}")
        (line,) = ax.plot(dims, scores, marker="o", label=label)
        for r in rows:
            ax.annotate(
                f"{100 * r['test_retention']:.1f}%",
                (r["dim"], r["test_spearman"]),
                textcoords="offset points",
                xytext=(0, 7 if i == 0 else -13),
                ha="center",
                fontsize=7,
                color=line.get_color(),
            )
    if results.get("untrained_test"):
        rows = curve_rows(results)
        ax.plot(
            [r["dim"] for r in rows],
            [r["untrained_test_spearman"] for r in rows],
            linestyle="--",
            color="grey",
            label="backbone before training",
        )
    ax.set_xscale("log", base=2)
    dims = sorted({d for run in runs for d in run["dims"]})
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dimension (log2 scale)")
    ax.set_ylabel("STS-B test Spearman (cosine)")
    ax.set_title("Size vs. performance (labels: retention of full-width score)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def write_run_outputs(run_dir: Path, results: dict, compare: list[dict] | None = None) -> None:
    """results.json, curve.csv and curve.png in `run_dir`; results.json last (it marks done)."""
    write_atomic(run_dir / "curve.csv", curve_csv(results))
    write_atomic(run_dir / "curve.png", curve_png(results, compare))
    write_atomic(run_dir / "results.json", json.dumps(results, indent=2))
