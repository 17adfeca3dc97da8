import csv
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from mrl.artifacts.results import RunResults
from mrl.report.build import build_report, collect, main
from mrl.report.runs import Run, runs_from_wandb
from mrl.report.stats import area_under_curve
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


def test_report_files_without_test_pairs_give_differences_without_intervals(study, capsys):
    """Runs made before test_pairs.npz was saved still report; their differences say why they
    have no interval."""
    main([str(study)])
    md = (study / "report.md").read_text()
    assert "| mrl | 3 | 0.8000 ± 0.0100 | 0.7900 ± 0.0100 | 0.7600 ± 0.0100 |" in md
    assert "| tiny (untrained) | - | 0.6000 | 0.5500 | 0.4000 |" in md
    # the baseline is the reference: MRL +0.16 at 8 dims, -0.003 at 32
    diff_row = next(line for line in md.splitlines() if line.startswith("| mrl |") and "+" in line)
    assert diff_row.split("|")[2].strip() == "-0.0033 no interval (no test_pairs.npz)"
    assert diff_row.split("|")[4].strip() == "+0.1600 no interval (no test_pairs.npz)"
    assert "significant" not in diff_row and "noise" not in md
    for seed in (1, 2, 3):
        assert f"| mrl/seed{seed} | mrl | {seed} | finished |" in md
    rows = list(csv.DictReader((study / "report.csv").read_text().splitlines()))
    assert len(rows) == 2 * len(DIMS)
    at8 = next(r for r in rows if r["group"] == "mrl" and r["dim"] == "8")
    assert float(at8["diff_vs_reference"]) == pytest.approx(0.16)
    assert at8["significant"] == "" and at8["interval"] == "no interval (no test_pairs.npz)"
    assert float(at8["bytes_float32"]) == 32
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
    assert "| mrl/seed4 | mrl | 4 | **corrupt**: results.json is not a valid results file |" in (
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
        ([str(study), "--n-boot", "0"], "error: --n-boot 0 must be a positive number"),
        ([str(study), "--level", "95"], r"error: --level 95.0 must be in \(0, 1\)"),
        ([str(study), "--group-by", "seed"], "error: argument --group-by: invalid choice"),
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
        # a score that could not be computed (Python's json writes a bare NaN; strict JSON has none)
        "seed9": '{"experiment": "mrl", "run_dir": "x", "backbone": "t", "dims": [8], '
        '"test": {"8": NaN}}',
        "seed10": '{"experiment": "mrl", "run_dir": "x", "backbone": "t", "dims": [8], '
        '"test": {"8": 0.5}, "validation": {"8": -Infinity}}',
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
        "mrl/seed9": "results.json is not a valid results file (test.8 is nan, not computed) |",
        "mrl/seed10": "results.json is not a valid results file (validation.8 is -inf, not "
        "computed) |",
    }
    assert "| mrl | 3 |" in markdown


def test_a_rerun_replaces_its_own_report_and_never_a_foreign_file(study, tmp_path, capsys):
    main([str(study)])
    first = (study / "report.md").read_text()
    write_run(study, "mrl", 4, [0.80, 0.79, 0.76])
    main([str(study)])  # into its own earlier report: replaced, with the new run
    second = (study / "report.md").read_text()
    assert second != first and second.startswith("# Report: 7 runs, 7 finished, 2 groups")
    capsys.readouterr()
    # a report.md the report did not write (notes of the same name) stops it before any write
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.md").write_text("# What I found\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(study), "--out", str(notes)])
    assert exit_info.value.code == 2
    (line,) = error_lines(capsys)
    assert f"--out: {notes / 'report.md'} exists and is not an earlier output" in line
    assert sorted(p.name for p in notes.iterdir()) == ["report.md"]
    assert (notes / "report.md").read_text() == "# What I found\n"
    # a foreign plot beside no report of ours likewise
    (notes / "report.md").unlink()
    (notes / "report.png").write_bytes(b"a figure of mine")
    with pytest.raises(SystemExit):
        main([str(study), "--out", str(notes)])
    assert "report.png exists and is not an earlier output" in error_lines(capsys)[0]
    assert (notes / "report.png").read_bytes() == b"a figure of mine"


