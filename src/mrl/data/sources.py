"""Data sources without Lightning: one split of one dataset (Hub or `$MRL_DATA_DIR` mirror),
loaded with bad rows cleaned or rejected in one line that names the file, line and field.

Training (`mrl.data.datamodule`), `eval.py`, retrieval and quantization all read data through
`load_source`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from mrl.common.errors import ConfigError
from mrl.common.hub import load_hub_dataset

log = logging.getLogger("mrl")


@dataclass(frozen=True)
class Source:
    """One split of one dataset, as named in `conf/data/*.yaml` and `conf/eval/*.yaml`.

    `columns` are the text columns in order (plus `score` for STS pairs). Scores are
    divided by `hub_score_max` / `local_score_max` so they land in [0, 1] either way.
    `negatives_k`: the last column holds a list of hard negatives per row; its first k become
    text columns `<column>_1 .. <column>_k` (a row with fewer is refused in one line).
    """

    hub_id: str
    hub_split: str
    local_file: str
    columns: tuple[str, ...]
    hub_subset: str | None = None
    revision: str | None = None
    hub_score_max: float = 1.0
    local_score_max: float = 1.0
    negatives_k: int | None = None

    @classmethod
    def from_config(cls, cfg) -> Source:
        fields = dict(cfg)
        fields["columns"] = tuple(fields["columns"])
        return cls(**fields)

    @property
    def list_column(self) -> str | None:
        return self.columns[-1] if self.negatives_k is not None else None

    @property
    def text_columns(self) -> tuple[str, ...]:
        texts = tuple(c for c in self.columns if c not in ("score", self.list_column))
        if self.list_column is None:
            return texts
        return texts + tuple(f"{self.list_column}_{i}" for i in range(1, self.negatives_k + 1))

    def check(self) -> None:
        k = self.negatives_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(
                f"negatives_k={k!r} must be null or a whole number >= 1 (hard negatives per "
                "row, taken from the list in the last column)."
            )


def load_source(source: Source) -> datasets.Dataset:
    """The split as a `datasets.Dataset`, from `$MRL_DATA_DIR/<local_file>` if set, else the Hub.

    Rejects (ConfigError naming file, line and field) what cannot be trusted: a local file that
    is not UTF-8 JSON Lines, wrong columns, a score that is not a number or out of range.
    Cleans what can, logging how many rows and why: drops rows with an empty or null text, and
    exact duplicate rows of training data (not of scored pairs: an STS benchmark counts its
    duplicate pairs, e.g. STS-B test has one, and scores must stay comparable with published
    ones). Scores of scored pairs are rescaled to [0, 1].
    """
    source.check()
    mirror = os.environ.get("MRL_DATA_DIR")
    if mirror:
        path = Path(mirror) / source.local_file
        if not path.is_file():
            raise ConfigError(
                f"MRL_DATA_DIR={mirror} has no {source.local_file}; point MRL_DATA_DIR at a "
                f"folder with the layout of shared/data, or unset it to use {source.hub_id}."
            )
        lines = _check_jsonl(path, source.columns, source.list_column)
        try:
            ds = datasets.load_dataset("json", data_files=str(path), split="train")
        except Exception as err:  # datasets wraps parse errors in several types
            raise ConfigError(
                f"{path} could not be read as JSON Lines ({type(err).__name__}); fix the file."
            ) from None
        origin, score_max = str(path), source.local_score_max

        def where(i: int) -> str:
            return f"line {lines[i]}"
    else:
        ds = load_hub_dataset(
            source.hub_id, source.hub_subset, source.hub_split, source.revision, "dataset"
        )
        origin, score_max = f"{source.hub_id} ({source.hub_split})", source.hub_score_max

        def where(i: int) -> str:
            return f"row {i + 1}"

    missing = [c for c in source.columns if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"{origin} lacks column(s) {missing} (it has {ds.column_names}); the data config "
            f"expects {list(source.columns)}."
        )
    ds = ds.select_columns(list(source.columns))
    if source.list_column is not None:
        ds = _expanded_negatives(ds, source, origin, where)
    if "score" in source.columns:
        key = "local_score_max" if mirror else "hub_score_max"
        ds = _rescaled_scores(ds, origin, where, score_max, key)
    return _drop_bad_rows(ds, origin, source.text_columns, "score" not in source.columns)


def json_objects(path: Path, fields: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) of each non-blank line of a UTF-8 JSON Lines file.

    The one reader of JSON Lines: training and eval sources, BEIR corpora and queries, and
    retrieval's text files. The first line that is not UTF-8, not JSON, or not an object is
    one ConfigError naming the file and line (`fields`: what an object should hold, for it).
    """
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(
                    f"{path} could not be read as JSON Lines: line {number} is not valid UTF-8 "
                    f"(byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "re-encode the file as UTF-8."
                ) from None
            if not text.strip(" \t\r\n"):
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(
                    f"{path} could not be read as JSON Lines: line {number} is cut off or not "
                    f"JSON ({err.msg.removesuffix(' at')} at column {err.colno}); "
                    "fix or delete that line."
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{path} line {number} is {json.dumps(row)[:40]}, not an object with the "
                    f"fields {list(fields)}; fix or delete that line."
                )
            yield number, row


