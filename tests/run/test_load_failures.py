"""A checkpoint or weights file that does not load is one line naming it and what to do; the
checkpoint before the newest is kept and `ckpt_path=previous` resumes from it. Lengths beyond
the backbone's positions and NaN scores stop in one line too."""

from __future__ import annotations

import hashlib
import json
import math
import os

import pytest
import torch

from tests.run.test_checks import MRL, _fails_in_one_line

SHORT = ["data.batch_size=16", "callbacks.checkpoint_every_n_steps=1", "eval.score_untrained=false"]


def hashes(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"  # the lock holds the pid of its last holder
    }


def test_a_corrupt_last_ckpt_is_one_line_and_previous_resumes(data_dir, run_main, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_main([*MRL, *SHORT, "export.sentence_transformers=false"], run_dir)
    last, previous = (run_dir / "checkpoints" / name for name in ("last.ckpt", "previous.ckpt"))
    assert previous.is_file(), "the checkpoint before the newest is kept"
    capsys.readouterr()
    kept_step = torch.load(previous, map_location="cpu", weights_only=True)["global_step"]
    (run_dir / "results.json").unlink()  # as if the run had been stopped after its last save
    os.truncate(last, last.stat().st_size // 2)  # the newest checkpoint cut to half its size
    before = hashes(run_dir)
    with pytest.raises(SystemExit) as stop:
        run_main([*MRL, *SHORT, "export.sentence_transformers=false"], run_dir)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert f"{last} does not load" in err[0] and "with ckpt_path=previous" in err[0], err
    assert "weights_only=False" not in err[0].replace("never loaded with weights_only=False", "")
    assert hashes(run_dir) == before, "nothing of the run folder is deleted or changed"

    run_main([*MRL, *SHORT, "export.sentence_transformers=false", "ckpt_path=previous"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 3 and kept_step == 3
    torch.load(last, map_location="cpu", weights_only=True)  # whole again


class Note:
    """Any Python object: weights_only=True refuses to unpickle it."""


def test_a_checkpoint_with_pickled_objects_is_refused_never_unpickled(
    data_dir, run_main, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 1, "note": Note()}, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit) as stop:
        run_main([*MRL, *SHORT], run_dir)
    line = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(line) == 1, line
    assert "last.ckpt is refused: besides tensors it holds pickled Python objects" in line[0]


def test_export_and_eval_of_a_cut_file_are_one_line(tiny_model, tmp_path, capsys):
    from mrl.artifacts.export import main as export_main
    from mrl.evaluation.evaluate import load_model

    weights = tiny_model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(Exception, match="do not load .*cut short or corrupt"):
        load_model(str(tiny_model), "cpu", False, tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "experiment": "x", "run_dir": str(run), "backbone": "mrl/tiny-random-bert",
        "matryoshka": True, "eval_dims": [32], "schedule_dims": [32], "train_dims": [32],
        "weights": [1.0], "seed": 0, "overrides": [], "global_step": 1, "test": {"32": 0.5},
    }))  # fmt: skip
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(SystemExit) as stop:
        export_main([str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "last.ckpt does not load" in err[0], err


@pytest.mark.parametrize("value", [129, 100000])
def test_max_seq_length_beyond_the_positions_is_one_line_in_the_plan(
    data_dir, run_main, tmp_path, capsys, value
):
    line = _fails_in_one_line(
        run_main, tmp_path / "run", [f"data.max_seq_length={value}", "+plan=true"], capsys
    )
    assert line == (
        f"error: data.max_seq_length={value} is more than model.backbone=mrl/tiny-random-bert "
        "can take (128 tokens: its position embeddings end there); use data.max_seq_length=128 "
        "or less."
    )


def test_usable_positions_take_the_padding_offset_and_the_tokenizer(tiny_model):
    from transformers import BertConfig, RobertaConfig

    from mrl.data.lengths import model_positions, usable_positions

    assert usable_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert usable_positions(BertConfig(max_position_embeddings=512)) == 512

    class Tok:
        model_max_length = int(1e30)  # transformers' "no limit"

    assert usable_positions(BertConfig(max_position_embeddings=512), Tok()) == 512
    Tok.model_max_length = 256
    assert usable_positions(BertConfig(max_position_embeddings=512), Tok()) == 256
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model), device="cpu")
    assert model_positions(model) == 128  # its positions, whatever max_seq_length it was set to


def test_a_nan_score_is_one_line_and_results_json_stays_strict(tmp_path):
    from mrl.artifacts.results import RunResults, write_run_outputs
    from mrl.common.errors import ConfigError

    results = RunResults(
        experiment="x", run_dir=str(tmp_path), backbone="b", matryoshka=True, eval_dims=[32, 16],
        schedule_dims=[32, 16], train_dims=[32, 16], weights=[1.0, 1.0], seed=0, overrides=[],
        global_step=1, test={32: 0.5, 16: math.nan}, validation={}, untrained_test=None,
        config={},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"test.16 is nan, not a number \(a Spearman"):
        write_run_outputs(tmp_path, results)
    assert list(tmp_path.iterdir()) == [], "nothing is written"
    results.test[16] = 0.25
    write_run_outputs(tmp_path, results)

    def refuse(constant):
        raise ValueError(f"{constant} in results.json")

    json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
