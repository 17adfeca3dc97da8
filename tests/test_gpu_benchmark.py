"""benchmarks/gpu_throughput.py runs end to end (here on the CPU, tiny architecture), so the
script prepared for a lent GPU does not rot: the numbers are its own, checked for sense only."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_throughput_script_reports_every_number(tmp_path):
    out = tmp_path / "throughput.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--arch", "tiny",
        "--device", "cpu", "--precision", "32-true", "--steps", "3", "--warmup", "1",
        "--batch", "4", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["timed_steps"] == 2 and result["attention"] == "sdpa"
    assert result["samples_per_s"] > 0 and result["tokens_per_s"] > result["samples_per_s"]
    assert 3 < result["mean_tokens_per_text"] < 34  # 4-30 words + [CLS]/[SEP]
    assert result["model_tflops_per_s"] > 0 and result["mfu"] is None  # no peak known for a CPU


def test_throughput_script_refuses_a_missing_gpu_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    script = str(ROOT / "benchmarks" / "gpu_throughput.py")
    cmd = [sys.executable, script, "--steps", "3", "--warmup", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: --device gpu but no CUDA device is visible; use --device cpu."
    ]
