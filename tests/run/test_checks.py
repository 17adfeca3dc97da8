"""The check pass (mrl.run.checks): every bad option is one `error:` line, exit 2, before any work,
with no run folder left; a plan print; debug runs never count as finished."""

import json
import signal
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FAST

MRL = ["+exp=allnli_mrl", *FAST]


def _fails_in_one_line(run_main, run_dir, overrides, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_main([*MRL, *overrides], run_dir)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2, err
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    assert not run_dir.exists(), "a failed run must leave no run folder"
    return errors[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # the five that used to give a wrong result with exit 0, or hang
        ("loss.scale=0", "loss.scale=0 must be a number > 0"),
        ("loss.scale=-20", "loss.scale=-20 must be a number > 0"),
        ("optim.warmup_ratio=2", "optim.warmup_ratio=2 must be a number >= 0 and < 1"),
        ("data.batch_size=0", "data.batch_size=0 must be a whole number >= 1"),
        ("data.batch_size=-3", "data.batch_size=-3 must be a whole number >= 1"),
        # tracebacks after minutes of work
        ("matryoshka.weights=[0,0,0,0]", "must have at least one weight > 0"),
        ("matryoshka.n_dims_per_step=2.5", "matryoshka.n_dims_per_step=2.5 must be a whole"),
        ("matryoshka.dims=32", "matryoshka.dims=32 must be a non-empty list"),
        ("optim.lr=-1", "optim.lr=-1 must be a number > 0"),
        ("optim.lr=abc", "optim.lr='abc' must be a number > 0"),
        ("trainer.max_steps=-5", "trainer.max_steps=-5 must be a whole number >= -1"),
        ("model.backbone=/does/not/exist", "model.backbone='/does/not/exist' does not exist"),
        ("matryoshka.dims=[16,8]", "lacks the full width 32"),
        ("loss.name=nope", "loss.name='nope' is unknown; use one of mnrl"),
        # a sweeper must never select on test
        ("optimized_metric=test/spearman@32", "must be a validation quantity"),
        # 2D Matryoshka and quantization-aware options
        ("matryoshka.layers=[7]", "matryoshka.layers holds 7, beyond the backbone's 2 layers"),
        ("matryoshka.alignment_weight=abc", "matryoshka.alignment_weight='abc' must be a number"),
        ("qat.warmup_steps=-1", "qat.warmup_steps=-1 must be a whole number >= 0"),
        ("qat.terms=[{dim: 12, precision: binary}]", "dim 12 is not in the schedule"),
        # found by the fuzz: Lightning's own TypeError
        ("trainer.devices=[0]", "trainer.devices=[0] names GPUs, but this run is on the CPU"),
    ],
)
def test_bad_option_is_one_line_before_any_work(
    data_dir, run_main, tmp_path, capsys, override, message
):
    line = _fails_in_one_line(run_main, tmp_path / "run", [override], capsys)
    assert message in line


BINARY16 = "qat.terms=[{dim: 16, precision: binary}]"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # settings that are each valid but impossible in this run (tiny: width 32)
        ([BINARY16, "matryoshka.enabled=false"], "dim 16 is not trained in this run "
         "(matryoshka.enabled=false trains the full width only), so only its quantized prefix "
         "would be; quantize a trained dim (32)"),
        ([BINARY16, "matryoshka.fixed_dim=8"], "(matryoshka.fixed_dim=8 trains that prefix only)"),
        ([BINARY16, "matryoshka.weights=[1,0,1,1]"], "matryoshka.weights gives it weight 0"),
        (["qat.terms=[{dim: 64, precision: int8}]"], "dim 64 is beyond the embedding width 32"),
        ([BINARY16, "qat.warmup_steps=5", "trainer.max_steps=5"],
         "qat.warmup_steps=5 is not below the 5 training steps (trainer.max_steps)"),
        # an epoch-bound run: 48 triplets in batches of 16 are 3 steps, known once data is read
        ([BINARY16, "qat.warmup_steps=3", "data.batch_size=16"],
         "qat.warmup_steps=3 is not below the 3 training steps (trainer.max_epochs x batches"),
        # shapes that were tracebacks (int('abc'), KeyError, 'int' object is not iterable) or
        # ignored (a misspelt key)
        (["qat.terms=[{dim: abc, precision: binary}]"], "dim 'abc' must be a whole number"),
        (["qat.terms=[{dim: 16}]"], "has no precision"),
        (["qat.terms=16"], "qat.terms=16 must be a list of {dim: 64, precision: binary"),
        (["qat.terms=[16]"], "qat.terms entry 16 must be a mapping"),
        (["qat.terms=[{dim: 16, precision: binary, wieght: 2}]"],
         "'wieght' is not a key of a term, so it would be ignored; did you mean weight?"),
        (["qat.terms=[{dim: 16, precision: int8},{dim: 16, precision: int8}]"], "listed twice"),
        (["qat.terms=[{dim: 16, precision: int4}]"], "precision 'int4' does not exist"),
        (["qat.estimator=nope"], "qat.estimator='nope' must be one of ste, tanh"),
    ],
)  # fmt: skip
def test_qat_settings_impossible_in_their_run_are_one_line_in_the_plan(
    data_dir, run_main, tmp_path, capsys, overrides, message
):
    line = _fails_in_one_line(run_main, tmp_path / "run", [*overrides, "+plan=true"], capsys)
    assert message in line, line


