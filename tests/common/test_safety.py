"""No secret in what a run records; model code runs only when the config asks for it."""

import json

import pytest

from mrl.common.errors import ConfigError
from mrl.common.redact import REDACTED, redact, refuse_secret_overrides
from mrl.encoder.backbone import backbone_hidden_size
from tests.conftest import FAST

SECRET = "hf_s3cretValue0123456789"


def test_redact_keys_env_values_and_overrides(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    config = {
        "logger": {"wandb": {"api_key": "abc", "project": "mrl", "tags": [f"x{SECRET}y"]}},
        "hf_token": "zzz",
        "tokenizer": "kept",  # not a secret, although it contains "token"
        "max_tokens": 5,
        "overrides": ["+client_secret=abc", "seed=1"],
    }
    assert redact(config) == {
        "logger": {"wandb": {"api_key": REDACTED, "project": "mrl", "tags": [f"x{REDACTED}y"]}},
        "hf_token": REDACTED,
        "tokenizer": "kept",
        "max_tokens": 5,
        "overrides": [f"+client_secret={REDACTED}", "seed=1"],
    }


def test_secret_on_the_command_line_is_refused():
    with pytest.raises(ConfigError, match="wandb_api_key looks like a secret"):
        refuse_secret_overrides(["seed=1", "+logger.wandb.wandb_api_key=abc"])
    refuse_secret_overrides(["model=tiny", "data.max_seq_length=64"])


def test_no_secret_reaches_results_or_wandb_files(data_dir, run_main, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    # a contrived leak: the secret interpolated into a logged field (tags) and the config
    overrides = ["+exp=allnli_mrl", *FAST, "logger=wandb", "trainer.max_steps=1"]
    overrides += ["data.batch_size=8", "logger.wandb.tags=[${oc.env:HF_TOKEN}]"]
    run_main(overrides, run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["logger"]["wandb"]["tags"] == [REDACTED]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)  # the offline wandb run was written
    leaks = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_model_code_runs_only_when_trusted(tmp_path):
    model = tmp_path / "custom-model"
    model.mkdir()
    marker = tmp_path / "code-ran"
    (model / "configuration_custom.py").write_text(
        "from pathlib import Path\n"
        "from transformers import PretrainedConfig\n"
        f"Path({str(marker)!r}).touch()\n"
        "class CustomConfig(PretrainedConfig):\n"
        "    model_type = 'mrl-custom'\n"
    )
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "mrl-custom",
                "hidden_size": 16,
                "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"},
            }
        )
    )
    with pytest.raises(ConfigError, match="ships its own code; .* model.trust_remote_code=true"):
        backbone_hidden_size(str(model))
    assert not marker.exists()
    assert backbone_hidden_size(str(model), trust_remote_code=True) == 16
    assert marker.exists()
