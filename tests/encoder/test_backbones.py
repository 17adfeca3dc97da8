"""Every architecture family the docs claim, built tiny in memory: pooling (last, weighted mean)
against plain-loop references on left- and right-padded batches, the EOS a decoder's last-token
pooling needs, LoRA adapters (what trains, what is saved, the merged export) and gradient
checkpointing (the same gradients, plain and cached)."""

import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.core.matryoshka import matryoshka_mnrl_loss
from mrl.encoder.backbone import (
    TINY_BACKBONES,
    TINY_DECODER,
    ends_each_text,
    fit_tokenizer,
    is_causal,
    load_backbone,
    load_tokenizer,
    tiny_config,
    tiny_tokenizer,
)
from mrl.encoder.cached import cached_step
from mrl.encoder.encoder import Encoder
from mrl.encoder.lora import linear_layer_names
from mrl.encoder.pooling import POOLINGS, pool
from tests.encoder.test_cached import assert_same_gradient

TEXTS = ["a dog runs in the park", "hi", "a man reads at home near the river", "cats sleep"]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def _batch(tokenizer, texts=TEXTS, side="right", max_length=24):
    tokenizer.padding_side = side
    out = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return out["input_ids"], out["attention_mask"]


def _reference(hidden, mask, pooling):
    """Text by text, over the kept tokens only: the definitions in mrl.encoder.pooling."""
    rows = []
    for states, keep in zip(hidden, mask.bool(), strict=True):
        kept = states[keep]
        if pooling == "cls":
            rows.append(states[0])
        elif pooling == "last":
            rows.append(kept[-1])
        elif pooling == "mean":
            rows.append(kept.mean(0))
        else:  # weighted_mean: the k-th kept token weighs k
            w = torch.arange(1, len(kept) + 1, dtype=kept.dtype)[:, None]
            rows.append((kept * w).sum(0) / w.sum())
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["mean", "last", "weighted_mean"])
def test_pooling_equals_reference_and_ignores_the_padding_side(pooling):
    torch.manual_seed(0)
    lengths = [5, 1, 8, 3]
    right = torch.tensor([[1] * n + [0] * (8 - n) for n in lengths])
    left = right.flip(1)
    hidden_right = torch.randn(4, 8, 6)
    # the same token states, moved to the left-padded positions
    hidden_left = torch.stack(
        [torch.cat([h[n:], h[:n]]) for h, n in zip(hidden_right, lengths, strict=True)]
    )
    ours = pool(hidden_right, right, pooling)
    torch.testing.assert_close(ours, _reference(hidden_right, right, pooling))
    torch.testing.assert_close(pool(hidden_left, left, pooling), ours)


def test_every_tiny_architecture_builds_the_same_weights_each_time():
    for name in TINY_BACKBONES:
        a, b = load_backbone(name), load_backbone(name)
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), (name, key)


def test_last_pooling_gets_eos_appended_even_after_truncation():
    bare = tiny_tokenizer(decoder=True)
    assert not ends_each_text(bare)  # as the base Qwen3 tokenizer: no EOS of its own
    tok = load_tokenizer(TINY_DECODER, pooling="last")
    for ids in tok(TEXTS, truncation=True, max_length=6)["input_ids"]:
        assert ids[-1] == tok.eos_token_id and len(ids) <= 6
    # mean pooling leaves the tokenizer as it is; an encoder's [SEP] already ends each text
    assert load_tokenizer(TINY_DECODER)("ab")["input_ids"][-1] != bare.eos_token_id
    bert = load_tokenizer("mrl/tiny-random-bert", pooling="last")
    assert bert("ab")["input_ids"] == tiny_tokenizer()("ab")["input_ids"]


def test_a_tokenizer_without_eos_or_pad_stops_in_one_line():
    tok = tiny_tokenizer(decoder=True)
    tok.eos_token = None
    with pytest.raises(ConfigError, match=r"model.pooling=last .* has no EOS token"):
        fit_tokenizer(tok, "last", "some/decoder")
    tok = tiny_tokenizer(decoder=True)
    tok.pad_token = None
    assert fit_tokenizer(tok, "mean", "some/decoder").pad_token == tok.eos_token
    tok.pad_token, tok.eos_token = None, None
    with pytest.raises(ConfigError, match="neither a padding nor an EOS token"):
        fit_tokenizer(tok, "mean", "some/decoder")


