"""Stopping and saving safely: checkpoints written atomically (the last.ckpt they replace kept
as previous.ckpt), and SIGTERM/SIGUSR1 turned into "save last.ckpt, stop cleanly, resume on the
next run"."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mrl.artifacts.run_folder import LAST_CKPT, PREVIOUS_CKPT
from mrl.common.files import WriteError, default_file_mode

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temp file in its folder, then renames it into place: a crash
    at any moment leaves the previous checkpoint or the new one, never half of one.

    The last.ckpt it replaces is kept as previous.ckpt (a hard link, so no copy is written):
    if the newest ever turns out corrupt (a copy cut short, a bad disk), `ckpt_path=previous`
    resumes from the one before. It costs the disk space of one more checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, default_file_mode())
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            if path.name == LAST_CKPT and zipfile.is_zipfile(path):  # never keep a corrupt one
                keep_previous(path, path.with_name(PREVIOUS_CKPT))
            os.replace(tmp, path)
        except OSError as err:  # disk full, read-only: one line, the old checkpoint stays
            Path(tmp).unlink(missing_ok=True)
            raise WriteError(path, err) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def keep_previous(path: Path, previous: Path) -> None:
    """`path` also as `previous` (replacing an older one), before `path` is replaced: a hard
    link renamed into place, so `path` never goes missing; a rename where links do not work."""
    link = previous.with_name(f".{previous.name}.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


class StopOnSignal(L.Callback):
    """On SIGTERM, SIGUSR1 (SLURM's warning before the time limit) or Ctrl-C: finish the step,
    write checkpoints/last.ckpt, and stop. The next run of the same command resumes there.

    Handlers installed before (Lightning's SLURM requeue handler, for one) still run. In a
    one-process run, a SIGTERM during training has the flag Lightning's handler sets cleared
    again: Lightning would act on it after the step's end hooks, and a signal landing between
    this callback's hook and that check stopped the run without a save ("outside a training
    step"); the next step's end saves and stops instead. During validation the flag stands
    (and a pending SIGTERM sets it when validation starts), so Lightning cuts validation
    short as before. Several processes keep Lightning's flag (it broadcasts the stop).
    """

    def __init__(self, last_ckpt: Path):
        self.last_ckpt = Path(last_ckpt)
        self.received: str | None = None
        self.stopped_at: int | None = None
        self._previous: dict = {}
        self._trainer = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.received == "SIGINT":  # a second Ctrl-C: stop now, as Python would
                raise KeyboardInterrupt
            self.received = "SIGINT"  # Python's own handler would raise mid-step: not chained
            print("Ctrl-C: saving at the end of this step (again to stop at once)", file=sys.stderr)
            return
        self.received = signal.Signals(signum).name
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        if signum == signal.SIGTERM and self._one_process() and self._trainer.training:
            self._trainer._signal_connector.received_sigterm = False  # this callback stops it

    def _one_process(self) -> bool:
        return self._trainer is not None and self._trainer.world_size == 1

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.received == "SIGTERM" and self.stopped_at is None and self._one_process():
            trainer._signal_connector.received_sigterm = True  # Lightning stops validation

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.received and self.stopped_at is None:
            trainer.save_checkpoint(self.last_ckpt)
            self.stopped_at = trainer.global_step
            trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        self._trainer = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
