"""`-m hparams_search=mrl_optuna`: an Optuna study through Hydra's optuna sweeper, run end to end
on the tiny model (trials, best value, a failing trial, re-run, report)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from tests.conftest import FAST, ROOT, offline_env

VALUE = "trial_value.json"
HERE = "tests.run.test_hparams_search"  # importable in the subprocess (cwd: the repo root)


def fail_second_trial(cfg, trial) -> None:
    """custom_search_space hook: trial 1 also gets optim.weight_decay=-1.0, a value the check
    pass refuses (one error line, failed.json), so that trial fails whatever Optuna samples."""
    if trial.number == 1:
        trial.suggest_categorical("optim.weight_decay", [-1.0])


class RecordValue(Callback):
    """Hydra callback: what each job returned to the sweeper, in its folder (for the test)."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        done = job_return.status == JobStatus.COMPLETED
        value = job_return.return_value if done else None
        folder = Path(HydraConfig.get().runtime.output_dir)
        (folder / VALUE).write_text(json.dumps({"value": value}))


STUDY = [
    "-m",
    "hparams_search=mrl_optuna",
    "+exp=allnli_mrl",
    *FAST,
    "trainer.max_steps=2",
    "data.batch_size=8",
    "optim.warmup_ratio=0",
    "eval.score_untrained=false",
    "export.sentence_transformers=false",
    "hydra.sweeper.n_trials=3",
    f"hydra.sweeper.custom_search_space={HERE}.fail_second_trial",
    f"+hydra.callbacks.record_value._target_={HERE}.RecordValue",
]


def run_study(tmp_path: Path) -> subprocess.CompletedProcess:
    env = offline_env(tmp_path)
    return subprocess.run(
        [sys.executable, "train.py", *STUDY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def trials(sweep_dir: Path) -> dict[Path, dict]:
    """Each trial's folder -> its Optuna parameters (from Hydra's overrides.yaml) and value."""
    found = {}
    for overrides in sweep_dir.rglob(".hydra/overrides.yaml"):
        folder = overrides.parent.parent
        pairs = [o.split("=", 1) for o in OmegaConf.load(overrides)]
        found[folder] = {
            "params": {k: v for k, v in pairs if k in SEARCHED},
            "value": json.loads((folder / VALUE).read_text())["value"],
        }
    return found


SEARCHED = ("optim.lr", "loss.scale", "matryoshka.weights")


@pytest.mark.slow
def test_three_trials_the_best_is_one_of_them_and_a_failed_trial_does_not_end_the_study(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_study(tmp_path)
    # the study runs all its trials, then the sweep exits 1 naming the failed one
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job ") and "optim.weight_decay=-1.0" in last
    assert "must be a number >= 0" in last

    sweep_dir = tmp_path / "out" / "sweeps" / "mrl_optuna"
    found = trials(sweep_dir)
    assert len(found) == 3  # 3 trials ran, one folder each
    failed = [f for f in found if (f / "failed.json").is_file()]
    assert len(failed) == 1 and "optim.weight_decay=-1.0" in failed[0].name
    assert found[failed[0]]["value"] is None  # a failed trial returns nothing to Optuna
    finished = {f: t for f, t in found.items() if f not in failed}
    assert all((f / "results.json").is_file() for f in finished)
    values = [t["value"] for t in finished.values()]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    for t in found.values():  # each trial sampled the whole search space, within its ranges
        p = t["params"]
        assert set(p) == set(SEARCHED)
        assert 5e-6 <= float(p["optim.lr"]) <= 2e-4
        assert int(p["loss.scale"]) in range(10, 51, 5)
        assert p["matryoshka.weights"] in ("uniform", "increasing", "decreasing")

    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(values), rel=1e-12)  # maximised, over trials
    best_trial = next(t for t in finished.values() if t["value"] == max(values))
    assert {k: str(v) for k, v in best.best_params.items()} == best_trial["params"]

    # the study's folder is a sweep folder like any other for the report
    from mrl.report.build import collect

    runs, _, _ = collect([sweep_dir])
    assert sorted(r.status for r in runs) == ["failed", "finished", "finished"]

    # Re-run: the same seed samples the same values, finished trials are read back unchanged,
    # the failed one is retried (and fails again); no new folders.
    mtimes = {f: (f / "results.json").stat().st_mtime_ns for f in finished}
    again = run_study(tmp_path)
    assert again.returncode == 1, again.stderr[-3000:]
    refound = trials(sweep_dir)
    assert set(refound) == set(found)
    assert {f: (f / "results.json").stat().st_mtime_ns for f in finished} == mtimes
    assert {f: t["value"] for f, t in refound.items()} == {f: t["value"] for f, t in found.items()}


def test_the_search_composes_from_the_command_line_and_maximises_validation(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg(["hparams_search=mrl_optuna", "+exp=allnli_mrl"])  # no + needed
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.max_failure_rate == 1.0
    assert cfg.optimized_metric.startswith("val/")  # never a test metric
    assert dict(sweeper.params) == {
        "optim.lr": "tag(log, interval(5e-6, 2e-4))",
        "loss.scale": "range(10, 50, step=5)",
        "matryoshka.weights": "choice(uniform, increasing, decreasing)",
    }
    assert cfg.sweep_name == "mrl_optuna" and cfg.hydra.sweep.dir.endswith("sweeps/mrl_optuna")
    assert cfg.logger.wandb.group == "mrl_optuna"
    assert cfg.exp_name == "allnli_mrl" and cfg.optim.lr == 2.0e-5  # the trial values come later
    text = (ROOT / "conf" / "hparams_search" / "mrl_optuna.yaml").read_text()
    assert "# Question:" in text and "# Run:" in text and "# Time:" in text
