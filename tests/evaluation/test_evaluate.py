"""eval.py: any encoder at every dim on STS-B, STS12-16 and SICK-R; bad models in one line; a
folder per setting that changes the numbers; no training code (no wandb, no Lightning)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrl.artifacts.export import export_encoder
from mrl.artifacts.results import load_results
from mrl.encoder.backbone import load_tokenizer, tiny_config
from mrl.encoder.encoder import Encoder
from mrl.evaluation.metrics import spearman_by_dim
from tests.conftest import CONF, ROOT, call_task

BENCHMARKS = ["stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr"]
OLD_EVAL = ROOT / "experiments" / "results" / "evals" / "allnli_mrl_seed42_results.json"


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
    from mrl.evaluation.evaluate import main

    return call_task(main, CONF / "evaluate", "evaluate", overrides, run_dir)


def one_error_line(err: str, text: str) -> None:
    """One `error: ` line holding `text`, no traceback (progress bars may come before it)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0] and "Traceback" not in err, err
    assert err.endswith(errors[0] + "\n"), err


def each_refused(cases: dict[str, str], common: list[str], tmp_path: Path, capsys) -> None:
    """Each case (space-separated overrides -> the message) after `common`: exit 2, one
    `error:` line holding the message, and no eval folder left behind."""
    for i, (overrides, message) in enumerate(cases.items()):
        with pytest.raises(SystemExit) as exit_info:
            evaluate([*common, *overrides.split()], tmp_path / f"t{i}")
        assert exit_info.value.code == 2, overrides
        one_error_line(capsys.readouterr().err, message)
        assert not (tmp_path / f"t{i}").exists(), overrides


