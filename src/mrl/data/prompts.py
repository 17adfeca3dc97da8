"""Prompts: a text put before every text of a column before tokenization (`data.prompts`: one
per training column; `eval.prompt`: both sentences of the STS validation and test pairs), and
their names in the sentence-transformers export.

A prompt is part of the text, as sentence-transformers treats it: `prompt + text` is tokenized
(and truncated to `data.max_seq_length`) and pooled whole, prompt tokens included. The export
lists each distinct prompt under a name in config_sentence_transformers.json, so
`model.encode(texts, prompt_name="query")` embeds as training did, and makes the eval prompt
its `default_prompt_name`, so a plain `model.encode(texts)` embeds as the STS evaluation did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def prompted(texts: Iterable[str], prompt: str | None) -> list[str]:
    """`texts` with `prompt` put before each (unchanged without one)."""
    return [prompt + t for t in texts] if prompt else list(texts)


def prompt_name(prompt: str, column: str, taken: Iterable[str] = ()) -> str:
    """The export's name for a prompt: its words without the final colon ("query: " ->
    "query") when that is one lowercase word of [a-z0-9_-], else the column that uses it; a
    name already taken gets the column name."""
    word = prompt.strip().removesuffix(":").strip().lower()
    name = word if re.fullmatch(r"[a-z0-9_-]+", word) else column
    return column if name in set(taken) else name


def export_prompts(config: dict) -> dict:
    """The export's `prompts` ({name: prompt}) and `default_prompt_name`, as
    config_sentence_transformers.json holds them, from a run's config: each distinct prompt of
    `data.prompts` (in column order) and `eval.prompt` (the default)."""
    train = (config.get("data") or {}).get("prompts") or {}
    eval_prompt = (config.get("eval") or {}).get("prompt")
    prompts: dict[str, str] = {}
    for column, prompt in [*train.items(), *([("eval", eval_prompt)] if eval_prompt else [])]:
        if prompt and prompt not in prompts.values():
            prompts[prompt_name(prompt, column, prompts)] = prompt
    default = next((n for n, p in prompts.items() if p == eval_prompt), None)
    return {"prompts": prompts, "default_prompt_name": default}
