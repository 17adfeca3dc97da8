"""The sentence encoder: backbone loading (Hub id, local mirror, tiny test model), pooling and
an optional linear projection head."""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedTokenizerFast,
)

from mrl.errors import ConfigError
from mrl.hub import MIRROR_HINT, hub_reachable

TINY_BACKBONE = "mrl/tiny-random-bert"
POOLINGS = ("mean", "cls")
# `chunk_size: auto`, texts per encoder call by device. 16 on CPU: a training step of 32
# triplets of all-MiniLM-L6-v2 on 2 cores is 1.32x faster than with 64, as less padding is
# computed (benchmarks/RESULTS.md). 64 elsewhere: the earlier default, not tuned on a GPU.
AUTO_CHUNK_SIZE = {"cpu": 16}
AUTO_CHUNK_SIZE_ELSEWHERE = 64


def resolve_backbone(name: str) -> str:
    """Where to load `name` from: `$MRL_MODEL_DIR/<last part of name>` if that folder exists,
    else `name` itself (a local folder or a Hugging Face Hub id)."""
    mirror = os.environ.get("MRL_MODEL_DIR")
    if mirror:
        local = Path(mirror) / name.rstrip("/").split("/")[-1]
        if local.is_dir():
            return str(local)
    return name


def _from_pretrained(loader, name: str, trust_remote_code: bool = False, **kwargs):
    """`loader.from_pretrained` on the resolved source, with one clear error when it fails.

    Code shipped with a model (`auto_map` in its config) runs only with
    `trust_remote_code=True`, which the config must ask for (`model.trust_remote_code`).
    """
    kwargs["trust_remote_code"] = trust_remote_code
    source = resolve_backbone(name)
    if source == name and not Path(name).is_dir() and not hub_reachable():
        try:  # a copy in the local Hugging Face cache still works offline
            return loader.from_pretrained(name, local_files_only=True, **kwargs)
        except OSError:
            raise ConfigError(
                f"model.backbone={name!r} is not in a local folder and the Hugging Face Hub is "
                f"unreachable; {MIRROR_HINT} (MRL_MODEL_DIR must hold a folder named "
                f"{name.split('/')[-1]!r})."
            ) from None
    try:
        return loader.from_pretrained(source, **kwargs)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ConfigError(
            f"model.backbone={name!r} ships its own code; read it, then set "
            "model.trust_remote_code=true to run it (off by default)."
        ) from None
    except OSError as err:
        raise ConfigError(
            f"model.backbone={name!r} could not be loaded from {source!r}: "
            f"{str(err).splitlines()[0]}"
        ) from None


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level WordPiece tokenizer built in memory (no files, no Hub)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {tok: i for i, tok in enumerate(specials + chars + ["##" + c for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def tiny_config() -> BertConfig:
    """A 2-layer BERT of width 32 for tests: random init, vocab of `tiny_tokenizer`."""
    return BertConfig(
        vocab_size=len(tiny_tokenizer()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def backbone_hidden_size(name: str, trust_remote_code: bool = False) -> int:
    """The embedding width of the backbone, read from its config (no weights loaded)."""
    if name == TINY_BACKBONE:
        return tiny_config().hidden_size
    return _from_pretrained(AutoConfig, name, trust_remote_code).hidden_size


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


TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model",
)  # fmt: skip


def check_backbone(name: str, trust_remote_code: bool = False) -> None:
    """One line, before any work, for a backbone that would train on garbage: a folder that
    does not exist, a folder with no tokenizer files (transformers would build a tokenizer on
    the fly that maps every word to [UNK]), or a tokenizer whose vocabulary does not fit the
    model's embedding table."""
    if name == TINY_BACKBONE:
        return
    source = resolve_backbone(name)
    looks_like_path = name.startswith((".", "/", "~")) or Path(name).is_absolute()
    if looks_like_path and not Path(source).is_dir():
        raise ConfigError(
            f"model.backbone={name!r} does not exist; give an existing model folder or a "
            "Hugging Face Hub id (e.g. sentence-transformers/all-MiniLM-L6-v2)."
        )
    if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"model.backbone={name!r}: {source} has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES[:3])}, ...); save the tokenizer beside the weights "
            "(tokenizer.save_pretrained(folder))."
        )
    vocab_size = _from_pretrained(AutoConfig, name, trust_remote_code).vocab_size
    n_tokens = len(load_tokenizer(name, trust_remote_code))
    if vocab_size and not vocab_size // 2 <= n_tokens <= vocab_size:
        raise ConfigError(
            f"model.backbone={name!r}: its tokenizer has {n_tokens} tokens but the model's "
            f"embedding table has {vocab_size}; the tokenizer files do not belong to this model."
        )


def load_tokenizer(name: str, trust_remote_code: bool = False):
    if name == TINY_BACKBONE:
        return tiny_tokenizer()
    return _from_pretrained(AutoTokenizer, name, trust_remote_code)


def load_backbone(name: str, trust_remote_code: bool = False) -> nn.Module:
    """The pretrained transformer (weights from safetensors where the folder has them)."""
    if name == TINY_BACKBONE:
        return BertModel(tiny_config(), add_pooling_layer=False)
    config = _from_pretrained(AutoConfig, name, trust_remote_code)
    if config.model_type in ("bert", "mpnet", "roberta", "xlm-roberta"):
        # the pooler is unused by mean/CLS pooling; leaving it out keeps DDP free of unused params
        return _from_pretrained(AutoModel, name, trust_remote_code, add_pooling_layer=False)
    return _from_pretrained(AutoModel, name, trust_remote_code)


class Encoder(nn.Module):
    """Token ids -> one sentence embedding per text (mean or CLS pooling, then the projection
    head if there is one).

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
    """

    def __init__(
        self,
        backbone: str,
        pooling: str = "mean",
        chunk_size: int | str | None = "auto",
        trust_remote_code: bool = False,
        projection_dim: int | None = None,
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
        self.pooling = pooling
        self.chunk_size = chunk_size
        self.backbone = load_backbone(backbone, trust_remote_code)
        self.backbone.train()  # from_pretrained returns eval mode; training wants dropout on
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
        if chunk_size is None or len(input_ids) <= chunk_size:
            width = int(lengths.max())
            pooled = self._encode(input_ids[:, :width], attention_mask[:, :width], layers)
        else:
            order = lengths.argsort(descending=True)
            pieces = []
            for chunk in order.split(chunk_size):
                width = int(lengths[chunk].max())
                ids, mask = input_ids[chunk, :width], attention_mask[chunk, :width]
                pieces.append(self._encode(ids, mask, layers))
            pooled = torch.cat(pieces, dim=-2)[..., order.argsort(), :]
        return pooled if self.projection is None else self.projection(pooled)

    @property
    def depth(self) -> int:
        """The backbone's number of transformer layers."""
        return self.backbone.config.num_hidden_layers

    def texts_per_call(self, device: torch.device) -> int | None:
        """`chunk_size` with `auto` resolved for `device` (None: the whole batch in one call)."""
        if self.chunk_size != "auto":
            return self.chunk_size
        return AUTO_CHUNK_SIZE.get(device.type, AUTO_CHUNK_SIZE_ELSEWHERE)

    def _encode(self, input_ids, attention_mask, layers: Sequence[int] | None = None):
        """One call of the backbone, pooled (hidden size wide, before any projection); with
        `layers`, every listed layer's hidden states pooled (layers x texts x hidden)."""
        if layers is None:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            return self._pool(out.last_hidden_state, attention_mask)
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return torch.stack([self._pool(out.hidden_states[k], attention_mask) for k in layers])

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
