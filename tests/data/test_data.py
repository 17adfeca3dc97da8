import json

import pytest
import torch

from mrl.common import hub
from mrl.common.errors import ConfigError
from mrl.core.batch import collate_texts
from mrl.data.datamodule import NoDuplicatesBatchSampler
from mrl.data.sources import Source, load_source
from tests.conftest import write_jsonl

STSB_TEST = Source(
    hub_id="sentence-transformers/stsb",
    hub_split="test",
    local_file="stsb/test.jsonl",
    columns=("sentence1", "sentence2", "score"),
    local_score_max=5.0,
)
TRIPLETS = Source(
    hub_id="sentence-transformers/all-nli",
    hub_subset="triplet",
    hub_split="train",
    local_file="allnli/triplets-train.jsonl",
    columns=("anchor", "positive", "negative"),
)


def test_local_sts_scores_on_0_to_5_are_rescaled_to_0_to_1(data_dir):
    raw = [json.loads(line)["score"] for line in (data_dir / "stsb/test.jsonl").open()]
    ds = load_source(STSB_TEST)
    assert ds["score"] == pytest.approx([s / 5 for s in raw])
    assert max(raw) > 1  # the fixture really uses the 0-5 scale


def test_out_of_range_scores_are_rejected(data_dir):
    write_jsonl(data_dir / "stsb/test.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 7}])
    with pytest.raises(ConfigError, match=r"stsb/test.jsonl has scores in \[7.0, 7.0\]"):
        load_source(STSB_TEST)


def test_missing_column_names_file_and_column(data_dir):
    write_jsonl(data_dir / "allnli/triplets-train.jsonl", [{"anchor": "a", "positive": "b"}])
    with pytest.raises(ConfigError, match=r"triplets-train.jsonl lacks column\(s\) \['negative'\]"):
        load_source(TRIPLETS)


def test_missing_file_in_mirror(data_dir):
    (data_dir / "allnli/triplets-train.jsonl").unlink()
    with pytest.raises(ConfigError, match="MRL_DATA_DIR=.* has no allnli/triplets-train.jsonl"):
        load_source(TRIPLETS)


def test_offline_without_mirror_names_the_variables(monkeypatch):
    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(ConfigError, match="MRL_DATA_DIR.*MRL_MODEL_DIR"):
            load_source(TRIPLETS)
    finally:
        hub.hub_reachable.cache_clear()


def _put_in_hf_cache(cache, hub_id, subset, split, rows, tmp_path):
    """Lay `rows` out the way an online `load_dataset(hub_id, subset)` leaves them in the
    Hugging Face datasets cache (<namespace>___<name>/<subset>/<version>/<hash>/)."""
    import shutil

    from datasets.packaged_modules.json.json import Json

    source = tmp_path / "rows.jsonl"
    write_jsonl(source, rows)
    name = hub_id.split("/")[-1]
    builder = Json(
        cache_dir=str(tmp_path / "build"), dataset_name=name, config_name=subset,
        data_files={split: str(source)},
    )  # fmt: skip
    builder.download_and_prepare()
    target = cache / hub_id.replace("/", "___") / subset / "0.0.0" / "0123456789abcdef"
    shutil.copytree(builder.cache_dir, target)


def test_dataset_in_the_hf_cache_loads_offline(monkeypatch, tmp_path):
    import datasets.config

    cache = tmp_path / "hf-datasets"
    rows = [{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(6)]
    _put_in_hf_cache(
        cache, TRIPLETS.hub_id, TRIPLETS.hub_subset, TRIPLETS.hub_split, rows, tmp_path
    )
    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    hub.hub_reachable.cache_clear()
    try:
        ds = load_source(TRIPLETS)
        assert ds["anchor"] == [f"a{i}" for i in range(6)]
        # an empty cache: the one-line error says both places were looked in
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty"))
        with pytest.raises(ConfigError, match="not in the Hugging Face cache .*empty"):
            load_source(TRIPLETS)
    finally:
        hub.hub_reachable.cache_clear()


def test_a_list_of_negatives_becomes_k_columns_and_too_few_is_one_line(monkeypatch, tmp_path):
    import dataclasses

    rows = [
        {"anchor": f"a{i}", "positive": f"p{i}", "negatives": [f"n{i}.{j}" for j in range(3)]}
        for i in range(4)
    ]
    write_jsonl(tmp_path / "mined.jsonl", rows)
    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path))
    source = Source("x/y", "train", "mined.jsonl", ("anchor", "positive", "negatives"),
                    negatives_k=2)  # fmt: skip
    assert source.text_columns == ("anchor", "positive", "negatives_1", "negatives_2")
    ds = load_source(source)
    assert ds.column_names == ["anchor", "positive", "negatives_1", "negatives_2"]
    assert ds["negatives_2"] == ["n0.1", "n1.1", "n2.1", "n3.1"]
    with pytest.raises(ConfigError, match="line 1 has 3 negatives in 'negatives', fewer than "
                                          "negatives_k=4; lower negatives_k"):  # fmt: skip
        load_source(dataclasses.replace(source, negatives_k=4))
    with pytest.raises(ConfigError, match="negatives_k=0 must be null or a whole number >= 1"):
        load_source(dataclasses.replace(source, negatives_k=0))
    rows[2]["negatives"] = "n2"
    write_jsonl(tmp_path / "mined.jsonl", rows)
    with pytest.raises(ConfigError, match="line 3: field negatives is not a list of texts"):
        load_source(source)


