"""A run exported as a sentence-transformers folder loads with no code of ours, embeds alike."""

import json

import pytest
import torch

from mrl.export import EXPORT_DIR, main
from tests.conftest import FAST

TEXTS = ["A dog runs in the park.", "A child sings.", "A man reads at home near the river."]


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


def test_export_round_trip_with_truncate_dim(data_dir, run_main, tmp_path):
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
    with pytest.raises(SystemExit, match="already exists"):
        main([str(run_dir), "--out", str(tmp_path / "again")])

    # a checkpoint older than the run's end is not the tested model: refused unless asked for
    results["global_step"] = 999
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="is from step 3 but the run ended at step 999"):
        main([str(run_dir), "--out", str(tmp_path / "stale")])
    main([str(run_dir), "--out", str(tmp_path / "stale"), "--allow-earlier-checkpoint"])
    assert "Note: weights from step 3 of 999" in (tmp_path / "stale" / "README.md").read_text()


def test_export_of_a_folder_without_weights_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(SystemExit, match="holds no results.json"):
        main([str(run_dir)])
    (run_dir / "results.json").write_text(json.dumps({"test": {}, "dims": []}))
    with pytest.raises(SystemExit, match="has no checkpoints/last.ckpt"):
        main([str(run_dir)])
