"""Atomic writes: a failure while writing leaves the previous file whole."""

import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.run.reliability import AtomicCheckpointIO


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
    with pytest.raises(ConfigError, match=f"could not write {path}"):
        write_atomic(path, '{"new": true}')
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ConfigError, match="No space left on device; free some space"):
        io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_held_run_folder_lock_refuses_a_second_holder_and_is_released(tmp_path):
    import os

    from mrl.artifacts.run_folder import RunFolder, RunFolderBusy

    folder = RunFolder(tmp_path / "run")
    busy = f"in use by another run \\(pid {os.getpid()}\\)"
    with folder.locked(), pytest.raises(RunFolderBusy, match=busy), folder.locked():
        pass
    with folder.locked():  # released when the first holder ended
        pass


def test_a_tool_replaces_only_its_own_files_and_never_an_input(tmp_path):
    from mrl.common.files import first_line, refuse_overwrite

    ours, foreign, new = tmp_path / "table.csv", tmp_path / "notes.md", tmp_path / "new.png"
    ours.write_text("model,kind\n1,2\n")
    foreign.write_text("my notes\n")
    mine = lambda p: first_line(p) == "model,kind"  # noqa: E731
    refuse_overwrite([ours, new], mine)  # its own earlier file and a new one: fine
    with pytest.raises(ConfigError, match=r"notes.md exists and is not an earlier output of"):
        refuse_overwrite([ours, foreign], mine)
    with pytest.raises(ConfigError, match=r"table.csv is one of the inputs; give another --out"):
        refuse_overwrite([new, ours], mine, inputs=[str(tmp_path / "." / "table.csv")])
    assert first_line(tmp_path / "missing") == "" and not new.exists()
