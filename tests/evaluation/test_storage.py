"""Stored prefixes (`eval.py storage=[...]`, `mrl.evaluation.storage`): each kind's similarity is
the one `python -m mrl.quantization` defines (its pair similarity is the reference), retrieval
ranks binary codes by Hamming distance, a random subset keeps each coordinate's calibration, and
eval.py scores every kind from one encode into its own complete folder, the first kind's equal
to a plain evaluation; bad input is one line, exit 2, nothing written."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mrl.artifacts.pairs import load_pairs
from mrl.artifacts.results import load_results
from mrl.evaluation.retrieval import load_query_scores, ndcg_per_query, retrieval_per_query
from mrl.evaluation.storage import KINDS, Calibration, Storage, bytes_per_embedding
from mrl.tools.quantization import pair_similarity
from tests.evaluation.test_evaluate import each_refused, evaluate
from tests.evaluation.test_query_scores import _toy_set


def _cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stored_prefix_has_the_quantization_tools_similarity(kind):
    rng = np.random.default_rng(0)
    cal = Calibration(rng.normal(size=(300, 24)).astype(np.float32))
    left, right = rng.normal(size=(2, 50, 24)).astype(np.float32)
    for d in (24, 7):
        reference = pair_similarity(left[:, :d], right[:, :d], kind, cal)
        store = Storage(kind, cal).stored
        ours = _cosine(store(left[:, :d]), store(right[:, :d]))
        if kind == "binary":  # +-1 per bit: cosine 1 - 2h/d, the share of equal bits 1 - h/d
            reference = 2 * reference - 1
        np.testing.assert_allclose(ours, reference, atol=1e-6)
        as_torch = store(torch.from_numpy(left[:, :d]))  # a tensor comes back as a tensor
        assert isinstance(as_torch, torch.Tensor)
        np.testing.assert_array_equal(as_torch.numpy(), store(left[:, :d]))
    assert Storage("binary", cal).stored(left[:, :5]).tolist() != left[:, :5].tolist()


def test_a_reordered_calibration_is_the_calibration_of_the_reordered_embeddings():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(200, 12)).astype(np.float32) * rng.uniform(0.1, 3, 12)
    order = rng.permutation(12)
    x = rng.normal(size=(9, 12)).astype(np.float32)
    for kind in ("int8", "binary"):
        moved = Storage(kind, Calibration(sample)).reordered(order).stored(x[:, order][:, :5])
        fresh = Storage(kind, Calibration(sample[:, order])).stored(x[:, order][:, :5])
        np.testing.assert_array_equal(moved, fresh)


def test_binary_retrieval_ranks_by_hamming_distance_ties_by_document_id():
    rng = np.random.default_rng(2)
    data = _toy_set(rng, n_docs=60, n_queries=10)
    queries, docs = rng.normal(size=(10, 16)), rng.normal(size=(60, 16))
    cal = Calibration(np.concatenate([queries, docs]))
    scores = retrieval_per_query(
        queries, docs, data, [16, 8], searched=Storage("binary", cal).searched
    )
    for d in (16, 8):
        bits_q, bits_d = queries[:, :d] > cal.median[:d], docs[:, :d] > cal.median[:d]
        hits = []
        for q in range(10):
            hamming = (bits_d != bits_q[q]).sum(1)
            order = sorted(range(60), key=lambda i: (hamming[i], data.corpus_ids[i]))
            hits.append([data.corpus_ids[i] in data.relevant[data.query_ids[q]] for i in order])
        n_relevant = np.array([len(data.relevant[q]) for q in data.query_ids])
        expected = ndcg_per_query(np.array(hits), n_relevant, 10)
        np.testing.assert_allclose(scores["ndcg@10"][d], expected, atol=1e-12)
    floats = retrieval_per_query(queries, docs, data, [16], searched=Storage("float16").searched)
    plain = retrieval_per_query(queries, docs, data, [16])
    np.testing.assert_allclose(floats["ndcg@10"][16], plain["ndcg@10"][16], atol=1e-12)


def test_eval_scores_every_kind_from_one_encode_like_the_quantization_tool(
    data_dir, tiny_model, tmp_path
):
    from mrl.tools.quantization import main as quantization

    dims = [32, 8, 4]
    evaluate([f"model={tiny_model}", "benchmarks=stsb", "dims=[32,8,4]"], tmp_path / "plain")
    evaluate([f"model={tiny_model}", "benchmarks=stsb", "dims=[32,8,4]",
              "storage=[float32,int8,binary,float16]"], tmp_path / "stored")  # fmt: skip
    quantization([str(tiny_model), "--name", "tiny", "--dims", *map(str, dims),
                  "--out", str(tmp_path / "q")])  # fmt: skip
    rows = [r.split(",") for r in (tmp_path / "q" / "quantization.csv").read_text().split()[1:]]
    tool = {(kind, int(dim)): float(rho) for _, kind, dim, _, rho in rows}
    plain = load_results(tmp_path / "plain")
    first = load_results(tmp_path / "stored")
    assert first.test == plain.test  # the first kind, float32: the plain evaluation, exactly
    assert first.extra["storage"]["folders"] == {
        "float32": ".", "int8": "storage/int8", "binary": "storage/binary",
        "float16": "storage/float16",
    }  # fmt: skip
    for kind in KINDS:
        folder = tmp_path / "stored" / ("." if kind == "float32" else f"storage/{kind}")
        results = load_results(folder)
        storage = results.extra["storage"]
        assert storage["kind"] == kind
        bytes_ = {str(d): bytes_per_embedding(d, kind) for d in dims}
        assert storage["bytes_per_embedding"] == bytes_
        if kind in ("int8", "binary"):
            assert storage["calibration"]["texts"] == 48  # the tiny mirror's 48 anchors
        pairs = load_pairs(folder / "test_pairs.npz")
        for d in dims:
            assert results.test[d] == pytest.approx(tool[(kind, d)], abs=1e-6), (kind, d)
            rho = spearmanr(pairs.sims[d], pairs.gold).statistic
            assert rho == pytest.approx(results.test[d], abs=1e-6)
    assert load_results(tmp_path / "stored" / "storage" / "binary").test[4] != plain.test[4]


def test_stored_random_subsets_and_retrieval_each_get_their_files(data_dir, tiny_model, tmp_path):
    from tests.data.test_beir import synthetic_set

    synthetic_set(data_dir / "beir" / "scifact")
    run_dir = tmp_path / "subset"
    evaluate([f"model={tiny_model}", "benchmarks=[stsb,scifact]", "dims=[16,4]",
              "transform=random_subset", "transform_fit.draws=2",
              "storage=[binary,float32]"], run_dir)  # fmt: skip
    binary = json.loads((run_dir / "results.json").read_text())
    assert binary["storage"]["kind"] == "binary" and binary["experiment"].endswith("as binary")
    assert binary["storage"]["bytes_per_embedding"] == {"16": 2, "4": 1}
    for folder in (run_dir, run_dir / "storage" / "float32"):
        results = json.loads((folder / "results.json").read_text())
        per_draw = results["posthoc"]["per_draw"]
        for i in range(2):
            pairs = load_pairs(folder / "draws" / str(i) / "test_pairs.npz")
            rho = spearmanr(pairs.sims[16], pairs.gold).statistic
            assert rho == pytest.approx(per_draw["stsb"]["16"][i], abs=1e-6)
            queries = load_query_scores(folder / "draws" / str(i) / "queries" / "scifact.npz")
            ndcg = queries.per_query["ndcg@10"][4].mean()
            assert ndcg == pytest.approx(per_draw["scifact/ndcg@10"]["4"][i], abs=1e-9)
    plain = json.loads((run_dir / "storage" / "float32" / "results.json").read_text())
    assert plain["benchmarks"]["stsb"] != binary["benchmarks"]["stsb"]


def test_bad_storage_input_is_one_line(data_dir, tiny_model, tmp_path, capsys):
    cases = {
        "storage=int4": "storage: 'int4' is not a storage kind; use float32, float16, int8",
        "storage=[int8,int8]": "names a kind twice",
        "storage=[]": "storage is empty",
        "storage=int8 storage_calibration=1": "storage_calibration=1 must be a whole number >= 2",
        "storage=int8 transform=csr": "a CSR code is stored as k (index, float32 value) pairs",
        "storage=[int8,float32] grid=true": "grid=true scores float32 prefixes",
        "storage=binary transform_fit.data.hub_split=test": "transform_fit.data is a test split",
    }
    each_refused(cases, [f"model={tiny_model}", "benchmarks=stsb"], tmp_path, capsys)


def test_storage_axis_picks_each_form_on_validation_and_puts_intervals_on_it(
    data_dir, tiny_model, tmp_path
):
    """experiments/storage_axis.py on two tiny 'representations' (the model's prefixes, and a
    random subset with 2 draws), every kind stored: each budget's form is the best on STS-B
    validation among those that fit, and each cell has its interval against the reference."""
    import csv
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.data.test_beir import synthetic_set

    synthetic_set(data_dir / "beir" / "scifact")
    study = tmp_path / "study"
    common = [f"model={tiny_model}", "benchmarks=storage_axis", "dims=[32,16,8,4]",
              "storage=[float32,int8,binary]"]  # fmt: skip
    evaluate(common, study / "prefix" / "seed1")
    evaluate(
        [*common, "transform=random_subset", "transform_fit.draws=2"], study / "subset" / "seed1"
    )
    script = ROOT / "experiments" / "storage_axis.py"
    out = subprocess.run(
        [sys.executable, str(script), str(study), "--reference", "prefix", "--budgets", "4", "16",
         "--n-boot", "200", "--out", str(study)],  # fmt: skip
        capture_output=True, text=True, env={**os.environ, "MRL_DATA_DIR": str(data_dir)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((study / "storage_axis.csv").open()))
    assert {(r["kind"], r["dim"]) for r in rows if r["representation"] == "prefix"} == {
        (k, d) for k in ("float32", "int8", "binary") for d in ("32", "16", "8", "4")
    }
    assert {r["runs"] for r in rows} == {"1", "2"}  # the subset's 2 draws are 2 runs
    md = (study / "storage_axis.md").read_text()
    for budget in (4, 16):
        fitting = [r for r in rows if r["representation"] == "prefix" and int(r["bytes"]) <= budget]
        best = max(fitting, key=lambda r: (float(r["stsb_dev"]), -int(r["bytes"])))
        label = f"{best['kind']} {best['dim']}d"
        assert f"{float(best['stsb_test']):.4f} ({label}, n=1)" in md, (budget, md)
    assert md.count("[") >= 4 and (study / "storage_axis.png").stat().st_size > 0
