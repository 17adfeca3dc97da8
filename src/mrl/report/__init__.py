"""One report over the runs of a sweep (`python -m mrl.report`): finding and reading runs
(`runs`), their groups, means and curves (`stats`), the differences with bootstrap intervals
(`intervals`), 2D runs' grids (`grids`), report.md / report.csv (`tables`), the pictures and
the wandb run (`plots`), and the command that puts them together (`build`).

May import: mrl.common, mrl.core, mrl.encoder, mrl.data, mrl.artifacts, mrl.evaluation.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core", "encoder", "data", "artifacts", "evaluation")
