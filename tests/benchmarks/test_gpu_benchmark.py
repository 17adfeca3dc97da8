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


def test_gpu_check_rehearses_on_the_cpu_and_bf16_tracking_compares(tmp_path):
    """The one prepared GPU script, end to end with the tiny architecture on the CPU."""
    import os

    env = {**os.environ, "ARCH": "tiny", "STEPS": "4", "BATCH": "4", "DEVICE": "cpu",
           "COMPILE_CHUNKS": "null"}  # fmt: skip
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    names = {p.name for p in tmp_path.glob("*.json")}
    assert {"device.json", "chunk64.json", "chunknull_compile.json", "cached1024.json",
            "chunk64_padded.json"} <= names  # fmt: skip
    assert json.loads((tmp_path / "chunk64.json").read_text())["unpadded"] is True
    assert json.loads((tmp_path / "chunk64_padded.json").read_text())["unpadded"] is False
    assert "chunk64_compile.json" not in names  # COMPILE_CHUNKS limits the compiled variants
    tracking = json.loads((tmp_path / "precision_tracking.json").read_text())
    assert tracking["tracks"] is True and tracking["worst"] == 0.0  # fp32 twice, same seed


def test_cpu_step_flops_reports_rates_and_padding(tmp_path):
    import os

    from tests.conftest import make_data_dir

    out = tmp_path / "flops.json"
    env = {**os.environ, "MRL_DATA_DIR": str(make_data_dir(tmp_path / "data"))}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cpu_step_flops.py"), "--model", "tiny",
           "--batch", "4", "--steps", "3", "--warmup", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["matmul_fp32_gflops"] > 0 and r["matmul_bf16_gflops"] > 0 and r["timed_steps"] == 2
    assert r["model_share_of_bf16_matmul_rate"] == pytest.approx(
        r["model_gflops_per_s"] / r["matmul_bf16_gflops"]
    )
    assert r["computed_gflops_per_s"] >= r["model_gflops_per_s"] > 0
    assert r["unpadded"] is True  # the tiny BERT runs unpadded: no padding outside attention
    assert r["padding_share_of_tokens"] == 0


def test_computed_lengths_pad_each_chunk_to_its_longest():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "flops", ROOT / "benchmarks" / "cpu_step_flops.py"
    )
    flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flops)
    lengths = torch.tensor([3, 9, 4, 8, 2])
    assert flops.computed_lengths(lengths, None).tolist() == [9] * 5
    assert flops.computed_lengths(lengths, 2).tolist() == [4, 9, 4, 9, 2]  # chunks {9,8} {4,3} {2}


def test_compare_precisions_reads_run_folders(tmp_path):
    """Two run folders' logged losses: a run against itself tracks, one 10 % higher does not."""
    runs = {}
    for name, scale in (("fp32", 1.0), ("same", 1.0), ("shifted", 1.1)):
        folder = tmp_path / name
        (folder / "csv").mkdir(parents=True)
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(f"trainer:\n  precision: {name}\n")
        rows = ["step,train/loss@8,train/loss@4,val/spearman@8"]
        rows += [f"{s},{scale * (2 - s / 20)},{scale * (3 - s / 20)}," for s in range(0, 20, 2)]
        rows.append("19,,,0.5")  # a validation row: no losses
        (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
        runs[name] = folder
    script = str(ROOT / "benchmarks" / "compare_precisions.py")
    for other, code in (("same", 0), ("shifted", 1)):
        out = tmp_path / f"{other}.json"
        cmd = [sys.executable, script, str(runs["fp32"]), str(runs[other]), "--window", "3",
               "--out", str(out), "--plot", str(tmp_path / f"{other}.png")]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr[-2000:]
        result = json.loads(out.read_text())
        assert result["reference"] == "fp32" and result["other"] == other
        assert set(result["max_relative_gap_by_key"]) == {"train/loss@8", "train/loss@4"}
        assert result["worst"] == pytest.approx(0.0 if other == "same" else 0.1)
        assert (tmp_path / f"{other}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("script", "backbone"),
    [("bench_unpadded.py", ["--arch", "tiny"]),
     ("bench_lookup.py", ["--backbone", "mrl/tiny-random-bert"])],
)  # fmt: skip
def test_side_by_side_step_benchmarks_run_both_arms(script, backbone):
    """The step benchmarks run on a tiny BERT (built in memory, or random weights saved by
    --arch) without ../shared (stand-in texts) and print both arms' medians and their ratio
    (the numbers are the machine's: checked for shape)."""
    import os
    import re

    env = {k: v for k, v in os.environ.items() if k != "MRL_DATA_DIR"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *backbone, "--batch", "4",
           "--steps", "1", "--rounds", "2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert " step, 4 triplets" in done.stdout
    assert len(re.findall(r"s/step \(median of 2\)", done.stdout)) == 2
    assert re.search(r"speed-up: \d+\.\d{3}x", done.stdout)
