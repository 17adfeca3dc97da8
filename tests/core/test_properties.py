"""Property-based tests (hypothesis, a bounded number of examples each): the data loader's
cleaning, the Matryoshka loss against its per-dim definition, and the no-duplicates sampler."""

import json
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mrl.common.errors import ConfigError
from mrl.core.losses import mnrl_loss, prefix_cosine_similarities
from mrl.core.matryoshka import matryoshka_mnrl_loss
from mrl.data.datamodule import NoDuplicatesBatchSampler
from mrl.data.sources import Source, load_source

# bounded so the file runs in ~20 s on 2 CPU cores; failing examples are kept in .hypothesis/
bounded = settings(max_examples=25, deadline=None)

COLUMNS = ("anchor", "positive", "negative")
TRIPLETS = Source(
    hub_id="sentence-transformers/all-nli",
    hub_split="train",
    local_file="triplets.jsonl",
    columns=COLUMNS,
)
texts = st.one_of(
    st.sampled_from([None, "", " ", "\t\n", "\u00a0", "a", "b", " a "]),
    st.text(max_size=6),  # any unicode (no lone surrogates)
)


def _kept(rows: list[tuple]) -> list[tuple]:
    """What load_source must return: rows with every text non-empty, first copies, in order."""
    good = [r for r in rows if all(t is not None and t.strip() for t in r)]
    return list(dict.fromkeys(good))


@bounded
@given(
    base=st.lists(st.tuples(texts, texts, texts), min_size=1, max_size=5),
    order=st.lists(st.integers(0, 4), min_size=1, max_size=16),  # indices into base: repeats
    omit_nulls=st.booleans(),
    ascii_only=st.booleans(),
)
def test_loader_keeps_exactly_the_nonempty_first_copies_in_order(
    base, order, omit_nulls, ascii_only
):
    rows = [base[i % len(base)] for i in order]
    with tempfile.TemporaryDirectory() as folder:  # a fresh path: no stale `datasets` cache
        lines = []
        for row in rows:
            obj = {
                c: t for c, t in zip(COLUMNS, row, strict=True) if t is not None or not omit_nulls
            }
            lines.append(json.dumps(obj, ensure_ascii=ascii_only) + "\n")
        Path(folder, "triplets.jsonl").write_text("".join(lines), encoding="utf-8")
        expected = _kept(rows)
        with mock.patch.dict(os.environ, {"MRL_DATA_DIR": folder}):
            _check_load(rows, expected, omit_nulls)


def _check_load(rows, expected, omit_nulls):
    if omit_nulls and all(t is None for r in rows for t in r):
        with pytest.raises(ConfigError, match="holds no rows"):
            load_source(TRIPLETS)
    elif omit_nulls and any(all(r[k] is None for r in rows) for k in range(3)):
        with pytest.raises(ConfigError, match=r"lacks column\(s\)"):
            load_source(TRIPLETS)
    elif not expected:
        with pytest.raises(ConfigError, match="has no row whose texts"):
            load_source(TRIPLETS)
    else:
        ds = load_source(TRIPLETS)
        assert [tuple(r[c] for c in COLUMNS) for r in ds] == expected


@st.composite
def loss_cases(draw):
    n = draw(st.integers(1, 8))
    width = draw(st.integers(1, 48))
    dims = sorted(draw(st.sets(st.integers(1, width), min_size=1, max_size=5)), reverse=True)
    weights = draw(st.lists(st.floats(0.01, 10), min_size=len(dims), max_size=len(dims)))
    n_candidates = n * draw(st.integers(1, 3))  # positives, then 0-2 hard negatives per row
    magnitude = 10.0 ** draw(st.integers(-3, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    anchors = magnitude * torch.randn(n, width, generator=g)
    candidates = magnitude * torch.randn(n_candidates, width, generator=g)
    scale = draw(st.floats(1, 50))
    return anchors, candidates, dims, weights, scale


@bounded
@given(case=loss_cases())
def test_matryoshka_loss_is_the_weighted_sum_of_single_dim_losses(case):
    anchors, candidates, dims, weights, scale = case
    total, per_dim = matryoshka_mnrl_loss(anchors, candidates, dims, weights, scale=scale)
    assert total.dim() == 0 and torch.isfinite(total)
    assert list(per_dim) == dims
    expected = 0.0
    for d, w in zip(dims, weights, strict=True):
        single = mnrl_loss(anchors[:, :d], candidates[:, :d], scale)  # normalises the slice
        assert torch.allclose(per_dim[d], single, rtol=1e-4, atol=1e-4)
        expected += w * single
    assert torch.allclose(total, expected, rtol=1e-4, atol=1e-4)


@bounded
@given(case=loss_cases())
def test_prefix_similarities_equal_slicing_and_renormalising(case):
    anchors, candidates, dims, _, _ = case
    sims = prefix_cosine_similarities(anchors, candidates, dims)
    assert len(sims) == len(dims)
    for d, sim in zip(dims, sims, strict=True):
        reference = F.normalize(anchors[:, :d], dim=-1) @ F.normalize(candidates[:, :d], dim=-1).T
        assert sim.shape == (len(anchors), len(candidates))
        assert torch.allclose(sim, reference, atol=1e-5)


# few distinct texts, so rows often share one (and a row may repeat a text of its own)
rows_of_texts = st.lists(
    st.tuples(*[st.sampled_from("abcdefghijklmnop")] * 2), min_size=1, max_size=40
)


@bounded
@given(
    rows=rows_of_texts,
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 1000),
    no_duplicates=st.booleans(),
)
def test_single_process_batches_are_a_permutation_without_duplicate_texts(
    rows, batch_size, seed, no_duplicates
):
    batches = list(NoDuplicatesBatchSampler(rows, batch_size, seed, no_duplicates))
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    for k, batch in enumerate(batches):
        assert 1 <= len(batch) <= batch_size
        if no_duplicates:
            texts = [t for i in batch for t in set(rows[i])]
            assert len(texts) == len(set(texts))
        if len(batch) < batch_size:  # short only when every row still to come clashes with it
            assert no_duplicates or k == len(batches) - 1
            in_batch = {t for i in batch for t in rows[i]}
            later = [i for b in batches[k + 1 :] for i in b]
            assert all(in_batch & set(rows[i]) for i in later)


@bounded
@given(
    rows=rows_of_texts,
    world_size=st.integers(2, 4),
    extra=st.integers(0, 6),
    seed=st.integers(0, 1000),
)
def test_ranks_get_equal_shards_of_duplicate_free_global_batches(rows, world_size, extra, seed):
    batch_size = world_size + extra
    samplers = [
        NoDuplicatesBatchSampler(rows, batch_size, seed, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    global_batches = samplers[0].global_batches()
    used = [i for b in global_batches for i in b]
    assert len(used) == len(set(used)) and set(used) <= set(range(len(rows)))
    shards = [list(s) for s in samplers]
    for k, batch in enumerate(global_batches):
        assert len(batch) % world_size == 0 and world_size <= len(batch) <= batch_size
        texts = [t for i in batch for t in set(rows[i])]
        assert len(texts) == len(set(texts))
        assert sorted(i for shard in shards for i in shard[k]) == sorted(batch)
        assert len({len(shard[k]) for shard in shards}) == 1