def test_committed_study_reports_as_committed(tmp_path, monkeypatch, capsys):
    """The committed CPU study (results.json of the old layout, no test_pairs.npz) gives its
    committed scores and retention; its differences now come without an interval (the
    committed report.md was made by the band-overlap rule this report replaced)."""
    study = ROOT / "experiments" / "results" / "allnli_minilm_cpu_study"
    monkeypatch.chdir(ROOT)
    main([str(study.relative_to(ROOT)), "--out", str(tmp_path)])
    got, committed = (tmp_path / "report.md").read_text(), (study / "report.md").read_text()
    cut = "Difference of mean Spearman"
    assert got.split(cut)[0] == committed.split(cut)[0]
    assert got.split("Runs (below")[1] == committed.split("Runs (below")[1]
    assert "| allnli_mrl | -0.0063 no interval (no test_pairs.npz) |" in got
    committed_csv = list(csv.DictReader((study / "report.csv").read_text().splitlines()))
    got_csv = list(csv.DictReader((tmp_path / "report.csv").read_text().splitlines()))
    columns = ["group", "n_seeds", "dim", "spearman_mean", "retention_mean", "auc_mean"]
    assert [[r[c] for c in columns] for r in got_csv] == [
        [r[c] for c in columns] for r in committed_csv
    ]
    assert capsys.readouterr().err.startswith("wrote ")


# Intervals, fixed-dim curves and --group-by folder, on runs with test_pairs.npz.

N_PAIRS = 300


def write_scored_run(root, name, seed, gold, noise, matryoshka=True, **kwargs):
    """A finished run with its test_pairs.npz: at each dim the pair similarities are gold +
    noise[dim] * N(0, 1) (seeded by name and seed), and results.json holds their Spearman."""
    from scipy.stats import spearmanr

    from mrl.artifacts.pairs import PAIRS, write_pairs

    rng = np.random.default_rng([seed, *name.encode()])
    sims = {d: (gold + noise[d] * rng.standard_normal(gold.size)).astype(np.float32) for d in DIMS}
    scores = [float(spearmanr(sims[d], gold).statistic) for d in DIMS]
    run_dir = write_run(root, name, seed, scores, matryoshka=matryoshka, **kwargs)
    write_pairs(run_dir / PAIRS, gold, sims)
    return run_dir


def _gold(seed=0):
    return np.random.default_rng(seed).standard_normal(N_PAIRS).astype(np.float32)


def _diff_cells(markdown, label):
    """The difference table's cells of a row, by dim."""
    table = markdown.split("Difference of mean Spearman")[1].split("Runs (below")[0]
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return dict(zip(DIMS, [c.strip() for c in row.split("|")[2:-1]], strict=True))


def _interval(cell):
    estimate, low, high = map(float, re.match(r"(\S+) \[(\S+), (\S+)\]", cell).groups())
    return estimate, low, high


def test_a_real_shift_is_significant_and_identical_groups_are_not(tmp_path):
    gold = _gold()
    base_noise = {32: 0.6, 16: 0.8, 8: 1.2}
    for seed in (1, 2, 3):
        write_scored_run(tmp_path, "mrl", seed, gold, {32: 0.6, 16: 0.7, 8: 0.7})
        base = write_scored_run(tmp_path, "base", seed, gold, base_noise, matryoshka=False)
        twin = tmp_path / "twin" / f"seed{seed}"  # the baseline's runs, another experiment
        twin.mkdir(parents=True)
        results = json.loads((base / "results.json").read_text())
        (twin / "results.json").write_text(json.dumps({**results, "experiment": "twin"}))
        (twin / "test_pairs.npz").write_bytes((base / "test_pairs.npz").read_bytes())
    main([str(tmp_path), "--reference", "base", "--n-boot", "500"])
    md = (tmp_path / "report.md").read_text()
    mrl, twin = _diff_cells(md, "mrl"), _diff_cells(md, "twin")
    assert mrl[8].endswith(" significant")
    estimate, low, high = _interval(mrl[8])
    assert 0 < low < estimate < high
    assert all("significant" not in cell for cell in twin.values())
    for cell in twin.values():
        estimate, low, high = _interval(cell)
        assert estimate == 0 and low < 0 < high
    assert "†" not in md  # three seeds a side
    rows = list(csv.DictReader((tmp_path / "report.csv").read_text().splitlines()))
    at8 = {r["group"]: r for r in rows if r["dim"] == "8"}
    assert at8["mrl"]["significant"] == "True" and at8["twin"]["significant"] == "False"
    assert "two-level bootstrap" in at8["mrl"]["interval"] and at8["mrl"]["level"] == "0.95"
    assert at8["base"]["diff_vs_reference"] == "0.0" and at8["base"]["interval"] == ""


