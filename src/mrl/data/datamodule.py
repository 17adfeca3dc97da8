"""Training and evaluation data for Lightning: one-time tokenization, batches without duplicate
texts that resume mid-epoch, and the LightningDataModule (sources: `mrl.data.sources`; several
training datasets: `mrl.data.mixture`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from mrl.common.errors import ConfigError
from mrl.core.batch import collate_texts
from mrl.data.mixture import MixtureBatchSampler, MixtureRows, collate_mixture, mixture_datasets
from mrl.data.prompts import prompted
from mrl.data.sources import Source, load_source


def tokenize(
    ds: datasets.Dataset,
    tokenizer,
    text_columns: Sequence[str],
    max_length: int,
    prompts: dict[str, str] | None = None,
):
    """Adds `<column>_ids` token ids for each text column, once (cached by `datasets`), each
    text after its column's prompt if `prompts` has one (`mrl.data.prompts`)."""
    prompts = prompts or {}

    def encode(batch):
        return {
            f"{col}_ids": tokenizer(
                prompted(batch[col], prompts.get(col)), truncation=True, max_length=max_length
            )["input_ids"]
            for col in text_columns
        }

    return ds.map(encode, batched=True, desc="tokenizing")


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
    """Tokenized training triplets/pairs and STS validation/test pairs, from plain arguments.

    `train` is one training dataset; `mixture` (the plain `data.mixture` config) several, each
    batch from one of them (`mrl.data.mixture`), the batch naming it in `batch["dataset"]`.
    `prompts` ({column: prompt}) go before the training texts of those columns, `eval_prompt`
    before both sentences of the validation and test pairs. `pooling` (`model.pooling`) fits the
    tokenizer to it (`last` needs every text to end in EOS: `mrl.encoder.backbone.fit_tokenizer`).
    """

    def __init__(
        self,
        backbone: str,
        train: dict | None,
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
        mixture: dict | None = None,
        prompts: dict | None = None,
        eval_prompt: str | None = None,
        pooling: str = "mean",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.mixture = mixture_datasets(mixture) if mixture else None
        self.train_sources = (  # training sets by name: "train" alone, or the mixture's
            {d.name: d.source for d in self.mixture}
            if self.mixture
            else {"train": Source.from_config(train)}
        )
        self.sources = {
            "validation": Source.from_config(validation),
            "test": Source.from_config(test),
        }
        self.splits: dict[str, datasets.Dataset] = {}  # validation and test
        self.train_sets: dict[str, datasets.Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from mrl.encoder.backbone import load_tokenizer

        self.tokenizer = tokenizer = load_tokenizer(
            self.hparams.backbone, self.hparams.trust_remote_code, self.hparams.pooling
        )
        self.pad_id = tokenizer.pad_token_id
        for split, sources in (("train", self.train_sources), ("eval", self.sources)):
            for name, source in sources.items():
                ds = load_source(source)
                if split == "train" and self.hparams.max_train_samples:
                    ds = ds.select(range(min(self.hparams.max_train_samples, len(ds))))
                if len(ds) == 0:
                    raise ConfigError(f"the {name} data ({source.local_file}) has no rows.")
                columns = source.text_columns
                prompts = (
                    self.hparams.prompts
                    if split == "train"
                    else dict.fromkeys(columns, self.hparams.eval_prompt)
                )
                ds = tokenize(ds, tokenizer, columns, self.hparams.max_seq_length, prompts)
                (self.train_sets if split == "train" else self.splits)[name] = ds

    def _loader(self, ds, collate_fn, **batching) -> DataLoader:
        loader = ResumableLoader if "batch_sampler" in batching else DataLoader
        return loader(
            ds,
            num_workers=self.hparams.num_workers,
            # its own generator: starting an epoch then draws nothing from the global RNG that
            # dropout uses, so a run resumed mid-epoch draws the same masks as an uninterrupted one
            generator=torch.Generator().manual_seed(self.hparams.seed),
            collate_fn=collate_fn,
            **batching,
        )

    def _batch_sampler(self, name: str, rank: int, world: int) -> NoDuplicatesBatchSampler:
        ds, columns = self.train_sets[name], self.train_sources[name].text_columns
        return NoDuplicatesBatchSampler(
            list(zip(*(ds[c] for c in columns), strict=True)),
            self.hparams.batch_size,
            seed=self.hparams.seed,
            no_duplicates=self.hparams.no_duplicates,
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.mixture is None:
            columns = self.train_sources["train"].text_columns
            return self._loader(
                self.train_sets["train"],
                lambda rows: collate_texts(rows, columns, self.pad_id),
                batch_sampler=self._batch_sampler("train", rank, world),
            )
        names = [d.name for d in self.mixture]
        sampler = MixtureBatchSampler(
            [self._batch_sampler(name, 0, world) for name in names],
            [d.weight for d in self.mixture],
            order=self.hparams.mixture.get("order", "proportional"),
            seed=self.hparams.seed,
            rank=rank,
            world_size=world,
        )
        columns = [self.train_sources[name].text_columns for name in names]
        return self._loader(
            MixtureRows([self.train_sets[name] for name in names]),
            lambda rows: collate_mixture(rows, names, columns, self.pad_id),
            batch_sampler=sampler,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        """Rank r of W gets the r-th contiguous block of ceil(N / W) pairs; the module gathers
        the blocks back in order and drops the tail padding, so metrics see each pair once."""
        ds = self.splits[split]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            block = eval_block(len(ds), trainer.global_rank, trainer.world_size)
            ds = ds.select(range(block.start, block.stop))
        columns = self.sources[split].text_columns
        return self._loader(
            ds,
            lambda rows: collate_texts(rows, columns, self.pad_id),
            batch_size=self.hparams.eval_batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def eval_block(n_rows: int, rank: int, world_size: int) -> range:
    """The contiguous rows of an evaluation set that `rank` encodes (may be empty at the tail)."""
    size = -(-n_rows // world_size)
    return range(min(rank * size, n_rows), min((rank + 1) * size, n_rows))
