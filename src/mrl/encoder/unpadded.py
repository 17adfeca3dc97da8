"""The unpadded forward of BERT-style encoders (BERT, RoBERTa, XLM-RoBERTa, MPNet: MiniLM, bge,
e5, gte, the seed recipe's MPNet, ...): every per-token layer runs on the batch's real tokens
only, packed into one matrix.

In a transformer layer only attention mixes tokens; the projections, the feed-forward block,
the layer norms and dropout act on each token alone. So the batch's real tokens are packed
(text after text, longest text first) and those layers run once on the whole pack: no padding
is computed, the weights' gradients come from one matrix multiply each instead of one per
chunk of texts, and the multiplies are large. Attention alone runs per group of `group_size`
texts of similar length, padded to the group's longest, with the backbone's attention dropout:
PyTorch's SDPA for BERT and RoBERTa, and for MPNet the product, its relative position bias
and softmax written out as transformers writes them. The backbone's own modules do all the
work, so LoRA adapters (peft wraps the linear layers in place), autocast and gradient
checkpointing act as in the transformers forward; the result equals it up to float rounding
(tests/encoder/test_unpadded.py), and a training step on CPU is ~1.3x faster for MiniLM,
~1.55x for MPNet-base (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mrl.common.errors import ConfigError
from mrl.encoder.pooling import pool

# model_type -> its layer family: "bert" (BertLayer and its copies) or "mpnet"
UNPADDED_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "mpnet": "mpnet"}
# the model types whose position ids count real tokens from the padding id + 1
COUNT_FROM_PADDING = {"roberta", "xlm-roberta", "mpnet"}


def unpadded_problem(config) -> str | None:
    """Why a backbone with this transformers `config` cannot run unpadded (None: it can)."""
    kind = config.model_type
    if kind not in UNPADDED_MODEL_TYPES:
        return f"{kind} is not one of {', '.join(UNPADDED_MODEL_TYPES)}"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return f"this {kind} is configured as a decoder"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"this {kind} uses {config.position_embedding_type} position embeddings"
    return None


def resolve_unpadded(value, config, name: str) -> bool:
    """`model.unpadded` ("auto", true or false) for the backbone `name` with this `config` ->
    whether it runs unpadded; one ConfigError line for a bad value, or for true where it
    cannot. The Encoder and the check pass (before any weights load) both ask this."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ConfigError(f"model.unpadded={value!r} must be auto, true or false.")
    problem = unpadded_problem(config)
    if value is True and problem:
        raise ConfigError(
            f"model.unpadded=true, but {name} cannot run unpadded: {problem}; set it to auto."
        )
    return bool(value) and problem is None


def _groups(lengths: torch.Tensor, group_size: int):
    """For texts sorted longest first with these `lengths`: per group of `group_size` texts,
    the pack index of each (text, position) padded to the group's longest text (padding points
    at a real token; it is masked) and the mask of real positions."""
    total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths
    groups = []
    for members in torch.arange(len(lengths), device=lengths.device).split(group_size):
        width = int(lengths[members[0]])
        offsets = torch.arange(width, device=lengths.device)
        index = (starts[members, None] + offsets).clamp(max=total - 1)
        groups.append((index, offsets < lengths[members, None]))
    return groups


def _attention(attention, hidden: torch.Tensor, groups) -> torch.Tensor:
    """A BERT self-attention block's output before its output projection, on packed `hidden`
    (tokens x hidden): projections on the pack, attention per group."""
    heads, size = attention.num_attention_heads, attention.attention_head_size
    shape = (hidden.shape[0], heads, size)
    q, k, v = (
        proj(hidden).view(shape) for proj in (attention.query, attention.key, attention.value)
    )
    dropout = attention.dropout.p if attention.training else 0.0
    pieces = []
    for index, real in groups:
        qg, kg, vg = (x[index].transpose(1, 2) for x in (q, k, v))  # texts x heads x width x size
        out = F.scaled_dot_product_attention(
            qg, kg, vg, attn_mask=real[:, None, None, :], dropout_p=dropout,
            scale=attention.scaling,
        )  # fmt: skip
        pieces.append(out.transpose(1, 2)[real])  # the group's real tokens, in pack order
    return torch.cat(pieces).reshape(hidden.shape[0], heads * size)


