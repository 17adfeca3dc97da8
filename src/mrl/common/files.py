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
