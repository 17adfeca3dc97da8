"""Hard-negative mining (mrl.mine): the selection rule against a brute-force reference, and the
CLI on the tiny model (rows, sidecar, one-line errors, nothing overwritten)."""

import json

import numpy as np
import pytest

from mrl.common.errors import ConfigError
from mrl.tools.mine import MiningRule, main, select_negatives
from tests.conftest import write_jsonl


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(anchor, pool, positive_score, excluded, rule):
    """The rule spelt out: sort the allowed candidates by similarity, keep ranks in range
    whose similarity is at most positive - margin, take the first k."""
    sims = pool @ anchor
    order = [j for j in np.argsort(-sims, kind="stable") if j not in excluded]
    ranked = order[rule.rank_lo : rule.rank_hi]
    return [j for j in ranked if sims[j] <= positive_score - rule.margin][: rule.k]


@pytest.mark.parametrize("rule", [MiningRule(3, 0, 20, 0.0), MiningRule(2, 5, 40, 0.1)])
def test_negatives_follow_the_rank_range_and_margin_and_are_never_positives(rule):
    rng = np.random.default_rng(0)
    n, m, d = 30, 80, 16
    pool = _unit(rng.standard_normal((m, d)))
    positives = rng.integers(0, m, size=n)
    # anchors near their positive, so the positive ranks high and the margin matters
    anchors = _unit(pool[positives] + 0.8 * rng.standard_normal((n, d)))
    positive_scores = (anchors * pool[positives]).sum(-1)
    excluded = [{int(p)} for p in positives]
    chosen, sims = select_negatives(anchors, pool, positive_scores, excluded, rule)
    filled = 0
    for i in range(n):
        assert int(positives[i]) not in chosen[i]
        assert chosen[i] == _reference(anchors[i], pool, positive_scores[i], excluded[i], rule)
        assert all(s <= positive_scores[i] - rule.margin + 1e-6 for s in sims[i])
        filled += len(chosen[i]) == rule.k
    assert filled > n // 2  # the test exercises full rows, not only empty ones


@pytest.mark.parametrize(
    ("rule", "pool", "message"),
    [
        (MiningRule(k=5), 3, "the candidate pool has 3 texts, fewer than --k 5"),
        (MiningRule(k=0), 10, "--k 0 must be >= 1"),
        (MiningRule(k=3, rank_lo=5, rank_hi=6), 10, "leave 1 candidates for --k 3"),
        (MiningRule(k=1, rank_lo=4, rank_hi=2), 10, "must satisfy 0 <= LO < HI"),
    ],
)
def test_bad_rules_are_one_line(rule, pool, message):
    with pytest.raises(ConfigError, match=message):
        rule.check(pool)


def _pairs(path, n=40):
    words = ["red", "blue", "green", "cat", "dog", "bird", "runs", "sleeps", "eats", "old"]
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=5))
        rows.append({"premise": f"{text} {i}", "hypothesis": f"{text} {i} too", "label": 0})
        rows.append({"premise": f"{text} {i}", "hypothesis": "not this one", "label": 2})
    write_jsonl(path, rows)


def test_mining_cli_writes_k_negatives_and_a_sidecar(tiny_model, tmp_path, capsys):
    data, out = tmp_path / "pairs.jsonl", tmp_path / "mined.jsonl"
    _pairs(data)
    args = [str(tiny_model), str(data), "--out", str(out), "--k", "3", "--ranks", "1", "20"]
    main([*args, "--margin", "0.0", "--anchor", "premise", "--positive", "hypothesis"]
         + ["--where", "label=0"])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "mined.jsonl.mine.json").read_text())
    assert summary["rows_in"] == 40 and summary["rows_out"] == len(rows) > 0
    assert summary["k"] == 3 and summary["ranks"] == [1, 20]
    for row in rows:
        negatives = [row[f"negative_{n}"] for n in (1, 2, 3)]
        assert row["positive"] not in negatives and len(set(negatives)) == 3
        # the pool is the positives of the label=0 rows only ("... too"), never the anchor
        assert all(n.endswith(" too") for n in negatives) and row["anchor"] not in negatives
    # the same command again would overwrite: refused in one line, the file kept
    before = out.read_text()
    with pytest.raises(SystemExit):
        main(args)
    assert out.read_text() == before
    assert "exists; give a new file" in capsys.readouterr().err


def test_a_pool_smaller_than_k_is_one_line(tiny_model, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"anchor": "a b", "positive": "c d"}, {"anchor": "e f", "positive": "g"}])
    with pytest.raises(SystemExit):
        main([str(tiny_model), str(data), "--out", str(tmp_path / "m.jsonl"), "--k", "3"])
    err = capsys.readouterr().err
    assert err.startswith("error: the candidate pool has 2 texts, fewer than --k 3")
    assert not (tmp_path / "m.jsonl").exists()


def test_a_run_trains_on_k_mined_negatives_from_a_list(data_dir, run_main, compose_cfg, tmp_path):
    from mrl.run.build import build_datamodule
    from tests.conftest import FAST

    triplets = [json.loads(x) for x in (data_dir / "allnli/triplets-train.jsonl").open()]
    rows = [
        {"anchor": t["anchor"], "positive": t["positive"],
         "negatives": [t["negative"], triplets[(i + 1) % len(triplets)]["positive"]]}
        for i, t in enumerate(triplets)
    ]  # fmt: skip
    write_jsonl(data_dir / "allnli/mined.jsonl", rows)
    args = ["+exp=allnli_mrl", *FAST, "trainer.fast_dev_run=true", "data.batch_size=8",
            "data.train.local_file=allnli/mined.jsonl", "data.train.negatives_k=2",
            "data.train.columns=[anchor,positive,negatives]"]  # fmt: skip
    # each batch stacks 4 columns: anchors, positives and the list's 2 negatives
    datamodule = build_datamodule(compose_cfg(args))
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 * batch["n_rows"]
    run_main(args, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["data"]["train"]["negatives_k"] == 2


def test_a_nan_in_the_summary_is_one_line_and_nothing_is_written(
    tiny_model, tmp_path, capsys, monkeypatch
):
    import mrl.tools.mine as mine

    data, out = tmp_path / "pairs.jsonl", tmp_path / "mined.jsonl"
    _pairs(data)
    # a similarity that is NaN (e.g. from an all-zero embedding) reaches the summary
    monkeypatch.setattr(mine, "_quantiles", lambda values: {"q50": float("nan")})
    with pytest.raises(SystemExit) as stop:
        main([str(tiny_model), str(data), "--out", str(out), "--k", "2", "--ranks", "1", "20",
              "--margin", "0.0", "--anchor", "premise", "--positive", "hypothesis"])  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert stop.value.code == 2 and len(errors) == 1, err
    assert "mined.jsonl.mine.json: positive_similarity.q50 is nan, not a number" in errors[0]
    assert not out.exists() and not (tmp_path / "mined.jsonl.mine.json").exists()