def _rows(n, dup_every=3):
    # every `dup_every`-th row shares its positive with the previous row
    rows = []
    for i in range(n):
        positive = f"p{i - 1}" if i % dup_every == 0 and i else f"p{i}"
        rows.append((f"a{i}", positive, f"n{i}"))
    return rows


def test_batches_have_no_duplicate_texts_and_cover_every_row_once():
    rows = _rows(100)
    sampler = NoDuplicatesBatchSampler(rows, batch_size=16, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(100))
    for batch in batches:
        texts = [t for i in batch for t in rows[i]]
        assert len(texts) == len(set(texts))
    assert len(sampler) == len(batches)


def test_duplicates_are_allowed_when_switched_off():
    rows = [("same", f"p{i}", f"n{i}") for i in range(8)]
    assert [len(b) for b in NoDuplicatesBatchSampler(rows, 4, no_duplicates=False)] == [4, 4]
    assert [len(b) for b in NoDuplicatesBatchSampler(rows, 4, no_duplicates=True)] == [1] * 8


def test_order_depends_on_seed_and_epoch_only():
    rows = _rows(64)
    first = list(NoDuplicatesBatchSampler(rows, 8, seed=3))
    assert first == list(NoDuplicatesBatchSampler(rows, 8, seed=3))
    assert first != list(NoDuplicatesBatchSampler(rows, 8, seed=4))
    sampler = NoDuplicatesBatchSampler(rows, 8, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_ranks_split_the_same_global_batch():
    rows = _rows(64)
    global_batches = NoDuplicatesBatchSampler(rows, 8, seed=5).global_batches()
    shards = [list(NoDuplicatesBatchSampler(rows, 8, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    for batch, left, right in zip(global_batches, *shards, strict=True):
        assert sorted(left + right) == sorted(batch)


def test_collate_stacks_columns_for_one_encode():
    rows = [
        {"anchor_ids": [1, 2, 3], "positive_ids": [4]},
        {"anchor_ids": [5], "positive_ids": [6, 7]},
    ]
    batch = collate_texts(rows, ["anchor", "positive"], pad_id=0)
    assert batch["n_rows"] == 2
    assert batch["input_ids"].tolist() == [[1, 2, 3], [5, 0, 0], [4, 0, 0], [6, 7, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 1, 2]
    assert "scores" not in batch
    scored = collate_texts([{"s_ids": [1], "score": 0.5}], ["s"], pad_id=0)
    assert torch.equal(scored["scores"], torch.tensor([0.5]))


def test_truncated_jsonl_line_names_the_file(data_dir):
    path = data_dir / "allnli/triplets-train.jsonl"
    path.write_text(path.read_text() + '{"anchor": "cut off her')
    with pytest.raises(ConfigError, match="triplets-train.jsonl could not be read as JSON Lines"):
        load_source(TRIPLETS)
