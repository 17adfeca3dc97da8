"""mrl.artifacts.models: any model for the tools, with one-line errors, the dims a tool uses when
none are given, and no training code imported by any tool."""

import json
import subprocess
import sys

import pytest
import torch

from mrl.artifacts.export import export_encoder
from mrl.artifacts.models import load_model, model_eval_dims, slug
from mrl.artifacts.results import RunResults
from mrl.common.errors import ConfigError
from mrl.core.schedule import dims_from_rule
from mrl.encoder.backbone import load_tokenizer, tiny_config
from mrl.encoder.encoder import Encoder
from tests.conftest import ROOT

OLD_RUN = ROOT / "experiments" / "results" / "allnli_mrl_minilm_results.json"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Encoder("mrl/tiny-random-bert").eval(), load_tokenizer("mrl/tiny-random-bert")


def results(eval_dims, schedule_dims) -> RunResults:
    return RunResults(
        experiment="x", run_dir="r", backbone="mrl/tiny-random-bert", eval_dims=eval_dims,
        test={d: 0.5 for d in eval_dims}, schedule_dims=schedule_dims,
    )  # fmt: skip


def test_tools_use_the_runs_own_eval_dims_else_the_pow2_dims(tiny, tmp_path):
    encoder, tokenizer = tiny
    ours = export_encoder(
        encoder, tokenizer, tmp_path / "ours", 32, "b", results([32, 24, 16, 8, 4], [32, 24, 8])
    )
    info = json.loads((ours / "mrl.json").read_text())
    assert info == {"eval_dims": [32, 24, 16, 8, 4], "schedule_dims": [32, 24, 8]}
    assert model_eval_dims(str(ours), 32) == [32, 24, 16, 8, 4]
    foreign = export_encoder(encoder, tokenizer, tmp_path / "foreign", 32, "b")
    assert not (foreign / "mrl.json").exists()
    assert model_eval_dims(str(foreign), 32) == dims_from_rule(32) == [32, 16, 8, 4]
    assert model_eval_dims("org/some-hub-model", 384) == [384, 256, 128, 64, 32]

    run = tmp_path / "run"  # a run folder: its results.json, also one of the old layout (`dims`)
    run.mkdir()
    old = json.loads(OLD_RUN.read_text())
    (run / "results.json").write_text(json.dumps({**old, "dims": [384, 192, 64]}))
    assert model_eval_dims(str(run), 384) == [384, 192, 64]
    export = run / "sentence-transformers"  # an export made before mrl.json: the run around it
    export.mkdir()
    assert model_eval_dims(str(export), 384) == [384, 192, 64]
    with pytest.raises(ConfigError, match="holds 384, larger than the backbone's hidden size 32"):
        model_eval_dims(str(run), 32)
    (ours / "mrl.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"mrl.json is not a valid mrl.json \(KeyError"):
        model_eval_dims(str(ours), 32)


def test_folders_without_weights_or_tokenizer_are_one_line(tiny, tmp_path):
    from transformers import BertModel

    bare = tmp_path / "bare"
    BertModel(tiny_config()).save_pretrained(bare)  # no tokenizer files: refused, not built
    with pytest.raises(ConfigError, match=r"bare has no tokenizer files \(tokenizer.json / vocab"):
        load_model(str(bare), "cpu", False, tmp_path)
    (bare / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="holds no weights"):
        load_model(str(bare), "cpu", False, tmp_path)
    encoder, tokenizer = tiny
    good = export_encoder(encoder, tokenizer, tmp_path / "good", 32, "b")
    assert load_model(str(good), "cpu", False, tmp_path).get_embedding_dimension() == 32


def test_run_folder_without_export_is_exported_into_the_workdir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(OLD_RUN.read_text())
    with pytest.raises(ConfigError, match="has no checkpoints/last.ckpt"):
        load_model(str(run), "cpu", False, tmp_path / "work")


def test_slug():
    assert slug("outputs/runs/allnli_mrl/seed42/model=minilm_l6") == (
        "outputs_runs_allnli_mrl_seed42_model=minilm_l6"
    )
    assert slug(None) == "model" and slug("///") == "model"


def test_tools_import_no_training_code():
    code = (
        "import sys, mrl.artifacts.models, mrl.evaluation.evaluate, mrl.tools.retrieval, "
        "mrl.tools.quantization, mrl.tools.demo, mrl.artifacts.export\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'wandb') or m in ('mrl.run.train', 'mrl.run.module'))\n"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
