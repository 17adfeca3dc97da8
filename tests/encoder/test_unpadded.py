"""The unpadded forward of BERT-style backbones (`mrl.encoder.unpadded`): the same embeddings
and gradients as the transformers forward, per-token layers on the real tokens only, attention
per length group, dropout and gradient checkpointing as in training, and one line where it
cannot run."""

import copy

import pytest
import torch
from omegaconf import OmegaConf

from mrl.common.errors import ConfigError
from mrl.core.batch import collate_texts
from mrl.encoder import unpadded as unpadded_module
from mrl.encoder.backbone import load_tokenizer, tiny_tokenizer
from mrl.encoder.encoder import Encoder
from mrl.run.checks import check_unpadded

BERT, ROBERTA, MPNET = "mrl/tiny-random-bert", "mrl/tiny-random-roberta", "mrl/tiny-random-mpnet"
DISTILBERT = "mrl/tiny-random-distilbert"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def make_texts(name: str, n: int = 20) -> dict:
    """`n` texts of 1 to 13 words, in no length order, right-padded to the longest."""
    tok = load_tokenizer(name) if name != BERT else tiny_tokenizer()
    words = [" ".join(["word"] * (1 + (7 * i) % 13)) for i in range(n)]
    rows = [{"text_ids": tok(text)["input_ids"]} for text in words]
    batch = collate_texts(rows, ["text"], tok.pad_token_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def pair(name: str, **options) -> tuple[Encoder, Encoder]:
    """The same weights twice: through the transformers forward, and unpadded."""
    torch.manual_seed(0)
    padded = Encoder(name, unpadded=False, **options)
    unpadded = copy.deepcopy(padded)
    unpadded.unpadded = True
    return padded, unpadded


@pytest.mark.parametrize("pooling", ["mean", "cls", "last", "weighted_mean"])
@pytest.mark.parametrize("name", [BERT, ROBERTA, MPNET])
def test_unpadded_embeddings_equal_the_transformers_forward(name, pooling):
    texts = make_texts(name)
    for chunk_size in (None, 3, 16):
        padded, unpadded = (e.eval() for e in pair(name, pooling=pooling, chunk_size=chunk_size))
        assert Encoder(name, pooling).unpadded  # what `auto` picks for each of them
        with torch.no_grad():
            torch.testing.assert_close(unpadded(**texts), padded(**texts), atol=1e-5, rtol=1e-4)
            by_layer = unpadded(**texts, layers=[1, 2])
            torch.testing.assert_close(
                by_layer, padded(**texts, layers=[1, 2]), atol=1e-5, rtol=1e-4
            )
        assert by_layer.shape == (2, 20, 32)


@pytest.mark.parametrize("name", [BERT, ROBERTA, MPNET])
def test_left_padded_batches_too(name):
    """Packing reads the mask, so a left-padded batch gives what transformers gives it; for
    MPNet, whose transformers forward gives a left-padded batch other embeddings than the same
    texts right-padded, the unpadded forward gives the right-padded ones for both."""
    texts = make_texts(name)
    ids, mask = texts["input_ids"], texts["attention_mask"]
    shift = (mask.shape[1] - mask.sum(1)).tolist()  # right -> left padding, row by row
    left = [torch.stack([t.roll(s) for t, s in zip(x, shift, strict=True)]) for x in (ids, mask)]
    assert not left[1][:, -1].eq(0).any()  # every text now ends at the last column
    padded, unpadded = (e.eval() for e in pair(name, chunk_size=None))
    with torch.no_grad():
        expected = padded(ids, mask) if name == MPNET else padded(*left)
        torch.testing.assert_close(unpadded(*left), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "options"),
    [(BERT, {}), (BERT, {"projection_dim": 8}), (BERT, {"lora": LORA}),
     (BERT, {"gradient_checkpointing": True}), (MPNET, {}), (MPNET, {"lora": LORA})],
)  # fmt: skip
def test_unpadded_gradients_equal_the_transformers_forward(name, options):
    """Dropout off (eval mode), gradients on: every parameter's gradient matches, so training
    on the unpadded forward is training the same model."""
    texts = make_texts(name)
    models = [m.eval() for m in pair(name, chunk_size=4, **options)]
    outs = [m(**texts) for m in models]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-4)
    for out in outs:
        out.square().sum().backward()
    grads = [{k: p.grad for k, p in m.named_parameters() if p.requires_grad} for m in models]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key, ref in grads[0].items():
        atol = max(1e-5 * float(ref.abs().max()), 1e-6)  # sums in another order
        torch.testing.assert_close(grads[1][key], ref, atol=atol, rtol=0, msg=key)


def test_per_token_layers_see_real_tokens_only_and_attention_runs_per_group(monkeypatch):
    texts = make_texts(BERT, 40)
    lengths = texts["attention_mask"].sum(1).sort(descending=True).values
    _, model = pair(BERT)  # chunk_size auto: 16 texts per attention call on CPU
    rows, groups = [], []
    hook = model.backbone.encoder.layer[0].intermediate.register_forward_hook(
        lambda _m, args, _out: rows.append(tuple(args[0].shape))
    )
    sdpa = unpadded_module.F.scaled_dot_product_attention

    def counted(q, *args, **kwargs):
        groups.append((q.shape[0], q.shape[2]))  # texts, width
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(unpadded_module.F, "scaled_dot_product_attention", counted)
    with torch.no_grad():
        model.eval()(**texts)
    hook.remove()
    assert rows == [(int(lengths.sum()), 32)]  # one call on the packed real tokens
    widths = [int(lengths[0]), int(lengths[16]), int(lengths[32])]
    assert groups == [(16, widths[0]), (16, widths[1]), (8, widths[2])] * 2  # 2 layers
    assert int(lengths.sum()) < 40 * widths[0]  # the pack really skips padding


def test_training_draws_dropout_and_checkpointing_recomputes_the_same_masks():
    texts = make_texts(BERT)
    _, plain = pair(BERT, chunk_size=4)
    _, recomputed = pair(BERT, chunk_size=4, gradient_checkpointing=True)
    first, second = plain(**texts), plain(**texts)  # train mode: dropout on
    assert not torch.allclose(first, second)
    outs = []
    for model in (plain, recomputed):
        torch.manual_seed(7)
        out = model(**texts)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0])
    for (key, p), q in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=key)


def test_where_it_cannot_run_one_line():
    assert not Encoder(DISTILBERT).unpadded  # auto: DistilBERT keeps the transformers forward
    with pytest.raises(ConfigError, match=r"^model\.unpadded=true, but mrl/tiny-random-distilbert "
                       r"cannot run unpadded: distilbert is not one of bert, roberta, "
                       r"xlm-roberta, mpnet; set it to auto\.$"):  # fmt: skip
        Encoder(DISTILBERT, unpadded=True)
    for bad in ("yes", 1):
        with pytest.raises(
            ConfigError, match=r"^model\.unpadded=.* must be auto, true or false\.$"
        ):
            Encoder(BERT, unpadded=bad)
    cfg = OmegaConf.create({"model": {"backbone": DISTILBERT, "trust_remote_code": False}})
    check_unpadded(cfg)  # auto (the key left out) is fine anywhere
    cfg.model.unpadded = True
    with pytest.raises(
        ConfigError, match=r"^model\.unpadded=true, but mrl/tiny-random-distilbert "
    ):
        check_unpadded(cfg)
    cfg.model.backbone = MPNET
    check_unpadded(cfg)
