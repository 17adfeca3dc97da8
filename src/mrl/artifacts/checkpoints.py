"""Loading a checkpoint or a weights file safely, with a failure as one line naming the file.

Every load is `weights_only=True`: tensors and plain values only, no code runs. A file that
this refuses (pickled Python objects) is refused for good, never retried with
`weights_only=False`; a file that is cut short or corrupt (a copy that stopped, a full disk in
an older version) names itself and what to do, e.g. resume from the previous checkpoint, which
training keeps beside `last.ckpt` (`checkpoints/previous.ckpt`, see `mrl.run.reliability`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

from mrl.common.errors import ConfigError

# what torch.load raises on a file that is cut short, not a checkpoint or corrupt
BROKEN = (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0].split(". ")[0].rstrip(".") if text else type(err).__name__


def refused(path: Path | str) -> str:
    return (
        f"{path} is refused: besides tensors it holds pickled Python objects, which could run "
        "code when loaded (it is never loaded with weights_only=False); use a checkpoint that "
        "train.py wrote, or re-save its tensors with torch.save(state_dict)"
    )


def load_checkpoint(path: Path | str, fix: str, mmap: bool = False) -> dict:
    """`torch.load(path, weights_only=True)` on the CPU; a file that does not load is one
    ConfigError naming it and ending with `fix` (what to do about it)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise ConfigError(f"{refused(path)}.") from None
    except BROKEN as err:
        raise ConfigError(
            f"{path} does not load ({first_line(err)}): it is cut short or corrupt; {fix}"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a checkpoint; {fix}")
    return state
