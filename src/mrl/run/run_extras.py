"""What a run writes beyond the per-dim scores when it trains more than one axis: the layers x
dims grid of a 2D Matryoshka run (results.json `grid`, grid.png, the seconds to encode STS-B
test at each depth) and the QAT calibration (qat_calibration.json, also in the export, so
evaluation quantizes as training did). Plain functions over the finished module."""

from __future__ import annotations

import json

from mrl.core.qat import QAT_CALIBRATION
from mrl.encoder.depth import encode_seconds_by_depth
from mrl.evaluation.grid import GRID_PNG, flat_grid, grid_png


def run_extras(module, datamodule, title: str) -> tuple[dict, dict[str, bytes | str]]:
    """(results.json `extra` entries, {file name: content}) of a tested module."""
    extra, files = {}, {}
    grid = module.eval_grids.get("test")
    if grid:
        extra["grid"] = flat_grid(grid)
        batches = list(datamodule.test_dataloader())
        seconds = encode_seconds_by_depth(module.encoder, batches, module.grid_layers)
        extra["encode_seconds_by_depth"] = {str(k): round(v, 3) for k, v in seconds.items()}
        files[GRID_PNG] = grid_png(grid, f"{title}: STS-B test Spearman by layer and dim")
    calibration = module.objective.calibration
    if calibration is not None:
        files[QAT_CALIBRATION] = json.dumps(calibration.as_dict()) + "\n"
    return extra, files
