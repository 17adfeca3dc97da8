"""BEIR-format retrieval sets for eval.py: a corpus, its queries and one qrels split, from
`$MRL_DATA_DIR/<local_dir>/` (BEIR's layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)
when MRL_DATA_DIR is set, else the Hub; anything that cannot be trusted is one ConfigError
naming the file, line and id.

A document is the text sentence-transformers' InformationRetrievalEvaluator example and BEIR's
own encoders give the model: `(title + " " + text).strip()` (text alone where there is no
title, or with `title: false`, as NanoBEIREvaluator does). A qrels row with score <= 0 judges a
document not relevant (as BEIR); only queries with a relevant document are scored, in the
order of the queries file (as InformationRetrievalEvaluator).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mrl.common.errors import ConfigError
from mrl.common.hub import load_hub_dataset
from mrl.data.sources import json_objects

CORPUS, QUERIES = "corpus.jsonl", "queries.jsonl"
QRELS_COLUMNS = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class BeirSource:
    """One BEIR set as named in `conf/evaluate/benchmarks/*.yaml` (`task: retrieval`).

    Hub: corpus and queries are the `corpus_subset` / `queries_subset` configurations of
    `hub_id`; the qrels are `qrels_split` of `qrels_hub_id` (BEIR's `BeIR/<name>-qrels`) or,
    when that is null, the `qrels_subset` configuration of `hub_id` (NanoBEIR).
    """

    hub_id: str
    local_dir: str
    task: str = "retrieval"
    qrels_file: str = "qrels/test.tsv"
    qrels_hub_id: str | None = None
    qrels_subset: str | None = None
    qrels_split: str = "test"
    corpus_subset: str = "corpus"
    corpus_split: str = "corpus"
    queries_subset: str = "queries"
    queries_split: str = "queries"
    revision: str | None = None
    title: bool = True

    @classmethod
    def from_config(cls, cfg, name: str) -> BeirSource:
        fields = dict(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown or not {"hub_id", "local_dir"} <= set(fields):
            problem = f"has unknown keys {unknown}" if unknown else "needs hub_id and local_dir"
            raise ConfigError(
                f"benchmarks.{name} {problem}; a retrieval set takes {sorted(known)} "
                "(see conf/evaluate/benchmarks/scifact.yaml)."
            )
        return cls(**fields)


@dataclass
class BeirSet:
    """Documents and scored queries, in file order; `relevant`: query id -> relevant doc ids."""

    corpus_ids: list[str]
    corpus: list[str]
    query_ids: list[str]
    queries: list[str]
    relevant: dict[str, set[str]]


def load_beir(source: BeirSource) -> BeirSet:
    """The set from `$MRL_DATA_DIR/<local_dir>/` if MRL_DATA_DIR is set, else from the Hub."""
    mirror = os.environ.get("MRL_DATA_DIR")
    if mirror:
        folder = Path(mirror) / source.local_dir
        for name in (CORPUS, QUERIES, source.qrels_file):
            if not (folder / name).is_file():
                raise ConfigError(
                    f"{folder} has no {name}; a BEIR folder holds {CORPUS}, {QUERIES} and "
                    f"{source.qrels_file} (BEIR's layout), or unset MRL_DATA_DIR to use "
                    f"{source.hub_id}."
                )
        corpus = _jsonl_rows(folder / CORPUS, source.title)
        queries = _jsonl_rows(folder / QUERIES, False)
        qrels = _tsv_qrels(folder / source.qrels_file)
        names = (str(folder / CORPUS), str(folder / QUERIES), str(folder / source.qrels_file))
    else:
        qrels_id = source.qrels_hub_id or source.hub_id
        parts = (
            (source.hub_id, source.corpus_subset, source.corpus_split),
            (source.hub_id, source.queries_subset, source.queries_split),
            (qrels_id, None if source.qrels_hub_id else source.qrels_subset, source.qrels_split),
        )
        names = tuple(f"{hub} ({subset or 'default'}, {split})" for hub, subset, split in parts)
        rows = [_hub_rows(hub, subset, split, source.revision) for hub, subset, split in parts]
        corpus = _checked_rows(rows[0], names[0], source.title)
        queries = _checked_rows(rows[1], names[1], False)
        qrels = _checked_qrels(rows[2], names[2])
    return _joined(corpus, queries, qrels, names)


def _hub_rows(hub_id: str, subset: str | None, split: str, revision: str | None):
    ds = load_hub_dataset(hub_id, subset, split, revision, "retrieval set")
    return [(f"row {i + 1}", row) for i, row in enumerate(ds)]


def _lines(path: Path):
    """(number, text) of each non-blank line of a UTF-8 file (a BOM and CRLF ends allowed)."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{path} line {number} is not UTF-8; re-encode it.") from None
            if line.strip():
                yield number, line.rstrip("\r\n")


def _jsonl_rows(path: Path, title: bool) -> list[tuple[str, str, str]]:
    """(where, id, text) of every line of a BEIR corpus or queries file."""
    rows = [(f"line {number}", row) for number, row in json_objects(path, ("_id", "text"))]
    return _checked_rows(rows, str(path), title)


