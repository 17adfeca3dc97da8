"""`python -m mrl.mteb`: MTEB's scoring of a tiny model at every dim equals our own metrics
(STS Spearman, BEIR nDCG@10) on a tiny mirror, each text is encoded once for all dims, a dim is
what `SentenceTransformer(truncate_dim=d)` gives, the results land in MTEB's layout per dim, and
bad input is one `error:` line with exit 2 and nothing left behind."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _sentence, make_data_dir, write_jsonl

pytest.importorskip("mteb")

from mrl.tools import mteb_bridge  # noqa: E402
from mrl.tools.mteb_bridge import TABLE_JSON, main  # noqa: E402

DIMS = [32, 16, 4]
TASKS = ["STSBenchmark", "SICK-R", "SciFact"]
COLUMNS = ("sentence1", "sentence2", "score")
METRICS = {"ndcg@10": "ndcg_at_10", "mrr@10": "mrr_at_10", "recall@100": "recall_at_100",
           "map@100": "map_at_100"}  # fmt: skip


def write_mirror(root: Path) -> Path:
    """make_data_dir's STS-B splits, SICK-R's three files (1-5 scores) and a BEIR SciFact
    folder of 60 distinct documents (some titled; no
    exact ties) and 10 queries with 1-3 relevant documents each."""
    make_data_dir(root, n_pairs=40)
    rng = random.Random(7)
    for split in ("train", "trial", "test"):
        pairs = [
            {"sentence1": _sentence(rng), "sentence2": _sentence(rng), "score": rng.uniform(1, 5)}
            for _ in range(15)
        ]
        write_jsonl(root / "sts-extra" / f"sickr-{split}.jsonl", pairs)
    folder = root / "beir" / "scifact"
    corpus = [
        {"_id": f"d{i}", "title": rng.choice(["", f"Title {i}"]), "text": f"{_sentence(rng)} #{i}"}
        for i in range(60)
    ]
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(
        folder / "queries.jsonl",
        [{"_id": f"q{i}", "text": f"{_sentence(rng)} ?{i}"} for i in range(10)],
    )
    qrels = ["query-id\tcorpus-id\tscore"]
    for i in range(10):
        qrels += [f"q{i}\td{j}\t1" for j in rng.sample(range(60), rng.randint(1, 3))]
    (folder / "qrels" / "test.tsv").parent.mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return root


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    root = write_mirror(tmp_path / "data")
    monkeypatch.setenv("MRL_DATA_DIR", str(root))
    monkeypatch.delenv("MRL_MODEL_DIR", raising=False)
    return root


def our_scores(folder: Path) -> dict[str, dict[int, float]]:
    """eval.py's own numbers on the mirror: Spearman of prefix cosines, BEIR nDCG@10."""
    from sentence_transformers import SentenceTransformer

    from mrl.data.beir import BeirSource, load_beir
    from mrl.data.sources import Source, load_source
    from mrl.evaluation.evaluate import encode_benchmark
    from mrl.evaluation.metrics import spearman_by_dim
    from mrl.evaluation.retrieval import encode_retrieval, retrieval_by_dim

    model = SentenceTransformer(str(folder), device="cpu")
    scores = {}
    sickr = [f"sts-extra/sickr-{split}.jsonl" for split in ("train", "trial", "test")]
    sts = {"STSBenchmark": ["stsb/test.jsonl"], "SICK-R": sickr}
    for name, files in sts.items():
        left, right, gold = [], [], []
        for file in files:
            ds = load_source(Source("x", "test", file, COLUMNS, local_score_max=5.0))
            a, b = encode_benchmark(model, ds, 16)
            left.append(a), right.append(b), gold.extend(ds["score"])
        import torch

        scores[name] = spearman_by_dim(torch.cat(left), torch.cat(right), gold, DIMS)
    data = load_beir(BeirSource(hub_id="x", local_dir="beir/scifact"))
    queries, docs = encode_retrieval(model, data, 16)
    retrieval = retrieval_by_dim(queries, docs, data, DIMS)
    scores.update(retrieval, SciFact=retrieval["ndcg@10"])
    return scores


