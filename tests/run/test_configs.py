"""Every experiment composes with every backbone and hardware profile, and means what it says."""

from pathlib import Path

import pytest

from mrl.core.schedule import dims_from_rule
from tests.conftest import CONF, needs_shared

EXPS = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))


def test_the_expected_groups_exist():
    assert {"allnli_mrl", "allnli_baseline"} <= set(EXPS)
    assert {"mpnet_base", "minilm_l6", "tiny"} <= set(MODELS)
    assert {"cpu", "gpu", "ddp"} <= set(TRAINERS)


@pytest.mark.parametrize("exp", EXPS)
@pytest.mark.parametrize("model", MODELS)
def test_every_experiment_composes_with_every_backbone(compose_cfg, exp, model):
    cfg = compose_cfg([f"+exp={exp}", f"model={model}"])
    assert cfg.exp_name == exp
    model_file = (CONF / "model" / f"{model}.yaml").read_text()
    assert f"backbone: {cfg.model.backbone}" in model_file  # the command line wins over the exp


@pytest.mark.parametrize("trainer", TRAINERS)
def test_hardware_profiles_compose_with_the_experiment(compose_cfg, trainer):
    cfg = compose_cfg(["+exp=allnli_mrl", f"trainer={trainer}", "trainer.max_steps=4"])
    assert cfg.trainer.max_steps == 4
    assert cfg.trainer.max_epochs == 1


def test_seed_recipe(compose_cfg):
    cfg = compose_cfg(["+exp=allnli_mrl"])
    assert cfg.model.backbone == "microsoft/mpnet-base"
    assert cfg.data.train.hub_id == "sentence-transformers/all-nli"
    assert cfg.data.train.hub_subset == "triplet"
    assert len(cfg.data.train.revision) == 40
    assert cfg.loss.scale == 20.0
    assert cfg.data.batch_size == 128 and cfg.data.no_duplicates
    assert cfg.optim.lr == 2e-5 and cfg.optim.warmup_ratio == 0.1
    assert cfg.matryoshka.enabled and cfg.matryoshka.dims is None
    assert dims_from_rule(768, cfg.matryoshka.rule, cfg.matryoshka.min_dim_ratio) == [
        768, 512, 256, 128, 64,
    ]  # fmt: skip
    assert compose_cfg(["+exp=allnli_mrl", "trainer=gpu"]).trainer.precision == "bf16-mixed"


def test_baseline_is_the_seed_recipe_without_matryoshka(compose_cfg):
    mrl = compose_cfg(["+exp=allnli_mrl"])
    base = compose_cfg(["+exp=allnli_baseline"])
    assert not base.matryoshka.enabled
    for key in ("model", "data", "loss", "optim", "trainer", "eval"):
        assert base[key] == mrl[key]


def test_minilm_rule_gives_the_seed_ratio(compose_cfg):
    cfg = compose_cfg(["+exp=allnli_mrl", "model=minilm_l6"])
    m = cfg.matryoshka
    assert dims_from_rule(384, m.rule, m.min_dim_ratio) == [384, 256, 128, 64, 32]


@needs_shared
def test_minilm_dims_from_the_real_backbone(compose_cfg, monkeypatch):
    from mrl.core.schedule import resolve_dims
    from mrl.encoder.backbone import backbone_hidden_size

    monkeypatch.setenv("MRL_MODEL_DIR", str(Path(CONF).parents[1] / "shared" / "models"))
    cfg = compose_cfg(["+exp=allnli_mrl", "model=minilm_l6"])
    hidden = backbone_hidden_size(cfg.model.backbone)
    m = cfg.matryoshka
    assert resolve_dims(hidden, m.dims, m.rule, m.min_dim_ratio) == [384, 256, 128, 64, 32]


def test_run_folder_is_keyed_by_experiment_seed_and_overrides(compose_cfg, monkeypatch):
    monkeypatch.delenv("MRL_OUTPUT_DIR", raising=False)
    from hydra.core.hydra_config import HydraConfig

    def run_dir(overrides):
        cfg = compose_cfg(overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg.hydra.run.dir

    a = run_dir(["+exp=allnli_mrl", "model=tiny", "seed=1", "trainer.max_steps=3"])
    assert a == "outputs/runs/allnli_mrl/seed1/model=tiny,trainer.max_steps=3"
    b = run_dir(["+exp=allnli_baseline", "model=tiny", "seed=1", "trainer.max_steps=3"])
    c = run_dir(["+exp=allnli_mrl", "model=tiny", "seed=2", "trainer.max_steps=3"])
    d = run_dir(["+exp=allnli_mrl", "model=tiny", "seed=1"])
    assert len({a, b, c, d}) == 4


def test_slurm_launcher_config_composes(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_cfg(["+exp=allnli_mrl", "trainer=ddp", "hydra/launcher=slurm"])
    assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node


def test_resume_picks_the_newest_checkpoint(tmp_path):
    import os

    from mrl.artifacts.run_folder import RunFolder

    def resolve_ckpt_path(ckpt_path, run_dir):
        return RunFolder(run_dir).resume_checkpoint(ckpt_path)

    assert resolve_ckpt_path(None, tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    import torch

    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 1}, last)  # resume checks that the chosen file loads
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    torch.save({"global_step": 2}, hpc)
    os.utime(last, (1, 1))
    assert resolve_ckpt_path(None, tmp_path) == str(hpc)
    os.utime(hpc, (0, 0))
    assert resolve_ckpt_path(None, tmp_path) == str(last)
    assert resolve_ckpt_path("last", tmp_path) == str(last)
