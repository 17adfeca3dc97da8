"""Evaluate any encoder at every dimension: `python eval.py model=<hub id | folder | run>`."""

import sys
from pathlib import Path

import hydra

from mrl.common.cli import check_config_choices, hydra_errors_in_one_line
from mrl.evaluation.evaluate import key_error_line, main  # main: registers the folder resolvers


@hydra.main(version_base="1.3", config_path="conf/evaluate", config_name="evaluate")
def evaluate(cfg):
    return main(cfg)


if __name__ == "__main__":
    check_config_choices(sys.argv[1:], Path(__file__).parent / "conf/evaluate", "conf/evaluate")
    with hydra_errors_in_one_line(key_error_line):  # Hydra's own errors as one `error:` line
        evaluate()
