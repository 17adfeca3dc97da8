"""Train a Matryoshka sentence encoder: `python train.py +exp=allnli_mrl` (see README)."""

import hydra

from mrl.train import main


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def train(cfg):
    return main(cfg)


if __name__ == "__main__":
    train()