def test_cls_pooling_on_a_causal_decoder_is_one_line():
    assert is_causal(load_backbone(TINY_DECODER).config)
    assert not any(is_causal(tiny_config(n)) for n in TINY_BACKBONES if n != TINY_DECODER)
    with pytest.raises(
        ConfigError, match="model.pooling=cls reads the first token, which in a causal"
    ):
        Encoder(TINY_DECODER, "cls")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_pooling_trains_on_every_architecture(pooling):
    """One forward and backward per architecture (cls: not on the causal decoder): finite,
    and gradients reach the weights."""
    for name in TINY_BACKBONES:
        if pooling == "cls" and name == TINY_DECODER:
            continue
        encoder = Encoder(name, pooling, chunk_size=None)
        ids, mask = _batch(load_tokenizer(name, pooling=pooling))
        out = encoder(ids, mask)
        assert out.shape == (len(TEXTS), 32) and torch.isfinite(out).all()
        out.square().sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_lora_trains_only_the_adapters_and_the_head():
    encoder = Encoder(TINY_DECODER, "last", lora=LORA, projection_dim=16)
    trained = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or n.startswith("projection.") for n in trained)
    assert any(n.startswith("projection.") for n in trained)
    frozen = set(encoder.frozen_keys())
    assert frozen and not frozen & trained
    # a checkpoint without the frozen weights loads whole: they come from the backbone
    saved = {k: v for k, v in encoder.state_dict().items() if k not in frozen}
    Encoder(TINY_DECODER, "last", lora=LORA, projection_dim=16).load_state_dict(
        encoder.with_frozen(saved)
    )


def test_lora_merged_embeds_as_the_adapted_model():
    torch.manual_seed(0)
    encoder = Encoder(TINY_DECODER, "last", lora=LORA, chunk_size=None).eval()
    with torch.no_grad():  # trained adapters: B is zero at the start, which would prove nothing
        for name, p in encoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids, mask = _batch(load_tokenizer(TINY_DECODER, pooling="last"))
    with torch.no_grad():
        adapted, merged = encoder(ids, mask), encoder.merged()(ids, mask)
        base = Encoder(TINY_DECODER, "last", chunk_size=None).eval()(ids, mask)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    assert (adapted - base).abs().max() > 1e-2  # the adapters change the embeddings
    assert encoder.lora and not encoder.merged().lora
    assert "lora" not in " ".join(encoder.merged().state_dict())


def test_lora_targets_that_do_not_exist_are_named_with_the_ones_that_do():
    assert {"q_proj", "down_proj"} <= set(linear_layer_names(load_backbone(TINY_DECODER)))
    with pytest.raises(ConfigError) as err:
        Encoder("mrl/tiny-random-bert", lora={**LORA, "target_modules": ["q_proj", "query"]})
    message = str(err.value)
    assert "model.lora.target_modules names ['q_proj']" in message
    assert "linear layers are dense, key, query, value (or use all-linear)." in message
    with pytest.raises(ConfigError, match="model.lora has r that must be a whole number"):
        Encoder("mrl/tiny-random-bert", lora={**LORA, "r": 0})


