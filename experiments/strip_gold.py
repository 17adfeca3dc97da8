"""Strip the benchmark's gold scores from every test_pairs.npz below the given study folders,
so a committed study holds our similarities but no copy of the data
(mrl.artifacts.pairs.strip_gold): each file keeps the data source its scores came from (from the
results.json beside it) and their SHA-256, and `mrl.artifacts.pairs.load_pairs` reads them back
from $MRL_DATA_DIR or the Hub.

    python experiments/strip_gold.py experiments/results/comparators_cpu [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mrl.artifacts.pairs import PAIRS, load_pairs, strip_gold
from mrl.common.errors import ConfigError


def test_source(results: dict) -> dict:
    """The Source fields of the test set a results.json was scored on."""
    config = results.get("config") or {}
    if results.get("test_benchmark"):  # eval.py
        return config["benchmarks"][results["test_benchmark"]]
    return config["eval"]["test"]  # train.py


def main(folders: list[str]) -> None:
    for folder in folders:
        for path in sorted(Path(folder).rglob(PAIRS)):
            # the results.json beside it, or above it (random_subset's draws/<i>/)
            found = (p / "results.json" for p in path.parents)
            beside = next(r for r in found if r.is_file())
            results = json.loads(beside.read_text())
            before = load_pairs(path)
            strip_gold(path, test_source(results))
            after = load_pairs(path)  # reads the scores back from the data and checks them
            assert (after.gold == before.gold).all()
            print(f"stripped {path}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as error:  # e.g. the gold scores to check against need MRL_DATA_DIR
        sys.exit(f"error: {error}")
