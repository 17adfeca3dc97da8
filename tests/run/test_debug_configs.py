"""The `debug` group (debug=fdr|overfit|limit|profiler|default), machine settings in conf/local/
and run tags: each composes, passes the check pass, and debug=fdr trains end to end."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from mrl.common.cli import check_config_choices
from mrl.run.build import trainer_args
from mrl.run.checks import check_combinations, check_options
from mrl.run.train import is_debug_run
from tests.conftest import CONF, FAST, ROOT

DEBUGS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))


def test_the_debug_group_has_the_five_configs():
    assert DEBUGS == ["default", "fdr", "limit", "overfit", "profiler"]


@pytest.mark.parametrize("name", DEBUGS)
def test_each_debug_config_composes_passes_the_checks_and_says_how_to_run_it(compose_cfg, name):
    text = (CONF / "debug" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"python train.py +exp=allnli_mrl debug={name}" in text  # its command, in a comment
    cfg = compose_cfg(["+exp=allnli_mrl", *FAST, f"debug={name}"])  # no + needed
    assert cfg.hydra.runtime.choices.debug == name
    assert "debug" in cfg.tags and cfg.data.num_workers == 0
    check_options(cfg)
    check_combinations(cfg, trainer_args(cfg))
    t = cfg.trainer
    expected = {
        "default": lambda: not is_debug_run(cfg),  # one full epoch: a real run
        "fdr": lambda: t.fast_dev_run is True and is_debug_run(cfg),
        "overfit": lambda: t.overfit_batches == 3 and t.max_epochs == 1 and is_debug_run(cfg),
        "limit": lambda: t.limit_train_batches == 10 and is_debug_run(cfg),
        "profiler": lambda: t.profiler == "simple" and not is_debug_run(cfg),
    }[name]
    assert expected()
    assert not cfg.trainer.get("fast_dev_run") or name == "fdr"


def test_overfit_trains_its_batches_for_its_epochs_without_an_experiment(compose_cfg):
    cfg = compose_cfg([*FAST, "debug=overfit"])
    assert cfg.trainer.overfit_batches == 3 and cfg.trainer.max_epochs == 30
    cfg = compose_cfg(["+exp=allnli_mrl", *FAST, "debug=overfit", "trainer.max_epochs=30"])
    assert cfg.trainer.max_epochs == 30


def test_debug_choices_are_checked_on_the_command_line(capsys):
    check_config_choices(["debug=fdr", "hparams_search=mrl_optuna", "local=example"], CONF)
    with pytest.raises(SystemExit) as exit_info:
        check_config_choices(["debug=fast"], CONF)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: debug=fast is not a config in conf/debug/; choose one of "
        "default, fdr, limit, overfit, profiler."
    )


@pytest.mark.slow
def test_debug_fdr_runs_end_to_end_and_is_marked_debug(data_dir, run_main, tmp_path):
    run_dir = tmp_path / "run"
    run_main(["+exp=allnli_mrl", *FAST, "debug=fdr", "data.batch_size=8"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["debug"] is True
    assert results["global_step"] == 1  # one training batch
    assert results["config"]["trainer"]["fast_dev_run"] is True
    assert results["config"]["tags"] == ["debug"]
    assert set(results["test"]) == set(results["validation"])  # both ran, one batch each


def test_no_debug_and_no_search_by_default(compose_cfg):
    cfg = compose_cfg(["+exp=allnli_mrl"])
    choices = cfg.hydra.runtime.choices
    assert choices.debug is None and choices.hparams_search is None
    assert list(cfg.tags) == []
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")


def test_tags_are_a_top_level_list(compose_cfg):
    cfg = compose_cfg(["+exp=allnli_mrl", "tags=[lr_probe,v2]"])
    assert list(cfg.tags) == ["lr_probe", "v2"]


def test_the_local_example_composes_with_machine_settings_only(compose_cfg, tmp_path):
    cfg = compose_cfg(["+exp=allnli_mrl", "local=example", "trainer=cpu"])
    assert cfg.hydra.runtime.choices.local == "example"
    assert cfg.paths.output_dir == "/scratch/mrl/outputs"
    assert set(cfg.hydra.job.env_set) == {"MRL_DATA_DIR", "MRL_MODEL_DIR", "WANDB_MODE"}
    assert cfg.data.num_workers == 4
    assert cfg.trainer.accelerator == "cpu"  # a group chosen on the command line stays chosen
    check_options(cfg)
    # +exp=NAME and the command line win over it
    cfg = compose_cfg(["+exp=allnli_mrl", "local=example", "data.num_workers=1"])
    assert cfg.data.num_workers == 1


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_conf_local_keeps_only_its_readme_example_and_gitignore_in_git():
    def ignored(name: str) -> bool:
        proc = subprocess.run(
            ["git", "check-ignore", "-q", f"conf/local/{name}"], cwd=ROOT, capture_output=True
        )
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode == 0

    assert ignored("default.yaml") and ignored("cluster.yaml") and ignored("notes.txt")
    assert not ignored("README.md") and not ignored("example.yaml") and not ignored(".gitignore")
