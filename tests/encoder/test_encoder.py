"""The encoder's length-grouped chunks: same embeddings as one padded call, the number and width
of backbone calls they promise (`auto` = 16 texts per call on CPU), and one line for a bad value."""

import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.core.batch import collate_texts
from mrl.encoder.backbone import TINY_BACKBONE, tiny_tokenizer
from mrl.encoder.encoder import Encoder


def make_texts(n: int) -> dict:
    """`n` texts of 1 to 13 words, in no length order, right-padded to the longest."""
    tok = tiny_tokenizer()
    words = [" ".join(["word"] * (1 + (7 * i) % 13)) for i in range(n)]
    rows = [{"text_ids": tok(text)["input_ids"]} for text in words]
    batch = collate_texts(rows, ["text"], tok.pad_token_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def encoder(chunk_size, unpadded=False) -> Encoder:
    """The tiny BERT; by default through the transformers forward, whose calls these tests
    count (the unpadded forward: tests/encoder/test_unpadded.py)."""
    torch.manual_seed(0)
    return Encoder(TINY_BACKBONE, chunk_size=chunk_size, unpadded=unpadded).eval()


def backbone_calls(model: Encoder, texts: dict) -> list[tuple[int, int]]:
    """(texts, tokens) of every backbone call made while encoding `texts`."""
    calls = []
    hook = model.backbone.register_forward_hook(
        lambda _m, _args, kwargs, _out: calls.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    with torch.no_grad():
        model(**texts)
    hook.remove()
    return calls


@pytest.mark.parametrize("unpadded", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 16, "auto", 100])
def test_chunked_embeddings_equal_one_padded_call(chunk_size, unpadded):
    texts = make_texts(40)
    with torch.no_grad():
        expected = encoder(None)(**texts)
        got = encoder(chunk_size, unpadded)(**texts)
    assert got.shape == expected.shape == (40, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_auto_on_cpu_is_16_texts_per_call_each_cut_to_its_longest_text():
    texts = make_texts(40)
    lengths = texts["attention_mask"].sum(1).sort(descending=True).values
    calls = backbone_calls(encoder("auto"), texts)
    assert [n for n, _ in calls] == [16, 16, 8]
    expected_widths = [int(lengths[0]), int(lengths[16]), int(lengths[32])]
    assert [w for _, w in calls] == expected_widths
    assert expected_widths[0] > expected_widths[2]  # the chunks really skip padding
    assert backbone_calls(encoder(None), texts) == [(40, int(lengths[0]))]


@pytest.mark.parametrize("bad", [0, -4, "big", 2.5, True])
def test_bad_chunk_size_is_one_line_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"^model\.chunk_size=.* must be a whole number >= 1"):
        Encoder(TINY_BACKBONE, chunk_size=bad)
