"""How many tokens a text may have: a backbone's usable positions, the most that
`data.max_seq_length`, eval.py's and the tools' `max_seq_length` and an export's may ask for.

A learned position table has `max_position_embeddings` rows; models of the RoBERTa family
(RoBERTa, XLM-R, MPNet, ...) number positions from `pad_token_id + 1`, so that many fewer are
usable (514 rows: 512 tokens). A tokenizer's `model_max_length`, where it is a real limit (not
transformers' "no limit" sentinel of 1e30), caps it too. Beyond that, a learned table fails
with an index error at the first long batch, and an export would advertise a length the model
cannot take.
"""

from __future__ import annotations

from mrl.common.errors import ConfigError

# model types whose position ids start at pad_token_id + 1 (transformers'
# create_position_ids_from_input_ids)
PADDING_OFFSET = (
    "roberta", "xlm-roberta", "xlm-roberta-xl", "mpnet", "camembert", "longformer", "ibert",
    "data2vec-text", "roberta-prelayernorm", "xmod", "luke", "markuplm", "esm",
)  # fmt: skip
NO_LIMIT = 10**6  # a tokenizer's model_max_length at or above this is "unset"


def usable_positions(config, tokenizer=None) -> int | None:
    """The most tokens one text may have for a backbone of `config` (and `tokenizer`); None
    when neither states a limit."""
    limits = []
    rows = getattr(config, "max_position_embeddings", None)
    if isinstance(rows, int) and rows > 0:
        if getattr(config, "model_type", None) in PADDING_OFFSET:
            rows -= (getattr(config, "pad_token_id", None) or 0) + 1
        limits.append(rows)
    most = getattr(tokenizer, "model_max_length", None)
    if isinstance(most, int) and 0 < most < NO_LIMIT:
        limits.append(most)
    return min(limits) if limits else None


def check_length(value, option: str, limit: int | None, model: str) -> None:
    """One line when `option`=`value` asks for more tokens than `model` can take (`limit`)."""
    if value is None or limit is None or isinstance(value, bool) or not isinstance(value, int):
        return
    if value > limit:
        raise ConfigError(
            f"{option}={value} is more than {model} can take ({limit} tokens: its position "
            f"embeddings end there); use {option}={limit} or less."
        )


def model_positions(model) -> int | None:
    """`usable_positions` of a loaded SentenceTransformer's backbone (its first, Transformer,
    module). Its tokenizer is left out: sentence-transformers sets the tokenizer's
    model_max_length to the folder's own max_seq_length setting, which this may raise."""
    first = model[0] if len(model) else None
    return usable_positions(getattr(getattr(first, "auto_model", None), "config", None))
