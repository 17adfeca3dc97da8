"""Strict config keys: every key of a composed training config is one the code reads (the
machinery, shared with eval.py, is `mrl.common.config_keys`).

A key nothing reads (`+optim.learning_rate=1e-3`, a typo in conf/local/default.yaml, an Optuna
search dimension) would be ignored without a word; here it stops the run in one line naming
the nearest known key. The known keys are no second list kept by hand, they are read from:
- the files of each config group (`conf/model/*.yaml`, `conf/loss/*.yaml`, ..., under the
  group's package) and `conf/train.yaml`: a key any of them sets is known;
- `mrl.run.checks.OPTIONS` (e.g. `plan`, which no file sets);
- the fields of a data source (`mrl.data.sources.Source`) under `data.train`, `eval.validation`
  and `eval.test`;
- for `trainer.*`, the arguments of `lightning.Trainer` (less those the run sets itself).
`hydra.*` is Hydra's. The files of global packages (`conf/exp`, `debug`, `sweep`,
`hparams_search`, `local`) only set keys: they are checked like the command line. Subtrees whose
keys are names the checks validate themselves (`data.mixture.datasets`, `data.prompts`,
`eval.retrieval.sets`) take any key; a dict given where every file has a scalar or null is left
to that option's own check.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path

from omegaconf import DictConfig

from mrl.common import config_keys as common_keys
from mrl.common.config_keys import file_keys
from mrl.common.errors import ConfigError

# subtrees whose keys are free names (datasets, columns, BEIR sets), each checked in mrl.run.checks
# or by its loader
OPEN = ("data.mixture.datasets", "data.prompts", "eval.retrieval.sets")
# each holds one data source (mrl.data.sources.Source)
SOURCES = ("data.train", "eval.validation", "eval.test")
# Trainer arguments the run sets itself (mrl.run.build; barebones and enable_checkpointing would
# turn off its logging and checkpoints): giving them is an error, not an option
TRAINER_SET_BY_RUN = (
    "self", "logger", "callbacks", "plugins", "default_root_dir", "barebones",
    "enable_checkpointing",
)  # fmt: skip
# config folders that are not groups of the training config
NOT_GROUPS = ("hydra", "evaluate")


def conf_dir_of(hydra_cfg=None) -> Path:
    """The primary config folder Hydra composed from (`hydra_cfg`: the `hydra` node; default
    the running job's), else the repository's conf/."""
    return common_keys.composed_from(hydra_cfg) or Path(__file__).resolve().parents[3] / "conf"


@functools.lru_cache(maxsize=1)
def trainer_arguments() -> tuple[str, ...]:
    import lightning

    names = inspect.signature(lightning.Trainer.__init__).parameters
    return tuple(n for n in names if n not in TRAINER_SET_BY_RUN)


def known_keys(conf_dir: Path, options) -> dict[str, bool]:
    """The known keys (-> whether their sub-keys are checked too); `options`: the checked
    options (`mrl.run.checks.OPTIONS`)."""
    from mrl.data.sources import Source

    keys = dict(file_keys(str(conf_dir), "train.yaml", NOT_GROUPS))
    for option in options:
        parts = option.split(".")
        for i in range(1, len(parts)):
            keys[".".join(parts[:i])] = True
        keys.setdefault(option, False)
    fields = [f.name for f in dataclasses.fields(Source)]
    for source in SOURCES:
        keys[source] = True
        keys.update({f"{source}.{name}": keys.get(f"{source}.{name}", False) for name in fields})
    keys["trainer"] = True
    keys.update({f"trainer.{name}": False for name in trainer_arguments()})
    return keys


def unknown_keys(cfg: DictConfig, known: dict[str, bool]) -> list[str]:
    """The keys of `cfg` that are not known (parents before their children), `hydra` aside."""
    return common_keys.unknown_keys(cfg, known, OPEN)


def unknown_key_message(key: str, known) -> str:
    """The one line for a key nothing reads."""
    if key.startswith("trainer.") and key.split(".")[1] in TRAINER_SET_BY_RUN:
        return (
            f"{key} is set by the run itself (its loggers, callbacks and checkpoints, "
            "mrl.run.build); leave it out."
        )
    return common_keys.unknown_key_message(key, known)


def check_keys(cfg: DictConfig, options, conf_dir: Path | None = None) -> None:
    """One ConfigError line for the first key of `cfg` that no part of the code reads."""
    known = known_keys(conf_dir or conf_dir_of(), options)
    unknown = unknown_keys(cfg, known)
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], known))


def check_override_keys(overrides, options, conf_dir: Path | None = None) -> None:
    """The keys that command-line or search-space overrides set (`key=...`, `+key=...`,
    `++key=...`), checked before a sweep starts; group choices and `hydra.*` are Hydra's."""
    conf_dir = conf_dir or conf_dir_of()
    known = known_keys(conf_dir, options)
    for override in overrides:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if "/" in key or "@" in key or key.split(".")[0] == "hydra":
            continue
        if "." not in key and (conf_dir / key).is_dir():
            continue  # a group choice (+exp=..., model=...)
        if key in known or any(key.startswith(f"{o}.") for o in OPEN):
            continue
        parents = [key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1)]
        if any(p in known and not known[p] for p in parents):  # inside a scalar option
            continue
        raise ConfigError(unknown_key_message(key, known))


def key_error_line(err: Exception, options) -> tuple[str, int] | None:
    """Hydra's refusal of an override of a key the config does not have (`optim.learning_rate=1`,
    whose message advises `+optim.learning_rate`, which would be ignored) as our line naming
    the nearest known key; None for any other error."""
    key, conf_dir = common_keys.refused_override_key(err), conf_dir_of(None)
    if key is None or not conf_dir.is_dir():
        return None
    return unknown_key_message(key, known_keys(conf_dir, options)), 2