def test_one_seed_a_side_notes_the_interval_covers_the_test_set_only(tmp_path):
    gold = _gold()
    write_scored_run(tmp_path, "mrl", 1, gold, {32: 0.6, 16: 0.7, 8: 0.7})
    write_scored_run(tmp_path, "base", 1, gold, {32: 0.6, 16: 0.8, 8: 1.2}, matryoshka=False)
    markdown, *_ = build_report([tmp_path], n_boot=300)
    cells = _diff_cells(markdown, "mrl")
    assert all(cell.endswith(" †") for cell in cells.values())
    assert "† one seed on both sides: paired bootstrap over test pairs (1 seed: test-set " \
        "variation only)." in markdown  # fmt: skip


def test_runs_without_test_pairs_report_no_interval(tmp_path):
    gold = _gold()
    for seed in (1, 2):
        write_scored_run(tmp_path, "mrl", seed, gold, {32: 0.6, 16: 0.7, 8: 0.7})
        write_scored_run(tmp_path, "base", seed, gold, {32: 0.6, 16: 0.8, 8: 1.2},
                         matryoshka=False)  # fmt: skip
        write_run(tmp_path, "old", seed, [0.8, 0.7, 0.6])  # made before test_pairs.npz
    write_scored_run(tmp_path, "part", 1, gold, {32: 0.6, 16: 0.7, 8: 0.7})
    write_run(tmp_path, "part", 2, [0.8, 0.7, 0.6])  # one of its runs has none
    markdown, *_ = build_report([tmp_path], n_boot=300)
    assert "[" in _diff_cells(markdown, "mrl")[8]
    for label in ("old", "part"):
        assert all(c.endswith(" no interval (no test_pairs.npz)")
                   for c in _diff_cells(markdown, label).values())  # fmt: skip
    # a reference without them: no interval anywhere, and still a report
    markdown, *_ = build_report([tmp_path], reference="old", n_boot=300)
    assert all(c.endswith("no interval (no test_pairs.npz)")
               for c in _diff_cells(markdown, "mrl").values())  # fmt: skip


def test_runs_scored_on_other_test_pairs_are_one_error_line(tmp_path, capsys):
    for seed in (1, 2):
        write_scored_run(tmp_path, "mrl", seed, _gold(0), {32: 0.6, 16: 0.7, 8: 0.7})
    write_scored_run(tmp_path, "base", 1, _gold(0), {32: 0.6, 16: 0.8, 8: 1.2})
    other = write_scored_run(tmp_path, "other", 1, _gold(1), {32: 0.6, 16: 0.8, 8: 1.2})
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    assert error_lines(capsys) == [
        f"error: {other} was scored on other test pairs than {tmp_path / 'base' / 'seed1'} "
        "(its gold scores differ); report runs of one test set."
    ]


def fixed_dim_study(root, sizes=(32, 16, 8), seeds=(1, 2)):
    """MRL, baseline and one group per size trained alone (best at its own size), as the
    fixed_dim sweep leaves them: `matryoshka.fixed_dim=<d>` in overrides and config."""
    gold = _gold()
    for seed in seeds:
        write_scored_run(root, "allnli_mrl", seed, gold, {32: 0.6, 16: 0.7, 8: 0.8})
        write_scored_run(root, "allnli_baseline", seed, gold, {32: 0.6, 16: 0.8, 8: 1.2},
                         matryoshka=False)  # fmt: skip
        for size in sizes:
            noise = {d: 0.5 if d == size else 1.5 for d in DIMS}
            config = {"matryoshka": {"enabled": True, "fixed_dim": size}}
            write_scored_run(root, f"allnli_fixed_dim/fixed_dim={size}", seed, gold, noise,
                             overrides=[f"matryoshka.fixed_dim={size}"], config=config)  # fmt: skip
    return root


