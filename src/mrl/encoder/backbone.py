"""Backbones: where a backbone's weights, config and tokenizer come from (a Hugging Face Hub id,
the `MRL_MODEL_DIR` mirror, the HF cache offline, or one of the tiny random-init backbones
built in memory for tests), loaded safely, with one-line errors; and the checks that a backbone
folder is usable."""

from __future__ import annotations

import os
import string
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    DistilBertConfig,
    ModernBertConfig,
    MPNetConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    RobertaConfig,
)

from mrl.common.errors import ConfigError
from mrl.common.hub import MIRROR_HINT, hub_reachable

WITH_POOLER = ("bert", "mpnet", "roberta", "xlm-roberta")  # model types built with a pooler


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


def tiny_tokenizer(decoder: bool = False) -> PreTrainedTokenizerFast:
    """A character-level WordPiece tokenizer built in memory (no files, no Hub).

    The encoders' version wraps each text in [CLS] ... [SEP], pads on the right and has id 0 for
    padding. `decoder=True` gives what a decoder embedder's tokenizer looks like: one special
    token `<|endoftext|>` (id 0) that is both EOS and padding, NOT appended by the tokenizer
    (as the base Qwen3 tokenizer does not; `with_eos` appends it for last-token pooling), and
    left padding (as Qwen3-Embedding's sentence-transformers config has it)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    if decoder:
        specials = ["<|endoftext|>", "<unk>"]
        named = {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        named = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]"}
        named |= {"sep_token": "[SEP]", "mask_token": "[MASK]"}
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {tok: i for i, tok in enumerate(specials + chars + ["##" + c for c in chars])}
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token=named["unk_token"], max_input_chars_per_word=100)
    )
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if not decoder:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=128,
        padding_side="left" if decoder else "right",
        **named,
    )


# The tiny random-init backbones of the tests (`model=tiny`, `model=tiny_mpnet`, ...): one per
# architecture family the docs claim (docs/backbones.md), each 2 layers of width 32 over the
# vocabulary of `tiny_tokenizer`, padding id 0. RoBERTa and MPNet number positions from
# padding id + 1, hence their 130 positions for the same 128 usable ones.
_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
_TINY_CONFIGS = {
    "bert": lambda n: BertConfig(
        vocab_size=n, intermediate_size=64, max_position_embeddings=128, **_SMALL
    ),
    "mpnet": lambda n: MPNetConfig(
        vocab_size=n, intermediate_size=64, max_position_embeddings=130, pad_token_id=0,
        **_SMALL,
    ),
    "roberta": lambda n: RobertaConfig(
        vocab_size=n, intermediate_size=64, max_position_embeddings=130, pad_token_id=0,
        bos_token_id=2, eos_token_id=3, type_vocab_size=1, **_SMALL,
    ),
    "distilbert": lambda n: DistilBertConfig(
        vocab_size=n, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128,
        pad_token_id=0,
    ),
    "modernbert": lambda n: ModernBertConfig(
        vocab_size=n, intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
        global_attn_every_n_layers=2, local_attention=16, **_SMALL,
    ),  # layer 1 global, layer 2 a 16-token sliding window: both attention paths run
    "qwen3": lambda n: Qwen3Config(
        vocab_size=n, intermediate_size=64, max_position_embeddings=128, num_key_value_heads=1,
        head_dim=16, pad_token_id=0, eos_token_id=0, bos_token_id=None, **_SMALL,
    ),
}  # fmt: skip
TINY_BACKBONES = {f"mrl/tiny-random-{arch}": arch for arch in _TINY_CONFIGS}
TINY_BACKBONE = "mrl/tiny-random-bert"
TINY_DECODER = "mrl/tiny-random-qwen3"
TINY_SEED = 0  # every build of a tiny backbone has the same weights, like a Hub checkpoint's


def is_tiny(name: str) -> bool:
    """Whether `name` is one of the tiny random-init backbones built in memory."""
    return name in TINY_BACKBONES


def tiny_config(name: str = TINY_BACKBONE) -> PretrainedConfig:
    """The config of a tiny backbone (default the BERT): random init, vocab of `tiny_tokenizer`."""
    arch = TINY_BACKBONES[name]
    return _TINY_CONFIGS[arch](len(tiny_tokenizer(decoder=arch == "qwen3")))


def backbone_config(name: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The backbone's config (no weights loaded): built in memory for a tiny backbone."""
    if is_tiny(name):
        return tiny_config(name)
    return _from_pretrained(AutoConfig, name, trust_remote_code)


def backbone_hidden_size(name: str, trust_remote_code: bool = False) -> int:
    """The embedding width of the backbone, read from its config (no weights loaded)."""
    return backbone_config(name, trust_remote_code).hidden_size


TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model",
)  # fmt: skip


