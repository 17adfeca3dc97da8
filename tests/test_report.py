import json

import pytest

from mrl.report import main, markdown_table


def fake_results(name, matryoshka, scores, untrained=None):
    dims = [32, 16, 8]
    return {
        "experiment": name,
        "backbone": "tiny",
        "matryoshka": matryoshka,
        "dims": dims,
        "train_dims": dims if matryoshka else [32],
        "test": {str(d): s for d, s in zip(dims, scores, strict=True)},
        "untrained_test": untrained,
    }


def test_table_has_untrained_row_each_run_and_retention(tmp_path, capsys):
    mrl = fake_results("mrl", True, [0.8, 0.78, 0.76], untrained={"32": 0.7, "16": 0.6, "8": 0.5})
    base = fake_results("base", False, [0.81, 0.7, 0.5])
    for name, run in (("mrl", mrl), ("base", base)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(run))
    main([str(tmp_path / "mrl"), str(tmp_path / "base"), "--out", str(tmp_path / "t.md")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | 32 | 16 | 8 | retention at 8 (25.0 % of dims)")
    assert lines[2] == "| tiny (untrained) | 0.7000 | 0.6000 | 0.5000 | 71.4 % |"
    assert lines[3] == "| mrl (loss at all dims) | 0.8000 | 0.7800 | 0.7600 | 95.0 % |"
    assert lines[4].startswith("| base (loss at full width only (32)) | 0.8100")
    assert (tmp_path / "t.md").read_text().splitlines() == lines


def test_runs_with_different_dims_are_refused():
    a = fake_results("a", True, [0.8, 0.7, 0.6])
    b = dict(fake_results("b", True, [0.8, 0.7, 0.6]), dims=[32, 8])
    with pytest.raises(ValueError, match="different dims"):
        markdown_table([a, b])


def test_missing_run_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*nope holds no results.json"):
        main([str(tmp_path / "nope")])
