"""Online or not: where data and weights come from (a local mirror via MRL_DATA_DIR /
MRL_MODEL_DIR, or the Hub) and whether wandb logs online."""

from __future__ import annotations

import functools
import netrc
import os
import socket
from urllib.parse import urlparse

MIRROR_HINT = (
    "set MRL_DATA_DIR (data, layout of shared/data) and MRL_MODEL_DIR (backbones) "
    "to local mirrors, or go online"
)


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub host answers a TCP connect within `timeout` seconds.

    Checked once per process so an offline node fails in seconds instead of after the
    libraries' minute of retries. HF_HUB_OFFLINE=1 counts as unreachable.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def wandb_mode(requested: str) -> str:
    """`auto` -> online when an API key is configured (env or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"
