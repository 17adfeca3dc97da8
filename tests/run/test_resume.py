"""Runs that are killed, or asked to stop, finish with the numbers of an uninterrupted run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, make_data_dir

ARGS = [
    "+exp=allnli_mrl", "model=tiny", "trainer=cpu", "logger=csv", "callbacks.progress_bar=none",
    "data.batch_size=8", "trainer.max_epochs=2", "callbacks.checkpoint_every_n_steps=3",
    "matryoshka.n_dims_per_step=2",  # exercises the Python RNG too
]  # fmt: skip


def _start(run_dir, data_dir, *extra):
    env = {**os.environ, "MRL_DATA_DIR": str(data_dir), "WANDB_MODE": "offline"}
    keys = {arg.split("=")[0] for arg in extra}
    args = [arg for arg in ARGS if arg.split("=")[0] not in keys]  # extra replaces an option
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, *extra, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() - start < timeout
        time.sleep(0.02)


def _straight_and_killed(tmp_path, data_dir, extra):
    """The same run twice: `straight/` uninterrupted, `killed/` SIGKILLed after its first
    checkpoint (before it could finish) and run again to the end; returns both folders."""
    straight = tmp_path / "straight"
    _finish(_start(straight, data_dir, *extra))
    run_dir = tmp_path / "killed"
    proc = _start(run_dir, data_dir, *extra)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists()
    _finish(_start(run_dir, data_dir, *extra))
    return straight, run_dir


def _scores(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    return results["test"], results["validation"], results["global_step"]


def _loss_history(run_dir):
    """(step, train/loss) of every row of csv/metrics.csv that logged a training loss."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [(r["step"], r["train/loss"]) for r in csv.DictReader(file) if r.get("train/loss")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # 200 triplets in batches of 8: 25 steps an epoch, 50 in all, a checkpoint every 3
    return make_data_dir(tmp_path_factory.mktemp("data"), n_triplets=200, n_pairs=40)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    _finish(_start(run_dir, data_dir))
    return _scores(run_dir), _loss_history(run_dir)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_gives_identical_results(tmp_path, data_dir, uninterrupted):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, data_dir)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists()
    assert (run_dir / ".lock").exists()  # stale: the next run takes it over
    _finish(_start(run_dir, data_dir))  # the same command resumes in the same folder
    scores, history = uninterrupted
    assert _scores(run_dir) == scores  # bitwise: same floats, same step count
    # the metrics history of the steps before the kill is kept, each step once
    assert _loss_history(run_dir) == history


def _wait_for_new(path, before, proc, timeout=300):
    """Until `path` is a file other than `before` (its (inode, mtime) then; None: none)."""
    start = time.time()
    while not path.exists() or (path.stat().st_ino, path.stat().st_mtime_ns) == before:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() - start < timeout
        time.sleep(0.02)


@pytest.mark.slow
def test_stop_signals_save_exit_cleanly_and_resume(tmp_path, data_dir, uninterrupted):
    """SIGTERM, SIGUSR1 (SLURM's warning) and SIGINT (Ctrl-C), one after the other: each stops
    the run that resumed from the stop before (the first a fresh one) once it saved a new
    checkpoint; each saves, says so in its line and exits 0; the last resume finishes with the
    numbers of an uninterrupted run. (One run for the three: each signal used to cost a run.)"""
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        before = (last.stat().st_ino, last.stat().st_mtime_ns) if last.exists() else None
        proc = _start(run_dir, data_dir)
        _wait_for_new(last, before, proc)  # training, past its resume point
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert f"stopped by {sig.name} at step" in err and "Traceback" not in err, err[-2000:]
        assert "run the same command again to resume" in err
        assert not (run_dir / "results.json").exists()
    _finish(_start(run_dir, data_dir))
    assert _scores(run_dir) == uninterrupted[0]
    # every row of the uninterrupted history, once; plus at most the row Lightning logs when it
    # stops, for each of the three stops
    history, steps = _loss_history(run_dir), [step for step, _ in _loss_history(run_dir)]
    assert set(uninterrupted[1]) <= set(history) and len(steps) == len(set(steps))
    assert len(history) <= len(uninterrupted[1]) + 3


