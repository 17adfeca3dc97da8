"""A run exported as a sentence-transformers folder loads with no code of ours, embeds alike,
quietly (no "newly initialized" pooler), readable by colleagues (plain modes); its model card
is valid Hub metadata with a result per dim; --push-to-hub uploads it (Hub mocked), and
offline it stops in one line."""

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, metadata_load
from huggingface_hub.errors import LocalTokenNotFoundError
from huggingface_hub.repocard_data import model_index_to_eval_results

from mrl.artifacts.export import export_encoder, main, model_hparams
from mrl.artifacts.model_card import model_card
from mrl.artifacts.results import RunResults, load_results
from mrl.artifacts.run_folder import EXPORT_DIR
from mrl.common.hub import hub_reachable
from tests.conftest import FAST, ROOT

TEXTS = ["A dog runs in the park.", "A child sings.", "A man reads at home near the river."]
COMMITTED = ROOT / "experiments" / "results"
OLD_RESULTS = sorted(COMMITTED.rglob("*results.json"))  # runs and evals, old layouts included


def our_embeddings(run_dir, texts):
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    encoder = Encoder("mrl/tiny-random-bert", "mean")
    encoder.load_state_dict(
        {k[8:]: v for k, v in state["state_dict"].items() if k.startswith("encoder.")}
    )
    encoder.eval()
    batch = load_tokenizer("mrl/tiny-random-bert")(
        texts, padding=True, truncation=True, max_length=32, return_tensors="pt"
    )
    with torch.no_grad():
        return encoder(batch["input_ids"], batch["attention_mask"])


def test_export_round_trip_with_truncate_dim(data_dir, run_main, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    run_dir = tmp_path / "run"
    run_main(
        [
            "+exp=allnli_mrl",
            *FAST,
            "trainer.max_steps=3",
            "data.batch_size=8",
            "data.max_seq_length=32",
        ],
        run_dir,
    )
    folder = run_dir / EXPORT_DIR
    assert (folder / "model.safetensors").is_file()
    card = (folder / "README.md").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert f"| 4 | {results['test']['4']:.4f} |" in card and "## Training config" in card
    eval_dims = results.get("eval_dims", results.get("dims"))
    assert json.loads((folder / "mrl.json").read_text())["eval_dims"] == eval_dims
    assert_valid_card(folder / "README.md", {int(d): v for d, v in results["test"].items()})
    ours = our_embeddings(run_dir, TEXTS)
    full = SentenceTransformer(str(folder), device="cpu")
    assert full.max_seq_length == 32
    theirs = full.encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(theirs, ours, atol=1e-5)
    small = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    assert torch.allclose(small.encode(TEXTS, convert_to_tensor=True), ours[:, :8], atol=1e-5)

    # the command exports again from the checkpoint, to the same numbers; no overwrite
    main([str(run_dir), "--out", str(tmp_path / "again")])
    again = SentenceTransformer(str(tmp_path / "again"), device="cpu")
    assert torch.allclose(again.encode(TEXTS, convert_to_tensor=True), ours, atol=1e-5)
    assert (tmp_path / "again" / "mrl.json").read_text() == (folder / "mrl.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), "--out", str(tmp_path / "again")])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err

    # a checkpoint older than the run's end is not the tested model: refused unless asked for
    results["global_step"] = 999
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), "--out", str(tmp_path / "stale")])
    assert exit_info.value.code == 2
    assert "is from step 3 but the run ended at step 999" in capsys.readouterr().err
    main([str(run_dir), "--out", str(tmp_path / "stale")] + ["--allow-earlier-checkpoint"])
    assert "Note: weights from step 3 of 999" in (tmp_path / "stale" / "README.md").read_text()


