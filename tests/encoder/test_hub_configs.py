"""The configs a user copies (conf/model/<Hub backbone>.yaml) pass the check pass as written, each
with a tiny random stand-in of its architecture in the MRL_MODEL_DIR mirror under the Hub id's
last name (the real weights cannot be fetched here); Qwen3-Embedding's (last-token pooling, LoRA,
gradient checkpointing, the instruction prompt) also trains and exports."""

import json

import pytest
from transformers import AutoModel, Gemma3TextConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from mrl.artifacts.run_folder import EXPORT_DIR
from mrl.encoder.backbone import TINY_DECODER, load_backbone, tiny_config, tiny_tokenizer
from tests.conftest import CONF

# the Hub configs, and the tiny backbone whose architecture stands in for each
STAND_INS = {
    "minilm_l6": "mrl/tiny-random-bert",
    "bge_small_en": "mrl/tiny-random-bert",
    "mpnet_base": "mrl/tiny-random-mpnet",
    "modernbert_base": "mrl/tiny-random-modernbert",
    "qwen3_embedding_0_6b": TINY_DECODER,
    "embeddinggemma_300m": "gemma3_text",  # bidirectional Gemma 3, built below
}


def _hub_id(config: str) -> str:
    text = (CONF / "model" / f"{config}.yaml").read_text()
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.strip().startswith("backbone:"))  # fmt: skip


def _save_stand_in(config: str, mirror):
    folder = mirror / _hub_id(config).split("/")[-1]
    decoder = STAND_INS[config] in (TINY_DECODER, "gemma3_text")
    tokenizer = tiny_tokenizer(decoder=decoder)
    if STAND_INS[config] == "gemma3_text":
        model = AutoModel.from_config(Gemma3TextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
            max_position_embeddings=128, use_bidirectional_attention=True, pad_token_id=0,
            eos_token_id=0, bos_token_id=None,
        ))  # fmt: skip
    else:
        model = load_backbone(STAND_INS[config])
        assert model.config.model_type == tiny_config(STAND_INS[config]).model_type
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_every_hub_config_has_a_stand_in():
    configs = {p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("tiny")}
    assert configs == set(STAND_INS)
    assert "gemma3_text" in MODEL_MAPPING_NAMES


@pytest.mark.parametrize("config", STAND_INS)
def test_hub_config_plans_with_a_stand_in_of_its_architecture(
    config, data_dir, run_main, tmp_path, monkeypatch, capsys
):
    mirror = tmp_path / "models"
    _save_stand_in(config, mirror)
    monkeypatch.setenv("MRL_MODEL_DIR", str(mirror))
    run_main(["+exp=allnli_mrl", f"model={config}", "trainer=cpu", "logger=csv",
              "data.max_seq_length=32", "+plan=true"], tmp_path / "run")  # fmt: skip
    assert f"backbone         {_hub_id(config)}" in capsys.readouterr().out


def test_qwen3_embedding_config_trains_with_lora_checkpointing_and_its_prompt(
    data_dir, run_main, tmp_path, monkeypatch
):
    from sentence_transformers import SentenceTransformer

    mirror = tmp_path / "models"
    _save_stand_in("qwen3_embedding_0_6b", mirror)
    monkeypatch.setenv("MRL_MODEL_DIR", str(mirror))
    run_dir = tmp_path / "run"
    # max_seq_length 100: its prompts are ~50 characters of the character tokenizer
    args = ["+exp=allnli_mrl", "model=qwen3_embedding_0_6b", "trainer=cpu", "logger=csv",
            "callbacks.progress_bar=none", "trainer.max_steps=2", "data.batch_size=8",
            "data.max_seq_length=100"]  # fmt: skip
    run_main(args, run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["model"]["lora"]["r"] == 16
    assert results["config"]["model"]["gradient_checkpointing"] is True
    model = SentenceTransformer(str(run_dir / EXPORT_DIR), device="cpu")
    assert model[1].pooling_mode == "lasttoken"
    # the query instruction under its column's name; the STS one is the default prompt
    assert model.prompts["anchor"].startswith("Instruct: Given a web search query")
    st_config = json.loads((run_dir / EXPORT_DIR / "config_sentence_transformers.json").read_text())
    default = st_config["prompts"][st_config["default_prompt_name"]]
    assert default.startswith("Instruct: Retrieve semantically")