def test_every_benchmark_at_every_dim_matches_our_own_evaluation(sts_dir, tiny_model, tmp_path):
    folder, encoder, tokenizer = tiny_model
    run_dir = tmp_path / "eval"
    evaluate([f"model={folder}"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["eval_dims"] == [32, 16, 8, 4] and results["schedule_dims"] == []
    assert list(results["benchmarks"]) == BENCHMARKS
    assert results["test"] == results["benchmarks"]["stsb"] and results["test_benchmark"] == "stsb"
    assert load_results(run_dir).benchmarks["sts12"][4] == results["benchmarks"]["sts12"]["4"]
    table = (run_dir / "benchmarks.md").read_text()
    assert all(f"| {b} |" in table for b in BENCHMARKS) and "| **mean** |" in table
    assert (run_dir / "curve.png").is_file() and (run_dir / "curve.csv").is_file()
    assert_pairs_match(run_dir, results)

    rows = [json.loads(line) for line in (sts_dir / "stsb" / "test.jsonl").read_text().splitlines()]
    texts = [r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        emb = encoder(batch["input_ids"], batch["attention_mask"])
    ours = spearman_by_dim(emb[: len(rows)], emb[len(rows) :], [r["score"] for r in rows], [32, 8])
    for dim in (32, 8):
        assert results["test"][str(dim)] == pytest.approx(ours[dim], abs=1e-6)


def assert_pairs_match(run_dir: Path, results: dict) -> None:
    """test_pairs.npz (the test benchmark) and pairs/<name>.npz (the other STS benchmarks)
    hold per-pair cosines whose Spearman against their gold scores is the stored score."""
    from scipy.stats import spearmanr

    from mrl.artifacts.pairs import load_pairs

    names = [n for n in results["benchmarks"] if "/" not in n]
    assert sorted(p.stem for p in (run_dir / "pairs").glob("*.npz")) == sorted(names[1:])
    for name in names:
        path = run_dir / (
            "test_pairs.npz" if name == results["test_benchmark"] else f"pairs/{name}.npz"
        )
        pairs = load_pairs(path)
        assert list(pairs.sims) == results["eval_dims"]
        for dim, sims in pairs.sims.items():
            rho = spearmanr(sims, pairs.gold).statistic
            assert rho == pytest.approx(results["benchmarks"][name][str(dim)], abs=1e-6)


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
    bad_dims = {
        "dims=[64,8]": "dims holds 64, larger than the backbone's hidden size 32",
        "dims=32": "dims=32 must be a list of dimensions",
        "dims=[a]": "dims holds 'a'; every entry must be a positive whole number",
        "dims=[8,8]": "dims repeats [8]",
    }
    each_refused(bad_dims, [f"model={folder}"], tmp_path, capsys)


def test_a_model_folder_without_tokenizer_files_is_refused(sts_dir, tmp_path, capsys):
    from transformers import BertModel

    folder = tmp_path / "bare-bert"
    BertModel(tiny_config()).save_pretrained(folder)  # weights and config, no tokenizer
    with pytest.raises(SystemExit) as exit_info:
        evaluate([f"model={folder}"], tmp_path / "e")
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, f"model={str(folder)!r}: {folder} has no tokenizer")


def test_each_setting_that_changes_the_numbers_gets_its_own_folder(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import mrl.evaluation.evaluate  # noqa: F401 (registers the folder resolvers)

    monkeypatch.setenv("MRL_OUTPUT_DIR", str(tmp_path))

    def folder(*overrides: str) -> str:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF / "evaluate"), version_base="1.3"):
            cfg = compose(
                "evaluate", overrides=["model=org/m", *overrides], return_hydra_config=True
            )
        HydraConfig.instance().set_config(cfg)
        GlobalHydra.instance().clear()
        return cfg.hydra.run.dir

    base = folder()
    assert base == f"{tmp_path}/evals/org_m"  # the folder of earlier versions
    assert folder("batch_size=8", "device=cpu") == base  # no number changes
    others = [
        folder("dims=[32,8]"), folder("max_seq_length=16"), folder("~benchmarks.sts12"),
        folder("benchmarks.stsb.local_file=other/test.jsonl"), folder("transform=pca"),
        folder("transform=adaptor", "transform_fit.epochs=2"),
    ]  # fmt: skip
    assert len({base, *others}) == 7 and all(o.startswith(base + "/") for o in others)
    assert folder("transform=pca", "transform_fit.export=true") == folder("transform=pca")
    assert "/" not in folder("benchmarks.stsb.local_file=a/b.jsonl")[len(base) + 1 :]


def test_a_finished_folder_is_done_only_for_its_own_settings(sts_dir, tiny_model, tmp_path, capsys):
    folder, _, _ = tiny_model
    run_dir = tmp_path / "eval"
    evaluate([f"model={folder}", "dims=[32,8]"], run_dir)
    before = (run_dir / "results.json").read_text()
    capsys.readouterr()
    evaluate([f"model={folder}", "dims=[8,32]", "batch_size=4"], run_dir)  # the same numbers
    assert "this evaluation is done" in capsys.readouterr().out
    for override in ("dims=[32,16]", "max_seq_length=8", "~benchmarks.sts12"):
        with pytest.raises(SystemExit) as exit_info:
            evaluate([f"model={folder}", "dims=[32,8]", override], run_dir)
        assert exit_info.value.code == 2
        one_error_line(capsys.readouterr().err, f"{run_dir} holds an evaluation with ")
    assert (run_dir / "results.json").read_text() == before

    # an evaluation written before the typed results (key `dims`) is still done, and still loads
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(OLD_EVAL, old / "results.json")
    model = json.loads(OLD_EVAL.read_text())["model"]
    evaluate([f"model='{model}'"], old)
    assert "this evaluation is done" in capsys.readouterr().out
    assert load_results(old).eval_dims == [384, 256, 128, 64, 32]


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_eval_py_names_no_logger_and_bad_dims_exit_2_without_traceback(
    sts_dir, tiny_model, tmp_path
):
    folder, _, _ = tiny_model
    env = {"MRL_OUTPUT_DIR": str(tmp_path / "out"), "MRL_DATA_DIR": str(sts_dir)}
    bad = _cli(["eval.py", f"model={folder}", "dims=32"], env)
    assert bad.returncode == 2
    one_error_line(bad.stderr, "error: dims=32 must be a list")
    good = _cli(["eval.py", f"model={folder}", "dims=[32,4]"], env)
    assert good.returncode == 0, good.stderr
    assert "| **mean** |" in good.stdout
    assert not [line for line in (good.stdout + good.stderr).splitlines() if "wandb" in line]
    assert not [line for line in (bad.stdout + bad.stderr).splitlines() if "wandb" in line]
    assert list((tmp_path / "out" / "evals").rglob("results.json"))[0].parent.name == "dims=_32_4"


# ---- the eval.py config fuzz: wrong types, signs, sizes and shapes for every option ----

_FUZZ_MODEL: list[Path] = []


def _fuzz_model(tmp_path_factory) -> Path:
    """One tiny exported model for every fuzz example."""
    if not _FUZZ_MODEL:
        torch.manual_seed(0)
        encoder = Encoder("mrl/tiny-random-bert").eval()
        out = tmp_path_factory.mktemp("fuzz-model") / "model"
        export_encoder(encoder, load_tokenizer("mrl/tiny-random-bert"), out, 32, "mrl/tiny")
        _FUZZ_MODEL.append(out)
    return _FUZZ_MODEL[0]


EVAL_OPTIONS = [
    "dims", "batch_size", "max_seq_length", "device", "trust_remote_code", "retrieval.index",
    "retrieval.nprobe", "retrieval.nlist", "transform", "transform_fit.max_samples",
    "transform_fit.epochs",
]  # fmt: skip
EVAL_VALUES = [
    "0", "-1", "2.5", "abc", "[]", "[a]", "[0]", "[-8]", "[64,64]", "[9999]", "32",
    "[32,8]", "true", "null", "1000000000000", "[1.5]", "''",
]  # fmt: skip


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=st.sampled_from(EVAL_OPTIONS), value=st.sampled_from(EVAL_VALUES))
def test_eval_config_fuzz_runs_or_stops_in_one_line(sts_dir, tmp_path_factory, option, value):
    """Each value either evaluates the tiny model or stops with exit 2 and one error line,
    never a traceback, leaving no eval folder behind when it stops."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    folder = _fuzz_model(tmp_path_factory)
    run_dir = tmp_path_factory.mktemp("evals") / "run"
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            evaluate([f"model={folder}", f"{option}={value}"], run_dir)
        code = 0
    except SystemExit as stop:
        code = stop.code
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 2), f"{option}={value}: exit {code}: {lines[-5:]}"
    if code == 2:
        assert len([x for x in lines if x.startswith("error:")]) == 1, f"{option}={value}: {lines}"
        assert not run_dir.exists(), f"{option}={value} left {run_dir}"


# ---- BEIR retrieval sets: one encode, every dim, one table with STS ----

METRICS = ["ndcg@10", "mrr@10", "recall@100", "map@100"]


def test_sts_and_a_retrieval_set_give_one_table_and_st_numbers(sts_dir, tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.data.test_beir import st_scores, synthetic_set

    folder, _, _ = tiny_model
    synthetic_set(sts_dir / "beir" / "scifact")
    run_dir = tmp_path / "eval"
    evaluate([f"model={folder}", "benchmarks=sts_and_scifact", "dims=[32,8,4]"], run_dir)
    results = load_results(run_dir)
    names = BENCHMARKS + [f"scifact/{m}" for m in METRICS]
    assert list(results.benchmarks) == names and results.test_benchmark == "stsb"
    assert results.eval_dims == [32, 8, 4]
    saved = json.loads((run_dir / "results.json").read_text())["benchmarks"]
    assert set(saved["scifact/ndcg@10"]) == {"32", "8", "4"}
    table = (run_dir / "benchmarks.md").read_text().splitlines()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table[2:]]
    assert rows == [*BENCHMARKS, "**mean**", *names[len(BENCHMARKS) :]]
    model = SentenceTransformer(str(folder), device="cpu")
    for dim in (32, 4):  # eval.py's batch size, as ST would be run on the same set
        theirs = st_scores(model, sts_dir / "beir" / "scifact", dim, batch_size=128)
        for metric, value in theirs.items():
            assert results.benchmarks[f"scifact/{metric}"][dim] == pytest.approx(value, abs=1e-4)
    again = tmp_path / "again"
    evaluate([f"model={folder}", "benchmarks=[sts,scifact]", "dims=[32,8,4]"], again)
    assert load_results(again).benchmarks == results.benchmarks


def test_a_retrieval_set_alone_and_an_approximate_index(sts_dir, tiny_model, tmp_path, capsys):
    from tests.data.test_beir import synthetic_set

    folder, _, _ = tiny_model
    synthetic_set(sts_dir / "beir" / "scifact")
    evaluate([f"model={folder}", "benchmarks=scifact"], tmp_path / "flat")
    out = capsys.readouterr().out
    assert "| **mean** |" not in out and "| scifact/ndcg@10 |" in out
    flat = load_results(tmp_path / "flat")
    assert list(flat.benchmarks) == [f"scifact/{m}" for m in METRICS]
    assert flat.eval_dims == [32, 16, 8, 4] and flat.test == flat.benchmarks["scifact/ndcg@10"]
    from mrl.evaluation.retrieval import load_query_scores

    saved = load_query_scores(tmp_path / "flat" / "queries" / "scifact.npz")
    assert len(saved.query_ids) == len(set(saved.query_ids)) > 1
    for metric, by_dim in saved.per_query.items():  # the per-query values behind each mean
        for dim, values in by_dim.items():
            assert values.mean() == pytest.approx(flat.benchmarks[f"scifact/{metric}"][dim])
    evaluate([f"model={folder}", "benchmarks=scifact", "retrieval.index=hnsw"], tmp_path / "hnsw")
    hnsw = load_results(tmp_path / "hnsw").benchmarks  # 130 documents: HNSW finds them all
    for name, by_dim in flat.benchmarks.items():
        assert hnsw[name] == pytest.approx(by_dim, abs=1e-6), name


def test_bad_retrieval_input_is_one_line(sts_dir, tiny_model, tmp_path, capsys):
    from tests.data.test_beir import synthetic_set

    folder, _, _ = tiny_model
    beir = sts_dir / "beir" / "scifact"
    synthetic_set(beir)
    (beir / "queries.jsonl").rename(beir / "queries.txt")
    cases = {
        "benchmarks=scifact": f"{beir} has no queries.jsonl; a BEIR folder holds corpus.jsonl",
        "+benchmarks.x={task:ranking,hub_id:a/b}": "benchmarks.x.task='ranking' is unknown",
        "+benchmarks.x={task:retrieval,hub_id:a/b}": "benchmarks.x needs hub_id and local_dir",
        "+benchmarks.scifact.qrels_fil=a": "benchmarks.scifact has unknown keys ['qrels_fil']",
        "retrieval.index=annoy": "retrieval.index='annoy' is unknown; use flat (exact), ivf",
        "retrieval.nprobe=0": "retrieval.nprobe=0 must be a whole number >= 1",
        "dims=[64,8]": "dims holds 64, larger than the backbone's hidden size 32",
    }
    for i, (override, message) in enumerate(cases.items()):
        overrides = [f"model={folder}", override]
        if override != "benchmarks=scifact":
            overrides.append("benchmarks=scifact")
        with pytest.raises(SystemExit) as exit_info:
            evaluate(overrides, tmp_path / f"r{i}")
        assert exit_info.value.code == 2, override
        one_error_line(capsys.readouterr().err, message)
        assert not (tmp_path / f"r{i}").exists(), override


def test_an_unknown_benchmark_set_is_one_line(capsys):
    from mrl.common.cli import check_config_choices

    with pytest.raises(SystemExit) as exit_info:
        check_config_choices(["benchmarks=scifakt"], CONF / "evaluate")
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, "benchmarks=scifakt is not a config in conf/")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+dimz=[32]", "dimz is not an option anything reads, so it would be ignored; did you "
         "mean dims?"),
        ("+bach_size=8", "did you mean batch_size?"),
        ("+retrieval.nprob=8", "did you mean retrieval.nprobe?"),
        ("+transform_fit.data.hub_idd=x", "did you mean transform_fit.data.hub_id?"),
        ("+benchmarks.stsb.columnz=[a]", "benchmarks.stsb.columnz is not a field of an STS "
         "benchmark, so it would be ignored; did you mean columns?"),
        # without +, Hydra refuses it and advises +dimz, which would be ignored: our line
        ("dimz=[32]", "dimz is not an option anything reads, so it would be ignored; did you "
         "mean dims?"),
    ],
)  # fmt: skip
def test_a_key_nothing_reads_is_one_line_naming_the_nearest(
    sts_dir, tiny_model, tmp_path, capsys, override, message
):
    from mrl.common.cli import hydra_errors_in_one_line
    from mrl.evaluation.evaluate import key_error_line

    with pytest.raises(SystemExit) as exit_info, hydra_errors_in_one_line(key_error_line):
        evaluate([f"model={tiny_model[0]}", override], tmp_path / "e")
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "e").exists()


def test_eval_keys_are_read_from_the_conf_evaluate_files(tmp_path):
    from mrl.evaluation.evaluate import eval_known_keys

    shutil.copytree(CONF / "evaluate", tmp_path / "evaluate")
    primary = tmp_path / "evaluate" / "evaluate.yaml"
    primary.write_text(primary.read_text() + "\nnew_option: 1\n")
    known = eval_known_keys(tmp_path / "evaluate")
    assert {"new_option", "dims", "retrieval.ef_search", "transform_fit.data.negatives_k"} <= set(
        known
    )
    assert "new_option" not in eval_known_keys(CONF / "evaluate")


# ---- post-hoc comparators: transform=pca|rotation|adaptor on any model ----


def test_each_transform_end_to_end_writes_its_map_results_and_pairs(sts_dir, tiny_model, tmp_path):
    from mrl.evaluation.adaptor import load_adaptor
    from mrl.evaluation.transforms import load_linear

    folder, _, _ = tiny_model
    evaluate([f"model={folder}"], tmp_path / "plain")
    plain = load_results(tmp_path / "plain")
    runs = {}
    for transform in ("pca", "rotation", "adaptor"):
        run_dir = tmp_path / transform
        evaluate([f"model={folder}", f"transform={transform}", "transform_fit.epochs=2"], run_dir)
        results = json.loads((run_dir / "results.json").read_text())
        assert results["config"]["transform"] == transform
        assert results["posthoc"]["transform"] == transform and results["posthoc"]["width"] == 32
        assert results["experiment"] == f"eval {folder} + {transform}"
        assert_pairs_match(run_dir, results)
        runs[transform] = load_results(run_dir)
    assert runs["pca"].extra["posthoc"]["rows"] == 48  # the tiny mirror's train triplets
    assert load_linear(tmp_path / "pca" / "pca.safetensors").kind == "pca"
    assert (tmp_path / "rotation" / "rotation.safetensors").is_file()
    for name in BENCHMARKS:  # a rotation keeps every full-width cosine, so its Spearman
        assert runs["rotation"].benchmarks[name][32] == pytest.approx(
            plain.benchmarks[name][32], abs=1e-6
        )
    history = runs["adaptor"].extra["posthoc"]["loss_history"]
    assert len(history) == 2 and runs["adaptor"].extra["posthoc"]["dims"] == [32, 16, 8, 4]
    adaptor, info = load_adaptor(tmp_path / "adaptor", width=32)
    assert info["kind"] == "linear" and info["loss_history"] == history

    # a saved adaptor is reused as it is (no data read), to the same numbers
    loaded = tmp_path / "loaded"
    evaluate([f"model={folder}", "transform=adaptor", f"transform_fit.load={tmp_path / 'adaptor'}"],
             loaded)  # fmt: skip
    for name, by_dim in load_results(loaded).benchmarks.items():
        assert by_dim == pytest.approx(runs["adaptor"].benchmarks[name], abs=1e-6)
    assert load_results(loaded).extra["posthoc"]["loaded_from"] == str(tmp_path / "adaptor")

    # the PCA model as a sentence-transformers folder: eval.py on it gives the same numbers
    exported = tmp_path / "exported"
    evaluate([f"model={folder}", "transform=pca", "transform_fit.export=true"], exported)
    assert (exported / "sentence-transformers" / "modules.json").is_file()
    evaluate([f"model={exported / 'sentence-transformers'}"], tmp_path / "again")
    again = load_results(tmp_path / "again")
    for name in BENCHMARKS:
        assert again.benchmarks[name] == pytest.approx(runs["pca"].benchmarks[name], abs=1e-5)


def test_bad_transform_input_is_one_line(sts_dir, tiny_model, tmp_path, capsys):
    folder, _, _ = tiny_model
    no_weights = tmp_path / "no-adaptor"
    no_weights.mkdir()
    cases = {
        "transform=whitening": "transform='whitening' is unknown; use null (the model as it is), "
        "pca, rotation, adaptor",
        "transform=pca,transform_fit.max_samples=5": "PCA needs at least 32 training embeddings to "
        "fit 32 axes, got ",
        f"transform=adaptor,transform_fit.load={no_weights}": f"transform_fit.load='{no_weights}' "
        "holds no adaptor.safetensors",
        "transform=adaptor,transform_fit.kind=mlp": "transform_fit.kind='mlp' is unknown; use one "
        "of linear, residual_mlp",
        "transform=adaptor,transform_fit.kind=residual_mlp,transform_fit.export=true": "has no "
        "stock sentence-transformers module",
        f"transform=pca,transform_fit.load={no_weights}": "transform_fit.load reuses a saved "
        "adaptor, but transform=pca",
        f"transform_fit.load={no_weights}": "transform_fit.load reuses a saved adaptor, but "
        "transform=null; set transform=adaptor",
        "transform_fit.seed=abc": "transform_fit.seed='abc' must be a whole number",
        "transform=pca,transform_fit.data.local_file=stsb/test.jsonl": "transform_fit.data is "
        "benchmark stsb's data",
        "transform=pca,transform_fit.data.hub_split=test": "transform_fit.data is a test split",
        "transform=adaptor,transform_fit.epochs=0": "transform_fit.epochs=0 must be a whole number",
        "transform=adaptor,transform_fit.lr=-1": "transform_fit.lr=-1 must be a number > 0",
    }
    for i, (overrides, message) in enumerate(cases.items()):
        with pytest.raises(SystemExit) as exit_info:
            evaluate([f"model={folder}", *overrides.split(",")], tmp_path / f"t{i}")
        assert exit_info.value.code == 2, overrides
        one_error_line(capsys.readouterr().err, message)
        assert not (tmp_path / f"t{i}").exists(), overrides


def test_a_transform_maps_the_retrieval_queries_and_documents_too(sts_dir, tiny_model, tmp_path):
    from omegaconf import OmegaConf
    from sentence_transformers import SentenceTransformer

    from mrl.data.beir import BeirSource, load_beir
    from mrl.evaluation.retrieval import encode_retrieval, retrieval_by_dim
    from mrl.evaluation.transforms import load_linear
    from tests.data.test_beir import synthetic_set

    folder, _, _ = tiny_model
    synthetic_set(sts_dir / "beir" / "scifact")
    run_dir = tmp_path / "eval"
    evaluate([f"model={folder}", "benchmarks=scifact", "transform=pca", "dims=[32,8]"], run_dir)
    results = load_results(run_dir)
    assert not (run_dir / "test_pairs.npz").exists()  # no STS benchmark: no pairs
    source = OmegaConf.load(CONF / "evaluate" / "benchmarks" / "scifact.yaml").scifact
    data = load_beir(BeirSource.from_config(source, "scifact"))
    queries, docs = encode_retrieval(SentenceTransformer(str(folder), device="cpu"), data, 128)
    pca = load_linear(run_dir / "pca.safetensors")
    ours = retrieval_by_dim(
        pca(torch.from_numpy(queries)).numpy(), pca(torch.from_numpy(docs)).numpy(), data, [32, 8]
    )
    for metric, by_dim in ours.items():
        assert results.benchmarks[f"scifact/{metric}"] == pytest.approx(by_dim, abs=1e-6)


def test_the_default_fit_data_is_the_allnli_training_split():
    from omegaconf import OmegaConf

    fit_data = OmegaConf.load(CONF / "evaluate" / "evaluate.yaml").transform_fit.data
    assert fit_data == OmegaConf.load(CONF / "data" / "allnli.yaml").train


def test_grid_true_writes_the_layers_by_dims_grid_and_encode_times(sts_dir, tiny_model, tmp_path):
    from mrl.evaluation.grid import parse_grid

    folder, encoder, tokenizer = tiny_model
    run_dir = tmp_path / "grid"
    evaluate([f"model={folder}", "benchmarks=stsb", "grid=true"], run_dir)
    results = load_results(run_dir)
    grid = parse_grid(results.extra["grid"])
    assert sorted(grid) == [1, 2] and sorted(grid[2]) == sorted(results.eval_dims)
    assert grid[2] == pytest.approx(results.test, abs=1e-6)  # the last layer is the model
    assert set(results.extra["encode_seconds_by_depth"]) == {"1", "2"}
    assert (run_dir / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_grid_with_a_transform_is_one_line(sts_dir, tiny_model, tmp_path, capsys):
    folder, _, _ = tiny_model
    with pytest.raises(SystemExit):
        evaluate([f"model={folder}", "benchmarks=stsb", "grid=true", "transform=pca"],
                 tmp_path / "g")  # fmt: skip
    one_error_line(capsys.readouterr().err, "grid=true scores the model's own layers")
