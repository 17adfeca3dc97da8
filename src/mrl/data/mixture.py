"""Dataset mixtures: several training datasets, each batch drawn from one of them, in an epoch
order set by their weights (`data.mixture`; the losses per dataset: `mrl.run.module`).

A batch never mixes datasets, so in-batch negatives stay texts of the same kind and every batch
has the columns of one dataset. How weights act, per epoch: dataset i with weight w = n + f
(n whole, 0 <= f < 1) contributes n full passes over its rows, each in a fresh shuffle, then
the first round(f * B) batches of one more fresh pass (B: that pass's batch count, rounded half
up). So w=1 is every row once, 0.5 half the rows (another half each epoch), 2 every row twice;
with a constant B that is round(w * B) batches. Pass k of epoch e is the dataset's own
`NoDuplicatesBatchSampler` at epoch e * ceil(w) + k, so a dataset of weight <= 1 gets the very
batches a run on it alone would. The datasets' batches are then ordered:

- `proportional`: a random permutation of all of them (seed: run seed + epoch), so at every
  point of the epoch the datasets are mixed in proportion to their batch counts;
- `round_robin`: dataset 0, 1, 2, ..., 0, 1, 2, ..., skipping the datasets already used up.

Every rank computes the same order: at each step all ranks train on the same dataset, rank r
taking rows r, r + world_size, ... of the global batch (equal rows per rank).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler

from mrl.core.batch import collate_texts
from mrl.data.sources import Source

ORDERS = ("proportional", "round_robin")


@dataclass(frozen=True)
class MixtureDataset:
    """One dataset of `data.mixture.datasets`: its source, base loss name and weight."""

    name: str
    source: Source
    loss: str
    weight: float


def mixture_datasets(mixture: dict) -> list[MixtureDataset]:
    """The datasets of a (checked, plain) `data.mixture` config, in config order."""
    return [
        MixtureDataset(name, Source.from_config(d["source"]), d["loss"], float(d.get("weight", 1)))
        for name, d in mixture["datasets"].items()
    ]


def weighted_batches(sampler, weight: float, epoch: int) -> list[list[int]]:
    """One dataset's global batches for mixture epoch `epoch` under `weight` (module docstring).

    `sampler` is that dataset's `NoDuplicatesBatchSampler`; its epoch is moved pass by pass.
    """
    full, passes = int(weight), math.ceil(weight)
    batches = []
    for k in range(passes):
        sampler.set_epoch(epoch * passes + k)
        one_pass = sampler.global_batches()
        keep = len(one_pass) if k < full else math.floor((weight - full) * len(one_pass) + 0.5)
        batches.extend(one_pass[:keep])
    return batches


def batch_order(counts: Sequence[int], order: str, seed: int) -> list[int]:
    """The dataset of each step of the epoch, given each dataset's batch count."""
    if order == "round_robin":
        return [i for j in range(max(counts, default=0)) for i, n in enumerate(counts) if j < n]
    slots = [i for i, n in enumerate(counts) for _ in range(n)]
    permutation = torch.randperm(len(slots), generator=torch.Generator().manual_seed(seed))
    return [slots[p] for p in permutation.tolist()]


class MixtureBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (dataset, row) indices, one dataset per batch, resumable like
    `NoDuplicatesBatchSampler` (`epoch`, `set_epoch`, `skip`).

    `samplers`: one `NoDuplicatesBatchSampler` per dataset, made with this sampler's
    `world_size` (their global batches are cut to a multiple of it); their own `rank` is unused.
    """

    def __init__(
        self,
        samplers: Sequence,
        weights: Sequence[float],
        order: str = "proportional",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.samplers, self.weights, self.order = list(samplers), list(weights), order
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.skip = 0  # batches of this epoch already trained (set when resuming mid-epoch)
        self._cache: tuple[int, list[tuple[int, list[int]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[tuple[int, list[int]]]:
        """This epoch's (dataset, global batch) steps over all ranks (computed once per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            per_dataset = [
                weighted_batches(s, w, self.epoch)
                for s, w in zip(self.samplers, self.weights, strict=True)
            ]
            order = batch_order([len(b) for b in per_dataset], self.order, self.seed + self.epoch)
            taken = [0] * len(per_dataset)
            steps = []
            for i in order:
                steps.append((i, per_dataset[i][taken[i]]))
                taken[i] += 1
            self._cache = (self.epoch, steps)
        return self._cache[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip, self.skip = self.skip, 0
        for i, batch in self.global_batches()[skip:]:
            yield [(i, row) for row in batch[self.rank :: self.world_size]]

    def __len__(self) -> int:
        return len(self.global_batches())


class MixtureRows(Dataset):
    """The rows of several tokenized datasets, indexed by (dataset, row)."""

    def __init__(self, datasets: Sequence):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, dict]:
        return key[0], self.datasets[key[0]][key[1]]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[tuple[int, dict]]:
        """A batch's rows in one read per dataset (the DataLoader calls this for a batch)."""
        rows: list = [None] * len(keys)
        for i in dict.fromkeys(i for i, _ in keys):
            where = [k for k, key in enumerate(keys) if key[0] == i]
            columns = self.datasets[i][[keys[k][1] for k in where]]
            for k, values in zip(where, zip(*columns.values(), strict=True), strict=True):
                rows[k] = (i, dict(zip(columns, values, strict=True)))
        return rows


def collate_mixture(
    rows: list[tuple[int, dict]], names: Sequence[str], columns: Sequence[Sequence[str]], pad_id
) -> dict:
    """A batch of one dataset's rows, stacked with that dataset's text columns
    (`mrl.core.batch.collate_texts`), plus `dataset`: its name."""
    i = rows[0][0]
    batch = collate_texts([row for _, row in rows], columns[i], pad_id)
    batch["dataset"] = names[i]
    return batch
