"""notebooks/analysis.ipynb runs top to bottom on a small sweep folder the test writes (results
of both layouts), and on the committed study its saved outputs come from."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.report.test_report import write_run


@pytest.mark.slow
def test_analysis_notebook_runs_on_a_generated_sweep(tmp_path, monkeypatch):
    for seed in (1, 2):  # MRL runs in the layout RunResults writes, the baseline in the old one
        write_run(tmp_path, "mrl", seed, [0.80, 0.78, 0.75 + 0.01 * seed])
        write_run(tmp_path, "base", seed, [0.81, 0.74, 0.60 + 0.01 * seed], matryoshka=False,
                  layout="old")  # fmt: skip
    monkeypatch.setenv("MRL_SWEEP_DIR", str(tmp_path))
    monkeypatch.delenv("MRL_WANDB_GROUP", raising=False)
    notebook = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert "4 runs, 2 groups, dims [32, 16, 8], reference 'base'" in text
    markdown = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| mrl | 2 | 0.8000 ± 0.0000 |" in markdown
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the curves and the retention bars


def test_analysis_notebook_outputs_stay_small():
    """The committed notebook keeps its outputs (the committed study), but small ones."""
    notebook = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert "allnli_minilm_cpu_study: 7 runs, 3 groups" in text
    assert (ROOT / "notebooks" / "analysis.ipynb").stat().st_size < 100_000
