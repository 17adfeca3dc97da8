"""Strict config keys, for any Hydra app of ours: the keys its config files declare, the keys of a
composed config that none of them does, and the nearest known key for the one-line error.

A key nothing reads (`+optim.learning_rate=1e-3` in train.py, `+dimz=[64]` in eval.py) would be
ignored without a word. The known keys are no second list kept by hand: they are read from the
app's primary config file and the files of its config groups (a group file's keys sit under the
group's name unless its `# @package` header says otherwise; files of other packages only set
keys). train.py adds its checked options, data sources and Trainer arguments
(`mrl.run.config_keys`); eval.py its data sources (`mrl.evaluation.evaluate`).
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def composed_from(hydra_cfg=None) -> Path | None:
    """The primary config folder Hydra composed from (`hydra_cfg`: the `hydra` node; default
    the running job's; None: no Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    if hydra_cfg is None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
    for source in hydra_cfg.runtime.config_sources if hydra_cfg is not None else []:
        if source.provider == "main" and source.schema == "file":
            return Path(source.path)
    return None


def _package(path: Path) -> str | None:
    """The `# @package X` of a config file's header (None: the default, its group)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        found = re.match(r"#\s*@package\s+(\S+)", line)
        if found:
            return found.group(1)
    return None


def _flatten(node, prefix: str, keys: dict[str, bool]) -> None:
    """keys[path] = True when some file gives a dict there (its sub-keys are then known)."""
    for key in node:
        if key == "defaults" and not prefix:
            continue
        path, value = f"{prefix}{key}", node._get_node(key)
        is_dict = isinstance(value, DictConfig) and not value._is_none()
        keys[path] = keys.get(path, False) or is_dict
        if is_dict:
            _flatten(value, f"{path}.", keys)


@functools.lru_cache(maxsize=8)
def file_keys(conf_dir: str, primary: str, not_groups: tuple[str, ...] = ()) -> dict[str, bool]:
    """Every key the primary config file (`primary`, e.g. train.yaml) and the files of each
    config group folder (but `not_groups`) set -> whether some file makes it a dict."""
    root = Path(conf_dir)
    keys: dict[str, bool] = {}
    _flatten(OmegaConf.load(root / primary), "", keys)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in not_groups):
        for file in sorted(folder.glob("*.yaml")):
            package = _package(file)
            if package is not None and package != folder.name:
                continue  # _global_ (exp, debug, sweep, ...) or hydra: they set, not declare
            keys[folder.name] = True
            node = OmegaConf.load(file)
            if OmegaConf.is_dict(node):
                _flatten(node, f"{folder.name}.", keys)
    return keys


def unknown_keys(cfg: DictConfig, known: dict[str, bool], open_: tuple[str, ...] = ()) -> list[str]:
    """The keys of `cfg` that are not known (parents before their children), `hydra` and the
    subtrees in `open_` (whose keys are free names, checked elsewhere) aside."""
    found: list[str] = []

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            if path == "hydra" or path in open_:
                continue
            if path not in known:
                found.append(path)
                continue
            value = node._get_node(key)
            if known[path] and isinstance(value, DictConfig) and not value._is_none():
                walk(value, f"{path}.")

    walk(cfg, "")
    return found


def _initials(name: str) -> str:
    return "".join(part[0] for part in re.split(r"[_\-]+", name) if part)


def nearest_key(key: str, known) -> str | None:
    """The known key closest to `key`: among its siblings first (an abbreviation counts:
    learning_rate -> lr), else by the whole path."""
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    if siblings:
        for name, full in siblings.items():
            if _initials(leaf) == name or _initials(name) == leaf:
                return full
        close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.5)
        if close:
            return siblings[close[0]]
    parents = {key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1)}
    close = difflib.get_close_matches(key, [k for k in known if k not in parents], n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_message(key: str, known, options_at: str = "conf/ (conf/README.md)") -> str:
    """The one line for a key nothing reads: the nearest known key, else where the options
    are listed (`options_at`)."""
    near = nearest_key(key, known)
    hint = f"did you mean {near}?" if near else f"see {options_at} for the options."
    return f"{key} is not an option anything reads, so it would be ignored; {hint}"


def refused_override_key(err: BaseException) -> str | None:
    """The key of Hydra's refusal to override a key the config does not have (`dimz=1`, whose
    message advises `+dimz`, which would be ignored); None for any other error and for
    Hydra's own keys (`hydra.*`: its message stands)."""
    found = re.search(r"Could not override '([^']+)'", str(err))
    if not found or "not in struct" not in str(err.__cause__):
        return None
    key = found.group(1).lstrip("+~")
    return None if key.split(".")[0] == "hydra" else key
