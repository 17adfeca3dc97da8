"""Run outputs: the typed results.json (`RunResults`), curve.csv and curve.png (size vs.
performance), written atomically.

In memory dims are ints; in results.json the per-dim maps have string keys (JSON's only kind).
`RunResults.from_dict` also reads files written before the typed layout (`dims` for the
evaluated dims), so committed runs keep reporting and exporting.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mrl.artifacts.run_folder import RESULTS
from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.common.numbers import check_finite, strict_json

ByDim = dict[int, float]


def _by_dim(values: dict | None) -> ByDim | None:
    return None if values is None else {int(d): float(v) for d, v in values.items()}


def _json_by_dim(values: ByDim | None) -> dict[str, float] | None:
    return None if values is None else {str(d): v for d, v in values.items()}


@dataclass
class RunResults:
    """What a finished run (train.py) or evaluation (eval.py) found; one results.json.

    `schedule_dims`: the dims that were trained on (largest first; empty for eval.py).
    `eval_dims`: the dims that were evaluated (largest first); `test` etc. are keyed by them.
    `train_dims`: the schedule dims with a non-zero weight (the baseline: the full width).
    """

    experiment: str
    run_dir: str
    backbone: str | None
    eval_dims: list[int]
    test: ByDim
    matryoshka: bool | None = None
    schedule_dims: list[int] = field(default_factory=list)
    train_dims: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    global_step: int | None = None
    validation: ByDim = field(default_factory=dict)
    untrained_test: ByDim | None = None
    config: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # eval.py: the model it was given
    test_benchmark: str | None = None  # eval.py: which benchmark `test` holds
    benchmarks: dict[str, ByDim] = field(default_factory=dict)  # eval.py: every benchmark
    debug: bool = False  # fast_dev_run or cut splits: not a result (reports skip it)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @property
    def full_dim(self) -> int:
        return max(self.eval_dims)

    @classmethod
    def from_dict(cls, data: dict) -> RunResults:
        data = dict(data)
        if "eval_dims" not in data and "dims" in data:  # files written before the typed layout
            data["eval_dims"] = data.pop("dims")
        data.pop("dims", None)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and k != "extra"}
        values["extra"] = {k: v for k, v in data.items() if k not in known}
        values["eval_dims"] = sorted((int(d) for d in values["eval_dims"]), reverse=True)
        for name in ("schedule_dims", "train_dims"):
            values[name] = [int(d) for d in values.get(name) or []]
        for name in ("test", "validation", "untrained_test"):
            if name in values:
                values[name] = _by_dim(values[name])
        values["validation"] = values.get("validation") or {}
        values["benchmarks"] = {k: _by_dim(v) for k, v in (values.get("benchmarks") or {}).items()}
        return cls(**values)

    def to_dict(self) -> dict:
        """The JSON form: per-dim maps with string keys, unknown keys kept as they were."""
        data = asdict(self)
        extra = data.pop("extra")
        for name in ("test", "validation", "untrained_test"):
            data[name] = _json_by_dim(data[name])
        data["benchmarks"] = {k: _json_by_dim(v) for k, v in data["benchmarks"].items()}
        if not data["debug"]:
            data.pop("debug")
        if not data["benchmarks"]:
            for name in ("model", "test_benchmark", "benchmarks"):
                data.pop(name)
        return {**data, **extra}

    def to_json(self) -> str:
        return strict_json(self.to_dict(), RESULTS, indent=2)  # no NaN: strict JSON


def curve_rows(results: RunResults) -> list[dict]:
    """One row per dim: Spearman on test (and validation, untrained), retention, fraction."""
    full, test = results.full_dim, results.test
    rows = []
    for dim in results.eval_dims:
        row = {
            "dim": dim,
            "fraction_of_full": dim / full,
            "test_spearman": test[dim],
            "test_retention": test[dim] / test[full],
            "validation_spearman": results.validation.get(dim),
        }
        if results.untrained_test:
            row["untrained_test_spearman"] = results.untrained_test[dim]
        rows.append(row)
    return rows


def summary_table(results: RunResults) -> str:
    """The per-dim table train.py prints at the end of a run."""
    lines = [f"STS-B test Spearman by dimension ({results.experiment}):"]
    lines.append(f"{'dim':>6} {'spearman':>9} {'retention':>10} {'untrained':>10}")
    for r in curve_rows(results):
        before = r.get("untrained_test_spearman")
        lines.append(
            f"{r['dim']:>6} {r['test_spearman']:>9.4f} {100 * r['test_retention']:>9.1f}% "
            f"{'' if before is None else f'{before:.4f}':>10}"
        )
    return "\n".join(lines) + "\n"


def curve_csv(results: RunResults) -> str:
    rows = curve_rows(results)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def load_results(run_dir: str | Path, option: str | None = None) -> RunResults:
    """A finished run's results (a run folder or its results.json); `option` names the
    option the path came from, for the error message."""
    path = Path(run_dir)
    path = path / RESULTS if path.is_dir() else path
    if not path.is_file():
        given = f"{option}={str(run_dir)!r}" if option else str(run_dir)
        raise ConfigError(f"{given} holds no {RESULTS}; give a finished run folder.")
    try:
        return RunResults.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError:
        raise ConfigError(f"{path} is not valid JSON; re-run that experiment.") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(
            f"{path} is not a valid results file ({type(err).__name__}: {err}); re-run it."
        ) from None


def curve_png(results: RunResults, compare: list[RunResults] | None = None) -> bytes:
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
        label = run.experiment or f"run {i}"
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
    if results.untrained_test:
        rows = curve_rows(results)
        ax.plot(
            [r["dim"] for r in rows],
            [r["untrained_test_spearman"] for r in rows],
            linestyle="--",
            color="grey",
            label="backbone before training",
        )
    ax.set_xscale("log", base=2)
    dims = sorted({d for run in runs for d in run.eval_dims})
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


def write_run_outputs(
    run_dir: Path, results: RunResults, compare: list[RunResults] | None = None
) -> None:
    """results.json, curve.csv and curve.png in `run_dir`; results.json last (it marks done).
    A score that is NaN or infinite is one line and nothing is written (mrl.common.numbers)."""
    check_finite(results.to_dict(), f"{run_dir / RESULTS}")
    write_atomic(run_dir / "curve.csv", curve_csv(results))
    write_atomic(run_dir / "curve.png", curve_png(results, compare))
    write_atomic(run_dir / RESULTS, results.to_json())
