"""The runs of a report: finding run folders, reading each one's results through `RunResults`,
telling finished runs from failed, unfinished, corrupt and debug ones, and labelling groups
(by the overrides that differ, or by folder).

Every folder at or below the given paths that holds a results.json, a failed.json or a Hydra
job record (.hydra/) is a run; a results file given by name is a run too. A results.json that
is not valid JSON or not a valid `RunResults` makes its run *corrupt* (named with the reason);
one from a debug run (`config.trainer.fast_dev_run` on, or `"debug": true`) makes it *debug*:
listed, never grouped. Dims are ints throughout (the `RunResults` per-dim maps).
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import yaml

from mrl.artifacts.results import RunResults
from mrl.artifacts.run_folder import FAILED, RESULTS, RunFolder
from mrl.common.errors import ConfigError
from mrl.common.numbers import non_finite

HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"

# Overrides that never define a group: the seed is pooled; the rest is bookkeeping or hardware.
NOT_GROUPING = {"seed", "sweep", "exp", "ckpt_path", "callbacks.progress_bar", "logger", "trainer"}
NOT_GROUPING |= {"eval.compare_to", "eval.score_untrained"}  # neither changes a score

# The fields a results file must have (`dims` stands for eval_dims in files written before).
REQUIRED = [f.name for f in fields(RunResults) if f.default is f.default_factory is MISSING]

# How a status reads in the report's run list and warnings (the others read as themselves).
STATUS_WORDS = {"debug": "debug (not a real run)"}


@dataclass
class Run:
    path: Path
    status: str  # finished | failed | unfinished | corrupt | debug
    results: RunResults | None = None
    reason: str = ""
    overrides: dict[str, str] | None = None
    group: str = ""

    @property
    def seed(self):
        if self.results is not None and self.results.seed is not None:
            return self.results.seed
        if self.overrides and "seed" in self.overrides:
            return self.overrides["seed"]
        # a study's STUDY/<group>/seed<N>/ copy of an eval.py result: the folder names the seed
        folders = [p for p in self.path.parts if p.startswith("seed") and p[4:].isdigit()]
        return int(folders[-1][4:]) if folders else "?"

    @property
    def status_word(self) -> str:
        return STATUS_WORDS.get(self.status, self.status)


def _parse_overrides(items: list[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, _, value = str(item).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def _switched_on(value) -> bool:
    """A flag as configs write it: true, a positive count (fast_dev_run=5), or "true"/"1"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "on"} or (
            value.strip().isdigit() and int(value) > 0
        )
    return False


def debug_reason(results: RunResults) -> str | None:
    """Why these results come from a debug run (None: a real run)."""
    if _switched_on(getattr(results, "debug", None)) or _switched_on(results.extra.get("debug")):
        return '"debug": true'
    trainer = (results.config or {}).get("trainer")
    fast_dev_run = trainer.get("fast_dev_run") if isinstance(trainer, dict) else None
    if _switched_on(fast_dev_run):
        return f"trainer.fast_dev_run={fast_dev_run}"
    return None