def test_fixed_dim_groups_make_one_trained_at_each_size_row(tmp_path):
    study = fixed_dim_study(tmp_path / "all")
    markdown, out, groups, dims = build_report([study], n_boot=300)
    label = "trained at each size (allnli_fixed_dim)"
    by_label = {g.label: g for g in groups}
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} | 2 |"))
    cells = [c.strip() for c in row.split("|")[3:-2]]
    for d, cell in zip(DIMS, cells, strict=True):  # each size's own group, at that size
        part = by_label[f"allnli_fixed_dim matryoshka.fixed_dim={d}"]
        assert cell == f"{part.mean[d]:.4f} ± {part.std[d]:.4f}"
    assert not any(line.startswith("| allnli_fixed_dim matryoshka") for line in
                   markdown.split("Runs (below")[0].splitlines())  # fmt: skip
    rows = list(csv.DictReader((out / "report.csv").read_text().splitlines()))
    curve = {int(r["dim"]): r for r in rows if r["group"] == label}
    for d in DIMS:  # its intervals are those of the group trained at d, at d
        part = next(r for r in rows if r["group"].endswith(f"fixed_dim={d}") and r["dim"] == str(d))
        assert curve[d]["fixed_dim"] == str(d)
        assert [curve[d][k] for k in ("spearman_mean", "diff_low", "diff_high")] == [
            part[k] for k in ("spearman_mean", "diff_low", "diff_high")
        ]
    assert out.joinpath("report.png").read_bytes()[:4] == b"\x89PNG"
    main([str(study), "--x", "bytes", "--n-boot", "100", "--out", str(tmp_path / "bytes")])
    assert (tmp_path / "bytes" / "report.png").read_bytes()[:4] == b"\x89PNG"
    # sizes without a group are "–"; the curve can be the reference
    study = fixed_dim_study(tmp_path / "two", sizes=(16, 8))
    markdown, *_ = build_report([study], reference=label, n_boot=300)
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    assert row.split("|")[3].strip() == "–" and row.split("|")[-2].strip() == "–"  # 32, AUC
    mrl = _diff_cells(markdown, "allnli_mrl")
    assert mrl[32] == "–" and "[" in mrl[16] and "[" in mrl[8]


def test_group_by_folder_labels_a_study_of_training_runs_and_evaluations(tmp_path, capsys):
    """STUDY/<label>/<seed>/: training runs, eval.py results (matryoshka unknown, no
    fixed_dim in their config) and a folder per size trained alone."""
    gold = _gold()
    for seed in (1, 2):
        write_scored_run(tmp_path, "mrl", seed, gold, {32: 0.6, 16: 0.7, 8: 0.8},
                         overrides=["+exp=allnli_mrl"])  # fmt: skip
        write_scored_run(tmp_path, "baseline", seed, gold, {32: 0.6, 16: 0.8, 8: 1.2},
                         matryoshka=False, overrides=["+exp=allnli_baseline"])  # fmt: skip
        write_scored_run(tmp_path, "eval_minilm", seed, gold, {32: 0.7, 16: 0.9, 8: 1.3},
                         matryoshka=None, config={})  # fmt: skip
        for size in (16, 8):
            noise = {d: 0.5 if d == size else 1.5 for d in DIMS}
            write_scored_run(tmp_path, f"fixed_dim={size}", seed, gold, noise,
                             matryoshka=None, config={})  # fmt: skip
    runs, groups, _ = collect([tmp_path], group_by="folder")
    assert {r.group for r in runs} == {"mrl", "baseline", "eval_minilm", "fixed_dim=16",
                                       "fixed_dim=8"}  # fmt: skip
    kinds = {g.label: (g.matryoshka, g.fixed_dim) for g in groups}
    assert kinds["eval_minilm"] == (None, None) and kinds["fixed_dim=8"] == (None, 8)
    assert kinds["baseline"] == (False, None) and kinds["mrl"] == (True, None)
    main([str(tmp_path), "--group-by", "folder", "--reference", "eval_minilm", "--n-boot", "200"])
    md = (tmp_path / "report.md").read_text()
    assert "against **eval_minilm**" in md
    assert re.search(r"^\| trained at each size \| 2 \| – \| 0\.\d{4} ± ", md, re.M)
    assert set(_diff_cells(md, "baseline")) == set(DIMS) and "| mrl/seed1 | mrl | 1 |" in md
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    markdown, *_ = build_report([tmp_path], group_by="folder", n_boot=100)
    assert "against **baseline**" in markdown  # default: the first baseline, not eval.py's
    capsys.readouterr()


def test_grids_of_2d_runs_get_mean_tables_and_difference_heatmaps(tmp_path):
    def grid(shift):
        return {f"L{layer}d{d}": 0.1 * layer + shift for layer in (1, 2) for d in DIMS}

    for seed, shift in ((1, 0.0), (2, 0.02)):
        write_run(tmp_path, "two_d", seed, [0.8, 0.7, 0.6], overrides=["+exp=two_d"],
                  grid=grid(shift))  # fmt: skip
        write_run(tmp_path, "mrl", seed, [0.8, 0.7, 0.6], overrides=["+exp=mrl"],
                  grid=grid(-0.05))  # fmt: skip
    markdown, out, _, _ = build_report([tmp_path], reference="mrl", n_boot=50)
    text = (out / "report.md").read_text()
    assert "## Layers x dims" in text
    section = text.split("### two_d (n=2)")[1].split("###")[0]
    assert f"| 1 | {0.11:.4f} |" in section  # layer 1: mean of 0.10 and 0.12
    assert (out / "grid_two_d.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "grid_two_d_minus_mrl.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "grid_mrl_minus_mrl.png").exists()


