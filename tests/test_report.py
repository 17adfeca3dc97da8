import csv
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from mrl.report import area_under_curve, build_report, collect, main, runs_from_wandb
from mrl.results import RunResults
from tests.conftest import ROOT

DIMS = [32, 16, 8]


def write_run(
    root,
    name,
    seed,
    scores,
    matryoshka=True,
    overrides=(),
    untrained=None,
    layout="new",
    config=None,
    **extra,
):
    """A finished run folder as train.py leaves it (results.json with its overrides).

    layout="new": written by `RunResults.to_json()` (eval_dims, schedule_dims); "old": the
    layout of the committed results (`dims`, no schedule_dims). `extra`: further keys."""
    run_dir = root / name / f"seed{seed}"
    run_dir.mkdir(parents=True)
    test = dict(zip(DIMS, scores, strict=True))
    before = None if untrained is None else {int(d): s for d, s in untrained.items()}
    results = RunResults(
        experiment=name.split("/")[0],
        run_dir=str(run_dir),
        backbone="tiny",
        eval_dims=DIMS,
        test=test,
        matryoshka=matryoshka,
        schedule_dims=DIMS if matryoshka else [32],
        train_dims=DIMS if matryoshka else [32],
        seed=seed,
        overrides=[f"seed={seed}", *overrides],
        untrained_test=before,
        config=config or {"trainer": {"fast_dev_run": False}},
        extra=extra,
    )
    if layout == "new":
        text = results.to_json()
    else:
        data = results.to_dict()
        data["dims"] = data.pop("eval_dims")
        del data["schedule_dims"]
        text = json.dumps(data)
    (run_dir / "results.json").write_text(text)
    return run_dir


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]


def make_study(root, layout="new"):
    """MRL and baseline, 3 seeds each: MRL clearly ahead at 8, equal at 32."""
    before = {32: 0.6, 16: 0.55, 8: 0.4}
    mrl = [[0.80, 0.79, 0.76], [0.81, 0.80, 0.77], [0.79, 0.78, 0.75]]
    base = [[0.80, 0.76, 0.60], [0.82, 0.77, 0.62], [0.79, 0.75, 0.58]]
    for seed, scores in zip((1, 2, 3), mrl, strict=True):
        write_run(root, "mrl", seed, scores, untrained=before, layout=layout)
    for seed, scores in zip((1, 2, 3), base, strict=True):
        write_run(root, "base", seed, scores, matryoshka=False, layout=layout)
    return root


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path)


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


