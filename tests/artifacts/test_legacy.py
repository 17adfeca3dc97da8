"""A run folder written before the grouped module arguments and the typed results
(tests/fixtures/legacy_run, see its README) still reports, exports and resumes."""

import json
import shutil

import torch

from mrl.artifacts.results import load_results
from mrl.run.hparams import grouped_hparams
from tests.conftest import FAST, ROOT

LEGACY = ROOT / "tests" / "fixtures" / "legacy_run"


def _copy(tmp_path):
    run_dir = tmp_path / "legacy"
    shutil.copytree(LEGACY, run_dir)
    return run_dir


def test_legacy_results_load_with_int_dims():
    results = load_results(LEGACY)
    raw = json.loads((LEGACY / "results.json").read_text())
    assert "dims" in raw and "eval_dims" not in raw  # really the old layout
    assert results.eval_dims == [32, 16, 8, 4] and results.schedule_dims == [32, 16, 8, 4]
    assert results.test == {int(d): v for d, v in raw["test"].items()}


def test_legacy_checkpoint_hparams_map_onto_the_groups():
    state = torch.load(LEGACY / "checkpoints" / "last.ckpt", weights_only=True)
    assert "backbone" in state["hyper_parameters"]  # flat, as saved before
    groups = grouped_hparams(state["hyper_parameters"])
    assert groups["model"]["backbone"] == "mrl/tiny-random-bert"
    assert groups["matryoshka"]["enabled"] is True and groups["loss"]["name"] == "mnrl"
    assert groups["optim"]["lr"] == 2e-5


def test_legacy_run_reports(tmp_path):
    from mrl.report.build import build_report

    run_dir = _copy(tmp_path)
    build_report([run_dir], out=tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "allnli_mrl" in report and "| 32 |" in report.replace(" 32 ", " 32 ")


def assert_export_embeds_as_checkpoint(run_dir, ckpt, out) -> None:
    """`export_run(run_dir)` loads in sentence-transformers and embeds as our encoder does with
    the checkpoint's weights (1e-5)."""
    from sentence_transformers import SentenceTransformer

    from mrl.artifacts.export import export_run
    from mrl.encoder.backbone import tiny_tokenizer
    from mrl.encoder.encoder import Encoder

    model = SentenceTransformer(str(export_run(run_dir, out)), device="cpu")
    state = torch.load(ckpt, weights_only=True)
    encoder = Encoder("mrl/tiny-random-bert", chunk_size=None).eval()
    prefix = "encoder."
    encoder.load_state_dict(
        {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    )
    tokens = tiny_tokenizer()(["a dog runs in the park."], return_tensors="pt")
    with torch.no_grad():
        ours = encoder(tokens["input_ids"], tokens["attention_mask"])
    theirs = model.encode(["a dog runs in the park."], convert_to_tensor=True)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_legacy_run_exports_the_checkpoint_weights(tmp_path):
    ckpt = LEGACY / "checkpoints" / "last.ckpt"
    assert_export_embeds_as_checkpoint(_copy(tmp_path), ckpt, tmp_path / "export")


def test_legacy_checkpoint_resumes(data_dir, run_main, tmp_path):
    run_dir = _copy(tmp_path)
    (run_dir / "results.json").unlink()  # unfinished: the next run resumes from last.ckpt
    args = ["+exp=allnli_mrl", *FAST, "data.batch_size=16", "trainer.max_epochs=2"]
    run_main([*args, "ckpt_path=last"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] > 2 and results["eval_dims"] == [32, 16, 8, 4]
