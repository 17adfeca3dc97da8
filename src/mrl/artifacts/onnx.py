"""The encoder as an ONNX graph for serving: `onnx/model.onnx` inside an export
(`python -m mrl.export RUN --onnx`), where sentence-transformers' ONNX backend looks for it.

Inputs `input_ids` and `attention_mask` (int64, texts x tokens, any batch size and length,
padded on the right as the export's tokenizer pads); outputs `last_hidden_state` (the token
states, which sentence-transformers' backend pools itself) and `sentence_embedding` (pooled as
the run pooled, through the projection head if any, not normalised): truncate it to d and
normalise, as `truncate_dim=d` does. Made with `torch.onnx.export`'s dynamo exporter, which
keeps the batch and length dynamic for decoders too (the TorchScript exporter bakes the batch
size into their masks); runs with `onnxruntime` alone (tests/artifacts/test_onnx.py). The
weights sit beside the graph in onnx/model.onnx.data, which onnxruntime finds by itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from mrl.common.errors import ConfigError
from mrl.encoder.pooling import pool

ONNX_FILE = "onnx/model.onnx"
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("last_hidden_state", "sentence_embedding")


class _Served(nn.Module):
    """The encoder's function for one batch, in one call (no length-grouped chunks)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        states = self.encoder.backbone(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        pooled = pool(states, attention_mask, self.encoder.pooling)
        projection = self.encoder.projection
        return states, pooled if projection is None else projection(pooled)


def export_onnx(encoder, tokenizer, folder: Path) -> Path:
    """Write `encoder` (an `mrl.encoder.encoder.Encoder`, LoRA merged) as `folder/onnx/model.onnx`;
    one ConfigError line when `torch.onnx` cannot export the architecture."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ConfigError(
            "--onnx needs the onnx extra: pip install 'mrl[onnx]' (onnx, onnxscript, onnxruntime)."
        ) from None
    path = Path(folder) / ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    served = _Served(encoder).eval()  # eval: no dropout in the graph
    example = tokenizer(["an example text to trace", "a"], padding=True, return_tensors="pt")
    example = tuple(example[name] for name in INPUTS)
    dynamic = torch.export.Dim.DYNAMIC
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping ..."
    level, quiet.level = quiet.level, logging.ERROR
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's progress and deprecation chatter
        try:
            torch.onnx.export(
                served, example, str(path), dynamo=True, input_names=list(INPUTS),
                output_names=list(OUTPUTS), dynamic_shapes=({0: dynamic, 1: dynamic},) * 2,
                verbose=False,
            )  # fmt: skip
        except Exception as err:  # the exporter's errors are many pages; the first line says it
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"torch.onnx could not export {type(encoder.backbone).__name__}: {first}; "
                "export without --onnx."
            ) from None
        finally:
            quiet.setLevel(level)
    return path
