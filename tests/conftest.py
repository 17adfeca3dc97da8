"""Shared test fixtures: a tiny on-disk data mirror and Hydra composition of the real configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
TINY = "mrl/tiny-random-bert"
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"

NOUNS = ["dog", "cat", "man", "woman", "child", "bird", "car", "horse", "girl", "boy"]
VERBS = ["runs", "sleeps", "eats", "jumps", "sings", "reads", "swims", "plays"]
PLACES = ["in the park", "at home", "on the beach", "in a car", "near the river"]


def _sentence(rng: random.Random) -> str:
    return f"A {rng.choice(NOUNS)} {rng.choice(VERBS)} {rng.choice(PLACES)}."


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_data_dir(root: Path, n_triplets: int = 48, n_pairs: int = 40, seed: int = 0) -> Path:
    """A mirror with the layout of shared/data: allnli triplets and STS-B splits (0-5 scores)."""
    rng = random.Random(seed)
    triplets = [
        {"anchor": f"{_sentence(rng)} #{i}", "positive": _sentence(rng), "negative": _sentence(rng)}
        for i in range(n_triplets)
    ]
    write_jsonl(root / "allnli" / "triplets-train.jsonl", triplets)
    write_jsonl(root / "allnli" / "triplets-dev.jsonl", triplets[:8])
    for split in ("train", "validation", "test"):
        pairs = [
            {
                "sentence1": _sentence(rng),
                "sentence2": _sentence(rng),
                "score": round(rng.uniform(0, 5), 2),
            }
            for _ in range(n_pairs)
        ]
        write_jsonl(root / "stsb" / f"{split}.jsonl", pairs)
    return root


def offline_env(tmp_path: Path) -> dict:
    """The environment of a train.py subprocess on a tiny mirror under `tmp_path`, offline."""
    import os

    env = {
        **os.environ,
        "MRL_DATA_DIR": str(make_data_dir(tmp_path / "data")),
        "MRL_OUTPUT_DIR": str(tmp_path / "out"),
        "WANDB_MODE": "offline",
    }
    env.pop("MRL_MODEL_DIR", None)
    return env


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A tiny data mirror, exported as MRL_DATA_DIR for the test."""
    root = make_data_dir(tmp_path / "data")
    monkeypatch.setenv("MRL_DATA_DIR", str(root))
    monkeypatch.delenv("MRL_MODEL_DIR", raising=False)
    return root


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A width-32 sentence-transformers folder of the tiny random BERT (no network)."""
    import torch

    from mrl.artifacts.export import export_encoder
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder(TINY).eval()
    return export_encoder(encoder, load_tokenizer(TINY), tmp_path / "model", 32, TINY)


@pytest.fixture
def compose_cfg():
    """compose(overrides) -> the config `python train.py <overrides>` would get (with hydra)."""

    def _compose(overrides: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()


needs_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir() or not (SHARED / "models").is_dir(),
    reason="../shared (real data and models) is not beside this checkout",
)


def call_task(task, config_dir: Path, config_name: str, overrides: list[str], run_dir: Path):
    """Runs a Hydra task function in-process as its script would, with `run_dir` as the run
    folder (HydraConfig set, the `hydra` node removed as @hydra.main does)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        run_dir.mkdir(parents=True, exist_ok=True)
        return task(cfg)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def run_main():
    """Runs `mrl.run.train.main` in-process as `python train.py <overrides>` would, in run_dir."""
    from mrl.run.train import main

    def _run(overrides: list[str], run_dir: Path):
        return call_task(main, CONF, "train", [*overrides, f"hydra.run.dir={run_dir}"], run_dir)

    return _run


FAST = ["model=tiny", "trainer=cpu", "logger=csv", "callbacks.progress_bar=none"]