def _an_id(value) -> str | None:
    """An id as a string (ids may be whole numbers on the Hub); None if it is no id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _checked_rows(rows, origin: str, title: bool) -> list[tuple[str, str, str]]:
    """(where, id, text) per row: `_id` a non-empty string or whole number, `text` (and a
    used `title`) a string or null; ConfigError at the first row that is not, or repeats an id."""
    out, seen = [], {}
    for where, row in rows:
        for column in ("_id", "text"):
            if column not in row:
                raise ConfigError(
                    f"{origin} {where} has no {column!r} field; BEIR rows hold _id and text."
                )
        doc_id = _an_id(row["_id"])
        if doc_id is None:
            bad = json.dumps(row["_id"])[:40]
            raise ConfigError(f"{origin} {where}: _id is {bad}, not an id; fix that line.")
        if doc_id in seen:
            raise ConfigError(
                f"{origin} {where} repeats _id {doc_id!r} (first at {seen[doc_id]}); give each "
                "row its own id."
            )
        seen[doc_id] = where
        columns = ("title", "text") if title and "title" in row else ("text",)
        for column in columns:
            if row[column] is not None and not isinstance(row[column], str):
                bad = json.dumps(row[column])[:40]
                raise ConfigError(f"{origin} {where}: {column} is {bad}, not a string.")
        text = row["text"] or ""
        if len(columns) == 2:
            text = f"{row['title'] or ''} {text}".strip()
        out.append((where, doc_id, text))
    if not out:
        raise ConfigError(f"{origin} holds no rows; fill it or point the config at another set.")
    return out


def _tsv_qrels(path: Path) -> list[tuple[str, str, str, int]]:
    """(where, query id, doc id, score) of a BEIR qrels file: a header naming query-id,
    corpus-id and score, then one tab-separated row per judgement."""
    rows, columns = [], None
    for number, line in _lines(path):
        fields = line.split("\t")
        if columns is None:
            missing = [c for c in QRELS_COLUMNS if c not in fields]
            if missing:
                raise ConfigError(
                    f"{path} line {number}: the header {fields} lacks column(s) {missing}; a "
                    "BEIR qrels file starts with the line query-id<TAB>corpus-id<TAB>score."
                )
            columns = [fields.index(c) for c in QRELS_COLUMNS]
        elif len(fields) <= max(columns):
            raise ConfigError(
                f"{path} line {number} has {len(fields)} tab-separated field(s), not "
                f"{len(QRELS_COLUMNS)} ({', '.join(QRELS_COLUMNS)}); fix or delete that line."
            )
        else:
            row = {c: fields[i] for c, i in zip(QRELS_COLUMNS, columns, strict=True)}
            rows.append((f"line {number}", row))
    if columns is None:
        raise ConfigError(f"{path} is empty; a BEIR qrels file has a header and rows.")
    return _checked_qrels(rows, str(path))


def _score(value) -> int | None:
    """A relevance grade as a whole number (a string from a TSV file, a number from the Hub)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _checked_qrels(rows, origin: str) -> list[tuple[str, str, str, int]]:
    """(where, query id, doc id, score) per row; no score column (NanoBEIR): every row is
    relevant. ConfigError at a row without both ids or with a score that is no whole number."""
    out = []
    for where, row in rows:
        ids = [_an_id(row.get(column)) for column in QRELS_COLUMNS[:2]]
        for column, value in zip(QRELS_COLUMNS[:2], ids, strict=True):
            if value is None:
                bad = json.dumps(row.get(column))[:40]
                raise ConfigError(
                    f"{origin} {where}: {column} is {bad}, not an id; fix or delete that row."
                )
        score = _score(row.get("score", 1))
        if score is None:
            bad = json.dumps(row.get("score"))[:40]
            raise ConfigError(f"{origin} {where}: score is {bad}, not a whole number.")
        out.append((where, ids[0], ids[1], score))
    if not out:
        raise ConfigError(f"{origin} holds no judgements; give a qrels file with rows.")
    return out


def _joined(corpus, queries, qrels, names: tuple[str, str, str]) -> BeirSet:
    """The set, once every qrels id resolves in the queries and the corpus."""
    doc_ids = {doc_id for _, doc_id, _ in corpus}
    query_ids = {query_id for _, query_id, _ in queries}
    relevant: dict[str, set[str]] = {}
    for where, query_id, doc_id, score in qrels:
        if query_id not in query_ids:
            raise ConfigError(
                f"{names[2]} {where}: query-id {query_id!r} is not in {names[1]}; fix or delete "
                "that line."
            )
        if doc_id not in doc_ids:
            raise ConfigError(
                f"{names[2]} {where}: corpus-id {doc_id!r} is not in {names[0]}; fix or delete "
                "that line."
            )
        if score > 0:
            relevant.setdefault(query_id, set()).add(doc_id)
    scored = [(q, text) for _, q, text in queries if q in relevant]
    if not scored:
        raise ConfigError(
            f"{names[2]} judges no document relevant (no score > 0); there is nothing to score."
        )
    return BeirSet(
        corpus_ids=[doc_id for _, doc_id, _ in corpus],
        corpus=[text for _, _, text in corpus],
        query_ids=[q for q, _ in scored],
        queries=[text for _, text in scored],
        relevant=relevant,
    )