@pytest.mark.parametrize(
    "overrides",
    [  # the baseline with QAT at its full width; a fixed-dim run with QAT at its dim
        ["qat.terms=[{dim: 32, precision: binary}]", "matryoshka.enabled=false"],
        [BINARY16, "matryoshka.fixed_dim=16", "qat.warmup_steps=1", "trainer.max_steps=2"],
    ],
)
def test_qat_at_a_trained_dim_plans(data_dir, run_main, tmp_path, capsys, overrides):
    run_main([*MRL, *overrides, "+plan=true"], tmp_path / "run")
    assert "schedule dims" in capsys.readouterr().out


def test_backbone_folder_without_tokenizer_files_is_refused(data_dir, run_main, tmp_path, capsys):
    from transformers import BertModel

    from mrl.encoder.backbone import tiny_config

    folder = tmp_path / "no-tokenizer"
    BertModel(tiny_config()).save_pretrained(folder)
    line = _fails_in_one_line(run_main, tmp_path / "run", [f"model.backbone={folder}"], capsys)
    assert "has no tokenizer files" in line


def test_tokenizer_that_does_not_fit_the_embedding_table_is_refused(
    data_dir, run_main, tmp_path, capsys
):
    from transformers import BertConfig, BertModel

    from mrl.encoder.backbone import tiny_config, tiny_tokenizer

    folder = tmp_path / "mismatch"
    config = BertConfig(**{**tiny_config().to_dict(), "vocab_size": 30522})
    BertModel(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    line = _fails_in_one_line(run_main, tmp_path / "run", [f"model.backbone={folder}"], capsys)
    assert f"its tokenizer has {len(tiny_tokenizer())} tokens" in line and "30522" in line


def test_unwritable_checkpoints_folder_is_found_before_training(
    data_dir, run_main, tmp_path, capsys, monkeypatch
):
    import tempfile

    import mrl.artifacts.run_folder

    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and "checkpoints" in str(dir) or str(dir).endswith("run"):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(mrl.artifacts.run_folder.tempfile, "mkstemp", refuse)
    line = _fails_in_one_line(run_main, tmp_path / "run", [], capsys)
    assert "is not writable (Permission denied)" in line


def test_plan_prints_the_resolved_run_and_trains_nothing(data_dir, run_main, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_main([*MRL, "+plan=true", "matryoshka.dims=[32,8]", "data.batch_size=16"], run_dir)
    out = capsys.readouterr().out
    assert "schedule dims    [32, 8]" in out and "eval dims        [32, 16, 8, 4]" in out
    assert "steps            3 (3 batches per epoch, 1 epoch(s))" in out
    assert f"run folder       {run_dir}" in out
    assert not run_dir.exists()


def test_debug_runs_never_count_as_finished(data_dir, run_main, tmp_path):
    run_dir = tmp_path / "run"
    run_main([*MRL, "trainer.fast_dev_run=true"], run_dir)
    first = json.loads((run_dir / "results.json").read_text())
    assert first["debug"] is True
    before = (run_dir / "results.json").stat().st_mtime_ns
    run_main([*MRL, "trainer.fast_dev_run=true"], run_dir)  # runs again, not "finished"
    assert (run_dir / "results.json").stat().st_mtime_ns != before


def test_validation_runs_at_the_end_when_training_was_too_short_for_one(
    data_dir, run_main, tmp_path
):
    run_dir = tmp_path / "run"  # 48 triplets in batches of 16: 3 steps per epoch, stop at 2
    run_main([*MRL, "data.batch_size=16", "trainer.max_steps=2"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 2 and set(results["validation"]) == {"32", "16", "8", "4"}


# ---- the config fuzz: random values of the wrong type, sign, size and shape ----

FUZZED_OPTIONS = [
    "seed", "model.pooling", "model.chunk_size", "model.compile", "matryoshka.enabled",
    "matryoshka.dims", "matryoshka.rule", "matryoshka.min_dim_ratio", "matryoshka.weights",
    "matryoshka.n_dims_per_step", "matryoshka.fixed_dim", "loss.name", "loss.scale",
    "loss.cached_mini_batch_size", "loss.on_nonfinite", "optim.lr", "optim.weight_decay",
    "optim.warmup_ratio",
    "data.batch_size", "data.max_seq_length", "data.max_train_samples", "data.no_duplicates",
    "data.num_workers", "eval.batch_size", "eval.score_untrained", "callbacks.progress_bar",
    "callbacks.checkpoint_every_n_steps", "trainer.max_epochs", "trainer.max_steps",
    "trainer.precision", "trainer.devices", "trainer.accumulate_grad_batches",
    "trainer.log_every_n_steps", "trainer.gradient_clip_val", "trainer.limit_train_batches",
    "qat.terms", "qat.warmup_steps", "qat.estimator",
]  # fmt: skip

scalars = st.one_of(
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, 1, -1, 2, 3, 32, 10**9]),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
    st.sampled_from(["abc", "null", "true", "false", "auto", "nan", "inf", "-inf", "''"]),
    st.text(string.ascii_letters, min_size=1, max_size=6),
)
values = st.one_of(
    scalars.map(str),
    st.lists(st.integers(-64, 64), max_size=4).map(lambda v: "[" + ",".join(map(str, v)) + "]"),
    st.lists(st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 2)), max_size=4).map(
        lambda v: "[" + ",".join(map(str, v)) + "]"
    ),
)