def _gradients(name, checkpointing, cached, lora=None):
    torch.manual_seed(0)
    encoder = Encoder(name, "last", chunk_size=None, lora=lora,
                      gradient_checkpointing=checkpointing)  # fmt: skip
    encoder.train()  # dropout on: recomputation must replay the same masks
    assert encoder.backbone.is_activation_checkpointing == checkpointing
    ids, mask = _batch(load_tokenizer(name, pooling="last"), TEXTS * 2)
    torch.manual_seed(1)

    def loss_of(embeddings):  # (loss, per-dim losses)
        anchors, candidates = embeddings[:4], embeddings[4:]
        return matryoshka_mnrl_loss(anchors, candidates, [32, 8], [1.0, 1.0], 20.0)

    if cached:
        cached_step(encoder, ids, mask, 3, loss_of)
    else:
        loss_of(encoder(ids, mask))[0].backward()
    return {n: p.grad for n, p in encoder.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("name", ["mrl/tiny-random-bert", TINY_DECODER])
def test_gradient_checkpointing_gives_the_same_gradients(name, cached):
    plain = _gradients(name, False, cached)
    checkpointed = _gradients(name, True, cached)
    assert plain.keys() == checkpointed.keys()
    for key, grad in plain.items():
        torch.testing.assert_close(checkpointed[key], grad, atol=1e-6, rtol=0, msg=key)
    assert_same_gradient(checkpointed, plain)


def test_gradient_checkpointing_with_lora_gives_the_same_adapter_gradients():
    plain = _gradients(TINY_DECODER, False, False, {**LORA, "dropout": 0.1})
    checkpointed = _gradients(TINY_DECODER, True, False, {**LORA, "dropout": 0.1})
    assert plain and all("lora_" in k for k in plain)
    for key, grad in plain.items():
        torch.testing.assert_close(checkpointed[key], grad, atol=1e-6, rtol=0, msg=key)


def test_gradient_checkpointing_on_a_backbone_without_it_is_one_line():
    with pytest.raises(ConfigError, match=r"model.gradient_checkpointing=true, but MPNetModel"):
        Encoder("mrl/tiny-random-mpnet", gradient_checkpointing=True)


def _inputs_given(encoder: Encoder, ids, mask) -> tuple[list, torch.Tensor]:
    """Which input (ids or embeddings) each backbone call got, and the encoder's output."""
    calls = []
    hook = encoder.backbone.register_forward_hook(
        lambda _m, _a, kwargs, _o: calls.append([k for k in kwargs if k.startswith("input")]),
        with_kwargs=True,
    )
    out = encoder(ids, mask)
    hook.remove()
    return calls, out


def test_chunks_sharing_one_word_embedding_lookup_train_as_one_call():
    """With gradients on, the chunks of a batch take their word embeddings from one lookup
    (one dense table gradient a step): the same embeddings and gradients as chunks that look
    up their own ids, and as one padded call, on every architecture (right-padded, as
    training batches are)."""
    import copy

    for name in TINY_BACKBONES:
        pooling = "last" if name == TINY_DECODER else "mean"
        torch.manual_seed(0)
        # the transformers forward (BERT-style backbones also run unpadded: test_unpadded.py)
        chunked = Encoder(name, pooling, chunk_size=2, unpadded=False).eval()  # no dropout
        own, whole = copy.deepcopy(chunked), copy.deepcopy(chunked)
        own._shared_lookup = lambda _ids: None  # each chunk its own lookup, as before
        whole.chunk_size = None
        ids, mask = _batch(load_tokenizer(name, pooling=pooling))
        calls, out = _inputs_given(chunked, ids, mask)
        assert calls == [["inputs_embeds"]] * 2, name  # 4 texts, 2 per chunk, embeddings given
        outs = [out, own(ids, mask), whole(ids, mask)]
        for other in outs[1:]:
            torch.testing.assert_close(out, other, atol=1e-5, rtol=1e-4)
        for o in outs:
            o.square().sum().backward()
        params = [dict(m.named_parameters()) for m in (chunked, own, whole)]
        for key, p in params[0].items():
            ref = params[2][key].grad
            if ref is None:
                continue
            # float sums in another order: relative to the largest entry (key biases: ~0 +- noise)
            atol = max(1e-5 * float(ref.abs().max()), 1e-6)
            torch.testing.assert_close(p.grad, params[1][key].grad, atol=atol / 10, rtol=0)
            torch.testing.assert_close(p.grad, ref, atol=atol, rtol=0, msg=key)
        with torch.no_grad():  # inference: each chunk looks up its own ids
            assert _inputs_given(chunked, ids, mask)[0] == [["input_ids"]] * 2, name
