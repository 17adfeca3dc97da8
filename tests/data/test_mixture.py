"""Dataset mixtures (mrl.data.mixture, data.mixture): one dataset per batch, batch counts set by the
weights, seeded and resumable order, ranks in step, each dataset trained with its own loss."""

import csv
import json
import math
from collections import Counter

import datasets
import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.data.datamodule import NoDuplicatesBatchSampler, ResumableLoader
from mrl.data.mixture import (
    MixtureBatchSampler,
    MixtureRows,
    batch_order,
    collate_mixture,
    weighted_batches,
)
from mrl.run.checks import check_loss_columns
from tests.conftest import FAST

SIZES = (40, 23)  # rows per dataset; batches of 4: B = 10 and 6 (the last one of 3 rows)


def _rows(dataset: int, n: int) -> list[tuple[str, ...]]:
    return [(f"d{dataset} anchor {i}", f"d{dataset} positive {i}") for i in range(n)]


def _samplers(world=1, batch_size=4, sizes=SIZES):
    return [
        NoDuplicatesBatchSampler(_rows(d, n), batch_size, seed=7, world_size=world)
        for d, n in enumerate(sizes)
    ]


def _mixture(weights, order="proportional", rank=0, world=1, sizes=SIZES):
    return MixtureBatchSampler(
        _samplers(world, sizes=sizes), weights, order, seed=7, rank=rank, world_size=world
    )


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 2.0), (0.35, 1.5), (2.5, 0.2), (3, 1)])
@pytest.mark.parametrize("order", ["proportional", "round_robin"])
def test_batches_are_single_dataset_and_counts_follow_the_weights(weights, order):
    sampler = _mixture(weights, order)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len({i for i, _ in batch}) == 1 for batch in batches)
        counts = Counter(batch[0][0] for batch in batches)
        # constant batches per pass (no duplicate texts here): round(w * B), rounded half up
        for d, (n, w) in enumerate(zip(SIZES, weights, strict=True)):
            assert counts[d] == _round_half_up(w * math.ceil(n / 4)), (d, w)
        # w = n + f: n passes over every row, then part of one more; no row twice in a pass
        for d, (n, w) in enumerate(zip(SIZES, weights, strict=True)):
            seen = Counter(row for batch in batches for i, row in batch if i == d)
            assert set(seen) <= set(range(n))
            assert min(seen.get(r, 0) for r in range(n)) >= int(w)
            assert max(seen.values()) <= math.ceil(w)


def test_the_rule_counts_each_pass_when_passes_differ_in_length():
    """With duplicate texts a pass can have more batches than rows / batch size; the rule is
    per pass: n full passes, then round(f * B) batches of the next one."""
    rows = [("same", f"p{i}") if i % 3 == 0 else (f"a{i}", f"p{i}") for i in range(30)]
    sampler = NoDuplicatesBatchSampler(rows, 4, seed=1)
    passes = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        passes.append(sampler.global_batches())
    lengths = [len(p) for p in passes]
    assert len(set(lengths)) > 1  # really passes of different lengths
    for epoch in (0, 1):  # epoch 1 of a weight-2.5 dataset is its sampler's epochs 3, 4, 5
        first, second, third = passes[3 * epoch : 3 * epoch + 3]
        part = third[: _round_half_up(0.5 * len(third))]
        assert weighted_batches(sampler, 2.5, epoch) == first + second + part


def test_a_dataset_of_weight_one_gets_the_batches_of_a_run_on_it_alone():
    mixture = _mixture((1.0, 0.5))
    alone = NoDuplicatesBatchSampler(_rows(0, SIZES[0]), 4, seed=7)
    for epoch in (0, 1):
        mixture.set_epoch(epoch)
        alone.set_epoch(epoch)
        ours = [[row for _, row in batch] for batch in mixture if batch[0][0] == 0]
        assert ours == list(alone)


def test_round_robin_alternates_and_skips_a_used_up_dataset():
    assert batch_order([3, 1, 2], "round_robin", seed=0) == [0, 1, 2, 0, 2, 0]
    sampler = _mixture((1.0, 1.0), "round_robin")
    datasets_of_steps = [batch[0][0] for batch in sampler]
    assert datasets_of_steps == [0, 1] * 6 + [0] * 4