def _mpnet_attention(attention, hidden: torch.Tensor, groups, biases) -> torch.Tensor:
    """An MPNet self-attention block's output before its output projection `o`: the
    projections on the pack, then per group the scores, the relative position bias of the
    group's width (`biases`), the padding mask, softmax and dropout, as transformers does."""
    size = attention.attention_head_size
    shape = (hidden.shape[0], attention.num_attention_heads, size)
    q, k, v = (proj(hidden).view(shape) for proj in (attention.q, attention.k, attention.v))
    pieces = []
    for (index, real), bias in zip(groups, biases, strict=True):
        qg, kg, vg = (x[index].transpose(1, 2) for x in (q, k, v))  # texts x heads x width x size
        scores = qg @ kg.transpose(-1, -2) / math.sqrt(size) + bias
        scores = scores.masked_fill(~real[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = attention.dropout(scores.softmax(-1))
        pieces.append((probs @ vg).transpose(1, 2)[real])
    return torch.cat(pieces).reshape(hidden.shape[0], -1)


def _layer(layer, hidden: torch.Tensor, groups, biases=None) -> torch.Tensor:
    """One layer on packed `hidden`: attention, then the per-token modules as they are (a BERT
    layer; with `biases`, an MPNet layer)."""
    if biases is None:
        context = _attention(layer.attention.self, hidden, groups)
        attended = layer.attention.output(context, hidden)
    else:
        block = layer.attention
        context = block.attn.o(_mpnet_attention(block.attn, hidden, groups, biases))
        attended = block.LayerNorm(block.dropout(context) + hidden)
    return layer.output(layer.intermediate(attended), attended)


def encode_unpadded(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    group_size: int | None,
    pooling: str,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Ids and mask (texts x tokens, padded on either side) -> pooled embeddings (texts x
    hidden), or with `layers` (1-based) each listed layer's (layers x texts x hidden), as the
    transformers forward of `model` (a BERT-style model, `unpadded_problem` None; under LoRA
    the peft base model) would give them. `group_size` texts per attention call (None: all in
    one)."""
    lengths = attention_mask.sum(1)
    order = lengths.argsort(descending=True, stable=True)
    sorted_lengths = lengths[order]
    real = attention_mask[order].bool()
    ids = input_ids[order][real]
    kind = model.config.model_type
    if kind in COUNT_FROM_PADDING:  # RoBERTa, MPNet: real tokens from padding id + 1
        positions = (real.cumsum(1) + model.embeddings.padding_idx)[real]
    else:  # BERT numbers the columns of the padded batch, as transformers does
        positions = torch.arange(input_ids.shape[1], device=ids.device).expand_as(real)[real]
    given = {
        "inputs_embeds": model.embeddings.word_embeddings(ids)[None],
        "position_ids": positions[None],
    }
    if UNPADDED_MODEL_TYPES[kind] == "bert":
        given["token_type_ids"] = torch.zeros_like(ids)[None]
    embeddings = model.embeddings(**given)[0]
    groups = _groups(sorted_lengths, group_size or len(order))
    biases = None
    if UNPADDED_MODEL_TYPES[kind] == "mpnet":  # one relative position bias per group width
        widths = [index.shape[1] for index, _ in groups]
        biases = [
            model.encoder.compute_position_bias(embeddings.new_empty(1, w, 0)) for w in widths
        ]
    recompute = model.is_activation_checkpointing and torch.is_grad_enabled()
    hidden, states = embeddings, [embeddings]
    for layer in model.encoder.layer:
        if recompute:
            hidden = checkpoint(_layer, layer, hidden, groups, biases, use_reentrant=False)
        else:
            hidden = _layer(layer, hidden, groups, biases)
        states.append(hidden)
    padded_index, mask = _groups(sorted_lengths, len(order))[0]  # every text, right-padded
    wanted = [len(states) - 1] if layers is None else list(layers)
    pooled = torch.stack([pool(states[k][padded_index], mask, pooling) for k in wanted])
    pooled = pooled[:, order.argsort()]
    return pooled[0] if layers is None else pooled
