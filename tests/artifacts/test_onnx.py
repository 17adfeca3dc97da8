"""`mrl.export --onnx`: onnx/model.onnx, run with onnxruntime directly, embeds as our encoder
does at every truncate dim, for any batch size and length, on a BERT, an MPNet and a decoder."""

import numpy as np
import pytest
import torch

from mrl.artifacts.export import export_encoder
from mrl.artifacts.onnx import ONNX_FILE
from mrl.encoder.backbone import TINY_DECODER, load_tokenizer
from mrl.encoder.encoder import Encoder

ort = pytest.importorskip("onnxruntime")
TEXTS = ["A dog runs in the park near the river.", "Hi.", "Cats sleep.", "A man reads a book."]


@pytest.mark.parametrize(
    ("backbone", "pooling", "projection_dim"),
    [("mrl/tiny-random-bert", "mean", None), ("mrl/tiny-random-mpnet", "cls", 24),
     (TINY_DECODER, "last", None)],
    ids=["bert", "mpnet-head", "decoder"],
)  # fmt: skip
def test_onnx_export_embeds_as_our_encoder_at_every_dim(
    tmp_path, backbone, pooling, projection_dim
):
    torch.manual_seed(0)
    encoder = Encoder(backbone, pooling, projection_dim=projection_dim, chunk_size=None).eval()
    tokenizer = load_tokenizer(backbone, pooling=pooling)
    folder = export_encoder(encoder, tokenizer, tmp_path / "export", 32, backbone, onnx=True)
    session = ort.InferenceSession(str(folder / ONNX_FILE))
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
    tokenizer.padding_side = "right"
    for texts in (TEXTS, TEXTS[1:3]):  # another batch size and length than the traced one
        batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
        feed = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
        served = torch.from_numpy(session.run(["sentence_embedding"], feed)[0])
        with torch.no_grad():
            ours = encoder(
                torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])
            )
        for dim in (encoder.width, 16, 8, 4):  # the prefix truncate_dim=dim would keep
            torch.testing.assert_close(served[:, :dim], ours[:, :dim], atol=1e-4, rtol=0)
