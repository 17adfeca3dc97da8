"""Evaluate any encoder at every dimension: `python eval.py model=<hub id | folder | run>`."""

import hydra

from mrl.evaluate import main


@hydra.main(version_base="1.3", config_path="conf/evaluate", config_name="evaluate")
def evaluate(cfg):
    return main(cfg)


if __name__ == "__main__":
    evaluate()
