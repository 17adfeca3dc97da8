"""Files written whole: atomic writes (a temp file renamed into place, so readers see the old
file or the new one, never half of it), the modes plainly created files and folders get, and
the one-line error when a write fails. Every module that writes a file the user keeps uses it."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from mrl.common.errors import ConfigError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp would give 0o600."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The mode a plainly created folder gets (0o777 less the umask); mkdtemp would give 0o700,
    which colleagues on a shared cluster cannot read."""
    return 0o777 & ~_umask()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename: readers see old or new, never half.

    A failed write (disk full, no permission) is one ConfigError naming the path; the file
    that was there stays whole.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise WriteError(path, err) from None
    os.chmod(tmp, default_file_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WriteError(ConfigError):
    """A file of the run could not be written (disk full, read-only, no permission)."""

    def __init__(self, path: Path, err: OSError):
        reason = os.strerror(err.errno) if err.errno else str(err)
        if err.errno == errno.ENOSPC:
            fix = "free some space there"
        else:
            fix = "make the folder writable or set paths.output_dir / MRL_OUTPUT_DIR elsewhere"
        super().__init__(f"could not write {path}: {reason}; {fix} (earlier files are whole).")


def first_line(path: Path, limit: int = 4096) -> str:
    """The first line of a file as text ('' for an unreadable one): enough to recognise a
    tool's own earlier output by its header."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return ""
    return head.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")


def refuse_overwrite(outputs, ours, inputs=(), flag: str = "--out") -> None:
    """Before a tool writes anything: one ConfigError for the first of `outputs` that is one
    of its `inputs`, or that exists but is not recognisably the tool's own earlier output
    (`ours(path)`, e.g. by its header), so a re-run replaces its own files and never a
    foreign one. Nothing is written by then."""
    taken = {Path(p).resolve() for p in inputs}
    for path in map(Path, outputs):
        if path.resolve() in taken:
            raise ConfigError(
                f"{flag}: {path} is one of the inputs; give another {flag} (a tool never writes "
                "over its input)."
            )
        if path.exists() and not ours(path):
            raise ConfigError(
                f"{flag}: {path} exists and is not an earlier output of this tool; move it away "
                f"or give another {flag} (nothing was written)."
            )
