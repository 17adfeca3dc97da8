"""Checks on the command line itself, before Hydra composes anything (and before torch loads)."""

from __future__ import annotations

import sys
from pathlib import Path


def check_config_choices(argv: list[str], conf_dir: Path, shown_as: str = "conf") -> None:
    """`+exp=NAME`, `model=NAME`, ... naming a file conf/<group>/NAME.yaml that does not
    exist: one line listing the choices, exit 2 (Hydra's own message is a 13-line list)."""
    for arg in argv:
        group, _, name = arg.lstrip("+").partition("=")
        folder = conf_dir / group
        if not name or name == "null" or "." in group or "/" in group or not folder.is_dir():
            continue
        if "," in name or name.startswith(("choice(", "range(", "glob(")):  # a -m sweep
            continue
        if not (folder / f"{name}.yaml").is_file():
            choices = sorted(p.stem for p in folder.glob("*.yaml"))
            print(
                f"error: {arg.lstrip('+')} is not a config in {shown_as}/{group}/; choose one of "
                f"{', '.join(choices)}.",
                file=sys.stderr,
            )
            raise SystemExit(2)
