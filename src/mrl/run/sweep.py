"""Hydra `-m` sweeps: each job's DDP workers run that job alone, a failed job leaves its
one-line error in failed.json and the sweep goes on, and the sweep ends with one line per
failed job (`SweepFailures`, registered in conf/hydra/default.yaml)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from mrl.artifacts.run_folder import FAILED, RunFolder
from mrl.common.files import write_atomic

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