class Hang(Exception):
    pass


def plan_within(run_main, override: str, run_dir, seconds: int) -> tuple[int, list[str], str]:
    """`train.py <MRL> +plan=true <override>` in-process, stopped after `seconds`: its exit
    status (0 when it planned), stderr's lines and stderr whole. The fuzzes' one run."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    def hang(*_):
        raise Hang(f"{override} ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            run_main([*MRL, "+plan=true", override], run_dir)
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue().strip().splitlines(), err.getvalue()


@pytest.mark.slow
@settings(
    max_examples=75,  # random each run (not derandomized): CI explores new values every time
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(option=st.sampled_from(FUZZED_OPTIONS), value=values)
def test_config_fuzz_runs_or_stops_in_one_line(data_dir, run_main, tmp_path, option, value):
    """Each example plans the run (+plan=true: checks, builds, loads the tiny data, prints)
    or stops with exit 2 and one error line, within 60 s, leaving no run folder."""
    run_dir = tmp_path / f"fuzz-{abs(hash((option, value)))}"
    code, lines, _ = plan_within(run_main, f"{option}={value}", run_dir, 60)
    assert code in (0, 2), f"{option}={value}: exit {code}: {lines[-5:]}"
    if code == 2:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1, f"{option}={value}: {lines[-5:]}"
    assert not run_dir.exists(), f"{option}={value} left {run_dir}"


def test_the_composed_config_is_printed_as_a_tree_once_it_passed(
    data_dir, run_main, tmp_path, capsys
):
    run_main([*MRL, "+plan=true", "optim.lr=3e-5"], tmp_path / "run")
    out = capsys.readouterr().out
    assert out.index("config") < out.index("schedule dims")  # the tree, then the plan
    assert "matryoshka" in out and "lr: 3.0e-05" in out
    _fails_in_one_line(run_main, tmp_path / "bad", ["optim.lr=-1"], capsys)  # no tree then


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.prompts={anchr:'query: '}",
            "data.prompts.anchr: the training data has no text column 'anchr'; use one of "
            "anchor, positive, negative.",
        ),
        ("data.prompts={anchor:5}", "data.prompts.anchor=5 must be a text (or leave it out)."),
        ("data.prompts='query: '", "data.prompts='query: ' must be null or {column: text}"),
        ("eval.prompt=5", "eval.prompt=5 must be a text or null."),
    ],
)
def test_a_prompt_for_a_column_that_does_not_exist_is_one_line(
    data_dir, run_main, tmp_path, capsys, override, message
):
    line = _fails_in_one_line(run_main, tmp_path / "run", [override], capsys)
    assert message in line, line


def test_a_mixture_takes_prompts_for_the_columns_of_any_of_its_datasets(
    data_dir, run_main, tmp_path, capsys
):
    mixture = ["+exp=mixture_mrl", *FAST, "+plan=true"]
    prompts = "data.prompts={anchor:'query: ',sentence1:'query: ',sentence2:'query: '}"
    run_main([*mixture, prompts], tmp_path / "run")
    assert "mixture          nli" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_main([*mixture, "data.prompts={sentence3:'q: '}"], tmp_path / "bad")
    assert capsys.readouterr().err.strip() == (
        "error: data.prompts.sentence3: the training data has no text column 'sentence3'; use "
        "one of anchor, positive, negative, sentence1, sentence2."
    )
