"""Strict config keys (mrl.run.config_keys) and Hydra's own errors in our one-line format
(mrl.common.cli.hydra_errors_in_one_line): nothing a user types is ignored."""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrl.common.config_keys import nearest_key
from mrl.run.checks import OPTIONS
from mrl.run.config_keys import check_keys, known_keys, unknown_keys
from tests.conftest import CONF, FAST, ROOT
from tests.run.test_checks import MRL, _fails_in_one_line, plan_within


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+optim.learning_rate=1e-3", "optim.learning_rate is not an option anything reads"),
        ("+optim.learning_rate=1e-3", "did you mean optim.lr?"),
        ("+model.poolng=cls", "did you mean model.pooling?"),
        ("+data.max_seq_len=64", "did you mean data.max_seq_length?"),
        ("+trainer.max_step=3", "did you mean trainer.max_steps?"),
        ("+trainer.callbacks=[]", "trainer.callbacks is set by the run itself"),
        ("+trainer.barebones=true", "trainer.barebones is set by the run itself"),  # the fuzz
        ("+data.train.hub_idd=x", "did you mean data.train.hub_id?"),
        ("+lr=1e-3", "lr is not an option anything reads"),
    ],
)
def test_a_key_nothing_reads_stops_in_one_line_naming_the_nearest(
    data_dir, run_main, tmp_path, capsys, override, message
):
    line = _fails_in_one_line(run_main, tmp_path / "run", [override], capsys)
    assert message in line, line


def test_keys_the_code_reads_pass(data_dir, run_main, tmp_path, capsys):
    """A Trainer argument no file sets, a prompt per column and plan are all read."""
    extra = ["+trainer.detect_anomaly=false", "data.prompts={anchor:'q: '}", "+plan=true"]
    run_main([*MRL, *extra], tmp_path / "run")
    assert "schedule dims" in capsys.readouterr().out


def test_every_committed_config_has_only_known_keys(compose_cfg):
    """Every experiment, and every debug, qat, eval, data and search choice, composes to known
    keys (the global files only set keys: they are checked, not read for known ones)."""
    known = known_keys(CONF, OPTIONS)
    choices = [[], ["debug=overfit"], ["debug=profiler"], ["qat=int8_binary"]]
    choices += [["eval=stsb_scifact"], ["logger=csv"], ["data=nli_stsb_mixture"]]
    choices += [["hparams_search=mrl_optuna"], ["trainer=ddp"]]
    exps = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))
    runs = [[f"+exp={exp}"] for exp in exps] + [["+exp=allnli_mrl", *c] for c in choices]
    for overrides in runs:
        assert unknown_keys(compose_cfg(overrides), known) == [], overrides


def test_known_keys_come_from_the_config_files(tmp_path, compose_cfg):
    """A key added to a group file is known without a code change, under that group only."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "tiny_extra.yaml").write_text(
        "defaults:\n  - tiny\n  - _self_\nadapter:\n  rank: 8\n  scale: 16\n"
    )
    known = known_keys(conf, OPTIONS)
    assert "model.adapter.rank" in known and "model.adapter.scale" in known
    assert "model.adapter.rnak" not in known
    assert "model.adapter.rank" not in known_keys(CONF, OPTIONS)
    assert nearest_key("model.adapter.rnak", known) == "model.adapter.rank"
    cfg = compose_cfg(["+exp=allnli_mrl", "model=tiny", "+model.adapter.rank=8"])
    with pytest.raises(Exception, match="model.adapter is not an option"):
        check_keys(cfg, OPTIONS, CONF)


# ---- appended `+` keys, fuzzed: a plan or one line, never an ignored key ----

KNOWN = sorted(k for k, is_dict in known_keys(CONF, OPTIONS).items() if not is_dict)
key_paths = st.one_of(
    st.sampled_from(KNOWN).map(lambda k: k + "_x"),  # a typo'd known key
    st.sampled_from(KNOWN).map(lambda k: k.rpartition(".")[0] + ".zz" if "." in k else "zz"),
    # not `plan`: the harness appends +plan=true itself, and Hydra refuses a second +plan
    st.sampled_from(["trainer.detect_anomaly", "trainer.barebones", "trainer.foo"]),
    st.lists(st.text("abcxyz_", min_size=1, max_size=5), min_size=1, max_size=3).map(".".join),
)


@pytest.mark.slow
@settings(
    max_examples=10,
    derandomize=True,  # the same 10 examples on every run (CI included)
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=key_paths, value=st.sampled_from(["1", "true", "abc", "[1,2]", "null"]))
def test_appended_key_fuzz_plans_or_stops_in_one_line(data_dir, run_main, tmp_path, key, value):
    """Each `+key=value` plans the run (a key the code reads, a valid value) or stops with
    exit 2 and one error line naming the key, within 30 s, leaving no run folder."""
    run_dir = tmp_path / f"fuzz-{abs(hash((key, value)))}"
    code, lines, text = plan_within(run_main, f"+{key}={value}", run_dir, 30)
    assert code in (0, 2), f"+{key}={value}: exit {code}: {lines[-5:]}"
    if code == 2:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in text, lines[-5:]
    else:
        assert key in KNOWN or key.startswith("trainer."), key
    assert not run_dir.exists(), f"+{key}={value} left {run_dir}"


# ---- train.py's own command line: Hydra's errors and sweeps, in one line ----


def logging_state() -> dict:
    loggers = [logging.root, *(v for v in logging.Logger.manager.loggerDict.values()
                               if isinstance(v, logging.Logger))]  # fmt: skip
    return {lg: (list(lg.handlers), lg.level, lg.disabled, lg.propagate) for lg in loggers}


def restore_logging(saved: dict) -> None:
    for logger in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            handlers, level, disabled, propagate = saved.get(
                logger, ([], logging.NOTSET, False, True)
            )
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.disabled, logger.propagate = disabled, propagate


def train_py(argv: list[str], monkeypatch, capsys, choices=True) -> tuple[int, list[str]]:
    """`python train.py <argv>` in-process (the root shim's main block); (status, stderr lines)."""
    import hydra

    import train as shim
    from mrl.common.cli import check_config_choices, hydra_errors_in_one_line

    app = hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")(
        shim.train.__wrapped__
    )
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    GlobalHydra.instance().clear()
    saved = logging_state()  # Hydra configures logging onto this test's captured stderr
    try:
        if choices:
            check_config_choices(argv, CONF)
        with hydra_errors_in_one_line(shim.explain):
            app()
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        GlobalHydra.instance().clear()
        restore_logging(saved)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture
def out_root(data_dir, tmp_path, monkeypatch):
    root = tmp_path / "out"
    monkeypatch.setenv("MRL_OUTPUT_DIR", str(root))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(ROOT)
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["optim.learning_rate=1e-3"], "optim.learning_rate is not an option anything reads, so "
         "it would be ignored; did you mean optim.lr?"),
        (["optim.lr=["], "no viable alternative at input '['"),
        (["+optim.lr=1"], "An item is already at 'optim.lr'"),
        (["+plan=true", "-m"], "-m comes after an override; put Hydra's flags first"),
        (["-m", "hparams_search=mrl_optuna", "hydra.sweeper.n_trials=0"],
         "hydra.sweeper.n_trials=0 runs no trial; give a whole number >= 1"),
        (["-m", "hparams_search=mrl_optuna", "+optim.learning_rate=1e-4,1e-3"],
         "did you mean optim.lr?"),
        (["-m", "seed=1,2", "+optim.learning_rate=1,2"], "did you mean optim.lr?"),
    ],
)  # fmt: skip
def test_hydra_errors_and_sweep_keys_are_one_line_and_leave_nothing(
    out_root, monkeypatch, capsys, argv, message
):
    flags = argv[:1] if argv[0] == "-m" else []
    full = [*flags, "+exp=allnli_mrl", *FAST, *argv[len(flags) :]]
    code, errors = train_py(full, monkeypatch, capsys)
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not out_root.exists(), "nothing is left behind"


def test_a_search_dimension_nothing_reads_is_refused_before_any_trial(
    out_root, tmp_path, monkeypatch, capsys
):
    """An Optuna search space (a file of hparams_search/) with a key no code reads: one line,
    exit 2, no trial and no sweep folder (it used to be searched and reported)."""
    (tmp_path / "extra" / "hparams_search").mkdir(parents=True)
    (tmp_path / "extra" / "hparams_search" / "bad_space.yaml").write_text(
        "# @package _global_\ndefaults:\n  - mrl_optuna\n  - _self_\n"
        "hydra:\n  sweeper:\n    params:\n      optim.warmup: range(0, 1)\n"
    )
    argv = ["-m", "hparams_search=bad_space", f"hydra.searchpath=[file://{tmp_path / 'extra'}]"]
    code, errors = train_py([*argv, "+exp=allnli_mrl", *FAST], monkeypatch, capsys, False)
    assert code == 2 and errors == [
        "error: optim.warmup is not an option anything reads, so it would be ignored; did you "
        "mean optim.warmup_ratio?"
    ], errors
    assert not out_root.exists()


def test_an_optuna_study_without_a_completed_trial_names_its_failed_json(
    out_root, monkeypatch, capsys
):
    argv = ["-m", "hparams_search=mrl_optuna", "+exp=allnli_mrl", *FAST]
    argv += ["hydra.sweeper.n_trials=2", "optim.weight_decay=-1"]  # every trial is refused
    code, errors = train_py(argv, monkeypatch, capsys)
    study = [e for e in errors if "no trial of the Optuna study completed" in e]
    assert code == 1 and len(study) == 1, errors
    assert "2 failed" in study[0] and "failed.json" in study[0], study
    assert len(list(out_root.rglob("failed.json"))) == 2