def test_proportional_order_is_seeded_by_run_seed_and_epoch():
    order = batch_order([10, 6], "proportional", seed=3)
    assert order == batch_order([10, 6], "proportional", seed=3)
    assert order != batch_order([10, 6], "proportional", seed=4)
    assert sorted(order) == [0] * 10 + [1] * 6
    sampler = _mixture((1.0, 1.0))
    first = list(sampler)
    assert first == list(_mixture((1.0, 1.0)))
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_two_ranks_agree_on_the_dataset_of_every_step_and_split_rows_disjointly():
    sizes = (41, 26)  # odd sizes: the global batches are cut to a multiple of the ranks
    whole = _mixture((1.0, 1.5), world=2, sizes=sizes)
    ranks = [_mixture((1.0, 1.5), rank=r, world=2, sizes=sizes) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in (whole, *ranks):
            sampler.set_epoch(epoch)
        steps = whole.global_batches()
        left, right = (list(s) for s in ranks)
        assert len(left) == len(right) == len(steps)
        for (dataset, batch), a, b in zip(steps, left, right, strict=True):
            assert {i for i, _ in a} == {i for i, _ in b} == {dataset}
            assert len(a) == len(b) >= 1  # equal rows per rank
            rows_a, rows_b = [r for _, r in a], [r for _, r in b]
            assert not set(rows_a) & set(rows_b)
            assert sorted(rows_a + rows_b) == sorted(batch)


def _tokenized(dataset: int, n: int, scored: bool) -> datasets.Dataset:
    rows = []
    for i in range(n):
        row = {"sentence1_ids": [dataset + 1, i + 2, 1], "sentence2_ids": [i + 3] * (1 + i % 3)}
        if scored:
            row["score"] = (i % 5) / 4
        rows.append(row)
    return datasets.Dataset.from_list(rows)


def _loader(sampler):
    sets = [_tokenized(0, SIZES[0], False), _tokenized(1, SIZES[1], True)]
    columns = [("sentence1", "sentence2")] * 2
    return ResumableLoader(
        MixtureRows(sets),
        batch_sampler=sampler,
        collate_fn=lambda rows: collate_mixture(rows, ["nli", "stsb"], columns, 0),
    )


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a
    )


def test_batches_collate_with_their_datasets_columns_and_name():
    for batch in _loader(_mixture((1.0, 1.0))):
        if batch["dataset"] == "stsb":
            assert batch["scores"].shape == (batch["n_rows"],)
        else:
            assert batch["dataset"] == "nli" and "scores" not in batch
        assert batch["input_ids"].shape[0] == 2 * batch["n_rows"]


@pytest.mark.parametrize("epoch", [0, 1])
def test_resume_mid_epoch_gives_the_remaining_batches_bit_for_bit(epoch):
    sampler = _mixture((0.5, 2.0))
    sampler.set_epoch(epoch)
    loader = _loader(sampler)
    uninterrupted = list(loader)
    stopped = _loader(_mixture((0.5, 2.0)))
    stopped.batch_sampler.set_epoch(epoch)
    for k, _ in enumerate(stopped):
        if k == 6:
            break
    state = stopped.state_dict()
    assert state == {"epoch": epoch, "consumed": 7}
    resumed = _loader(_mixture((0.5, 2.0)))  # a new process: fresh samplers
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(uninterrupted) - 7
    assert all(_same(a, b) for a, b in zip(rest, uninterrupted[7:], strict=True))


# ---- end to end: the mixture experiment on the tiny model ----

MIX = ["+exp=mixture_mrl", *FAST, "data.batch_size=8", "trainer.log_every_n_steps=1"]


