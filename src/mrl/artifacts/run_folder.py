"""The run folder: its file names, "is it finished", resume lookup, atomic writes, the lock a
live run holds, and the clean-up after bad input. Every other module asks here (atomic
writes: `mrl.common.files`).

A run folder holds (see docs/outputs.md):
  .hydra/              the composed config (Hydra)
  results.json         per-dim scores; its presence marks the run finished (written last)
  failed.json          a sweep job's one-line error (the report lists the job as failed)
  untrained.json       the backbone's scores before training
  curve.csv, curve.png size vs. performance
  checkpoints/last.ckpt  the newest full training state (resume point)
  checkpoints/previous.ckpt  the one before it, kept when last.ckpt is replaced
                       (`ckpt_path=previous` resumes from it if last.ckpt is corrupt)
  sentence-transformers/ the export
  csv/metrics.csv      the metrics history (kept across resumes)
  .lock                held by the process training in this folder
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from mrl.common.errors import ConfigError
from mrl.common.files import default_file_mode

RESULTS = "results.json"
FAILED = "failed.json"
UNTRAINED = "untrained.json"
CHECKPOINTS = "checkpoints"
LAST_CKPT = "last.ckpt"
PREVIOUS_CKPT = "previous.ckpt"  # the last.ckpt before the newest (mrl.run.reliability)
EXPORT_DIR = "sentence-transformers"
METRICS = "csv"
LOCK = ".lock"
# written by mrl.export into every export: the run's eval_dims and schedule_dims
MRL_INFO = "mrl.json"
# Files Hydra and training create in a run folder before training starts; a run that fails
# on bad input removes exactly these (never anything else) so no half-made run is left behind.
STARTUP_FILES = (".hydra", "train.log", "eval.log", "wandb", METRICS, LOCK)


class RunFolder:
    """Paths and state of one run folder (training or evaluation)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def failed(self) -> Path:
        return self.path / FAILED

    @property
    def untrained(self) -> Path:
        return self.path / UNTRAINED

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_ckpt(self) -> Path:
        return self.path / CHECKPOINTS / LAST_CKPT

    @property
    def previous_ckpt(self) -> Path:
        return self.path / CHECKPOINTS / PREVIOUS_CKPT

    @property
    def export(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def metrics_dir(self) -> Path:
        return self.path / METRICS

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    def is_finished(self) -> bool:
        """results.json is there and is not a debug run's (those never count as finished)."""
        if not self.results.is_file():
            return False
        try:
            return not json.loads(self.results.read_text()).get("debug", False)
        except (OSError, ValueError, AttributeError):
            return True  # unreadable: do not overwrite it; the report names it corrupt

    def resume_checkpoint(self, ckpt_path: str | None) -> str | None:
        """`last` -> this run's last.ckpt (must exist); None -> the newest checkpoint this folder
        has (last.ckpt, or the hpc_ckpt_N.ckpt Lightning writes on SLURM's requeue signal);
        `previous` -> checkpoints/previous.ckpt, the one before last.ckpt (for a last.ckpt that
        is corrupt); a path -> that file (must exist). The one chosen must load (one line
        naming it otherwise; nothing is deleted)."""
        path = self._resume_path(ckpt_path)
        if path is not None:
            self.check_loads(Path(path))
        return path

    def check_loads(self, path: Path) -> None:
        """That the checkpoint `path` loads (memory-mapped, weights_only); else one line with
        what to do: resume from the previous checkpoint when there is one."""
        from mrl.artifacts.checkpoints import load_checkpoint

        previous = self.previous_ckpt
        if previous.is_file() and path.resolve() != previous.resolve():
            fix = (
                f"resume from the checkpoint before it ({previous}) with ckpt_path=previous, "
                f"or delete {path} to start the run over"
            )
        else:
            fix = f"delete {path} to start the run over (nothing else of the run is touched)"
        load_checkpoint(path, fix + ".", mmap=True)

    def _resume_path(self, ckpt_path: str | None) -> str | None:
        if ckpt_path == "previous":
            if not self.previous_ckpt.is_file():
                raise ConfigError(
                    f"ckpt_path=previous but {self.previous_ckpt} does not exist (it is kept "
                    "once last.ckpt has been replaced); run without ckpt_path to resume from "
                    "last.ckpt."
                )
            return str(self.previous_ckpt)
        if ckpt_path == "last":
            if not self.last_ckpt.is_file():
                raise ConfigError(
                    f"ckpt_path=last but {self.last_ckpt} does not exist; run without ckpt_path "
                    "to start fresh."
                )
            return str(self.last_ckpt)
        if ckpt_path is None:
            found = [p for p in [self.last_ckpt, *self.path.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
            return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
        if not Path(ckpt_path).is_file():
            raise ConfigError(
                f"ckpt_path={ckpt_path!r} is not a file; give a .ckpt path, 'last' or 'previous'."
            )
        return ckpt_path

    def check_writable(self) -> None:
        """One line now, rather than a traceback at the first checkpoint, if the run folder,
        its checkpoints folder or the system temp folder cannot be written to."""
        for folder in (self.path, self.checkpoints):
            probe_dir = folder if folder.is_dir() else folder.parent
            try:
                fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".write-test.")
                os.close(fd)
                os.unlink(probe)
            except OSError as err:
                raise ConfigError(
                    f"the run folder {folder} is not writable ({os.strerror(err.errno or 0)}); "
                    "fix its permissions or set paths.output_dir (MRL_OUTPUT_DIR) elsewhere."
                ) from None
        try:
            with tempfile.TemporaryFile():
                pass
        except OSError as err:
            raise ConfigError(
                f"the temp folder {tempfile.gettempdir()} is not writable ({err.strerror}); "
                "set TMPDIR to a writable folder."
            ) from None

    @contextlib.contextmanager
    def locked(self):
        """Hold an exclusive lock on the folder for the life of a run.

        A second run into the same folder stops with one line naming the holder's pid. The lock
        is an OS file lock (flock), so it goes with its process: a killed run leaves a stale
        `.lock` file that the next run simply takes over.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, default_file_mode())
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunFolderBusy(
                    f"{self.path} is in use by another run (pid {holder}); wait for it to end, "
                    "or pick another folder (e.g. another seed or hydra.run.dir=...)."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock (when it was ours)

    def remove_startup_files(self, keep: Path | None = None) -> None:
        """Undo what this run created before failing on bad input (only if nothing else is
        there: a folder with checkpoints or results is never touched). Empty parent folders
        go too, up to (not including) `keep`, e.g. the output root."""
        if self.checkpoints.exists() or self.results.exists():
            return
        for name in STARTUP_FILES:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        remove_empty_parents(self.path, keep)


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder's lock."""


def remove_empty_parents(folder: Path, keep: Path | None = None, levels: int = 4) -> None:
    """Remove `folder` while it is empty, then its empty parents up to (not including) `keep`,
    at most `levels` folders in all. Outside `keep` only `folder` itself may go."""
    folder = folder.resolve()
    keep = Path(keep).resolve() if keep is not None else None
    inside = keep is not None and keep in folder.parents
    with contextlib.suppress(OSError):
        for _ in range(levels if inside else 1):
            if folder == keep:
                return
            folder.rmdir()
            folder = folder.parent