def check_backbone(name: str, trust_remote_code: bool = False) -> None:
    """One line, before any work, for a backbone that would train on garbage: a folder that
    does not exist, a folder with no tokenizer files (transformers would build a tokenizer on
    the fly that maps every word to [UNK]), or a tokenizer whose vocabulary does not fit the
    model's embedding table."""
    if is_tiny(name):
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
    n_tokens = len(_from_pretrained(AutoTokenizer, name, trust_remote_code))
    if vocab_size and not vocab_size // 2 <= n_tokens <= vocab_size:
        raise ConfigError(
            f"model.backbone={name!r}: its tokenizer has {n_tokens} tokens but the model's "
            f"embedding table has {vocab_size}; the tokenizer files do not belong to this model."
        )


def load_tokenizer(name: str, trust_remote_code: bool = False, pooling: str = "mean"):
    """The backbone's tokenizer (built in memory for a tiny backbone), made fit for `pooling`
    (`fit_tokenizer`)."""
    if is_tiny(name):
        tokenizer = tiny_tokenizer(decoder=TINY_BACKBONES[name] == "qwen3")
    else:
        tokenizer = _from_pretrained(AutoTokenizer, name, trust_remote_code)
    return fit_tokenizer(tokenizer, pooling, name)


def ends_each_text(tokenizer) -> bool:
    """Whether the tokenizer ends every text with a special token by itself (EOS, or an
    encoder's [SEP] / </s>), whose state last-token pooling can read."""
    ids = tokenizer("a")["input_ids"]
    enders = {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}
    return bool(ids) and ids[-1] in enders


def fit_tokenizer(tokenizer, pooling: str, name: str):
    """The tokenizer with what training and the export need of it, changed in its own
    post-processor so the saved tokenizer (and sentence-transformers, loading it) does the same:

    - `last` pooling reads the state of the token that ends the text, so a tokenizer that ends
      texts with no special token (the base Qwen3 tokenizer, most decoders) gets EOS appended
      after every text, after truncation (a cut text still ends in EOS, as Qwen3-Embedding's
      own tokenizer does); an encoder's [SEP] or </s> already ends each text.
    - a tokenizer without a padding token (most decoders) pads with EOS: padding is masked out,
      so which id fills it changes nothing.
    A slow (Python) tokenizer has no post-processor to change; one that needs EOS appended
    stops in one line."""
    eos = tokenizer.eos_token
    if pooling == "last" and not ends_each_text(tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if eos is None or backend is None:
            lacks = "no EOS token" if eos is None else "no fast version"
            raise ConfigError(
                f"model.pooling=last reads each text's EOS token, but the tokenizer of "
                f"model.backbone={name!r} has {lacks} to append; use model.pooling=mean, or a "
                "backbone whose tokenizer has one."
            )
        from tokenizers import processors

        append = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
            special_tokens=[(eos, tokenizer.eos_token_id)],
        )  # fmt: skip
        before = backend.post_processor
        backend.post_processor = append if before is None else processors.Sequence([before, append])
    if tokenizer.pad_token is None:
        if eos is None:
            raise ConfigError(
                f"the tokenizer of model.backbone={name!r} has neither a padding nor an EOS "
                "token to pad batches with; save one with it (tokenizer.pad_token = ...)."
            )
        tokenizer.pad_token = eos
    return tokenizer


def is_causal(config) -> bool:
    """Whether the backbone's attention is causal (a decoder LM: each token sees only the ones
    before it), from transformers' own model registries: a causal-LM family with no masked-LM
    head (BERT-like models have both) whose config does not switch to bidirectional attention
    (EmbeddingGemma's does)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    return (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "use_bidirectional_attention", False)
        and not getattr(config, "is_encoder_decoder", False)
    )


def check_pooling(config, pooling: str, name: str) -> None:
    """One line for a pooling the backbone cannot use: `cls` on a causal decoder reads a first
    token that has seen nothing of the text after it."""
    if pooling == "cls" and is_causal(config):
        raise ConfigError(
            f"model.pooling=cls reads the first token, which in a causal decoder "
            f"({name}, {config.model_type}) has seen only itself; use model.pooling=last "
            "(as decoder embedders do) or mean."
        )


def load_backbone(name: str, trust_remote_code: bool = False) -> nn.Module:
    """The pretrained transformer (weights from safetensors where the folder has them)."""
    config = backbone_config(name, trust_remote_code)
    # the pooler is unused by our pooling; leaving it out keeps DDP free of unused params
    kwargs = {"add_pooling_layer": False} if config.model_type in WITH_POOLER else {}
    if is_tiny(name):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            return AutoModel.from_config(config, **kwargs)
    return _from_pretrained(AutoModel, name, trust_remote_code, **kwargs)
