"""Backbones: where a backbone's weights, config and tokenizer come from (a Hugging Face Hub id,
the `MRL_MODEL_DIR` mirror, the HF cache offline, or the tiny random BERT built in memory for
tests), loaded safely, with one-line errors; and the checks that a backbone folder is usable."""

from __future__ import annotations

import os
import string
from pathlib import Path

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedTokenizerFast,
)

from mrl.common.errors import ConfigError
from mrl.common.hub import MIRROR_HINT, hub_reachable

TINY_BACKBONE = "mrl/tiny-random-bert"


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
