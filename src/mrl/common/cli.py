"""Checks on the command line itself, before Hydra composes anything (and before torch loads),
and Hydra's own errors (a bad override, an unknown key, a sweeper's error) as one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path


def check_config_choices(argv: list[str], conf_dir: Path, shown_as: str = "conf") -> None:
    """`+exp=NAME`, `model=NAME`, ... naming a file conf/<group>/NAME.yaml that does not
    exist: one line listing the choices, exit 2 (Hydra's own message is a 13-line list). A flag
    after an override (`train.py +exp=x -m`) is one line too (argparse's is a usage block)."""
    for i, arg in enumerate(argv):
        if arg.startswith("-") and any("=" in a and not a.startswith("-") for a in argv[:i]):
            print(
                f"error: {arg} comes after an override; put Hydra's flags first, e.g. python "
                f"{Path(sys.argv[0]).name} -m +exp=NAME seed=1,2.",
                file=sys.stderr,
            )
            raise SystemExit(2)
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


def one_line(err: BaseException) -> str:
    """An exception's message (and its cause's) as one line, without Hydra's pointers to docs
    and to HYDRA_FULL_ERROR."""
    parts = []
    for e in (err, err.__cause__):
        if e is None:
            continue
        for line in str(e).splitlines():
            line = line.strip().rstrip(".")
            skip = ("See https://", "Set the environment variable", "full_key:", "object_type=")
            if line and not line.startswith(skip) and line not in parts:
                parts.append(line)
    return "; ".join(parts) or type(err).__name__


@contextlib.contextmanager
def hydra_errors_in_one_line(explain: Callable[[Exception], tuple[str, int] | None] | None = None):
    """Around a `@hydra.main` app: Hydra's composition, override and sweeper errors (and a
    ConfigError from a Hydra callback) become one `error:` line and exit status 2, instead of
    Hydra's report of 3-14 lines with status 1. `explain(err)` may give its own
    (line, status) for an error, e.g. the nearest known key, or None.

    HYDRA_FULL_ERROR=1 makes Hydra raise the error to here rather than print it; anything else
    (a bug) keeps its full traceback."""
    from hydra.errors import HydraException

    from mrl.common.errors import ConfigError

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except Exception as err:
        verdict = explain(err) if explain is not None else None
        if verdict is None:
            if not isinstance(err, HydraException | ConfigError):
                raise
            verdict = (one_line(err), 2)
        print(f"error: {verdict[0]}", file=sys.stderr)
        raise SystemExit(verdict[1]) from None


class OneLineParser(argparse.ArgumentParser):
    """argparse for the tools, whose bad argument is one `error:` line with exit status 2 (as
    every other bad input), not a usage block; --help still describes every option."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}; see {self.prog} --help.", file=sys.stderr)
        raise SystemExit(2)