def test_missing_folder_and_unknown_reference_are_one_line(study, tmp_path, capsys):
    """Bad input: status 2 (as train.py and eval.py) and one `error:` line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(tmp_path / "nope")], r"error: .*nope does not exist"),
        ([str(study), "--reference", "x"], r"error: --reference 'x' is not a group; .*'mrl'"),
        ([str(empty)], "error: no run folders below"),
        ([str(study), "--x", "width"], "error: argument --x: invalid choice: 'width'"),
        ([str(study), "--colour"], "error: unrecognized arguments: --colour"),
        ([], "error: the following arguments are required: paths"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        lines = error_lines(capsys)
        assert len(lines) == 1, (argv, lines)
        assert re.match(message, lines[0]), (argv, lines)


def test_the_cli_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mrl.report", str(tmp_path / "nope")],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {tmp_path / 'nope'} does not exist; give sweep "
                                        "or run folders."]  # fmt: skip
    assert proc.stdout == ""


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
    assert runs[0].results.test == {32: 0.8, 16: 0.7, 8: 0.6}  # int dims in memory
    debug = wandb_run("r3", 3, "uniform", [0.1, 0.1, 0.1])
    debug.config["trainer"] = {"fast_dev_run": True}
    runs = runs_from_wandb([wandb_run("r0", 1, "uniform", [0.8, 0.7, 0.6]), debug])
    assert [r.status for r in runs] == ["finished", "debug"]


def test_report_logs_to_wandb_offline(study, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    main([str(study), "--out", str(tmp_path / "out"), "--wandb-project", "mrl-test"])
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(f.suffix == ".wandb" and os.path.getsize(f) > 0 for f in runs[0].iterdir())


def test_old_and_new_results_layouts_report_alike(tmp_path):
    """Files written before the typed RunResults (`dims`) and by it (`eval_dims`)."""
    old, new = make_study(tmp_path / "old", "old"), make_study(tmp_path / "new", "new")
    assert "dims" in json.loads((old / "mrl" / "seed1" / "results.json").read_text())
    assert "eval_dims" in json.loads((new / "mrl" / "seed1" / "results.json").read_text())
    old_md, *_ = build_report([old])
    new_md, *_ = build_report([new])
    assert old_md.replace(str(old), "X") == new_md.replace(str(new), "X")
    assert (old / "report.csv").read_text() == (new / "report.csv").read_text()
    runs, _, dims = collect([old])
    assert dims == DIMS and all(isinstance(d, int) for r in runs for d in r.results.test)


def test_debug_runs_are_listed_and_never_grouped(study, capsys):
    debug = {"trainer": {"fast_dev_run": True}}
    write_run(study, "mrl", 4, [0.1, 0.1, 0.1], config=debug,
              overrides=["trainer.fast_dev_run=true"])  # fmt: skip
    write_run(study, "base", 4, [0.1, 0.1, 0.1], matryoshka=False, debug=True)
    write_run(study, "base", 5, [0.1, 0.1, 0.1], config={"trainer": {"fast_dev_run": 2}})
    write_run(study, "mrl", 5, [0.8, 0.79, 0.76], config={"trainer": {"fast_dev_run": 0}})
    runs, groups, _ = collect([study])
    assert sorted(r.status for r in runs).count("debug") == 3
    by_label = {g.label: g for g in groups}
    assert set(by_label) == {"mrl", "base"}  # the debug override does not make a group
    assert by_label["mrl"].n == 4 and by_label["base"].n == 3  # fast_dev_run=0 is a real run
    assert by_label["base"].mean[8] == pytest.approx(0.60)
    err = capsys.readouterr().err
    assert f"{study / 'mrl' / 'seed4'}: debug (not a real run): trainer.fast_dev_run=True" in err
    markdown, *_ = build_report([study])
    assert "| mrl/seed4 | mrl | 4 | **debug (not a real run)**: trainer.fast_dev_run=True |" in (
        markdown
    )
    assert '| base/seed4 | base | 4 | **debug (not a real run)**: "debug": true |' in markdown
    assert "| base/seed5 | base | 5 | **debug (not a real run)**: trainer.fast_dev_run=2 |" in (
        markdown
    )
    assert "| base | 3 |" in markdown and "0.1000" not in markdown


def test_only_debug_runs_is_one_error_line(tmp_path, capsys):
    write_run(tmp_path, "mrl", 1, [0.8, 0.7, 0.6], config={"trainer": {"fast_dev_run": True}})
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    assert error_lines(capsys) == [
        "error: no finished run (no valid results.json) below the given folders; 1 debug run(s) "
        "left out."
    ]


def test_invalid_results_files_are_named_with_their_reason(study):
    bad = {
        "seed4": "[1, 2]",
        "seed5": json.dumps({"experiment": "mrl", "run_dir": "x", "backbone": "t", "dims": [8]}),
        "seed6": json.dumps(
            {
                "experiment": "mrl",
                "run_dir": "x",
                "backbone": "t",
                "eval_dims": [16, 8],
                "test": {"16": 0.5},
            }
        ),  # fmt: skip
        "seed7": json.dumps({"experiment": "mrl", "backbone": "t", "dims": [8], "test": {"8": 1}}),
        "seed8": json.dumps(
            {
                "experiment": "mrl",
                "run_dir": "x",
                "backbone": "t",
                "dims": [8],
                "test": {"8": "high"},
            }
        ),  # fmt: skip
    }
    for name, text in bad.items():
        (study / "mrl" / name).mkdir()
        (study / "mrl" / name / "results.json").write_text(text)
    markdown, *_ = build_report([study])
    reasons = {
        line.split(" | ")[0][2:]: line.split("**corrupt**: ")[1]
        for line in markdown.splitlines()
        if "**corrupt**" in line
    }
    assert reasons == {
        "mrl/seed4": "results.json is not a valid results file (a JSON list, not an object) |",
        "mrl/seed5": "results.json is not a valid results file (no 'test') |",
        "mrl/seed6": "results.json is not a valid results file (no test score at dim 8) |",
        "mrl/seed7": "results.json is not a valid results file (no 'run_dir') |",
        "mrl/seed8": "results.json is not a valid results file (could not convert string to "
        "float: 'high') |",
    }
    assert "| mrl | 3 |" in markdown


def test_committed_study_reports_as_committed(tmp_path, monkeypatch, capsys):
    """The committed CPU study (results.json of the old layout) gives its committed report."""
    study = ROOT / "experiments" / "results" / "allnli_minilm_cpu_study"
    monkeypatch.chdir(ROOT)
    main([str(study.relative_to(ROOT)), "--out", str(tmp_path)])
    assert (tmp_path / "report.md").read_text() == (study / "report.md").read_text()
    assert (tmp_path / "report.csv").read_text() == (study / "report.csv").read_text()
    assert capsys.readouterr().err.startswith("wrote ")
