"""Truncation x quantization: bytes, calibrated int8 / binary, and the float32 reference."""

import numpy as np
import pytest

from mrl.evaluation.metrics import spearman_by_dim
from mrl.tools.quantization import (
    Calibration,
    bytes_per_embedding,
    pair_similarity,
    spearman_by_dim_and_kind,
)
from tests.conftest import ROOT


def test_bytes_per_embedding():
    assert [bytes_per_embedding(64, k) for k in ("float32", "float16", "int8", "binary")] == [
        256, 128, 64, 8,
    ]  # fmt: skip
    assert bytes_per_embedding(33, "binary") == 5


def test_int8_round_trip_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(500, 16)).astype(np.float32)
    cal = Calibration(sample)
    x = sample[:50]
    back = cal.int8_dequantized(cal.int8(x))
    step = (cal.high - cal.low) / 255
    assert np.all(np.abs(back - x) <= step / 2 + 1e-6)
    assert cal.int8(x).dtype == np.int8


def test_binary_similarity_is_the_share_of_equal_bits():
    cal = Calibration(np.array([[0.0] * 10, [0.0] * 10, [1.0] * 10], dtype=np.float32))  # medians 0
    a = np.array([[1, 1, 1, 1, -1, -1, -1, -1, 1, 1]], dtype=np.float32)
    b = np.array([[1, 1, -1, -1, -1, -1, 1, 1, 1, -1]], dtype=np.float32)
    assert pair_similarity(a, b, "binary", cal)[0] == pytest.approx(5 / 10)
    assert pair_similarity(a, a, "binary", cal)[0] == 1.0


def test_float32_rows_equal_our_evaluation_and_storage_costs_little_on_good_data():
    import torch

    rng = np.random.default_rng(1)
    left = rng.normal(size=(300, 32)).astype(np.float32)
    right = left + rng.normal(size=(300, 32)).astype(np.float32) * rng.uniform(0.1, 2, (300, 1))
    gold = -np.linalg.norm(left - right, axis=1)
    cal = Calibration(np.concatenate([left, right]))
    rows = spearman_by_dim_and_kind(left, right, gold, [32, 8], cal)
    ours = spearman_by_dim(torch.tensor(left), torch.tensor(right), gold, [32, 8])
    f32 = {r["dim"]: r["spearman"] for r in rows if r["kind"] == "float32"}
    assert f32 == pytest.approx(ours, abs=1e-9)
    at32 = {r["kind"]: r["spearman"] for r in rows if r["dim"] == 32}
    assert at32["float16"] == pytest.approx(at32["float32"], abs=1e-3)
    assert at32["float32"] - 0.05 < at32["int8"] <= at32["float32"] + 0.01
    assert 0.3 < at32["binary"] < at32["float32"]


def test_main_uses_the_models_eval_dims_and_the_validated_loader(data_dir, tmp_path, capsys):
    import torch

    from mrl.artifacts.export import export_encoder
    from mrl.artifacts.results import RunResults
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder
    from mrl.tools.quantization import main

    torch.manual_seed(0)
    encoder, tokenizer = (
        Encoder("mrl/tiny-random-bert").eval(),
        load_tokenizer("mrl/tiny-random-bert"),
    )
    results = RunResults(experiment="x", run_dir="r", backbone="b", eval_dims=[32, 12, 4],
                         test={32: 0.5, 12: 0.4, 4: 0.3})  # fmt: skip
    ours = export_encoder(encoder, tokenizer, tmp_path / "ours", 32, "b", results)
    foreign = export_encoder(encoder, tokenizer, tmp_path / "foreign", 32, "b")
    out = tmp_path / "q"
    main([str(ours), str(foreign), "--name", "ours", "foreign", "--out", str(out)])
    md = (out / "quantization.md").read_text()
    assert "| 32 dims | 16 dims | 12 dims | 8 dims | 4 dims |" in md  # the union of both
    ours_f32 = next(line for line in md.splitlines() if line.startswith("| ours | float32 |"))
    assert ours_f32.count(" - ") == 2  # 16 and 8 are not the run's dims
    rows = (out / "quantization.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * (3 + 4) and (out / "quantization.png").is_file()
    # per-pair similarities for intervals: no copy of the gold scores, and they give the table
    from scipy.stats import spearmanr

    from mrl.artifacts.pairs import load_pairs

    table = {(r[0], r[1], int(r[2])): float(r[4]) for r in (x.split(",") for x in rows[1:])}
    for name, kind in [("ours", "binary"), ("foreign", "int8"), ("ours", "float32")]:
        path = out / "pairs" / name / f"{kind}.npz"
        assert "gold" not in np.load(path).files
        stored = load_pairs(path)  # the scores read back from the data and checked
        for dim, sims in stored.sims.items():
            rho = spearmanr(sims, stored.gold).statistic
            assert rho == pytest.approx(table[(name, kind, dim)], abs=1e-5)
    capsys.readouterr()
    refused = [
        (["--dims", "64"], "--dims holds 64, larger than"),
        (["--calibration-size", "1"], "--calibration-size=1 must be >= 2"),
    ]
    for args, message in refused:
        with pytest.raises(SystemExit) as exit_info:
            main([str(ours), "--out", str(out), *args])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert exit_info.value.code == 2 and len(errors) == 1 and message in errors[0], err
    (data_dir / "stsb" / "test.jsonl").write_text(
        '{"sentence1": "a", "sentence2": "b", "score": "x"}\n'
    )
    with pytest.raises(SystemExit):
        main([str(ours), "--out", str(out)])
    assert 'test.jsonl line 1: field score is "x", not a number' in capsys.readouterr().err


def test_bytes_intervals_finds_a_real_difference_and_not_a_null_one(tmp_path):
    """experiments/bytes_intervals.py on synthetic pairs: a model whose similarities track the
    gold scores more closely is ahead (significant); two draws of one model are not."""
    import subprocess
    import sys

    from mrl.artifacts.pairs import write_pairs

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 1, 400)
    noise = {"close": 0.1, "far": 0.4, "close_again": 0.1}
    for model, scale in noise.items():
        for seed in (1, 2):
            folder = tmp_path / "pairs" / f"{model}-s{seed}"
            folder.mkdir(parents=True)
            sims = {d: gold + rng.normal(0, scale * 32 / d, gold.size) for d in (32, 16)}
            write_pairs(folder / "binary.npz", gold, sims)
    script = ROOT / "experiments" / "bytes_intervals.py"
    subprocess.run([sys.executable, str(script), str(tmp_path), "--kinds", "binary", "--compare",
                    "close:far", "close:close_again", "--n-boot", "300"], check=True,
                   capture_output=True)  # fmt: skip
    table = (tmp_path / "bytes_intervals.md").read_text()
    real = next(line for line in table.splitlines() if line.startswith("| close - far"))
    null = next(line for line in table.splitlines() if line.startswith("| close - close_again"))
    assert "(2 vs 2 seeds)" in real and "32 dims (4 B)" in table
    assert real.count("significant") == 2 and "significant" not in null


