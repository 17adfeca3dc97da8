"""Train a Matryoshka sentence encoder: `python train.py +exp=allnli_mrl` (see README)."""

import sys
from pathlib import Path

import hydra

from mrl.common.cli import check_config_choices, hydra_errors_in_one_line


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def train(cfg):
    from mrl.run.train import main

    return main(cfg)


def explain(err):
    from mrl.run.sweep import hydra_error_line

    return hydra_error_line(err)


if __name__ == "__main__":
    check_config_choices(sys.argv[1:], Path(__file__).parent / "conf")
    with hydra_errors_in_one_line(explain):  # Hydra's own errors as one `error:` line
        train()
