"""LoRA adapters on the backbone (`model.lora`), through `peft`.

With `model.lora.r` set, the backbone's weights are frozen and low-rank adapters (rank r,
scale alpha / r, dropout on their input) are added to the linear layers `target_modules` names:
`all-linear` (every linear layer of the transformer, attention and MLP) or a list of layer
names (`[query, value]`, `[q_proj, v_proj]`, ...), which `peft` matches against the end of each
module's name. Only the adapters (and a projection head, if any) train, so a checkpoint holds
only those (`trainable_state`); the frozen weights come back from the backbone on load
(`with_frozen`). The export merges the adapters into the weights: a plain model, loaded with
no `peft` code.

A `peft` model forwards `config`, `forward` and the rest to the wrapped model, so the encoder
uses it as it uses the plain backbone.
"""

from __future__ import annotations

import warnings

from torch import nn

from mrl.common.errors import ConfigError

LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


def lora_problem(lora) -> str | None:
    """What is wrong with a `model.lora` value (None: nothing): null, or a mapping of
    r (null = off, else a whole number >= 1), alpha (> 0), dropout (in [0, 1)) and
    target_modules (`all-linear` or a non-empty list of layer names)."""
    if lora is None:
        return None
    if not hasattr(lora, "keys") or set(lora.keys()) - set(LORA_KEYS):
        return f"must be null or a mapping of {', '.join(LORA_KEYS)}"
    r, alpha = lora.get("r"), lora.get("alpha", 16)
    dropout, targets = lora.get("dropout", 0.0), lora.get("target_modules", "all-linear")
    number = (int, float)
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 1):
        return "has r that must be a whole number >= 1 (the adapters' rank), or null for none"
    if not isinstance(alpha, number) or isinstance(alpha, bool) or alpha <= 0:
        return "has alpha that must be a number > 0 (the adapters' scale is alpha / r)"
    if not isinstance(dropout, number) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        return "has dropout that must be a number in [0, 1)"
    listed = not isinstance(targets, str) and hasattr(targets, "__len__")
    if targets != "all-linear" and not (
        listed and len(targets) and all(isinstance(t, str) and t for t in targets)
    ):
        return "has target_modules that must be all-linear or a list of layer names"
    return None


def lora_enabled(lora) -> bool:
    """Whether `model.lora` asks for adapters (a rank is set)."""
    return lora is not None and lora.get("r") is not None


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers: what `target_modules` can name."""
    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    )


def add_lora(backbone: nn.Module, lora) -> nn.Module:
    """`backbone` with LoRA adapters as `lora` (a checked `model.lora`) asks, its own weights
    frozen; one ConfigError line for target modules the backbone does not have."""
    from peft import LoraConfig, get_peft_model

    if (problem := lora_problem(lora)) is not None:
        raise ConfigError(f"model.lora {problem}.")
    targets = lora.get("target_modules", "all-linear")
    if targets != "all-linear":
        targets = list(targets)
        have = linear_layer_names(backbone)
        missing = [t for t in targets if t not in have]
        if missing:
            raise ConfigError(
                f"model.lora.target_modules names {missing}, which this backbone "
                f"({backbone.config.model_type}) does not have; its linear layers are "
                f"{', '.join(have)} (or use all-linear)."
            )
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora.get("alpha", 16),
        lora_dropout=lora.get("dropout", 0.0),
        target_modules=targets,
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return get_peft_model(backbone, config)


def is_lora(backbone: nn.Module) -> bool:
    """Whether the backbone carries `peft` adapters."""
    return hasattr(backbone, "merge_and_unload") and hasattr(backbone, "peft_config")
