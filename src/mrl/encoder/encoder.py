"""The sentence encoder: a backbone (`mrl.encoder.backbone`, optionally with LoRA adapters from
`mrl.encoder.lora` and gradient checkpointing), pooling (`mrl.encoder.pooling`) and an optional
linear projection head, encoding a batch in length-grouped chunks."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from mrl.common.errors import ConfigError
from mrl.encoder.backbone import backbone_hidden_size, check_pooling, load_backbone
from mrl.encoder.lora import add_lora, is_lora, lora_enabled, lora_problem
from mrl.encoder.pooling import POOLINGS, pool
from mrl.encoder.unpadded import encode_unpadded, resolve_unpadded

# `chunk_size: auto`, texts per encoder call by device. 16 on CPU: a training step of 32
# triplets of all-MiniLM-L6-v2 on 2 cores is 1.32x faster than with 64, as less padding is
# computed (benchmarks/RESULTS.md). 64 elsewhere: the earlier default, not tuned on a GPU.
AUTO_CHUNK_SIZE = {"cpu": 16}
AUTO_CHUNK_SIZE_ELSEWHERE = 64


def encoder_width(
    name: str, projection_dim: int | None = None, trust_remote_code: bool = False
) -> int:
    """The width of the embeddings the encoder returns: `projection_dim` when it has a
    projection head, else the backbone's hidden size. The Matryoshka schedule and the eval
    dims are prefixes of this width."""
    check_projection_dim(projection_dim)
    return projection_dim or backbone_hidden_size(name, trust_remote_code)


def projection_dim_problem(projection_dim) -> str | None:
    """What is wrong with a `model.projection_dim` value (None: nothing): it must be None (no
    head) or a whole number >= 1. The check pass and `Encoder` both use it."""
    whole = isinstance(projection_dim, int) and not isinstance(projection_dim, bool)
    if projection_dim is None or (whole and projection_dim >= 1):
        return None
    return "must be a whole number >= 1 (the width of a linear head after pooling) or null"


def check_projection_dim(projection_dim) -> None:
    """One ConfigError line for a bad `model.projection_dim`."""
    problem = projection_dim_problem(projection_dim)
    if problem:
        raise ConfigError(f"model.projection_dim={projection_dim!r} {problem}.")


class Encoder(nn.Module):
    """Token ids -> one sentence embedding per text (pooled, then the projection head if there
    is one).

    Texts are encoded in chunks of `chunk_size` texts of similar length, each chunk cut to its
    own longest text, so a batch with one long sentence does not pad every other to its
    length. Chunking changes only which padding is computed, not the result (up to float
    rounding; in training, also which dropout mask each text draws), and the batch itself
    stays as random as the sampler made it. `chunk_size="auto"` picks by the device the
    texts are on (`AUTO_CHUNK_SIZE`); None encodes the batch in one call.

    `projection_dim=d` adds a linear layer (with bias) from the hidden size to d after
    pooling: the embedding is then d wide and the Matryoshka prefixes are prefixes of the
    projection. It lives in the encoder, so every caller (cached mode, DDP, validation,
    export) gets the projected embedding. None (the default) adds nothing, not even keys in
    the state dict, so checkpoints made before the option load unchanged.

    `unpadded` ("auto", True, False): BERT-style backbones (BERT, RoBERTa, XLM-RoBERTa, MPNet)
    run their per-token layers on the batch's real tokens only, attention still per chunk
    (`mrl.encoder.unpadded`): the same embeddings up to float rounding, ~1.3x faster. "auto"
    does so where the backbone allows; True insists (one ConfigError line where it cannot);
    False keeps the transformers forward.
    """

    def __init__(
        self,
        backbone: str,
        pooling: str = "mean",
        chunk_size: int | str | None = "auto",
        trust_remote_code: bool = False,
        projection_dim: int | None = None,
        lora: dict | None = None,
        gradient_checkpointing: bool = False,
        unpadded: bool | str = "auto",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"model.pooling={pooling!r} is unknown; use one of {POOLINGS}.")
        whole = isinstance(chunk_size, int) and not isinstance(chunk_size, bool)
        if not (chunk_size in ("auto", None) or (whole and chunk_size >= 1)):
            raise ConfigError(
                f"model.chunk_size={chunk_size!r} must be a whole number >= 1, auto, "
                "or null (no chunks)."
            )
        check_projection_dim(projection_dim)
        if (problem := lora_problem(lora)) is not None:
            raise ConfigError(f"model.lora {problem}.")
        self.pooling = pooling
        self.chunk_size = chunk_size
        self.backbone_name = backbone  # where the weights came from (Hub id, folder, tiny name)
        self.backbone = load_backbone(backbone, trust_remote_code)
        check_pooling(self.backbone.config, pooling, backbone)
        if gradient_checkpointing:
            if not self.backbone.supports_gradient_checkpointing:
                raise ConfigError(
                    f"model.gradient_checkpointing=true, but {type(self.backbone).__name__} "
                    f"({backbone}) does not support it in transformers; set it to false."
                )
            # non-reentrant: works with frozen inputs (LoRA), DDP and the cached step
            self.backbone.activation_checkpointing_enable({"use_reentrant": False})
        if lora_enabled(lora):
            self.backbone = add_lora(self.backbone, lora)
        self.backbone.train()  # from_pretrained returns eval mode; training wants dropout on
        self.unpadded = resolve_unpadded(unpadded, self.backbone.config, backbone)
        hidden = self.backbone.config.hidden_size
        self.projection = nn.Linear(hidden, projection_dim) if projection_dim else None

    @property
    def width(self) -> int:
        """The width of the returned embeddings (the projection's, else the hidden size)."""
        if self.projection is not None:
            return self.projection.out_features
        return self.backbone.config.hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layers: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Right-padded ids and mask (texts x tokens) -> embeddings (texts x width), or with
        `layers` (1-based encoder layers) each layer's pooled embeddings from the same forward
        pass (layers x texts x width; the last layer is `depth`)."""
        lengths = attention_mask.sum(1)
        chunk_size = self.texts_per_call(input_ids.device)
        if self.unpadded:
            model = self.backbone.get_base_model() if self.lora else self.backbone
            pooled = encode_unpadded(
                model, input_ids, attention_mask, chunk_size, self.pooling, layers
            )
        elif chunk_size is None or len(input_ids) <= chunk_size:
            width = int(lengths.max())
            pooled = self._encode(input_ids[:, :width], attention_mask[:, :width], layers)
        else:
            order = lengths.argsort(descending=True)
            embeds = self._shared_lookup(input_ids)
            pieces = []
            for chunk in order.split(chunk_size):
                width = int(lengths[chunk].max())
                ids, mask = input_ids[chunk, :width], attention_mask[chunk, :width]
                chunk_embeds = None if embeds is None else embeds[chunk, :width]
                pieces.append(self._encode(ids, mask, layers, chunk_embeds))
            pooled = torch.cat(pieces, dim=-2)[..., order.argsort(), :]
        return pooled if self.projection is None else self.projection(pooled)

    @property
    def lora(self) -> bool:
        """Whether the backbone trains LoRA adapters (its own weights frozen)."""
        return is_lora(self.backbone)

    def frozen_keys(self) -> list[str]:
        """The state-dict keys of frozen parameters (the backbone's own weights under LoRA):
        what a checkpoint can leave out, as they come back from the backbone."""
        return [name for name, p in self.named_parameters() if not p.requires_grad]

    def with_frozen(self, weights: dict) -> dict:
        """`weights` (this encoder's state dict, perhaps without its frozen parameters) with
        the frozen ones filled in from this encoder's own (just loaded) backbone."""
        own = self.state_dict()
        return {**{k: own[k] for k in self.frozen_keys() if k not in weights}, **weights}

    def merged(self) -> Encoder:
        """A copy with the LoRA adapters merged into the backbone's weights (a plain
        transformers model, as the export writes it); this encoder itself when it has none."""
        if not self.lora:
            return self
        plain = copy.deepcopy(self)
        plain.backbone = plain.backbone.merge_and_unload()
        return plain

    @property
    def depth(self) -> int:
        """The backbone's number of transformer layers."""
        return self.backbone.config.num_hidden_layers

    def texts_per_call(self, device: torch.device) -> int | None:
        """`chunk_size` with `auto` resolved for `device` (None: the whole batch in one call)."""
        if self.chunk_size != "auto":
            return self.chunk_size
        return AUTO_CHUNK_SIZE.get(device.type, AUTO_CHUNK_SIZE_ELSEWHERE)

    def _shared_lookup(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """The word embeddings of the whole batch, looked up once for all its chunks when the
        table trains: autograd then builds the table's dense gradient (vocabulary x hidden,
        zero-filled) once per step instead of once per chunk, 7.7 % of a MiniLM step on CPU
        (benchmarks/RESULTS.md, profile_step). None (each chunk looks up its own ids) when no
        gradient reaches the table: inference, LoRA."""
        table = self.backbone.get_input_embeddings()
        if not (torch.is_grad_enabled() and table.weight.requires_grad):
            return None
        return table(input_ids)

    def _encode(self, input_ids, attention_mask, layers=None, inputs_embeds=None):
        """One call of the backbone, pooled (hidden size wide, before any projection); with
        `layers`, every listed layer's hidden states pooled (layers x texts x hidden). Given
        `inputs_embeds` (the chunk's word embeddings, `_shared_lookup`) the backbone takes them
        instead of the ids; positions and token types are the same for right-padded texts."""
        given = (
            {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        )
        if layers is None:
            out = self.backbone(**given, attention_mask=attention_mask)
            return pool(out.last_hidden_state, attention_mask, self.pooling)
        out = self.backbone(**given, attention_mask=attention_mask, output_hidden_states=True)
        return torch.stack(
            [pool(out.hidden_states[k], attention_mask, self.pooling) for k in layers]
        )