def _tiny_export(folder):
    import torch

    from mrl.artifacts.export import export_encoder
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder("mrl/tiny-random-bert").eval()
    return export_encoder(encoder, load_tokenizer("mrl/tiny-random-bert"), folder, 32, "b")


def _one_error(capsys, call) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_rerun_replaces_its_own_files_and_never_a_foreign_one(data_dir, tmp_path, capsys):
    from mrl.tools.quantization import main

    model, out = _tiny_export(tmp_path / "model"), tmp_path / "q"
    main([str(model), "--name", "a", "--out", str(out), "--dims", "32", "8"])
    main([str(model), "--name", "b", "--out", str(out), "--dims", "32", "8"])  # its own: replaced
    assert {r.split(",")[0] for r in (out / "quantization.csv").read_text().splitlines()[1:]} == {
        "b"
    }
    # a file of the same name that the tool did not write stops it before any model is loaded
    notes = out / "quantization.md"
    notes.write_text("# my notes on quantization\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    line = _one_error(capsys, lambda: main([str(model), "--name", "b", "--out", str(out)]))
    assert f"--out: {notes} exists and is not an earlier output of this tool" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    fresh = tmp_path / "fresh"  # a foreign plot in a folder without our tables
    fresh.mkdir()
    (fresh / "quantization.png").write_bytes(b"not ours")
    line = _one_error(capsys, lambda: main([str(model), "--out", str(fresh)]))
    assert "quantization.png exists and is not an earlier output" in line
    assert (fresh / "quantization.png").read_bytes() == b"not ours"
    # names become folders under --out: no path, no repeats (they would merge two models)
    line = _one_error(capsys, lambda: main([str(model), "--name", "../x", "--out", str(out)]))
    assert "--name '../x' must be a plain name" in line
    line = _one_error(capsys, lambda: main([str(model), str(model), "--out", str(tmp_path / "d")]))
    assert "the model names model model repeat one; give each its own with --name" in line
    assert not (tmp_path / "d").exists() and not (tmp_path / "x").exists()


def test_a_nan_spearman_is_one_line_and_nothing_is_written(data_dir, tmp_path, capsys):
    from mrl.tools.quantization import main

    model, out = _tiny_export(tmp_path / "model"), tmp_path / "q"
    # every gold score the same: Spearman is undefined (NaN) at every dim and storage
    rows = (data_dir / "stsb" / "test.jsonl").read_text().splitlines()
    (data_dir / "stsb" / "test.jsonl").write_text(
        "".join(line.rsplit('"score":', 1)[0] + '"score": 2.5}\n' for line in rows)
    )
    line = _one_error(capsys, lambda: main([str(model), "--out", str(out), "--dims", "32"]))
    assert "is nan, not a number" in line and "quantization" in line, line
    assert not out.exists() or not any(out.rglob("*"))