@pytest.mark.slow
def test_two_runs_into_one_folder_one_stops_in_one_line(tmp_path, data_dir, uninterrupted):
    run_dir = tmp_path / "run"
    runs = [_start(run_dir, data_dir), _start(run_dir, data_dir)]  # started together
    outcomes = [(proc, *proc.communicate(timeout=600)) for proc in runs]
    codes = sorted(proc.returncode for proc, _, _ in outcomes)
    assert codes == [0, 2], [err[-2000:] for _, _, err in outcomes]
    (winner, _, _), (_, _, err) = sorted(outcomes, key=lambda o: o[0].returncode)
    assert err.strip().splitlines()[-1] == (
        f"error: {run_dir} is in use by another run (pid {winner.pid}); wait for it to end, "
        "or pick another folder (e.g. another seed or hydra.run.dir=...)."
    )
    assert "Traceback" not in err
    assert _scores(run_dir) == uninterrupted[0]  # the run that trained was not disturbed
    assert _loss_history(run_dir) == uninterrupted[1]  # and logged each step once


@pytest.mark.slow
def test_qat_calibration_and_2d_runs_resume_exactly_after_sigkill(tmp_path, data_dir):
    """The QAT running calibration (buffers in the checkpoint) and a 2D run's layer draws
    continue after a kill as if uninterrupted: same calibration, same scores, same grid."""
    extra = ["qat.terms=[{dim: 16, precision: binary}, {dim: 8, precision: int8}]",
             "matryoshka.layers=all", "matryoshka.n_layers_per_step=1"]  # fmt: skip
    straight, run_dir = _straight_and_killed(tmp_path, data_dir, extra)
    assert _scores(run_dir) == _scores(straight)
    for name in ("qat_calibration.json",):
        assert (run_dir / name).read_text() == (straight / name).read_text()
    grids = [json.loads((r / "results.json").read_text())["grid"] for r in (run_dir, straight)]
    assert grids[0] == grids[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "model", [["model=tiny_mpnet"], ["model=tiny_decoder", "model.lora.r=4", "optim.lr=1e-3"]],
    ids=["mpnet", "decoder-lora"],
)  # fmt: skip
def test_other_architectures_resume_exactly_after_sigkill(tmp_path, data_dir, model):
    """The seed recipe's MPNet and a decoder under LoRA (whose checkpoints hold only the
    adapters) continue after a kill to the numbers of an uninterrupted run."""
    extra = [*model, "trainer.max_epochs=1", "data.max_train_samples=96"]  # 12 steps
    straight, run_dir = _straight_and_killed(tmp_path, data_dir, extra)
    assert _scores(run_dir) == _scores(straight)


@pytest.mark.parametrize(("world_size", "flag_kept"), [(1, False), (2, True)])
def test_sigterm_is_left_to_the_callback_in_one_process(world_size, flag_kept):
    """SIGTERM reaches Lightning's handler (chained), which sets its stop flag. One process,
    in training: the flag is cleared again, so Lightning cannot stop the run between this
    callback's hook and its own check without a save (the callback saves and stops at the
    next step's end); in validation it stands. Several processes: the flag stays, as
    Lightning broadcasts the stop to every rank."""
    from types import SimpleNamespace

    from mrl.run.reliability import StopOnSignal

    connector = SimpleNamespace(received_sigterm=False)
    trainer = SimpleNamespace(world_size=world_size, _signal_connector=connector, training=True)
    stop = StopOnSignal("unused.ckpt")
    stop._trainer = trainer
    stop._previous[signal.SIGTERM] = lambda *_: setattr(connector, "received_sigterm", True)
    stop._handle(signal.SIGTERM, None)
    assert stop.received == "SIGTERM" and stop.stopped_at is None
    assert connector.received_sigterm is flag_kept
    # a SIGTERM still pending when validation starts: Lightning's flag is set, so it cuts
    # validation short; one during validation leaves the flag as Lightning set it
    trainer.training = False  # Lightning's stage: validating (or its sanity check)
    stop.on_validation_start(trainer, None)
    assert connector.received_sigterm is True
    connector.received_sigterm = False
    stop._handle(signal.SIGTERM, None)
    assert connector.received_sigterm is True
    trainer.training = True  # back in training
    stop._handle(signal.SIGTERM, None)
    assert connector.received_sigterm is flag_kept
