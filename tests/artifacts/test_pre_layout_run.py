"""A run folder written by the flat layout, when every module sat at `mrl.<name>`
(tests/fixtures/pre_layout_run, commit 30667fc, see its README), still loads, resumes, exports
and reports with the subpackages."""

import json
import shutil

import torch

from mrl.artifacts.results import load_results
from mrl.run.hparams import grouped_hparams
from mrl.run.module import MatryoshkaModule
from tests.artifacts.test_legacy import assert_export_embeds_as_checkpoint
from tests.conftest import FAST, ROOT

PRE_LAYOUT = ROOT / "tests" / "fixtures" / "pre_layout_run"
CKPT = PRE_LAYOUT / "checkpoints" / "last.ckpt"


def _copy(tmp_path):
    run_dir = tmp_path / "pre_layout"
    shutil.copytree(PRE_LAYOUT, run_dir)
    return run_dir


def test_the_fixture_was_written_by_the_flat_layout():
    hydra = (PRE_LAYOUT / ".hydra" / "hydra.yaml").read_text()
    assert "_target_: mrl.sweep.SweepFailures" in hydra  # a module path that no longer exists
    state = torch.load(CKPT, weights_only=True)
    assert state["global_step"] == 2 and isinstance(state["hyper_parameters"]["model"], dict)


def test_its_checkpoint_loads_into_the_module():
    module = MatryoshkaModule.load_from_checkpoint(CKPT, map_location="cpu", weights_only=True)
    state = torch.load(CKPT, weights_only=True)
    assert grouped_hparams(state["hyper_parameters"])["model"]["backbone"] == "mrl/tiny-random-bert"
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, state["state_dict"][name], rtol=0, atol=0)
    assert module.train_dims == [32, 16, 8, 4]


def test_its_results_and_pairs_load():
    results = load_results(PRE_LAYOUT)
    assert results.eval_dims == [32, 16, 8, 4] and results.global_step == 2


def test_it_reports(tmp_path):
    from mrl.report.build import build_report

    run_dir = _copy(tmp_path)
    build_report([run_dir], out=tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "allnli_mrl" in report and "finished" in report


def test_it_exports_the_checkpoint_weights(tmp_path):
    assert_export_embeds_as_checkpoint(_copy(tmp_path), CKPT, tmp_path / "export")


def test_it_resumes(data_dir, run_main, tmp_path, monkeypatch, caplog):
    import lightning as L

    run_dir = _copy(tmp_path)
    (run_dir / "results.json").unlink()  # unfinished: the next run resumes from last.ckpt
    fits = []
    real_fit = L.Trainer.fit

    def recording_fit(trainer, *args, **kwargs):
        fits.append(kwargs.get("ckpt_path"))
        return real_fit(trainer, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", recording_fit)
    args = ["+exp=allnli_mrl", *FAST, "data.batch_size=16", "trainer.max_epochs=2"]
    run_main([*args, "ckpt_path=last"], run_dir)
    assert fits == [str(run_dir / "checkpoints" / "last.ckpt")]  # the old file, not a new start
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] > 2 and results["eval_dims"] == [32, 16, 8, 4]
    assert "Restored all states from the checkpoint" in caplog.text
