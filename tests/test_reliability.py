"""Atomic writes: a failure while writing leaves the previous file whole."""

import pytest
import torch

from mrl.reliability import AtomicCheckpointIO
from mrl.results import write_atomic


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # fails in the middle of serialising


def test_checkpoint_write_failure_keeps_the_old_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_result_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_atomic(path, '{"old": true}')

    def boom(*args):
        raise OSError("no space left")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        write_atomic(path, '{"new": true}')
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
