"""One fuzz over the command-line tools (mine, export, retrieval, quantization, report): random
values for every option, each run in-process on the tiny model. Each example is a clean result
(exit 0) or exit 2 with one `error:` line, within 60 s, with no traceback, no input file
changed (hashed before and after) and nothing left behind when it fails."""

from __future__ import annotations

import hashlib
import io
import shutil
import signal
import string
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, write_jsonl

RUN_FIXTURE = ROOT / "tests" / "fixtures" / "pre_layout_run"  # a finished tiny run (30667fc)

# each tool's options (every one its --help lists, but the ones that reach the network:
# --push-to-hub/--private, --wandb-project, --device, and the demo, which serves until stopped)
OPTIONS = {
    "mine": ["--k", "--ranks", "--margin", "--anchor", "--positive", "--where", "--pool",
             "--pool-column", "--batch-size", "--max-seq-length"],
    "export": ["--out", "--allow-earlier-checkpoint", "--layers"],
    "retrieval": ["--d-small", "--k", "--funnel", "--binary", "--batch-size", "--out"],
    "quantization": ["--name", "--dims", "--calibration-size", "--out"],
    "report": ["--out", "--reference", "--x", "--group-by", "--n-boot", "--level"],
}  # fmt: skip
FLAGS = {"--allow-earlier-checkpoint"}

tokens = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "3", "8", "16", "32", "33", "64", "100000"]),
    st.sampled_from(["0.5", "-0.05", "2.5", "nan", "inf", "abc", "", "label=0", "32:4,8:2"]),
    st.integers(-(10**6), 10**6).map(str),
    st.text(string.ascii_letters + "=:,.-_/", min_size=1, max_size=8),
    st.sampled_from(["@data", "@model", "@run", "@missing", "@new"]),  # paths, filled in below
)


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def inputs(tiny_model, data_dir, tmp_path):
    """The tools' inputs under tmp_path/inputs: a model folder, pairs, texts, a finished run."""
    root = tmp_path / "inputs"
    shutil.copytree(tiny_model, root / "model")
    rows = [{"anchor": f"a dog runs {i}", "positive": f"a dog is running {i}", "label": i % 2,
             "text": f"a cat sleeps on mat {i}"} for i in range(24)]  # fmt: skip
    write_jsonl(root / "pairs.jsonl", rows)
    shutil.copytree(RUN_FIXTURE, root / "run")
    shutil.copytree(data_dir, root / "data")  # MRL_DATA_DIR (retrieval, quantization) stays put
    return root


def argv_for(tool: str, inputs: Path, out: Path, option: str, values: list[str]) -> list[str]:
    paths = {"@data": inputs / "pairs.jsonl", "@model": inputs / "model", "@run": inputs / "run",
             "@missing": inputs / "nope", "@new": out}  # fmt: skip
    values = [str(paths.get(v, v)) for v in values]
    out.mkdir(parents=True, exist_ok=True)  # the folder a user writes into (left empty on errors)
    texts = str(inputs / "pairs.jsonl")
    base = {
        "mine": [str(inputs / "model"), texts, "--out", str(out / "mined.jsonl"),
                 "--ranks", "0", "8", "--k", "1", "--margin", "0"],
        "export": [str(inputs / "run"), "--out", str(out / "export")],
        "retrieval": [str(inputs / "model"), "--queries", texts, "--corpus", texts,
                      "--out", str(out / "retrieval.md")],
        "quantization": [str(inputs / "model"), "--out", str(out / "q"),
                         "--calibration-size", "16"],
        "report": [str(inputs / "run"), "--out", str(out / "report"), "--n-boot", "20"],
    }[tool]  # fmt: skip
    return [*base, option, *([] if option in FLAGS else values)]


def run_tool(tool: str, argv: list[str]) -> tuple[int, str]:
    from mrl.artifacts.export import main as export_main
    from mrl.report.build import main as report_main
    from mrl.tools.mine import main as mine_main
    from mrl.tools.quantization import main as quantization_main
    from mrl.tools.retrieval import main as retrieval_main

    main = {"mine": mine_main, "export": export_main, "retrieval": retrieval_main,
            "quantization": quantization_main, "report": report_main}[tool]  # fmt: skip

    def hang(*_):
        raise TimeoutError(f"{tool} {argv} ran past 60 s")

    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


@pytest.mark.slow
@settings(
    max_examples=30,
    derandomize=True,  # the same 30 examples on every run (CI included); seeds tried: see docs
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tool_option=st.sampled_from([(t, o) for t, options in OPTIONS.items() for o in options]),
    values=st.lists(tokens, min_size=1, max_size=2),
)
def test_every_tool_runs_or_stops_in_one_line(inputs, tmp_path, monkeypatch, tool_option, values):
    tool, option = tool_option
    out = Path(tempfile.mkdtemp(dir=tmp_path, prefix="out-"))  # new for every example
    argv = argv_for(tool, inputs, out, option, values)
    workdir = Path(tempfile.mkdtemp(dir=tmp_path, prefix="cwd-"))  # a relative --out lands here
    monkeypatch.chdir(workdir)
    before = tree_hashes(inputs)
    code, err = run_tool(tool, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, f"{argv}: {lines[-5:]}"
    assert code in (0, 2), f"{argv}: exit {code}: {lines[-5:]}"
    assert tree_hashes(inputs) == before, f"{argv} changed an input file"
    if code == 2:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1, f"{argv}: {lines[-5:]}"
        assert not any(out.rglob("*")) and not any(workdir.iterdir()), f"{argv} left files"
    shutil.rmtree(out, ignore_errors=True)  # (workdir stays: it is the current folder)


@pytest.mark.parametrize("tool", sorted(OPTIONS))
def test_every_tool_help_describes_every_option(tool):
    """--help: a description for each option (none left as bare NAME)."""
    code, _ = run_tool(tool, ["--help"])
    assert code == 0
    import argparse

    import mrl.artifacts.export as export
    import mrl.report.build as report
    import mrl.tools.mine as mine
    import mrl.tools.quantization as quantization
    import mrl.tools.retrieval as retrieval

    module = {"mine": mine, "export": export, "retrieval": retrieval,
              "quantization": quantization, "report": report}[tool]  # fmt: skip
    captured: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def grab(self, *args, **kwargs):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            module.main([])
    finally:
        argparse.ArgumentParser.parse_args = real
    undocumented = [a.dest for a in captured[0]._actions if not a.help]
    assert undocumented == [], f"{tool} --help leaves out {undocumented}"


@pytest.mark.parametrize(
    ("tool", "option", "values"),
    [("mine", "--k", ["1"]), ("export", "--layers", ["1"]), ("retrieval", "--k", ["5"]),
     ("quantization", "--dims", ["32", "16"]), ("report", "--x", ["dim"])],
)  # fmt: skip
def test_the_fuzz_base_commands_succeed(inputs, tmp_path, tool, option, values):
    """The fuzz starts from commands that work: its examples reach each tool's real work."""
    out = tmp_path / "out"
    before = tree_hashes(inputs)
    code, err = run_tool(tool, argv_for(tool, inputs, out, option, values))
    assert code == 0, err[-2000:]
    assert tree_hashes(inputs) == before and any(out.rglob("*"))


def test_mining_refuses_a_negative_margin(inputs, tmp_path):
    argv = argv_for("mine", inputs, tmp_path / "out", "--margin", ["-0.1"])
    code, err = run_tool("mine", argv)
    assert code == 2 and "--margin -0.1 is negative" in err, err
    assert not any((tmp_path / "out").iterdir())
