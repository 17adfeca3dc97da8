"""Each architecture family end to end, as a user runs it: `+exp=allnli_mrl model=tiny_<arch>`
trains, scores every eval dim, exports, and sentence-transformers' `truncate_dim` load of the
export embeds as our encoder does at every eval dim (BERT: test_export.py)."""

import json

import pytest
import torch

from mrl.artifacts.export import encoder_from_checkpoint
from mrl.artifacts.run_folder import EXPORT_DIR
from tests.conftest import FAST

# long enough to be truncated at 32 tokens (character tokenizer) and to exceed ModernBERT's
# 16-token local attention window; of different lengths, so padding is exercised
TEXTS = ["A dog runs in the park.", "Hi.", "A man reads at home near the river today.", "Cats."]
ARCHITECTURES = {
    "tiny_mpnet": [],
    "tiny_roberta": [],
    "tiny_distilbert": [],
    "tiny_modernbert": ["model.pooling=weighted_mean"],
    # LoRA at a learning rate that moves the adapters in 3 steps (B starts at zero)
    "tiny_decoder": ["model.lora.r=4", "model.gradient_checkpointing=true", "optim.lr=1e-2"],
}


def last_checkpoint(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def ours(state, path, texts=TEXTS, max_length=32):
    """Our encoder's embeddings of `texts`, rebuilt from a run's checkpoint `state`."""
    encoder, tokenizer = encoder_from_checkpoint(state, path)
    tokenizer.padding_side = "right"  # as training batches are padded
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        return encoder(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architecture_trains_exports_and_reloads_at_every_dim(arch, data_dir, run_main, tmp_path):
    from sentence_transformers import SentenceTransformer

    run_dir = tmp_path / "run"
    run_main(["+exp=allnli_mrl", *FAST, f"model={arch}", *ARCHITECTURES[arch],
              "trainer.max_steps=3", "data.batch_size=8", "data.max_seq_length=32"],
             run_dir)  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    dims = [int(d) for d in results["test"]]
    assert dims == results["eval_dims"] == [32, 16, 8, 4]
    assert all(0 < abs(v) <= 1 for v in results["test"].values())
    state = last_checkpoint(run_dir)
    embeddings = ours(state, run_dir)
    folder = str(run_dir / EXPORT_DIR)
    for dim in dims:
        model = SentenceTransformer(folder, device="cpu", truncate_dim=dim)
        theirs = model.encode(TEXTS, convert_to_tensor=True)
        torch.testing.assert_close(theirs, embeddings[:, :dim], atol=1e-5, rtol=0)
    assert model.max_seq_length == 32
    if arch == "tiny_decoder":  # last-token pooling reads the mask: left padding embeds alike
        model.tokenizer.padding_side = "left"
        theirs = model.encode(TEXTS, convert_to_tensor=True)
        torch.testing.assert_close(theirs, embeddings[:, :dim], atol=1e-5, rtol=0)
    if "model.lora.r=4" in ARCHITECTURES[arch]:
        saved = state["state_dict"]
        # only the adapters are in the checkpoint; the export is a plain model, adapters merged
        assert saved and all("lora_" in key for key in saved)
        plain = SentenceTransformer(folder, device="cpu")[0].auto_model
        assert not any("lora" in key for key in plain.state_dict())
        untrained = last_checkpoint(run_dir)  # B = 0: the backbone alone
        for key, value in untrained["state_dict"].items():
            if "lora_B" in key:
                value.zero_()
        assert (ours(untrained, run_dir) - embeddings).abs().max() > 1e-3
