"""The optional projection head (`model.projection_dim`): the embedding width becomes d, the
schedule and eval dims follow d, the head trains (plain and cached mode alike), a run with it
exports a stock sentence-transformers Dense module that embeds as our encoder does, and a bad
value stops in one line."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from mrl.artifacts.export import main
from mrl.artifacts.run_folder import EXPORT_DIR
from mrl.common.errors import ConfigError
from mrl.core.matryoshka import matryoshka_mnrl_loss
from mrl.core.schedule import dims_from_rule
from mrl.encoder.backbone import TINY_BACKBONE, load_tokenizer
from mrl.encoder.cached import cached_step
from mrl.encoder.encoder import Encoder, encoder_width
from mrl.run.hparams import grouped_hparams
from mrl.run.module import MatryoshkaModule
from tests.conftest import FAST
from tests.encoder.test_cached import assert_same_gradient, grads, make_batch

TEXTS = ["A dog runs in the park.", "A child sings.", "A man reads at home near the river."]
MRL = ["+exp=allnli_mrl", *FAST]


def tiny_encoder(projection_dim=16, **kwargs):
    torch.manual_seed(0)
    return Encoder(TINY_BACKBONE, projection_dim=projection_dim, **kwargs)


def embed(encoder, texts=TEXTS, max_length=32):
    batch = load_tokenizer(TINY_BACKBONE)(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        return encoder.eval()(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("d", [16, 48])  # narrower and wider than the hidden size 32
def test_embedding_width_and_dims_follow_the_projection(d):
    encoder = tiny_encoder(d)
    assert encoder.width == encoder_width(TINY_BACKBONE, d) == d
    assert embed(encoder).shape == (len(TEXTS), d)
    assert encoder.projection.weight.shape == (d, 32) and encoder.projection.bias is not None
    # chunks of texts give the same embeddings as one call: the head is applied to each row
    chunked = tiny_encoder(d, chunk_size=2)
    assert torch.allclose(embed(chunked), embed(encoder), atol=1e-6)

    module = MatryoshkaModule({"backbone": TINY_BACKBONE, "projection_dim": d})
    assert module.schedule_dims == dims_from_rule(d) and module.schedule_dims[0] == d
    assert module.eval_dims == dims_from_rule(d)
    fixed = MatryoshkaModule({"backbone": TINY_BACKBONE, "projection_dim": d}, {"fixed_dim": 12})
    assert fixed.train_dims == [12] and fixed.schedule_dims[0] == d


def test_without_a_head_nothing_changes():
    encoder = tiny_encoder(None)
    assert encoder.projection is None and encoder.width == 32
    assert not any(k.startswith("projection") for k in encoder.state_dict())
    # checkpoints made before the option have no projection_dim: they get no head
    old = grouped_hparams({"model": {"backbone": TINY_BACKBONE, "pooling": "mean"}})
    assert old["model"]["projection_dim"] is None
    assert MatryoshkaModule({"backbone": TINY_BACKBONE}).schedule_dims == [32, 16, 8, 4]


def test_a_dim_wider_than_the_projection_names_its_width():
    model = {"backbone": TINY_BACKBONE, "projection_dim": 16}
    expected = "holds 32, larger than the embedding width 16 (model.projection_dim); use dims <= 16"
    with pytest.raises(ConfigError, match=re.escape(f"matryoshka.fixed_dim {expected}")):
        MatryoshkaModule(model, {"fixed_dim": 32})
    with pytest.raises(ConfigError, match="matryoshka.dims holds 32, larger than the embedding"):
        MatryoshkaModule(model, {"dims": [32, 16]})


def test_the_head_gets_gradient_in_plain_and_cached_mode():
    batch = make_batch()
    n, dims, weights = batch["n_rows"], [16, 8, 4], [1.0, 1.0, 1.0]

    def loss_fn(embeddings):
        return matryoshka_mnrl_loss(embeddings[:n], embeddings[n:], dims, weights)

    plain = tiny_encoder().eval()  # dropout off: the plain pass is one forward
    loss, _ = loss_fn(plain(batch["input_ids"], batch["attention_mask"]))
    loss.backward()
    for grad in (plain.projection.weight.grad, plain.projection.bias.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

    cached = tiny_encoder().eval()
    cached_step(cached, batch["input_ids"], batch["attention_mask"], 4, loss_fn)
    assert_same_gradient(grads(cached), grads(plain))


def test_a_run_with_a_head_exports_a_dense_module_that_embeds_alike(data_dir, run_main, tmp_path):
    from sentence_transformers import SentenceTransformer

    run_dir = tmp_path / "run"
    args = ["trainer.max_steps=2", "data.batch_size=8", "data.max_seq_length=32"]
    run_main([*MRL, "model.projection_dim=16", *args], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["eval_dims"] == [16, 8, 4, 2]  # the pow2 dims of 16 down to 2 (never 1)
    assert set(results["test"]) == {"16", "8", "4", "2"}

    folder = run_dir / EXPORT_DIR
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense"]
    assert modules[2]["type"].endswith(".Dense")
    assert json.loads((folder / "2_Dense" / "config.json").read_text()) == {
        "in_features": 32, "out_features": 16, "bias": True,
        "activation_function": "torch.nn.modules.linear.Identity",
    }  # fmt: skip
    assert set(load_file(folder / "2_Dense" / "model.safetensors")) == {
        "linear.weight", "linear.bias"
    }  # fmt: skip
    assert json.loads((folder / "mrl.json").read_text())["projection_dim"] == 16

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    ours = tiny_encoder(16)
    ours.load_state_dict({k[8:]: v for k, v in state["state_dict"].items() if k[:8] == "encoder."})
    expected = embed(ours)
    model = SentenceTransformer(str(folder), device="cpu")  # stock modules, no remote code
    assert model.get_embedding_dimension() == 16
    assert torch.allclose(model.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5)
    small = SentenceTransformer(str(folder), device="cpu", truncate_dim=4)
    assert torch.allclose(small.encode(TEXTS, convert_to_tensor=True), expected[:, :4], atol=1e-5)

    # `mrl.export RUN` rebuilds the head from the checkpoint's hyper-parameters
    main([str(run_dir), "--out", str(tmp_path / "again")])
    again = SentenceTransformer(str(tmp_path / "again"), device="cpu")
    assert torch.allclose(again.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5)


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "abc", "true", "[16]"])
def test_bad_projection_dim_is_one_line(data_dir, run_main, tmp_path, capsys, value):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run_main([*MRL, f"model.projection_dim={value}"], run_dir)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1 and "Traceback" not in "\n".join(err), err
    rule = "must be a whole number >= 1 (the width of a linear head after pooling) or null"
    assert "model.projection_dim=" in errors[0] and rule in errors[0]
    assert not run_dir.exists()
    with pytest.raises(ConfigError, match="model.projection_dim=0 must be a whole number >= 1"):
        Encoder(TINY_BACKBONE, projection_dim=0)


def test_fixed_dim_wider_than_the_projection_is_one_line(data_dir, run_main, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run_main([*MRL, "model.projection_dim=16", "matryoshka.fixed_dim=32"], run_dir)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1, errors
    assert "larger than the embedding width 16 (model.projection_dim)" in errors[0]
    assert not run_dir.exists()
