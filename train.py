"""Train a Matryoshka sentence encoder: `python train.py +exp=allnli_mrl` (see README)."""

import sys
from pathlib import Path

import hydra

from mrl.common.cli import check_config_choices


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def train(cfg):
    from mrl.run.train import main

    return main(cfg)


if __name__ == "__main__":
    check_config_choices(sys.argv[1:], Path(__file__).parent / "conf")
    train()