def _expanded_negatives(ds, source: Source, origin: str, where) -> datasets.Dataset:
    """The list column's first k texts as columns `<column>_1 .. _k`, in place of the list."""
    column, k = source.list_column, source.negatives_k
    for i, value in enumerate(ds.with_format("arrow")[column].to_pylist()):
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ConfigError(
                f"{origin} {where(i)}: field {column} is not a list of texts (negatives_k="
                f"{k} reads hard negatives from the last column); fix the row or the columns."
            )
        if len(value) < k:
            raise ConfigError(
                f"{origin} {where(i)} has {len(value)} negatives in {column!r}, fewer than "
                f"negatives_k={k}; lower negatives_k or drop such rows."
            )
    names = source.text_columns[-k:]
    ds = ds.map(lambda row: dict(zip(names, row[column][:k], strict=True)))
    return ds.remove_columns(column)


def _check_jsonl(path: Path, columns: Sequence[str], list_column: str | None = None) -> list[int]:
    """The 1-based line number of each row of a local JSON Lines file, in one pass.

    Raises ConfigError if no line has a field, else at the first line that is not UTF-8, not
    one JSON object, or has a value of the wrong type in one of `columns`. Blank lines are
    skipped, as `datasets` does; a field absent from a line becomes null, so `load_source`
    judges it with the others.
    """
    lines, has_fields = [], False
    for number, row in json_objects(path, columns):
        value = row.get(list_column) if list_column else None
        if list_column and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            raise ConfigError(
                f"{path} line {number}: field {list_column} is not a list of texts (negatives_k "
                "reads hard negatives from the last column); fix the row or the columns."
            )
        for column in (c for c in columns if c in row and c != list_column):  # absent: below
            problem = _field_problem(column, row[column])
            if problem:
                raise ConfigError(f"{path} line {number}: {problem}; fix or delete that line.")
        lines.append(number)
        has_fields = has_fields or bool(row)
    if not has_fields:  # `datasets` would fail with "corresponds to no data"
        raise ConfigError(
            f"{path} holds no rows (no line has any field); fill it with {list(columns)} rows "
            "or point MRL_DATA_DIR at another folder."
        )
    return lines


def _field_problem(column: str, value) -> str | None:
    """What is wrong with one value of a column (None: nothing; null texts are cleaned later)."""
    if column == "score":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"field score is {json.dumps(value)[:40]}, not a number"
        if not math.isfinite(value):
            return f"field score is {value}, not a finite number"
    elif value is not None and not isinstance(value, str):
        return f"field {column} is {json.dumps(value)[:40]}, not a string"
    return None


def _rescaled_scores(ds: datasets.Dataset, origin: str, where, score_max: float, key: str):
    """Scores divided by `score_max`; ConfigError at the first non-number or out-of-range one."""
    scores = ds.with_format("arrow")["score"].to_pylist()
    for i, score in enumerate(scores):
        problem = _field_problem("score", score)
        if problem:
            raise ConfigError(f"{origin} {where(i)}: {problem}; fix or delete that row.")
    bad = [i for i, s in enumerate(scores) if not 0 <= s <= score_max]
    if bad:
        raise ConfigError(
            f"{origin} has scores in [{float(min(scores))}, {float(max(scores))}], outside "
            f"[0, {score_max}] (first at {where(bad[0])}); set {key} to the file's scale in "
            f"the config that names this file (e.g. data.train.{key}=5 or eval.test.{key}=5)."
        )
    return ds.map(lambda row: {"score": float(row["score"]) / score_max})


def _drop_bad_rows(ds, origin: str, text_columns: Sequence[str], drop_duplicates: bool):
    """`ds` without rows that have an empty or null text and, if `drop_duplicates`, without
    exact duplicate rows (the first copy stays); logs each count. ConfigError if none is left."""
    columns = ds.with_format("arrow")[:].to_pydict()
    n_rows = len(ds)
    empty = {
        c: {i for i, t in enumerate(columns[c]) if t is None or not t.strip()} for c in text_columns
    }
    dropped = set().union(*empty.values())
    if dropped:
        log.warning(
            "%s: dropped %d of %d rows with an empty or null text (%s)",
            origin,
            len(dropped),
            n_rows,
            ", ".join(f"{c}: {len(rows)}" for c, rows in empty.items() if rows),
        )
    if n_rows and len(dropped) == n_rows:
        raise ConfigError(
            f"{origin} has no row whose texts {list(text_columns)} are all non-empty; "
            "fix the file or point the data config at another one."
        )
    seen, keep = set(), []
    for i, row in enumerate(zip(*columns.values(), strict=True)):
        if i in dropped or (drop_duplicates and row in seen):
            continue
        seen.add(row)
        keep.append(i)
    if len(keep) < n_rows - len(dropped):
        log.warning(
            "%s: dropped %d exact duplicate rows (%d of %d rows left)",
            origin,
            n_rows - len(dropped) - len(keep),
            len(keep),
            n_rows,
        )
    return ds if len(keep) == n_rows else ds.select(keep)