def test_export_of_a_folder_without_weights_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for step, message in [("none", "holds no results.json"), ("results", "checkpoints/last.ckpt")]:
        if step == "results":  # checked before the results are read
            (run_dir / "results.json").write_text(json.dumps({"test": {}, "dims": []}))
        with pytest.raises(SystemExit) as exit_info:
            main([str(run_dir)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err
        assert err.count("\n") == 1


@pytest.fixture
def tiny():
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    torch.manual_seed(0)
    return Encoder("mrl/tiny-random-bert").eval(), load_tokenizer("mrl/tiny-random-bert")


def test_export_is_readable_by_colleagues(tiny, tmp_path):
    umask = os.umask(0o022)
    try:
        folder = export_encoder(*tiny, tmp_path / "shared" / "model", 32, "mrl/tiny-random-bert")
    finally:
        os.umask(umask)
    modes = {p.relative_to(folder): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # mkdtemp alone gives 0o700
    assert modes[type(folder)("model.safetensors")] == 0o644  # safetensors alone: 0o600
    assert all(m == (0o755 if (folder / p).is_dir() else 0o644) for p, m in modes.items())


def test_export_loads_without_alarming_output_and_embeds_alike(tiny, tmp_path, capfd, caplog):
    import transformers
    from sentence_transformers import SentenceTransformer

    encoder, tokenizer = tiny
    folder = export_encoder(encoder, tokenizer, tmp_path / "model", 32, "mrl/tiny-random-bert")
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        ours = encoder(batch["input_ids"], batch["attention_mask"])
    old = tmp_path / "old"  # an export of earlier versions: no model_kwargs
    old.mkdir()
    for path in folder.rglob("*"):
        target = old / path.relative_to(folder)
        target.mkdir() if path.is_dir() else target.write_bytes(path.read_bytes())
    (old / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))

    def loaded(path):
        capfd.readouterr()
        caplog.clear()
        model = SentenceTransformer(str(path), device="cpu")
        out = capfd.readouterr()
        return model, out.out + out.err + caplog.text

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # another test may have silenced it
    transformers.logging.enable_propagation()  # its records reach caplog too
    try:
        with caplog.at_level(logging.WARNING):
            _, old_output = loaded(old)
            model, output = loaded(folder)
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.disable_propagation()
    assert "MISSING" in old_output  # what this test catches, shown on the earlier layout
    assert "MISSING" not in output and "newly initialized" not in output, output
    assert model[0].model.pooler is None
    assert torch.allclose(model.encode(TEXTS, convert_to_tensor=True), ours, atol=1e-5)


def test_hparams_of_grouped_and_flat_checkpoints():
    grouped = {"model": {"backbone": "b", "pooling": "cls", "compile": False}, "loss": {}}
    assert model_hparams(grouped) == {"backbone": "b", "pooling": "cls", "compile": False}
    headed = {"model": {"backbone": "b", "projection_dim": 16}}  # export_run rebuilds the head
    assert model_hparams(headed)["projection_dim"] == 16
    flat = {"backbone": "b", "pooling": "mean", "trust_remote_code": True, "lr": 1e-5}
    assert model_hparams(flat) == {"backbone": "b", "pooling": "mean", "trust_remote_code": True}


@pytest.mark.parametrize("path", OLD_RESULTS, ids=lambda p: str(p.relative_to(COMMITTED)))
def test_old_committed_results_still_make_a_valid_model_card(path, tmp_path):
    results = load_results(path)
    card = model_card(results, results.backbone, results.full_dim)
    assert f"| {results.full_dim} | {results.test[results.full_dim]:.4f} | 100.0 % |" in card
    (tmp_path / "README.md").write_text(card)
    # eval.py: each benchmark at every dim, a retrieval set's metrics (`scifact/ndcg@10`...)
    # under one dataset entry per dim
    sets = list(dict.fromkeys(b.partition("/")[0] for b in results.benchmarks))
    meta = assert_valid_card(tmp_path / "README.md", results.test, len(sets) or 1)
    if results.benchmarks:
        names = {r["dataset"]["name"] for r in meta["model-index"][0]["results"]}
        assert names == {
            f"{'sts-test' if b == 'stsb' else b}-{d}" for b in sets for d in results.eval_dims
        }  # fmt: skip
    else:  # train.py: its backbone is a Hub id
        assert meta["base_model"] == results.backbone


def assert_valid_card(path, test, benchmarks=1):
    """README.md at `path` is Hub model-card metadata with an STS-B result per dim of `test`."""
    meta = metadata_load(path)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert {"sentence-transformers", "matryoshka", "feature-extraction"} <= set(meta["tags"])
    assert meta["widget"][0]["source_sentence"] and len(meta["widget"][0]["sentences"]) >= 2
    entries = meta["model-index"][0]["results"]
    assert len(entries) == benchmarks * len(test)  # one per (benchmark, dim)
    assert [e["dataset"]["name"] for e in entries[: len(test)]] == [f"sts-test-{d}" for d in test]
    card = ModelCard.load(path)
    sts = [r for r in card.data.eval_results if r.dataset_name.startswith("sts-test-")]
    assert {int(r.dataset_name.rsplit("-", 1)[1]): r.metric_value for r in sts} == test
    for r in sts:
        assert (r.task_type, r.metric_type) == ("sentence-similarity", "spearman_cosine")
        assert (r.dataset_type, r.dataset_split) == ("sentence-transformers/stsb", "test")
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name and len(results) == len(card.data.eval_results)
    return meta


def test_card_lists_retrieval_results_and_none_for_other_weights(tmp_path):
    results = RunResults(
        experiment="eval m", run_dir="x", backbone="outputs/runs/a/seed1/model=m",
        eval_dims=[64, 32], test={64: 0.8, 32: 0.7}, test_benchmark="stsb",
        benchmarks={
            "stsb": {64: 0.8, 32: 0.7}, "scifact/ndcg@10": {64: 0.6, 32: 0.5},
            "scifact/recall@100": {64: 0.9, 32: 0.8},
        },
        config={"benchmarks": {
            "stsb": {"hub_id": "sentence-transformers/stsb", "hub_split": "test"},
            "scifact": {"task": "retrieval", "hub_id": "BeIR/scifact", "qrels_split": "test"},
        }},
    )  # fmt: skip
    card = tmp_path / "README.md"
    card.write_text(model_card(results, results.backbone, 64, repo_id="me/m"))
    meta = assert_valid_card(card, results.test, benchmarks=2)
    assert "base_model" not in meta and meta["model-index"][0]["name"] == "me/m"
    assert 'SentenceTransformer("me/m", truncate_dim=64)' in card.read_text()
    found = [r for r in ModelCard.load(card).data.eval_results if r.task_type == "retrieval"]
    assert {(r.dataset_type, r.dataset_split) for r in found} == {("BeIR/scifact", "test")}
    retrieval = {(r.dataset_name, r.metric_type): r.metric_value for r in found}
    assert retrieval == {
        ("scifact-64", "ndcg_at_10"): 0.6, ("scifact-32", "ndcg_at_10"): 0.5,
        ("scifact-64", "recall_at_100"): 0.9, ("scifact-32", "recall_at_100"): 0.8,
    }  # fmt: skip
    for note, debug in [("weights from step 1 of 3", False), (None, True)]:
        results.debug = debug
        card.write_text(model_card(results, "org/base", 64, note=note))
        meta = metadata_load(card)
        assert "model-index" not in meta and meta["base_model"] == "org/base"
        assert ModelCard.load(card).data.eval_results is None


@pytest.fixture
def tiny_run(tiny, tmp_path):
    """A finished run folder of the tiny model (results.json, checkpoints/last.ckpt)."""
    encoder, _ = tiny
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    state = {
        "state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
        "global_step": 3,
        "hyper_parameters": {"model": {"backbone": "mrl/tiny-random-bert", "pooling": "mean"}},
    }
    torch.save(state, run_dir / "checkpoints" / "last.ckpt")
    results = RunResults(
        experiment="tiny", run_dir=str(run_dir), backbone="mrl/tiny-random-bert",
        eval_dims=[32, 16, 8], test={32: 0.5, 16: 0.4, 8: 0.3}, global_step=3, seed=0,
        config={"data": {"max_seq_length": 32}},
    )  # fmt: skip
    (run_dir / "results.json").write_text(results.to_json())
    return run_dir


@pytest.fixture
def hub_calls(monkeypatch):
    """HfApi.create_repo / upload_folder recorded instead of sent (what would be uploaded)."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        readme = (folder / "README.md").read_text()
        calls.append(("upload_folder", repo_id, {**kwargs, "folder_path": folder_path,
                                                 "files": files, "readme": readme}))  # fmt: skip

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_the_export(tiny_run, hub_calls, monkeypatch, capsys):
    monkeypatch.setattr("mrl.common.hub.hub_reachable", lambda: True)
    main([str(tiny_run), "--push-to-hub", "me/tiny-mrl", "--private"])
    (_, repo, created), (_, uploaded_to, upload) = hub_calls
    assert repo == uploaded_to == "me/tiny-mrl"
    assert created["private"] is True and created["exist_ok"] and created["repo_type"] == "model"
    export = tiny_run / EXPORT_DIR
    assert upload["folder_path"] == export and upload["repo_type"] == "model"
    assert {"model.safetensors", "README.md", "modules.json", "mrl.json"} <= set(upload["files"])
    assert "1_Pooling/config.json" in upload["files"] and "tokenizer.json" in upload["files"]
    assert 'SentenceTransformer("me/tiny-mrl", truncate_dim=64)' in upload["readme"]
    assert_valid_card(export / "README.md", {32: 0.5, 16: 0.4, 8: 0.3})
    out = capsys.readouterr().out
    assert f"exported to {export}" in out and "pushed to https://huggingface.co/me/tiny-mrl" in out

    # exported already: a fresh export from a temporary folder is pushed, public by default
    hub_calls.clear()
    before = (export / "README.md").read_text()
    main([str(tiny_run), "--push-to-hub", "me/tiny-mrl"])
    (_, _, created), (_, _, upload) = hub_calls
    assert created["private"] is None  # the Hub's default for a new repo
    assert upload["folder_path"] != export and not upload["folder_path"].exists()
    assert "model.safetensors" in upload["files"] and (export / "README.md").read_text() == before
    assert "exported to" not in capsys.readouterr().out


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


def test_push_offline_or_refused_is_one_line(tiny_run, hub_calls, offline, monkeypatch, capsys):
    def one_line_error(argv, *words):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
        assert all(w in err for w in words), err

    run = str(tiny_run)
    one_line_error([run, "--push-to-hub", "me/tiny-mrl"], "me/tiny-mrl", "Hub is unreachable")
    assert not hub_calls and not (tiny_run / EXPORT_DIR).exists()  # nothing written anywhere
    one_line_error([run, "--push-to-hub", "me/a/b"], "'me/a/b' is not a Hub repo id")
    one_line_error([run, "--private"], "--private only applies with --push-to-hub")

    monkeypatch.setattr("mrl.common.hub.hub_reachable", lambda: True)  # online, but not logged in

    def no_token(self, *args, **kwargs):
        raise LocalTokenNotFoundError("Token is required, but no token found.\nLog in first.")

    monkeypatch.setattr(HfApi, "upload_folder", no_token)
    one_line_error([run, "--push-to-hub", "me/tiny-mrl"], "pushing to me/tiny-mrl failed: Token")


def test_prompts_train_evaluate_and_export_by_name(data_dir, run_main, tmp_path):
    """data.prompts go before the training texts, eval.prompt before the STS pairs; the export
    names them, so encode(prompt_name=...) embeds as training did and a plain encode as the
    STS test did (its Spearman is the run's)."""
    from sentence_transformers import SentenceTransformer

    from mrl.evaluation.metrics import spearman_by_dim

    run_dir = tmp_path / "run"
    prompts = "data.prompts={anchor:'query: ',positive:'passage: ',negative:'passage: '}"
    run_main(
        ["+exp=allnli_mrl", *FAST, "trainer.max_steps=3", "data.batch_size=8",
         "data.max_seq_length=32", prompts, "eval.prompt='query: '"],
        run_dir,
    )  # fmt: skip
    folder = run_dir / EXPORT_DIR
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert config["default_prompt_name"] == "query"
    model = SentenceTransformer(str(folder), device="cpu")
    for name, prompt in config["prompts"].items():
        ours = our_embeddings(run_dir, [prompt + t for t in TEXTS])
        theirs = model.encode(TEXTS, prompt_name=name, convert_to_tensor=True)
        assert torch.allclose(theirs, ours, atol=1e-5), name
        assert not torch.allclose(theirs, our_embeddings(run_dir, TEXTS), atol=1e-3)
    # the plain encode uses the eval prompt: the STS-B test Spearman of the run, at every dim
    rows = [json.loads(line) for line in (data_dir / "stsb" / "test.jsonl").open()]
    left, right = (
        model.encode([r[k] for r in rows], convert_to_tensor=True)
        for k in ("sentence1", "sentence2")
    )
    gold = torch.tensor([r["score"] for r in rows])
    results = json.loads((run_dir / "results.json").read_text())
    spearman = spearman_by_dim(left, right, gold, [32, 16, 8, 4])
    assert spearman == pytest.approx({int(d): v for d, v in results["test"].items()}, abs=1e-4)


def test_an_export_without_prompts_has_none(tiny, tmp_path):
    folder = export_encoder(*tiny, tmp_path / "model", 32, "mrl/tiny-random-bert")
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {} and config["default_prompt_name"] is None


def test_prompt_names_in_the_export():
    from mrl.data.prompts import export_prompts, prompt_name

    assert prompt_name("query: ", "anchor") == "query"
    assert prompt_name("Represent this sentence: ", "anchor") == "anchor"
    assert prompt_name("Query: ", "positive", taken=["query"]) == "positive"
    config = {"data": {"prompts": {"sentence1": "s: ", "sentence2": "s: "}}, "eval": {}}
    assert export_prompts(config) == {"prompts": {"s": "s: "}, "default_prompt_name": None}
    config["eval"]["prompt"] = "Represent it: "
    assert export_prompts(config) == {
        "prompts": {"s": "s: ", "eval": "Represent it: "}, "default_prompt_name": "eval",
    }  # fmt: skip


def test_prompts_go_before_the_training_and_eval_texts_they_name(data_dir):
    from mrl.data.datamodule import MatryoshkaDataModule
    from mrl.encoder.backbone import load_tokenizer
    from tests.data.test_data import STSB_TEST, TRIPLETS

    source = {k: v for k, v in vars(TRIPLETS).items() if v is not None}
    sts = {k: v for k, v in vars(STSB_TEST).items() if v is not None}
    dm = MatryoshkaDataModule(
        "mrl/tiny-random-bert", source, sts, sts, max_seq_length=32,
        prompts={"anchor": "query: "}, eval_prompt="sts: ",
    )  # fmt: skip
    dm.setup("fit")
    tok = load_tokenizer("mrl/tiny-random-bert")

    def ids(texts):
        return tok(texts, truncation=True, max_length=32)["input_ids"]

    train, test = dm.train_sets["train"].to_dict(), dm.splits["test"].to_dict()
    assert train["anchor_ids"] == ids(["query: " + t for t in train["anchor"]])
    assert train["positive_ids"] == ids(train["positive"])  # no prompt for that column
    for column in ("sentence1", "sentence2"):
        assert test[f"{column}_ids"] == ids(["sts: " + t for t in test[column]])


def test_card_lists_every_dataset_of_a_mixture():
    from mrl.artifacts.model_card import card_metadata

    def source(hub_id):
        return {"hub_id": hub_id, "hub_split": "train", "local_file": "x", "columns": ["a"]}

    nli, stsb = source("sentence-transformers/all-nli"), source("sentence-transformers/stsb")
    mixture = {"datasets": {"nli": {"loss": "mnrl", "source": nli},
                            "stsb": {"loss": "cosent", "source": stsb}}}  # fmt: skip
    results = RunResults(experiment="m", run_dir="x", backbone=None, eval_dims=[8], test={8: 0.5},
                         config={"data": {"train": None, "mixture": mixture}})  # fmt: skip
    meta = card_metadata(results, None)
    assert meta["datasets"] == ["sentence-transformers/all-nli", "sentence-transformers/stsb"]


@pytest.mark.parametrize(
    ("width", "info", "advised"),
    [
        (384, {"eval_dims": [384, 256, 128, 64, 32]}, 64),  # MiniLM: 64 keeps 1/6 of it
        (32, {"eval_dims": [32, 16, 8, 4]}, 8),  # the tiny model: never 64, beyond its width
        (1024, {"eval_dims": [1024, 512, 256, 128, 86]}, 256),
        (768, None, 192),  # no mrl.json (a stock model): a quarter of the width
        (384, {"eval_dims": [384, 128], "projection_dim": 48}, 12),  # the head's width counts
        (2, {"eval_dims": "bad"}, 1),
    ],
)
def test_the_advised_truncate_dim_fits_the_width(tmp_path, width, info, advised):
    from mrl.artifacts.export import advised_dim
    from mrl.artifacts.run_folder import MRL_INFO

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": width})
    )
    if info is not None:
        (tmp_path / MRL_INFO).write_text(json.dumps(info))
    assert advised_dim(tmp_path) == advised