def _loss_history(run_dir) -> list[dict]:
    """The train/loss... values of each row of metrics.csv that logged a training loss."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        rows = [r for r in csv.DictReader(file) if r.get("train/loss")]
    return [
        {k: v for k, v in r.items() if v and k.startswith(("step", "train/loss"))} for r in rows
    ]


def _own_losses(history: list[dict]) -> list[tuple]:
    """(step, dataset, its losses) of each row: the dataset whose loss is the batch's loss."""
    own = []
    for row in history:
        name = next(n for n in ("nli", "stsb") if row.get(f"train/loss/{n}") == row["train/loss"])
        dims = [k.split("@")[1] for k in row if k.startswith(f"train/loss/{name}@")]
        per_dim = [row[f"train/loss/{name}@{d}"] for d in dims]
        assert per_dim == [row[f"train/loss@{d}"] for d in dims]  # the batch's loss, twice
        own.append((row["step"], name, row["train/loss"], per_dim))
    return own


def test_the_mixture_experiment_trains_each_dataset_with_its_loss(data_dir, run_main, tmp_path):
    from mrl.run.module import MatryoshkaModule

    run_dir = tmp_path / "run"
    run_main([*MIX, "data.mixture.datasets.stsb.weight=1.5"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    # 48 triplets and 40 pairs in batches of 8: 6 NLI + round(1.5 * 5) = 8 STS-B batches
    assert results["global_step"] == 14
    assert set(results["test"]) == {"32", "16", "8", "4"}
    history = _loss_history(run_dir)
    header = set().union(*history)
    for name in ("nli", "stsb"):
        assert {f"train/loss/{name}@{d}" for d in (32, 16, 8, 4)} <= header
    # every step logs its own batch's loss under train/loss and under its dataset
    own = _own_losses(history)
    assert len(own) == 14 and Counter(o[1] for o in own) == {"nli": 6, "stsb": 8}
    assert all(len(o[3]) == 4 for o in own)
    module = MatryoshkaModule.load_from_checkpoint(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    assert {k: v.base.name for k, v in module.losses.items()} == {"nli": "mnrl", "stsb": "cosent"}


def test_the_mixture_trains_in_cached_mode(data_dir, run_main, tmp_path):
    run_dir = tmp_path / "run"
    run_main([*MIX, "loss.cached_mini_batch_size=4", "trainer.max_steps=6"], run_dir)
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 6


def test_a_mixture_run_stopped_mid_epoch_resumes_bit_for_bit(
    data_dir, run_main, tmp_path, monkeypatch
):
    from mrl.run.reliability import StopOnSignal

    args = [*MIX, "trainer.max_epochs=2", "data.mixture.datasets.stsb.weight=1.5"]
    run_main(args, tmp_path / "uninterrupted")
    expected = json.loads((tmp_path / "uninterrupted" / "results.json").read_text())

    real = StopOnSignal.on_train_batch_end

    def stop_at_17(self, trainer, *rest):  # epoch 1, batch 3 of 14: as if SIGTERM came
        if trainer.global_step == 17:
            self.received = "SIGTERM"
        return real(self, trainer, *rest)

    run_dir = tmp_path / "stopped"
    monkeypatch.setattr(StopOnSignal, "on_train_batch_end", stop_at_17)
    run_main(args, run_dir)
    assert not (run_dir / "results.json").exists()
    monkeypatch.setattr(StopOnSignal, "on_train_batch_end", real)
    run_main(args, run_dir)
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["global_step"] == expected["global_step"] == 28
    assert resumed["test"] == expected["test"] and resumed["validation"] == expected["validation"]
    # each step's loss, under train/loss and its dataset, once (Lightning shows a dataset's
    # latest loss until its next batch, which a resumed run has not seen before its first)
    assert _own_losses(_loss_history(run_dir)) == _own_losses(
        _loss_history(tmp_path / "uninterrupted")
    )


def test_old_checkpoints_without_dataset_losses_train_one_loss():
    from mrl.encoder.backbone import TINY_BACKBONE
    from mrl.run.hparams import grouped_hparams
    from mrl.run.module import MatryoshkaModule

    groups = grouped_hparams({"model": {"backbone": TINY_BACKBONE}, "loss": {"name": "cosent"}})
    assert groups["dataset_losses"] == {}
    module = MatryoshkaModule(**groups)
    assert list(module.losses) == [None] and module.loss.base.name == "cosent"


# ---- bad input: one line each ----


def _fails_in_one_line(run_main, run_dir, overrides, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_main(["+exp=mixture_mrl", *FAST, *overrides], run_dir)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2, err
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    assert not run_dir.exists()
    return errors[0]


STSB = "data.mixture.datasets.stsb"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"{STSB}.weight=0", f"{STSB}.weight=0 must be a number > 0"),
        (f"{STSB}.weight=-1.5", f"{STSB}.weight=-1.5 must be a number > 0"),
        (f"{STSB}.weight=abc", f"{STSB}.weight='abc' must be a number > 0"),
        (
            f"{STSB}.loss=mnrl",
            f"{STSB}.loss=mnrl ignores gold scores but {STSB}.source.columns=['sentence1', "
            f"'sentence2', 'score'] has one; use {STSB}.loss=cosent",
        ),
        (
            "data.mixture.datasets.nli.loss=angle",
            "data.mixture.datasets.nli.loss=angle trains on scored pairs but "
            "data.mixture.datasets.nli.source.columns=['anchor', 'positive', 'negative'] has no",
        ),
        (f"{STSB}.loss=triplet", f"{STSB}.loss='triplet' is unknown; use one of mnrl, cosent"),
        ("data.mixture.order=random", "data.mixture.order='random' must be one of proportional"),
        ("data.mixture.datasets=null", "data.mixture.datasets=None must name at least one"),
        (f"+{STSB}.wieght=2", f"{STSB} has unknown key(s) ['wieght']; it takes loss, weight"),
        (f"~{STSB}.source.columns", f"{STSB}.source=['hub_id', 'hub_score_max', 'hub_split',"),
        ("data.train.hub_id=x", "data.mixture replaces data.train, but both are set"),
    ],
    ids=lambda v: v if v.startswith(("data.", "+", "~")) else "",
)
def test_bad_mixture_input_is_one_line(data_dir, run_main, tmp_path, capsys, override, message):
    if override == "data.train.hub_id=x":  # give data.train a whole source again
        override = "data.train={hub_id:x,hub_split:train,local_file:x.jsonl,columns:[a,b]}"
    line = _fails_in_one_line(run_main, tmp_path / "run", [override], capsys)
    assert message in line, line


@pytest.mark.parametrize("empty", [{}, []])
def test_an_empty_mixture_is_one_line(empty):
    from omegaconf import OmegaConf

    from mrl.run.checks import check_mixture

    mixture = OmegaConf.create({"order": "proportional", "datasets": empty})
    with pytest.raises(ConfigError, match="must name at least one dataset") as error:
        check_mixture(mixture, None)
    assert str(error.value).startswith(f"data.mixture.datasets={empty!r} must name")


def test_the_column_check_takes_any_loss_columns_and_field():
    check_loss_columns("mnrl", ["q", "p", "n1", "n2"], "x.columns")
    check_loss_columns("cosent", ["a", "b", "score"], "x.columns")
    with pytest.raises(ConfigError, match=r"^loss=cosent needs 2 text columns but x.columns="):
        check_loss_columns("cosent", ["a", "b", "c", "score"], "x.columns")
    with pytest.raises(ConfigError, match=r"^my.loss=mnrl needs >= 2 text columns but y=\['a'\]"):
        check_loss_columns("mnrl", ["a"], "y", "my.loss")


@pytest.mark.slow
def test_two_process_ddp_trains_a_mixture(tmp_path):
    """Lightning's 2 CPU processes: every step gathers the same dataset's batch on both ranks
    (a rank on another dataset would hang the gather or mismatch its shapes)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, make_data_dir

    env = {
        **os.environ,
        "MRL_DATA_DIR": str(make_data_dir(tmp_path / "data", n_triplets=48, n_pairs=41)),
        "MRL_OUTPUT_DIR": str(tmp_path / "out"),
        "WANDB_MODE": "offline",
    }
    args = ["+exp=mixture_mrl", "model=tiny", "logger=csv", "callbacks.progress_bar=none",
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.precision=32-true", "trainer.max_steps=6", "data.batch_size=8"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (results,) = list((tmp_path / "out").rglob("results.json"))
    assert json.loads(results.read_text())["global_step"] == 6
