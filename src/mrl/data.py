"""Training and evaluation data: loading (Hub or MRL_DATA_DIR mirror) with bad rows cleaned or
rejected, one-time tokenization, batches without duplicate texts, and the LightningDataModule."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from mrl.errors import ConfigError
from mrl.hub import MIRROR_HINT, hub_reachable

log = logging.getLogger("mrl")


@dataclass(frozen=True)
class Source:
    """One split of one dataset, as named in `conf/data/*.yaml` and `conf/eval/*.yaml`.

    `columns` are the text columns in order (plus `score` for STS pairs). Scores are
    divided by `hub_score_max` / `local_score_max` so they land in [0, 1] either way.
    """

    hub_id: str
    hub_split: str
    local_file: str
    columns: tuple[str, ...]
    hub_subset: str | None = None
    revision: str | None = None
    hub_score_max: float = 1.0
    local_score_max: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> Source:
        fields = dict(cfg)
        fields["columns"] = tuple(fields["columns"])
        return cls(**fields)

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c != "score")


def load_source(source: Source) -> datasets.Dataset:
    """The split as a `datasets.Dataset`, from `$MRL_DATA_DIR/<local_file>` if set, else the Hub.

    Rejects (ConfigError naming file, line and field) what cannot be trusted: a local file that
    is not UTF-8 JSON Lines, wrong columns, a score that is not a number or out of range.
    Cleans what can, logging how many rows and why: drops rows with an empty or null text, and
    exact duplicate rows of training data (not of scored pairs: an STS benchmark counts its
    duplicate pairs, e.g. STS-B test has one, and scores must stay comparable with published
    ones). Scores of scored pairs are rescaled to [0, 1].
    """
    mirror = os.environ.get("MRL_DATA_DIR")
    if mirror:
        path = Path(mirror) / source.local_file
        if not path.is_file():
            raise ConfigError(
                f"MRL_DATA_DIR={mirror} has no {source.local_file}; point MRL_DATA_DIR at a "
                f"folder with the layout of shared/data, or unset it to use {source.hub_id}."
            )
        lines = _check_jsonl(path, source.columns)
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
        if not hub_reachable():
            raise ConfigError(
                f"dataset {source.hub_id!r} needs the Hugging Face Hub, which is unreachable; "
                f"{MIRROR_HINT}."
            )
        ds = datasets.load_dataset(
            source.hub_id, source.hub_subset, split=source.hub_split, revision=source.revision
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
    if "score" in source.columns:
        ds = _rescaled_scores(ds, origin, where, score_max)
    return _drop_bad_rows(ds, origin, source.text_columns, "score" not in source.columns)


def _check_jsonl(path: Path, columns: Sequence[str]) -> list[int]:
    """The 1-based line number of each row of a local JSON Lines file, in one pass.

    Raises ConfigError if no line has a field, else at the first line that is not UTF-8, not
    one JSON object, or has a value of the wrong type in one of `columns`. Blank lines are
    skipped, as `datasets` does; a field absent from a line becomes null, so `load_source`
    judges it with the others.
    """
    lines, has_fields = [], False
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
                    f"fields {list(columns)}; fix or delete that line."
                )
            for column in (c for c in columns if c in row):  # absent: see load_source
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


def _rescaled_scores(ds: datasets.Dataset, origin: str, where, score_max: float):
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
            f"[0, {score_max}] (first at {where(bad[0])}); set the data config's score_max "
            "to the file's scale."
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


def tokenize(ds: datasets.Dataset, tokenizer, text_columns: Sequence[str], max_length: int):
    """Adds `<column>_ids` token ids for each text column, once (cached by `datasets`)."""

    def encode(batch):
        return {
            f"{col}_ids": tokenizer(batch[col], truncation=True, max_length=max_length)["input_ids"]
            for col in text_columns
        }

    return ds.map(encode, batched=True, desc="tokenizing")


def collate_texts(rows: list[dict], text_columns: Sequence[str], pad_id: int) -> dict:
    """Stacks every text of the batch into one padded tensor, column after column.

    Row i of column k sits at index k * n_rows + i, so a single encoder pass serves all
    columns (the first n_rows are the anchors); `scores` is present for STS pairs.
    """
    seqs = [row[f"{col}_ids"] for col in text_columns for row in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, : len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "n_rows": len(rows)}
    if "score" in rows[0]:
        batch["scores"] = torch.tensor([row["score"] for row in rows], dtype=torch.float32)
    return batch


class NoDuplicatesBatchSampler(Sampler[list[int]]):
    """Shuffled batches in which no text appears twice (a duplicate would be a false negative).

    A row whose text is already in the batch waits for the next batch. The global batch is
    the same on every rank (same seed and epoch); rank r takes rows r, r + world_size, ...
    Under several ranks each global batch is cut to a multiple of world_size (the rows cut
    off start the next batch), so every rank gets the same number of rows to gather.
    """

    def __init__(
        self,
        row_texts: Sequence[tuple[str, ...]],
        batch_size: int,
        seed: int = 0,
        no_duplicates: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.row_texts = row_texts
        self.batch_size = batch_size
        self.seed = seed
        self.no_duplicates = no_duplicates
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0  # batches of this epoch already trained (set when resuming mid-epoch)
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches over all ranks (computed once per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build_batches())
        return self._cache[1]

    def _build_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        remaining = deque(torch.randperm(len(self.row_texts), generator=generator).tolist())
        batches = []
        while remaining:
            batch, seen, waiting = [], set(), []
            while remaining and len(batch) < self.batch_size:
                idx = remaining.popleft()
                texts = self.row_texts[idx]
                if self.no_duplicates and any(t in seen for t in texts):
                    waiting.append(idx)
                    continue
                batch.append(idx)
                seen.update(texts)
            cut = len(batch) % self.world_size
            if cut and remaining:
                waiting.extend(batch[-cut:])
                batch = batch[:-cut]
            remaining.extendleft(reversed(waiting))
            if len(batch) >= self.world_size:
                batches.append(batch[: len(batch) - len(batch) % self.world_size])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for batch in self.global_batches()[skip:]:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.global_batches())


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch goes into Lightning checkpoints, so a run
    resumed mid-epoch continues with the very next batch of the same shuffled order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.consumed = 0

    def __iter__(self):
        self.consumed = self.batch_sampler.skip
        for batch in super().__iter__():
            self.consumed += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.set_epoch(state["epoch"])
        self.batch_sampler.skip = state["consumed"]


class MatryoshkaDataModule(L.LightningDataModule):
    """Tokenized training triplets/pairs and STS validation/test pairs, from plain arguments."""

    def __init__(
        self,
        backbone: str,
        train: dict,
        validation: dict,
        test: dict,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        max_seq_length: int = 128,
        max_train_samples: int | None = None,
        no_duplicates: bool = True,
        num_workers: int = 0,
        seed: int = 42,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.sources = {
            "train": Source.from_config(train),
            "validation": Source.from_config(validation),
            "test": Source.from_config(test),
        }
        self.splits: dict[str, datasets.Dataset] = {}
        self._sampler_len: int | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from mrl.encoder import load_tokenizer

        self.tokenizer = tokenizer = load_tokenizer(
            self.hparams.backbone, self.hparams.trust_remote_code
        )
        self.pad_id = tokenizer.pad_token_id
        for name, source in self.sources.items():
            ds = load_source(source)
            if name == "train" and self.hparams.max_train_samples:
                ds = ds.select(range(min(self.hparams.max_train_samples, len(ds))))
            if len(ds) == 0:
                raise ConfigError(f"the {name} data ({source.local_file}) has no rows.")
            self.splits[name] = tokenize(
                ds, tokenizer, source.text_columns, self.hparams.max_seq_length
            )

    def _loader(self, split: str, ds: datasets.Dataset, **batching) -> DataLoader:
        columns = self.sources[split].text_columns
        loader = ResumableLoader if "batch_sampler" in batching else DataLoader
        return loader(
            ds,
            num_workers=self.hparams.num_workers,
            # its own generator: starting an epoch then draws nothing from the global RNG that
            # dropout uses, so a run resumed mid-epoch draws the same masks as an uninterrupted one
            generator=torch.Generator().manual_seed(self.hparams.seed),
            collate_fn=lambda rows: collate_texts(rows, columns, self.pad_id),
            **batching,
        )

    def train_dataloader(self) -> DataLoader:
        ds = self.splits["train"]
        columns = self.sources["train"].text_columns
        row_texts = list(zip(*(ds[c] for c in columns), strict=True))
        trainer = self.trainer
        sampler = NoDuplicatesBatchSampler(
            row_texts,
            self.hparams.batch_size,
            seed=self.hparams.seed,
            no_duplicates=self.hparams.no_duplicates,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        return self._loader("train", ds, batch_sampler=sampler)

    def _eval_loader(self, split: str) -> DataLoader:
        """Rank r of W gets the r-th contiguous block of ceil(N / W) pairs; the module gathers
        the blocks back in order and drops the tail padding, so metrics see each pair once."""
        ds = self.splits[split]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            block = eval_block(len(ds), trainer.global_rank, trainer.world_size)
            ds = ds.select(range(block.start, block.stop))
        return self._loader(split, ds, batch_size=self.hparams.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def eval_block(n_rows: int, rank: int, world_size: int) -> range:
    """The contiguous rows of an evaluation set that `rank` encodes (may be empty at the tail)."""
    size = -(-n_rows // world_size)
    return range(min(rank * size, n_rows), min((rank + 1) * size, n_rows))