def test_committed_copies_hold_no_gold_scores_and_read_them_from_the_data(tmp_path, monkeypatch):
    from mrl.artifacts.pairs import load_pairs, strip_gold
    from mrl.common.errors import ConfigError
    from tests.conftest import write_jsonl

    gold = (np.random.default_rng(0).integers(0, 41, N_PAIRS) / 40).astype(np.float32)
    data = tmp_path / "data"
    write_jsonl(data / "stsb/test.jsonl",
                [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": float(g) * 5}
                 for i, g in enumerate(gold)])  # fmt: skip
    source = {"hub_id": "sentence-transformers/stsb", "hub_split": "test",
              "local_file": "stsb/test.jsonl", "columns": ["sentence1", "sentence2", "score"],
              "local_score_max": 5.0}  # fmt: skip
    noise = dict.fromkeys(DIMS, 0.5)
    runs = [write_scored_run(tmp_path / "study", "mrl", s, gold, noise) for s in (1, 2)]
    for run in runs:
        strip_gold(run / "test_pairs.npz", source)
        with np.load(run / "test_pairs.npz") as saved:
            assert "gold" not in saved.files
    monkeypatch.setenv("MRL_DATA_DIR", str(data))
    assert np.array_equal(load_pairs(runs[0] / "test_pairs.npz").gold, gold)
    # other scores in the data: one line, not wrong intervals
    write_jsonl(data / "stsb/test.jsonl",
                [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": 2.5}
                 for i in range(N_PAIRS)])  # fmt: skip
    with pytest.raises(ConfigError, match="differ from the ones the pairs were scored on"):
        load_pairs(runs[0] / "test_pairs.npz")


def test_a_copied_eval_result_takes_its_seed_from_the_seed_folder(tmp_path):
    copied = Run(path=tmp_path / "study" / "baseline+pca" / "seed43", status="finished")
    assert copied.seed == 43
    assert Run(path=tmp_path / "study" / "untrained", status="finished").seed == "?"


def test_a_random_subsets_draws_are_rows_beside_its_seeds(tmp_path):
    """eval.py random_subset writes one test_pairs.npz per draw (draws/<i>/): the report stacks
    them as rows, so the interval is the one of every draw of every seed."""
    from mrl.artifacts.pairs import PAIRS, load_pairs, write_pairs
    from mrl.evaluation.intervals import intervals_by_dim

    gold = _gold()
    rows = []
    for seed in (1, 2):
        write_scored_run(tmp_path, "mrl", seed, gold, {32: 0.6, 16: 0.7, 8: 0.7})
        run = write_scored_run(tmp_path, "subset", seed, gold, {32: 0.6, 16: 0.9, 8: 1.4})
        rng = np.random.default_rng(seed)
        for i in range(3):  # the run's own pairs move to draw 0; draws 1, 2 are noisier
            sims = load_pairs(run / PAIRS).sims
            sims = {d: s + 0.3 * i * rng.standard_normal(s.size).astype(np.float32)
                    for d, s in sims.items()}  # fmt: skip
            (run / "draws" / str(i)).mkdir(parents=True)
            write_pairs(run / "draws" / str(i) / PAIRS, gold, sims)
            rows.append(sims)
        (run / PAIRS).unlink()
    main([str(tmp_path), "--group-by", "folder", "--reference", "mrl", "--n-boot", "300"])
    cells = _diff_cells((tmp_path / "report.md").read_text(), "subset")
    mrl = [load_pairs(tmp_path / "mrl" / f"seed{s}" / PAIRS).sims for s in (1, 2)]
    expected = intervals_by_dim({d: np.stack([r[d] for r in rows]) for d in DIMS},
                                {d: np.stack([m[d] for m in mrl]) for d in DIMS}, gold,
                                n_boot=300)  # fmt: skip
    for d in DIMS:
        _, low, high = _interval(cells[d])
        assert (low, high) == pytest.approx((expected[d].low, expected[d].high), abs=1e-4), d
        assert expected[d].n_seeds_a == 6
