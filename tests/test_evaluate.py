"""eval.py: any encoder at every dim on STS-B, STS12-16 and SICK-R; bad models in one line."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from mrl.encoder import Encoder, load_tokenizer
from mrl.evaluation import spearman_by_dim
from mrl.export import export_encoder
from tests.conftest import CONF, call_task

BENCHMARKS = ["stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr"]


@pytest.fixture
def sts_dir(data_dir):
    """The tiny mirror plus sts-extra files (copies of the STS-B split, enough to run)."""
    for i, name in enumerate(["sts12", "sts13", "sts14", "sts15", "sts16", "sickr-test"]):
        split = ("train", "validation", "test")[i % 3]
        target = data_dir / "sts-extra" / f"{name}.jsonl"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(data_dir / "stsb" / f"{split}.jsonl", target)
    return data_dir


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    encoder = Encoder("mrl/tiny-random-bert").eval()
    tokenizer = load_tokenizer("mrl/tiny-random-bert")
    folder = export_encoder(encoder, tokenizer, tmp_path / "model", 32, "mrl/tiny-random-bert")
    return folder, encoder, tokenizer


def evaluate(overrides, run_dir: Path):
    from mrl.evaluate import main

    return call_task(main, CONF / "evaluate", "evaluate", overrides, run_dir)


def test_every_benchmark_at_every_dim_matches_our_own_evaluation(sts_dir, tiny_model, tmp_path):
    folder, encoder, tokenizer = tiny_model
    run_dir = tmp_path / "eval"
    evaluate([f"model={folder}"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dims"] == [32, 16, 8, 4]
    assert list(results["benchmarks"]) == BENCHMARKS
    assert results["test"] == results["benchmarks"]["stsb"]
    table = (run_dir / "benchmarks.md").read_text()
    assert all(f"| {b} |" in table for b in BENCHMARKS) and "| **mean** |" in table
    assert (run_dir / "curve.png").is_file() and (run_dir / "curve.csv").is_file()

    rows = [json.loads(line) for line in (sts_dir / "stsb" / "test.jsonl").read_text().splitlines()]
    texts = [r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        emb = encoder(batch["input_ids"], batch["attention_mask"])
    ours = spearman_by_dim(emb[: len(rows)], emb[len(rows) :], [r["score"] for r in rows], [32, 8])
    for dim in (32, 8):
        assert results["test"][str(dim)] == pytest.approx(ours[dim], abs=1e-6)


def test_bad_models_and_dims_are_one_line(sts_dir, tiny_model, tmp_path, capsys):
    folder, _, _ = tiny_model
    with pytest.raises(SystemExit):
        evaluate([], tmp_path / "e0")
    assert "error: no model given; run python eval.py model=<" in capsys.readouterr().err
    empty = tmp_path / "no-weights"
    shutil.copytree(folder, empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(SystemExit):
        evaluate([f"model={empty}"], tmp_path / "e1")
    assert "holds no weights" in capsys.readouterr().err
    assert not (tmp_path / "e1").exists()
    with pytest.raises(SystemExit):
        evaluate([f"model={folder}", "dims=[64,8]"], tmp_path / "e2")
    assert "must be between 1 and the model's width 32" in capsys.readouterr().err