def parse_results(text: str, name: str = RESULTS) -> tuple[dict, RunResults]:
    """The JSON object in a results file's text and its `RunResults`; ValueError naming the
    file and the reason when it is not a valid results file."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{name} is not a valid results file") from None
    try:
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        given = set(data) | ({"eval_dims"} if "dims" in data else set())
        missing = [name for name in REQUIRED if name not in given]
        if missing:
            raise KeyError(repr(missing[0]))
        results = RunResults.from_dict(data)
        if not results.eval_dims or min(results.eval_dims) < 1:
            raise ValueError(f"eval_dims {results.eval_dims} are not positive dims")
        unscored = [d for d in results.eval_dims if d not in results.test]
        if unscored:
            raise KeyError(f"test score at dim {unscored[0]}")
        if not isinstance(results.overrides, list):
            raise TypeError(f"overrides is a {type(results.overrides).__name__}, not a list")
        scores = {k: data.get(k) for k in ("test", "validation", "untrained_test", "benchmarks")}
        bad = non_finite(scores)  # a NaN score is not a result (mrl.common.numbers)
        if bad:
            raise ValueError(f"{bad[0]} is {bad[1]}, not computed")
    except KeyError as err:
        raise ValueError(f"{name} is not a valid results file (no {err.args[0]})") from None
    except (TypeError, ValueError, AttributeError) as err:
        detail = str(err).removeprefix(f"{RunResults.__name__}.__init__() ")
        raise ValueError(f"{name} is not a valid results file ({detail})") from None
    return data, results


def read_run(path: Path) -> Run:
    """One run: a run folder, or a results file given by name."""
    folder = RunFolder(path.parent if path.is_file() else path)
    overrides = None
    hydra_overrides = folder.path / HYDRA_OVERRIDES
    if not path.is_file() and hydra_overrides.is_file():
        try:
            overrides = _parse_overrides(yaml.safe_load(hydra_overrides.read_text()) or [])
        except (yaml.YAMLError, TypeError, ValueError):
            overrides = None
    result_file = path if path.is_file() else folder.results
    if result_file.is_file():
        try:
            data, results = parse_results(result_file.read_text(), result_file.name)
        except UnicodeDecodeError:
            reason = f"{result_file.name} is not a valid results file (not UTF-8 text)"
            return Run(path, "corrupt", reason=reason, overrides=overrides)
        except ValueError as err:
            return Run(path, "corrupt", reason=str(err), overrides=overrides)
        recorded = data.get("overrides")  # absent in files written before overrides were kept
        if recorded or (recorded is not None and overrides is None):
            overrides = _parse_overrides(results.overrides)
        why = debug_reason(results)
        status = "debug" if why else "finished"
        return Run(path, status, results=results, reason=why or "", overrides=overrides)
    if folder.failed.is_file():
        try:
            reason = str(json.loads(folder.failed.read_text())["error"])
        except (ValueError, KeyError, TypeError):
            reason = f"{FAILED} is unreadable"
        return Run(path, "failed", reason=reason, overrides=overrides)
    return Run(
        path, "unfinished", reason=f"no {RESULTS} (still running or killed)", overrides=overrides
    )


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run at or below `paths`, in path order."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path} does not exist; give sweep or run folders.")
        path = path.resolve()
        if path.is_file():  # results.json / failed.json: their folder; other names: the file
            found.add(path.parent if path.name in (RESULTS, FAILED) else path)
            continue
        for marker in (RESULTS, FAILED, str(HYDRA_OVERRIDES)):
            for hit in path.rglob(marker):
                found.add(hit.parent.parent if marker == str(HYDRA_OVERRIDES) else hit.parent)
    return [read_run(p) for p in sorted(found)]


def label_runs(runs: list[Run]) -> None:
    """Label = the experiment (if several) + the overrides that differ between runs (those a run
    does not set are left out of its label). Debug runs are labelled too (for the run list) but
    do not decide which overrides differ."""
    real = [r for r in runs if r.status != "debug"] or runs
    experiments = {r.results.experiment for r in real if r.results}
    with_overrides = all(r.overrides is not None for r in real)
    if with_overrides:
        keys = {k for r in real for k in r.overrides if k not in NOT_GROUPING}
        keys = {k for k in keys if not k.startswith("hydra.")}
        varying = sorted(k for k in keys if len({r.overrides.get(k) for r in real}) > 1)
    root = Path(os.path.commonpath([r.path for r in real])) if len(real) > 1 else real[0].path
    for run in runs:
        exp = (run.results.experiment if run.results else None) or _experiment_from_path(run)
        parts = [exp] if len(experiments) > 1 or not with_overrides else []
        if with_overrides and run.overrides is not None:
            parts += [f"{k}={run.overrides[k]}" for k in varying if k in run.overrides]
        elif not with_overrides:
            shown = run.path.parent if run.path.is_file() else run.path  # a file: its folder
            rel = shown.relative_to(root).parts if shown.is_relative_to(root) else ()
            parts = [p for p in rel if not (p.startswith("seed") and p[4:].isdigit())] or [exp]
        run.group = " ".join(parts) or exp


def label_by_folder(runs: list[Run], roots: list[Path]) -> None:
    """Label = the run's first folder below the given path it was found under (a study that
    gathers training runs, eval.py results and transforms as STUDY/<label>/<seed>/)."""
    roots = [Path(r).resolve() for r in roots]
    roots = [r.parent if r.is_file() else r for r in roots]
    for run in runs:
        below = [r for r in roots if run.path.is_relative_to(r)]
        root = max(below, key=lambda r: len(r.parts)) if below else run.path.parent
        rel = run.path.relative_to(root).parts
        run.group = rel[0] if rel else run.path.name


def run_fixed_dim(run: Run) -> int | None:
    """The one size a run was trained for (`matryoshka.fixed_dim` in its config or overrides),
    None for MRL, baseline and eval.py runs."""
    matryoshka = (run.results.config or {}).get("matryoshka") if run.results else None
    value = matryoshka.get("fixed_dim") if isinstance(matryoshka, dict) else None
    if value is None:
        value = (run.overrides or {}).get("matryoshka.fixed_dim")
    try:
        return None if value in (None, "", "null", "None") else int(value)
    except (TypeError, ValueError):
        return None


def _experiment_from_path(run: Run) -> str:
    config = run.path / HYDRA_CONFIG
    if config.is_file():
        try:
            with open(config) as f:
                return (yaml.safe_load(f) or {}).get("exp_name", run.path.name)
        except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
            pass
    return run.path.name


def runs_from_wandb(wandb_runs) -> list[Run]:
    """Runs of a wandb group (`wandb.Api().runs(project, {"group": name})`) as report runs,
    from each run's config and its test/spearman@<dim> summary metrics."""
    runs = []
    for w in wandb_runs:
        config, summary = dict(w.config), dict(w.summary)
        test = {}
        for key, value in summary.items():
            prefix, _, dim = key.partition("@")
            if prefix == "test/spearman" and dim.isdigit():
                test[int(dim)] = float(value)
        overrides = _parse_overrides(config.get("overrides") or [])
        if not test:
            runs.append(Run(Path(w.name), "unfinished", reason="no test metrics in wandb",
                            overrides=overrides))  # fmt: skip
            continue
        model = config.get("model") if isinstance(config.get("model"), dict) else {}
        matryoshka = config.get("matryoshka") if isinstance(config.get("matryoshka"), dict) else {}
        results = RunResults(
            experiment=config.get("exp_name", w.name),
            run_dir=w.name,
            backbone=model.get("backbone", "?"),
            eval_dims=sorted(test, reverse=True),
            test=test,
            matryoshka=matryoshka.get("enabled", True),
            seed=config.get("seed"),
            overrides=list(config.get("overrides") or []),
            config=config,
        )
        why = debug_reason(results)
        status = "debug" if why else "finished"
        runs.append(Run(Path(w.name), status, results=results, reason=why or "",
                        overrides=overrides))  # fmt: skip
    if runs:
        label_runs(runs)
    return runs