def test_mteb_scores_equal_ours_at_every_dim_from_one_encode(
    mirror, tiny_model, tmp_path, monkeypatch
):
    from mteb.models import SentenceTransformerEncoderWrapper

    calls = []
    encode = SentenceTransformerEncoderWrapper.encode

    def counted(self, inputs, **kwargs):
        calls.append(kwargs["task_metadata"].name)
        return encode(self, inputs, **kwargs)

    monkeypatch.setattr(SentenceTransformerEncoderWrapper, "encode", counted)
    out = tmp_path / "mteb"
    main([str(tiny_model), "--tasks", *TASKS, "--dims", "4", "32", "16", "--out", str(out),
          "--batch-size", "16", "--device", "cpu"])  # fmt: skip
    # one full-width encode per task side, not one per dim: STS (2 sides), SciFact (queries,
    # documents)
    assert sorted(calls) == sorted(["STSBenchmark"] * 2 + ["SICK-R"] * 2 + ["SciFact"] * 2)
    table = json.loads((out / TABLE_JSON).read_text())
    assert table["tool"] == "mrl.mteb" and table["dims"] == DIMS and table["max_seq_length"] == 32
    ours = our_scores(tiny_model)
    for name in TASKS:
        row = table["tasks"][name]
        assert row["main_score"] == ("ndcg_at_10" if name == "SciFact" else "cosine_spearman")
        for dim in DIMS:
            want = ours[name][dim]
            if name == "SciFact":  # MTEB reports retrieval metrics rounded to 5 decimals
                want = round(want, 5)
            assert row["scores"][str(dim)] == pytest.approx(want, abs=1e-6), (name, dim)
        assert len({round(v, 6) for v in row["scores"].values()}) == len(DIMS)  # dims differ
    # MTEB's layout: one experiment per dim, read back by MTEB's own ResultCache
    import mteb

    runs = out / "results" / mteb_bridge.model_name(str(tiny_model)) / "no_revision_available"
    assert sorted(p.name for p in (runs / "experiments").iterdir()) == [
        f"embed_dim_{d}" for d in sorted(DIMS, key=str)
    ]
    cache = mteb.ResultCache(out)
    for dim in DIMS:
        for name in TASKS:
            result = cache.load_task_result(
                name, mteb_bridge.model_name(str(tiny_model)), "no_revision_available",
                experiment_name=f"embed_dim_{dim}", raise_if_not_found=True,
            )  # fmt: skip
            assert result.get_score() == pytest.approx(ours[name][dim], abs=6e-6)
        # every retrieval metric eval.py reports, from MTEB's file (rounded to 5 or 6 decimals;
        # at most 3 relevant documents a query, so MAP's denominators agree)
        scifact = cache.load_task_result(
            "SciFact", mteb_bridge.model_name(str(tiny_model)), "no_revision_available",
            experiment_name=f"embed_dim_{dim}",
        ).scores["test"][0]  # fmt: skip
        for metric, key in METRICS.items():
            assert scifact[key] == pytest.approx(ours[metric][dim], abs=6e-6), metric
    assert "| SciFact | ndcg_at_10 |" in (out / "mteb_dims.md").read_text()
    # a re-run replaces its own folder, nothing beside it
    main([str(tiny_model), "--tasks", "STSBenchmark", "--dims", "8", "--out", str(out)])
    assert json.loads((out / TABLE_JSON).read_text())["dims"] == [8]
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".mteb")) == []


def test_a_dim_is_what_sentence_transformers_truncate_dim_gives(tiny_model):
    import mteb
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from sentence_transformers import SentenceTransformer

    task = mteb.get_task("STSBenchmark")
    texts = ["A dog runs in the park.", "A cat sleeps.", "A man reads at home by the river."]
    encoder = mteb_bridge.prefix_encoder(
        SentenceTransformer(str(tiny_model), device="cpu"), "t", None
    )
    for dim in (32, 8):
        encoder.at_dim(dim)
        loader = create_dataloader(Dataset.from_dict({"text": texts}), task_metadata=task.metadata)
        got = encoder.encode(loader, task_metadata=task.metadata, hf_split="test",
                             hf_subset="default", batch_size=2)  # fmt: skip
        cut = SentenceTransformer(str(tiny_model), device="cpu", truncate_dim=dim)
        want = cut.encode(texts, batch_size=2, convert_to_numpy=True)
        assert got.shape == (3, dim)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert encoder.mteb_model_meta.experiment_name == f"embed_dim_{dim}"
        assert encoder.mteb_model_meta.embed_dim == dim


def _refused(argv, capsys, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert stop.value.code == 2 and len(errors) == 1 and message in errors[0], stderr
    assert "Traceback" not in stderr
    return errors[0]


def test_bad_input_is_one_line_and_leaves_nothing(
    mirror, tiny_model, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "runs" / "mteb"
    model = str(tiny_model)
    cases = [
        (["--tasks", "STSBenchmarc"], "MTEB has no task 'STSBenchmarc'; did you mean STSBenchmark"),
        (["--tasks", "scifact"], "did you mean SciFact"),
        (["--tasks", "STSBenchmark", "--dims", "64"], "--dims holds 64, larger than"),
        (["--tasks", "STSBenchmark", "--dims", "0"], "--dims holds 0; every entry must be"),
        (["--tasks", "STSBenchmark", "STSBenchmark"], "repeats a task"),
        (["--tasks", "STSBenchmark", "--dims", "x"], "--dims: invalid int value"),
    ]
    for args, message in cases:
        _refused([model, *args, "--out", str(out)], capsys, message)
    assert not out.parent.exists() or not list(out.parent.iterdir())
    # the mirror lacks a file: the loader names it
    (mirror / "sts-extra" / "sickr-trial.jsonl").unlink()
    _refused([model, "--tasks", "SICK-R", "--out", str(out)], capsys, "sickr-trial.jsonl")
    # offline: a task the mirror does not hold, and a mirrored one without MRL_DATA_DIR
    monkeypatch.setattr("mrl.common.hub.hub_reachable", lambda timeout=3.0: False)
    line = _refused([model, "--tasks", "STS12", "--out", str(out)], capsys, "STS12 needs the Hub")
    assert "mteb/sts12-sts" in line and "beir/scifact" in line
    monkeypatch.delenv("MRL_DATA_DIR")
    line = _refused(
        [model, "--tasks", "SciFact", "--out", str(out)], capsys, "SciFact needs the Hub"
    )
    assert "set MRL_DATA_DIR to a mirror with beir/scifact" in line
    assert not out.parent.exists() or not list(out.parent.iterdir())
    # an --out of someone else's files is refused and left as it was
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    monkeypatch.setenv("MRL_DATA_DIR", str(mirror))
    _refused(
        [model, "--tasks", "STSBenchmark", "--out", str(out)], capsys, "is not an earlier output"
    )
    assert [p.name for p in out.parent.iterdir()] == ["mteb"] and (
        out / "notes.txt"
    ).read_text() == "mine"
