"""Keeping secrets out of what a run records: configs logged to wandb and results.json."""

from __future__ import annotations

import os
import re

from mrl.common.errors import ConfigError

# a key (or its last part) naming a secret: api_key, wandb_api_key, hf_token, client_secret, ...
SECRET_KEY = re.compile(
    r"(?:^|[_.])(?:api_?key|access_key|token|secret|password|passwd)(?:$|_)", re.IGNORECASE
)
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")
REDACTED = "<redacted>"


def _secret_values() -> list[str]:
    return [v for name in SECRET_ENV if len(v := os.environ.get(name, "")) >= 8]


def redact(value, _secrets: list[str] | None = None):
    """`value` (nested dicts/lists/strings from a config) with every value under a secret-looking
    key (api_key, token, secret, password) and every copy of a secret environment variable's
    value (WANDB_API_KEY, HF_TOKEN, ...) replaced by <redacted>."""
    secrets = _secret_values() if _secrets is None else _secrets
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        key, sep, _ = value.partition("=")
        if sep and SECRET_KEY.search(key):  # an override such as +wandb_api_key=...
            return f"{key}={REDACTED}"
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


def refuse_secret_overrides(overrides: list[str]) -> None:
    """A secret given on the command line would also name the run folder: refuse it."""
    for item in overrides:
        key = item.partition("=")[0].lstrip("+~")
        if SECRET_KEY.search(key):
            raise ConfigError(
                f"{key} looks like a secret given on the command line, where it would be written "
                "into the run folder's name; pass it by environment instead (WANDB_API_KEY, "
                "HF_TOKEN)."
            )
