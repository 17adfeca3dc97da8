"""A run exported as a sentence-transformers folder loads with no code of ours, embeds alike,
quietly (no "newly initialized" pooler), readable by colleagues (plain modes)."""

import json
import logging
import os
import stat

import pytest
import torch

from mrl.export import EXPORT_DIR, export_encoder, main, model_card, model_hparams
from mrl.results import load_results
from tests.conftest import FAST, ROOT

TEXTS = ["A dog runs in the park.", "A child sings.", "A man reads at home near the river."]
COMMITTED = ROOT / "experiments" / "results"
OLD_RESULTS = sorted(COMMITTED.rglob("*results.json"))  # runs and evals, old layouts included


def our_embeddings(run_dir, texts):
    from mrl.encoder import Encoder, load_tokenizer

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    encoder = Encoder("mrl/tiny-random-bert", "mean")
    encoder.load_state_dict(
        {k[8:]: v for k, v in state["state_dict"].items() if k.startswith("encoder.")}
    )
    encoder.eval()
    batch = load_tokenizer("mrl/tiny-random-bert")(
        texts, padding=True, truncation=True, max_length=32, return_tensors="pt"
    )
    with torch.no_grad():
        return encoder(batch["input_ids"], batch["attention_mask"])


def test_export_round_trip_with_truncate_dim(data_dir, run_main, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    run_dir = tmp_path / "run"
    run_main(
        [
            "+exp=allnli_mrl",
            *FAST,
            "trainer.max_steps=3",
            "data.batch_size=8",
            "data.max_seq_length=32",
        ],
        run_dir,
    )
    folder = run_dir / EXPORT_DIR
    assert (folder / "model.safetensors").is_file()
    card = (folder / "README.md").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert f"| 4 | {results['test']['4']:.4f} |" in card and "## Training config" in card
    eval_dims = results.get("eval_dims", results.get("dims"))
    assert json.loads((folder / "mrl.json").read_text())["eval_dims"] == eval_dims
    ours = our_embeddings(run_dir, TEXTS)
    full = SentenceTransformer(str(folder), device="cpu")
    assert full.max_seq_length == 32
    theirs = full.encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(theirs, ours, atol=1e-5)
    small = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    assert torch.allclose(small.encode(TEXTS, convert_to_tensor=True), ours[:, :8], atol=1e-5)

    # the command exports again from the checkpoint, to the same numbers; no overwrite
    main([str(run_dir), "--out", str(tmp_path / "again")])
    again = SentenceTransformer(str(tmp_path / "again"), device="cpu")
    assert torch.allclose(again.encode(TEXTS, convert_to_tensor=True), ours, atol=1e-5)
    assert (tmp_path / "again" / "mrl.json").read_text() == (folder / "mrl.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), "--out", str(tmp_path / "again")])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err

    # a checkpoint older than the run's end is not the tested model: refused unless asked for
    results["global_step"] = 999
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), "--out", str(tmp_path / "stale")])
    assert exit_info.value.code == 2
    assert "is from step 3 but the run ended at step 999" in capsys.readouterr().err
    main([str(run_dir), "--out", str(tmp_path / "stale")] + ["--allow-earlier-checkpoint"])
    assert "Note: weights from step 3 of 999" in (tmp_path / "stale" / "README.md").read_text()


def test_export_of_a_folder_without_weights_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for step, message in [("none", "holds no results.json"), ("results", "checkpoints/last.ckpt")]:
        if step == "results":  # checked before the results are read
            (run_dir / "results.json").write_text(json.dumps({"test": {}, "dims": []}))
        with pytest.raises(SystemExit) as exit_info:
            main([str(run_dir)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err
        assert err.count("\n") == 1


@pytest.fixture
def tiny():
    from mrl.encoder import Encoder, load_tokenizer

    torch.manual_seed(0)
    return Encoder("mrl/tiny-random-bert").eval(), load_tokenizer("mrl/tiny-random-bert")


def test_export_is_readable_by_colleagues(tiny, tmp_path):
    umask = os.umask(0o022)
    try:
        folder = export_encoder(*tiny, tmp_path / "shared" / "model", 32, "mrl/tiny-random-bert")
    finally:
        os.umask(umask)
    modes = {p.relative_to(folder): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # mkdtemp alone gives 0o700
    assert modes[type(folder)("model.safetensors")] == 0o644  # safetensors alone: 0o600
    assert all(m == (0o755 if (folder / p).is_dir() else 0o644) for p, m in modes.items())


def test_export_loads_without_alarming_output_and_embeds_alike(tiny, tmp_path, capfd, caplog):
    import transformers
    from sentence_transformers import SentenceTransformer

    encoder, tokenizer = tiny
    folder = export_encoder(encoder, tokenizer, tmp_path / "model", 32, "mrl/tiny-random-bert")
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        ours = encoder(batch["input_ids"], batch["attention_mask"])
    old = tmp_path / "old"  # an export of earlier versions: no model_kwargs
    old.mkdir()
    for path in folder.rglob("*"):
        target = old / path.relative_to(folder)
        target.mkdir() if path.is_dir() else target.write_bytes(path.read_bytes())
    (old / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))

    def loaded(path):
        capfd.readouterr()
        caplog.clear()
        model = SentenceTransformer(str(path), device="cpu")
        out = capfd.readouterr()
        return model, out.out + out.err + caplog.text

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # another test may have silenced it
    transformers.logging.enable_propagation()  # its records reach caplog too
    try:
        with caplog.at_level(logging.WARNING):
            _, old_output = loaded(old)
            model, output = loaded(folder)
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.disable_propagation()
    assert "MISSING" in old_output  # what this test catches, shown on the earlier layout
    assert "MISSING" not in output and "newly initialized" not in output, output
    assert model[0].model.pooler is None
    assert torch.allclose(model.encode(TEXTS, convert_to_tensor=True), ours, atol=1e-5)


def test_hparams_of_grouped_and_flat_checkpoints():
    grouped = {"model": {"backbone": "b", "pooling": "cls", "compile": False}, "loss": {}}
    assert model_hparams(grouped) == {"backbone": "b", "pooling": "cls", "compile": False}
    flat = {"backbone": "b", "pooling": "mean", "trust_remote_code": True, "lr": 1e-5}
    assert model_hparams(flat) == {"backbone": "b", "pooling": "mean", "trust_remote_code": True}


@pytest.mark.parametrize("path", OLD_RESULTS, ids=lambda p: str(p.relative_to(COMMITTED)))
def test_old_committed_results_still_make_a_model_card(path):
    results = load_results(path)
    card = model_card(results, results.backbone, results.full_dim)
    assert f"| {results.full_dim} | {results.test[results.full_dim]:.4f} | 100.0 % |" in card
