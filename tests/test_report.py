import csv
import json
import os
from types import SimpleNamespace

import pytest

from mrl.report import area_under_curve, build_report, collect, main, runs_from_wandb

DIMS = [32, 16, 8]


def write_run(root, name, seed, scores, matryoshka=True, overrides=(), untrained=None):
    """A finished run folder as train.py leaves it (results.json with its overrides)."""
    run_dir = root / name / f"seed{seed}"
    run_dir.mkdir(parents=True)
    results = {
        "experiment": name.split("/")[0],
        "backbone": "tiny",
        "matryoshka": matryoshka,
        "dims": DIMS,
        "train_dims": DIMS if matryoshka else [32],
        "seed": seed,
        "overrides": [f"seed={seed}", *overrides],
        "test": {str(d): s for d, s in zip(DIMS, scores, strict=True)},
        "untrained_test": untrained,
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


@pytest.fixture
def study(tmp_path):
    """MRL and baseline, 3 seeds each: MRL clearly ahead at 8, equal at 32."""
    before = {"32": 0.6, "16": 0.55, "8": 0.4}
    mrl = [[0.80, 0.79, 0.76], [0.81, 0.80, 0.77], [0.79, 0.78, 0.75]]
    base = [[0.80, 0.76, 0.60], [0.82, 0.77, 0.62], [0.79, 0.75, 0.58]]
    for seed, scores in zip((1, 2, 3), mrl, strict=True):
        write_run(tmp_path, "mrl", seed, scores, untrained=before)
    for seed, scores in zip((1, 2, 3), base, strict=True):
        write_run(tmp_path, "base", seed, scores, matryoshka=False)
    return tmp_path


def test_groups_pool_seeds_with_mean_std_retention_and_auc(study):
    runs, groups, dims = collect([study])
    assert dims == DIMS and len(runs) == 6
    by_label = {g.label: g for g in groups}
    assert set(by_label) == {"mrl", "base"}
    mrl = by_label["mrl"]
    assert mrl.n == 3
    assert mrl.mean[8] == pytest.approx(0.76)
    assert mrl.std[8] == pytest.approx(0.01)  # sample std of 0.76, 0.77, 0.75
    assert mrl.retention_mean[8] == pytest.approx((0.76 / 0.80 + 0.77 / 0.81 + 0.75 / 0.79) / 3)
    # AUC over log2(dim): trapezoids 8->16 and 16->32, each one unit wide, over 2 units
    one = area_under_curve({32: 0.80, 16: 0.79, 8: 0.76}, DIMS)
    assert one == pytest.approx(((0.76 + 0.79) / 2 + (0.79 + 0.80) / 2) / 2)


def test_report_files_and_seed_noise_verdicts(study, capsys):
    main([str(study)])
    md = (study / "report.md").read_text()
    assert "| mrl | 3 | 0.8000 ± 0.0100 | 0.7900 ± 0.0100 | 0.7600 ± 0.0100 |" in md
    assert "| tiny (untrained) | - | 0.6000 | 0.5500 | 0.4000 |" in md
    # the baseline is the reference: MRL +0.16 at 8 dims (beyond noise), -0.003 at 32 (within)
    verdict_row = next(
        line for line in md.splitlines() if line.startswith("| mrl |") and "noise" in line
    )
    assert "-0.0033 (within noise)" in verdict_row.split("|")[2]
    assert "+0.1600 (beyond noise)" in verdict_row.split("|")[4]
    for seed in (1, 2, 3):
        assert f"| mrl/seed{seed} | mrl | {seed} | finished |" in md
    rows = list(csv.DictReader((study / "report.csv").read_text().splitlines()))
    assert len(rows) == 2 * len(DIMS)
    at8 = next(r for r in rows if r["group"] == "mrl" and r["dim"] == "8")
    assert at8["beyond_seed_noise"] == "True" and float(at8["bytes_float32"]) == 32
    assert (study / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| mrl | 3 | 0.8000 ± 0.0100" in capsys.readouterr().out


def test_groups_come_from_the_overrides_that_differ(tmp_path):
    for seed in (1, 2):
        for weights in ("uniform", "increasing"):
            write_run(
                tmp_path,
                f"allnli_mrl/w={weights}",
                seed,
                [0.8, 0.7, 0.6],
                overrides=[f"matryoshka.weights={weights}", "model=tiny", "+sweep=weights"],
            )
    _, groups, _ = collect([tmp_path])
    assert sorted((g.label, g.n) for g in groups) == [
        ("matryoshka.weights=increasing", 2),
        ("matryoshka.weights=uniform", 2),
    ]


def test_bad_runs_are_named_and_the_report_goes_on(study, capsys):
    corrupt = study / "mrl" / "seed4"
    corrupt.mkdir()
    (corrupt / "results.json").write_text('{"test": {"32": 0.8')  # cut off mid-write
    unfinished = study / "base" / "seed4"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "overrides.yaml").write_text("- seed=4\n")
    failed = study / "base" / "seed5"
    failed.mkdir()
    (failed / "failed.json").write_text(json.dumps({"error": "matryoshka.weights='x' is unknown"}))
    markdown, *_ = build_report([study])
    err = capsys.readouterr().err
    assert f"{corrupt}: corrupt" in err and f"{unfinished}: unfinished" in err
    assert "| mrl/seed4 | mrl | ? | **corrupt**: results.json is not a valid results file |" in (
        markdown
    )
    assert "**unfinished**: no results.json" in markdown
    assert "**failed**: matryoshka.weights='x' is unknown" in markdown
    assert "| mrl | 3 |" in markdown  # the good runs are still reported


def test_missing_folder_and_unknown_reference_are_one_line(study, tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*nope does not exist"):
        main([str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match=r"error: --reference 'x' is not a group; .*'mrl'"):
        main([str(study), "--reference", "x"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="error: no run folders below"):
        main([str(empty)])


def test_runs_from_wandb_rebuild_the_groups():
    def wandb_run(name, seed, weights, scores):
        summary = {f"test/spearman@{d}": s for d, s in zip(DIMS, scores, strict=True)}
        config = {
            "exp_name": "allnli_mrl",
            "seed": seed,
            "matryoshka": {"enabled": True},
            "overrides": [f"seed={seed}", f"matryoshka.weights={weights}"],
        }
        return SimpleNamespace(name=name, config=config, summary={**summary, "epoch": 0})

    runs = runs_from_wandb(
        [wandb_run(f"r{i}", s, w, [0.8, 0.7, 0.6 + 0.01 * i]) for i, (s, w) in
         enumerate([(1, "uniform"), (2, "uniform"), (1, "increasing")])]
    )  # fmt: skip
    assert [r.group for r in runs] == ["matryoshka.weights=uniform"] * 2 + [
        "matryoshka.weights=increasing"
    ]
    assert runs[0].results["test"] == {"32": 0.8, "16": 0.7, "8": 0.6}


def test_report_logs_to_wandb_offline(study, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    main([str(study), "--out", str(tmp_path / "out"), "--wandb-project", "mrl-test"])
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(f.suffix == ".wandb" and os.path.getsize(f) > 0 for f in runs[0].iterdir())
