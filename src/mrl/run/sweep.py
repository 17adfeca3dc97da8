"""Hydra `-m` sweeps: each job's DDP workers run that job alone, a failed job leaves its
one-line error in failed.json and the sweep goes on, and the sweep ends with one line per
failed job (`SweepFailures`, registered in conf/hydra/default.yaml).

Before the first job, the keys the sweep sets (command line, Optuna search space) are checked
like a run's (`mrl.run.config_keys`), and an Optuna study of no trial is refused; a sweep that
stops on an error (`hydra_error_line`, for train.py's `hydra_errors_in_one_line`) leaves no
sweep folder it made, and a study with no completed trial names its trials' failed.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from mrl.artifacts.run_folder import FAILED, RunFolder, remove_empty_parents
from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.run.checks import OPTIONS
from mrl.run.config_keys import check_keys, check_override_keys, conf_dir_of, key_error_line

# the sweep folder of the sweep under way and whether it was there before (for clean-up)
STARTED: dict[str, tuple[Path, bool, Path, float]] = {}
# what Lightning's subprocess launcher sets in its own environment when it starts DDP workers
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def job_with_its_own_workers(hydra_cfg: DictConfig, run_dir: Path):
    """One job of a -m sweep whose DDP workers, if Lightning starts any, run this job alone.

    Lightning starts workers by re-running this process's command line (`sys.argv`) with
    `hydra.run.dir=<hydra.run.dir>` added. In a sweep that command line is the whole sweep, so
    each worker would re-run every job, and the next job would find the old process group and
    `LOCAL_RANK` set, and start no workers of its own. Here the command line becomes this job's
    own overrides (no `-m`) in this job's folder, so each worker is a single run there, as under
    `python train.py`; when the job ends, the group and the launcher's variables go. Workers
    started outside (torchrun, srun) set `LOCAL_RANK` or SLURM's variables and are left alone.
    """
    argv, launch_env = sys.argv, {key: os.environ.get(key) for key in LAUNCH_ENV}
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = str(run_dir)
    try:
        yield
    finally:
        sys.argv = argv
        if launch_env["LOCAL_RANK"] is None and "LOCAL_RANK" in os.environ:  # we launched them
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in launch_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def record_failure(run_dir: Path, message: str, overrides: list[str]) -> None:
    """A failed sweep job's verdict: failed.json in its folder (the report lists the job as
    failed; re-running the sweep retries it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"error": message, "overrides": overrides}, indent=2)
    write_atomic(RunFolder(run_dir).failed, payload)


class SweepFailures(Callback):
    """Hydra callback: when a -m sweep ends, one line per job that failed during it (its folder
    and error, from its failed.json), then exit status 1.

    Under launchers that run jobs elsewhere (submitit, SLURM) this is where the errors show."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()
        sweep_dir = Path(config.hydra.sweep.dir)
        root = Path(str(config.paths.output_dir))
        STARTED["sweep"] = (sweep_dir, sweep_dir.exists(), root, self.started)
        try:  # Hydra turns a callback's exception into a warning; SystemExit passes
            check_sweep(config)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(
            path for path in sweep_dir.rglob(FAILED) if path.stat().st_mtime >= self.started
        )
        for path in failed:
            error = json.loads(path.read_text())["error"]
            print(
                f"error: job {path.parent.relative_to(sweep_dir)} failed: {error}", file=sys.stderr
            )
        if failed:
            raise SystemExit(1)


def check_sweep(config: DictConfig) -> None:
    """Before any job: every key the sweep sets is one the code reads (the composed config, the
    command line's overrides, an Optuna search space's dimensions), and an Optuna study runs at
    least one trial."""
    conf_dir = conf_dir_of(config.hydra)
    check_keys(config, OPTIONS, conf_dir)
    sweeper = config.hydra.get("sweeper") or {}
    params = sweeper.get("params") or {}
    check_override_keys([*config.hydra.overrides.task, *params], OPTIONS, conf_dir)
    n_trials = sweeper.get("n_trials", 1)
    if "optuna" in str(sweeper.get("_target_", "")) and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1
    ):
        raise ConfigError(
            f"hydra.sweeper.n_trials={n_trials!r} runs no trial; give a whole number >= 1 "
            "(e.g. hydra.sweeper.n_trials=8)."
        )


def hydra_error_line(err: Exception) -> tuple[str, int] | None:
    """train.py's line for an error Hydra raised (`mrl.common.cli.hydra_errors_in_one_line`),
    after removing a sweep folder this sweep made and left with nothing but Hydra's
    multirun.yaml: an override of a key nothing reads names the nearest known one; an Optuna
    study without a completed trial names each trial's failed.json (status 1)."""
    sweep_dir, existed, root, started = STARTED.pop("sweep", (None, True, None, 0.0))
    failed = []
    if sweep_dir is not None and sweep_dir.is_dir():
        failed = sorted(p for p in sweep_dir.rglob(FAILED) if p.stat().st_mtime >= started)
        leftovers = [p for p in sweep_dir.rglob("*") if p.is_file() and p.name != "multirun.yaml"]
        if not existed and not leftovers:
            shutil.rmtree(sweep_dir, ignore_errors=True)
            remove_empty_parents(sweep_dir.parent, root)
    if isinstance(err, ValueError) and "No trials are completed yet" in str(err):
        if not failed:
            return "the Optuna study completed no trial and no trial left failed.json.", 1
        try:
            first = json.loads(failed[0].read_text())["error"]
        except (OSError, ValueError, KeyError, TypeError):
            first = "unreadable"
        return (
            f"no trial of the Optuna study completed: {len(failed)} failed, each with its error "
            f"in its failed.json under {sweep_dir} (the first, {failed[0]}: {first}); fix it "
            "and run the same command again.",
            1,
        )
    return key_error_line(err, OPTIONS)
