"""Online or not: where data and weights come from (a local mirror via MRL_DATA_DIR /
MRL_MODEL_DIR, or the Hub) and whether wandb logs online."""

from __future__ import annotations

import contextlib
import functools
import logging
import netrc
import os
import socket
from urllib.parse import urlparse

from mrl.common.errors import ConfigError

log = logging.getLogger("mrl")

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


@contextlib.contextmanager
def datasets_offline():
    """datasets and huggingface_hub in offline mode for the duration (they read HF_HUB_OFFLINE
    once, at import): a cached copy loads at once instead of after a minute of retries."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def load_hub_dataset(hub_id: str, subset: str | None, split: str, revision: str | None, what: str):
    """One split of a Hub dataset: from the Hub when it answers, else from the Hugging Face
    cache (`HF_DATASETS_CACHE`, where an earlier online load left it: the usual set-up on
    compute nodes with HF_HUB_OFFLINE=1). Offline, the cache's latest copy is used whatever
    `revision` asks (datasets does not record revisions in its cache). `what` names the
    config entry for the one-line error when there is neither."""
    import datasets

    if hub_reachable():
        return datasets.load_dataset(hub_id, subset, split=split, revision=revision)
    try:
        with datasets_offline():
            return datasets.load_dataset(hub_id, subset, split=split)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        cache = datasets.config.HF_DATASETS_CACHE
        log.debug("no cached copy of %s: %s", hub_id, err)
        raise ConfigError(
            f"{what} {hub_id!r} needs the Hugging Face Hub, which is unreachable, and is not in "
            f"the Hugging Face cache ({cache}); {MIRROR_HINT}, or load it once online."
        ) from None
