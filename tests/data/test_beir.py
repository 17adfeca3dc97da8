"""BEIR retrieval at every dim: the loader's one-line refusals, hand-computed metrics on a
hand-made 3-query set (ties included), and the same numbers as sentence-transformers'
InformationRetrievalEvaluator(truncate_dim=d) on a tiny model."""

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.data.beir import BeirSource, load_beir
from mrl.evaluation.retrieval import IndexSpec, retrieval_by_dim

SOURCE = BeirSource(hub_id="BeIR/scifact", local_dir="beir/scifact")


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple]) -> Path:
    """A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (CRLF ends, as SciFact's)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    lines = ["query-id\tcorpus-id\tscore", *("\t".join(map(str, row)) for row in qrels)]
    (folder / "qrels" / "test.tsv").write_text("".join(line + "\r\n" for line in lines))
    return folder


# ---- a hand-made set: 6 documents at angles in a plane, "f" a copy of "b" (exact ties) ----

ANGLES = {"a": 0, "b": 20, "c": 40, "d": 60, "e": 80, "f": 20}
QUERIES = {"q1": 0, "q2": 80, "q3": 45, "q4": 10}
QRELS = [
    ("q1", "f", 1), ("q1", "d", 1), ("q1", "a", 0),  # a (rank 1) is judged, not relevant
    ("q2", "a", 1),
    ("q3", "c", 1), ("q3", "e", 2), ("q3", "b", 1),
    ("q4", "b", 0),  # no relevant document: q4 is not scored
]  # fmt: skip


def _unit(degrees: float, extra: float) -> list[float]:
    """[cos, sin, extra] of an angle: the first coordinate alone (dim 1) ties every vector."""
    r = math.radians(degrees)
    return [math.cos(r), math.sin(r), extra]


@pytest.fixture
def hand_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path))
    corpus = [{"_id": i, "title": "", "text": f"doc {i}"} for i in ANGLES]
    queries = [{"_id": q, "text": f"query {q}"} for q in QUERIES]
    write_beir(tmp_path / "beir" / "scifact", corpus, queries, QRELS)
    data = load_beir(SOURCE)
    docs = np.array([_unit(ANGLES[i], 0.0) for i in data.corpus_ids], dtype=np.float32)
    queries = np.array([_unit(QUERIES[q], 0.0) for q in data.query_ids], dtype=np.float32)
    return data, queries, docs


def _dcg(ranks):
    return sum(1 / math.log2(r + 1) for r in ranks)


def test_hand_made_set_gives_the_hand_computed_metrics(hand_set):
    data, queries, docs = hand_set
    assert data.query_ids == ["q1", "q2", "q3"]  # q4 has no relevant document
    assert data.relevant["q1"] == {"f", "d"} and data.corpus == [f"doc {i}" for i in ANGLES]
    scores = retrieval_by_dim(queries, docs, data, [3, 1])
    # dim 3: q1 ranks a b f c d e (b before its copy f: ids ascending), relevant f=3, d=5;
    # q2 ranks e d c b f a, relevant a=6; q3 ranks c d b f e a, relevant c=1, b=3, e=5.
    ndcg = [
        _dcg([3, 5]) / _dcg([1, 2]),
        _dcg([6]) / _dcg([1]),
        _dcg([1, 3, 5]) / _dcg([1, 2, 3]),
    ]
    expected = {
        "ndcg@10": sum(ndcg) / 3,
        "mrr@10": (1 / 3 + 1 / 6 + 1) / 3,
        "recall@100": 1.0,
        "map@100": ((1 / 3 + 2 / 5) / 2 + 1 / 6 + (1 + 2 / 3 + 3 / 5) / 3) / 3,
    }
    for metric, value in expected.items():
        assert scores[metric][3] == pytest.approx(value, abs=1e-9), metric
    # dim 1: every prefix renormalises to 1, so all six tie and rank by id: a b c d e f
    tied = [_dcg([6, 4]) / _dcg([1, 2]), _dcg([1]), _dcg([3, 5, 2]) / _dcg([1, 2, 3])]
    assert scores["ndcg@10"][1] == pytest.approx(sum(tied) / 3, abs=1e-9)
    assert scores["mrr@10"][1] == pytest.approx((1 / 4 + 1 + 1 / 2) / 3, abs=1e-9)
    map_tied = ((1 / 4 + 2 / 6) / 2 + 1 + (1 / 2 + 2 / 3 + 3 / 5) / 3) / 3
    assert scores["map@100"][1] == pytest.approx(map_tied, abs=1e-9)


def test_ties_across_the_depth_cut_break_by_id_and_approximate_indexes_run(tmp_path, monkeypatch):
    """150 identical documents: the top 100 are the 100 smallest ids (string order), whichever
    100 FAISS returned; recall@100 counts the relevant one at string rank 50, not at 120."""
    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path))
    ids = [str(i) for i in range(150)]
    random.Random(0).shuffle(ids)
    order = sorted(ids)
    corpus = [{"_id": i, "title": "t", "text": "same"} for i in ids]
    qrels = [("q", order[49], 1), ("q", order[119], 1), ("r", order[0], 1)]
    queries = [{"_id": "q", "text": "x"}, {"_id": "r", "text": "y"}]
    write_beir(tmp_path / "beir" / "scifact", corpus, queries, qrels)
    data = load_beir(SOURCE)
    assert data.corpus[0] == "t same"
    docs = np.ones((150, 4), dtype=np.float32)
    queries = np.ones((2, 4), dtype=np.float32)
    scores = retrieval_by_dim(queries, docs, data, [4])
    assert scores["recall@100"][4] == pytest.approx((0.5 + 1) / 2)
    assert scores["mrr@10"][4] == pytest.approx((0 + 1) / 2)
    assert scores["map@100"][4] == pytest.approx((1 / 50 / 2 + 1) / 2)
    same = FixedVectors({t: [1.0] * 4 for t in ("t same", "x", "y")})
    theirs = st_scores(same, tmp_path / "beir" / "scifact", 4)
    assert {m: scores[m][4] for m in METRIC_NAMES} == pytest.approx(theirs, abs=1e-12)
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(150, 8)).astype(np.float32)
    queries = rng.normal(size=(2, 8)).astype(np.float32)
    exact = retrieval_by_dim(queries, docs, data, [8, 4])
    for index in ("hnsw", "ivf"):
        approx = retrieval_by_dim(queries, docs, data, [8, 4], IndexSpec(index=index, nprobe=64))
        assert set(approx) == set(exact) and all(0 <= v <= 1 for v in approx["ndcg@10"].values())


# ---- the loader refuses what it cannot trust, in one line naming file, line and id ----


@pytest.fixture
def beir_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path))
    corpus = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(4)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(3)]
    qrels = [("q0", "d0", 1), ("q1", "d1", 1), ("q1", "d2", 0), ("q2", "d3", 0)]
    return write_beir(tmp_path / "beir" / "scifact", corpus, queries, qrels)


def _refused(message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_beir(SOURCE)
    text = str(err.value)
    assert message in text and "\n" not in text, text


def test_a_good_folder_loads_titles_joined_and_score_0_not_relevant(beir_dir):
    data = load_beir(SOURCE)
    assert data.corpus == [f"T{i} text {i}" for i in range(4)]
    assert data.query_ids == ["q0", "q1"] and data.relevant == {"q0": {"d0"}, "q1": {"d1"}}
    plain = load_beir(BeirSource(hub_id="x/y", local_dir="beir/scifact", title=False))
    assert plain.corpus == [f"text {i}" for i in range(4)]


@pytest.mark.parametrize(
    ("qrels_row", "message"),
    [
        ("q9\td0\t1", "qrels/test.tsv line 6: query-id 'q9' is not in "),
        ("q0\td9\t1", "qrels/test.tsv line 6: corpus-id 'd9' is not in "),
        ("q0\td9\t0", "qrels/test.tsv line 6: corpus-id 'd9' is not in "),
        ("q0\td0\tyes", 'qrels/test.tsv line 6: score is "yes", not a whole number'),
        ("q0 d0 1", "qrels/test.tsv line 6 has 1 tab-separated field(s)"),
    ],
)
def test_bad_qrels_rows_are_one_line(beir_dir, qrels_row, message):
    with (beir_dir / "qrels" / "test.tsv").open("a") as file:
        file.write(qrels_row + "\r\n")
    _refused(message)


def test_missing_files_columns_and_bad_rows_are_one_line(beir_dir):
    qrels = beir_dir / "qrels" / "test.tsv"
    good = qrels.read_text()
    qrels.write_text("query-id\tcorpus-id\r\nq0\td0\r\n")
    _refused("test.tsv line 1: the header ['query-id', 'corpus-id'] lacks column(s) ['score']")
    qrels.write_text(good)
    corpus = beir_dir / "corpus.jsonl"
    good = corpus.read_text()
    corpus.write_text(good + json.dumps({"title": "x", "text": "no id"}) + "\n")
    _refused("corpus.jsonl line 5 has no '_id' field")
    corpus.write_text(good + json.dumps({"_id": "d1", "text": "again"}) + "\n")
    _refused("corpus.jsonl line 5 repeats _id 'd1' (first at line 2)")
    corpus.write_text(good + '{"_id": "d9", "text": \n')
    _refused("corpus.jsonl could not be read as JSON Lines: line 5 is cut off or not JSON")
    corpus.write_text(good + json.dumps({"_id": "d9", "text": 3}) + "\n")
    _refused("corpus.jsonl line 5: text is 3, not a string")
    corpus.unlink()
    _refused(f"{beir_dir} has no corpus.jsonl; a BEIR folder holds corpus.jsonl, queries.jsonl")


def test_hub_rows_are_checked_the_same_way(monkeypatch):
    """Hub ids may be whole numbers (BeIR/*-qrels); NanoBEIR's qrels have no score column."""
    import datasets

    import mrl.common.hub
    import mrl.data.beir

    tables = {
        ("corpus", "corpus"): [{"_id": "1", "title": "A", "text": "x"}, {"_id": "2", "text": "y"}],
        ("queries", "queries"): [{"_id": "7", "text": "q"}],
        (None, "test"): [{"query-id": 7, "corpus-id": 2}],
    }
    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    monkeypatch.setattr(mrl.common.hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda hub, subset, split, revision: tables[(subset, split)]
    )
    source = BeirSource(hub_id="BeIR/scifact", qrels_hub_id="BeIR/scifact-qrels", local_dir="x")
    data = load_beir(source)
    assert data.corpus == ["A x", "y"] and data.relevant == {"7": {"2"}}
    tables[(None, "test")].append({"query-id": 7, "corpus-id": 5})
    with pytest.raises(ConfigError, match=r"BeIR/scifact-qrels \(default, test\) row 2: corpus-id"):
        load_beir(source)


def test_no_mirror_and_no_hub_is_one_line(monkeypatch):
    import mrl.common.hub

    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    monkeypatch.setattr(mrl.common.hub, "hub_reachable", lambda: False)
    _refused(
        "retrieval set 'BeIR/scifact' needs the Hugging Face Hub, which is unreachable, and is "
        "not in the Hugging Face cache"
    )


# ---- the same numbers as sentence-transformers' evaluator, at several dims ----

METRIC_NAMES = ("ndcg@10", "mrr@10", "recall@100", "map@100")


def st_inputs(folder: Path) -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant docs) of a BEIR folder, read as ST's evaluator docstring
    reads a BEIR set (title + " " + text, stripped), score > 0 relevant."""
    rows = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    corpus = {r["_id"]: (r["title"] + " " + r["text"]).strip() for r in rows}
    lines = (folder / "queries.jsonl").read_text().splitlines()
    queries = {r["_id"]: r["text"] for r in map(json.loads, lines)}
    relevant = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, cid, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(qid, set()).add(cid)
    return queries, corpus, relevant


def st_scores(model, folder: Path, dim: int, batch_size: int = 32) -> dict[str, float]:
    """InformationRetrievalEvaluator(truncate_dim=dim) on the folder: our four metrics."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    evaluator = InformationRetrievalEvaluator(
        *st_inputs(folder), truncate_dim=dim, precision_recall_at_k=[100],
        batch_size=batch_size, write_csv=False,
    )  # fmt: skip
    found = evaluator(model)
    return {m: found[f"{model.similarity_fn_name}_{m}"] for m in METRIC_NAMES}


class FixedVectors:
    """A stand-in model for ST's evaluator: a fixed vector per text (exact ties included)."""

    similarity_fn_name = "cosine"
    model_card_data = SimpleNamespace(set_evaluation_metrics=lambda *args: None)

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode_query(self, texts, truncate_dim=None, **_):
        return torch.tensor([self.vectors[t] for t in texts])[:, :truncate_dim]

    encode_document = encode_query

    def similarity(self, a, b):
        from sentence_transformers.util import cos_sim

        return cos_sim(a, b)


def test_ties_rank_as_sentence_transformers_ranks_them(hand_set, tmp_path):
    data, queries, docs = hand_set
    vectors = {f"doc {i}": _unit(a, 0.0) for i, a in ANGLES.items()}
    vectors.update({f"query {q}": _unit(a, 0.0) for q, a in QUERIES.items()})
    ours = retrieval_by_dim(queries, docs, data, [3, 2, 1])
    for dim in (3, 2, 1):
        theirs = st_scores(FixedVectors(vectors), tmp_path / "beir" / "scifact", dim)
        assert {m: ours[m][dim] for m in METRIC_NAMES} == pytest.approx(theirs, abs=1e-12)


def synthetic_set(folder: Path, seed: int = 0) -> None:
    """130 distinct documents (some titled), 14 queries: 12 judged, each the text of one
    relevant document plus 0-2 other relevant ones and a score-0 judgement, 2 not judged."""
    from tests.conftest import _sentence

    rng = random.Random(seed)
    texts = [f"{_sentence(rng)} {_sentence(rng)} {i}" for i in range(130)]
    corpus = [{"_id": str(1000 - 7 * i), "title": rng.choice(["", "A title"]), "text": t}
              for i, t in enumerate(texts)]  # fmt: skip
    queries = [{"_id": f"q{i}", "text": texts[5 * i].rsplit(" ", 1)[0]} for i in range(14)]
    qrels = []
    for i in range(12):
        qrels.append((f"q{i}", corpus[5 * i]["_id"], 1))
        for doc in rng.sample(corpus, rng.randint(0, 2)):
            qrels.append((f"q{i}", doc["_id"], rng.choice([1, 2])))
        qrels.append((f"q{i}", rng.choice(corpus)["_id"], 0))
    write_beir(folder, corpus, queries, qrels)


def test_metrics_equal_sentence_transformers_at_every_dim(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from mrl.artifacts.export import export_encoder
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder
    from mrl.evaluation.retrieval import encode_retrieval

    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path))
    synthetic_set(tmp_path / "beir" / "scifact")
    torch.manual_seed(0)
    encoder = Encoder("mrl/tiny-random-bert").eval()
    tokenizer = load_tokenizer("mrl/tiny-random-bert")
    folder = export_encoder(encoder, tokenizer, tmp_path / "model", 32, "mrl/tiny-random-bert")
    model = SentenceTransformer(str(folder), device="cpu")
    data = load_beir(SOURCE)
    assert len(data.query_ids) == 12 and len(data.corpus) == 130
    queries, docs = encode_retrieval(model, data, batch_size=16)
    dims = [32, 16, 8, 4]
    ours = retrieval_by_dim(queries, docs, data, dims)
    for dim in dims:
        theirs = st_scores(model, tmp_path / "beir" / "scifact", dim, batch_size=16)
        for metric, value in theirs.items():
            assert ours[metric][dim] == pytest.approx(value, abs=1e-4), (dim, metric)
    assert len({ours["ndcg@10"][d] for d in dims}) > 1  # the dims do differ
    assert all(0.2 < ours["ndcg@10"][d] < 1 for d in dims), ours  # not a trivial ranking
