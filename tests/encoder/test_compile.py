"""`model.compile=true`: the encoder runs through torch.compile (inductor) and gives the plain
encoder's embeddings and gradients, with the plain parameter names (checkpoints, exports);
attention is SDPA."""

import pytest
import torch

from mrl.core.batch import collate_texts
from mrl.encoder.backbone import TINY_BACKBONE, tiny_tokenizer
from mrl.run.module import MatryoshkaModule

pytestmark = pytest.mark.slow


def test_compiled_encoder_matches_plain_and_keeps_parameter_names():
    tok = tiny_tokenizer()
    rows = [{"text_ids": tok(f"sentence number {i} " + "word " * i)["input_ids"]} for i in range(6)]
    batch = collate_texts(rows, ["text"], tok.pad_token_id)
    modules = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        module = MatryoshkaModule(
            {"backbone": TINY_BACKBONE, "chunk_size": None, "compile": compiled}
        ).eval()
        embeddings = module.encode(batch)
        embeddings.square().sum().backward()
        modules[compiled] = (module, embeddings.detach())
    (plain, plain_emb), (fast, fast_emb) = modules[False], modules[True]
    assert torch.allclose(fast_emb, plain_emb, atol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())  # no "_orig_mod." prefixes
    for (name, p), (_, q) in zip(plain.named_parameters(), fast.named_parameters(), strict=True):
        assert torch.allclose(q.grad, p.grad, atol=1e-4, rtol=1e-3), name
    # the compiled forward really is in use, over SDPA attention
    assert fast.encoder._compiled_call_impl is not None
    assert plain.encoder.backbone.config._attn_implementation == "sdpa"
