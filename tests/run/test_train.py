"""End-to-end runs of `train.py` with the tiny model on CPU: outputs, resume, bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FAST, ROOT


@pytest.mark.parametrize(
    "exp", ["allnli_mrl", "allnli_baseline", "stsb_cosent_mrl", "stsb_cosent_baseline"]
)
def test_fast_dev_run_writes_results_and_curve(data_dir, run_main, tmp_path, exp):
    from mrl.evaluation.metrics import mean_over_log2_dims

    run_dir = tmp_path / "run"
    full = run_main([f"+exp={exp}", *FAST, "trainer.fast_dev_run=true"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["eval_dims"] == [32, 16, 8, 4] and results["debug"] is True
    assert results["train_dims"] == ([32, 16, 8, 4] if exp.endswith("_mrl") else [32])
    assert set(results["test"]) == set(results["validation"]) == {"32", "16", "8", "4"}
    assert set(results["untrained_test"]) == {"32", "16", "8", "4"}
    assert results["config"]["exp_name"] == exp
    # what a sweeper optimises: validation only (the mean over log2 dims), never test
    validation = {int(d): v for d, v in results["validation"].items()}
    assert full == pytest.approx(mean_over_log2_dims(validation))
    rows = list(csv.DictReader((run_dir / "curve.csv").open()))
    assert [int(r["dim"]) for r in rows] == [32, 16, 8, 4]
    assert float(rows[0]["test_retention"]) == pytest.approx(1.0)
    assert (run_dir / "curve.png").read_bytes()[:4] == b"\x89PNG"
    # the per-pair test similarities behind the intervals give back the test Spearman
    from scipy.stats import spearmanr

    from mrl.artifacts.pairs import load_pairs

    pairs = load_pairs(run_dir / "test_pairs.npz")
    assert list(pairs.sims) == [32, 16, 8, 4]
    for dim, sims in pairs.sims.items():
        rho = spearmanr(sims, pairs.gold).statistic
        assert rho == pytest.approx(results["test"][str(dim)], abs=1e-5)


def test_short_run_logs_every_dim_resumes_and_overlays(data_dir, run_main, tmp_path):
    run_dir = tmp_path / "mrl"
    common = [*FAST, "data.batch_size=16", "trainer.log_every_n_steps=1"]
    args = ["+exp=allnli_mrl", *common]
    run_main([*args, "matryoshka.dims=[32,8]", "matryoshka.weights=[1.0,2.0]"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    steps = results["global_step"]
    assert steps >= 3 and results["weights"] == [1.0, 2.0]
    assert results["schedule_dims"] == results["train_dims"] == [32, 8]
    # evaluated at the schedule plus the pow2 dims of the width (32 -> 32/16/8/4)
    assert set(results["validation"]) == set(results["test"]) == {"32", "16", "8", "4"}
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("val/spearman@32", "val/spearman@8", "test/spearman@8", "test/retention@8",
                "untrained/spearman@8", "train/loss@32", "train/loss@8"):  # fmt: skip
        assert key in header
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    # a finished run is not re-run (and its results are not overwritten)
    before = (run_dir / "results.json").stat().st_mtime_ns
    run_main([*args, "matryoshka.dims=[32,8]"], run_dir)
    assert (run_dir / "results.json").stat().st_mtime_ns == before

    # ckpt_path=last continues from the saved step
    (run_dir / "results.json").unlink()
    run_main([*args, "matryoshka.dims=[32,8]", "trainer.max_epochs=2", "ckpt_path=last"], run_dir)
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 2 * steps

    # a baseline overlaid on the MRL run
    base_dir = tmp_path / "base"
    run_main(["+exp=allnli_baseline", *common, f"eval.compare_to={run_dir}"], base_dir)
    assert (base_dir / "curve.png").is_file()


def test_n_dims_per_step_trains_a_random_subset(data_dir, run_main, tmp_path):
    from mrl.run.module import MatryoshkaModule

    tiny = {"backbone": "mrl/tiny-random-bert"}
    module = MatryoshkaModule(tiny, {"n_dims_per_step": 2})
    picks = [tuple(w != 0 for w in module.loss.step_weights()) for _ in range(20)]
    assert all(sum(p) == 2 for p in picks) and len(set(picks)) > 1
    baseline = MatryoshkaModule(tiny, {"enabled": False, "n_dims_per_step": 2})
    assert baseline.loss.step_weights() == [1.0, 0.0, 0.0, 0.0] and baseline.train_dims == [32]

    run_dir = tmp_path / "run"
    run_main(
        ["+exp=allnli_mrl", *FAST, "trainer.max_steps=2", "matryoshka.n_dims_per_step=2"], run_dir
    )
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 2


def test_wandb_offline_run(data_dir, run_main, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    args = ["+exp=allnli_mrl", "model=tiny", "trainer=cpu", "callbacks.progress_bar=none"]
    run_main([*args, "logger=wandb", "trainer.max_steps=2", "data.batch_size=8"], run_dir)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("matryoshka.dims=[64,32]", "matryoshka.dims holds 64, larger than the backbone"),
        ("matryoshka.dims=[]", "matryoshka.dims=[] must be a non-empty list"),
        ("matryoshka.dims=[16,16]", "matryoshka.dims repeats [16]"),
        ("matryoshka.weights=[1,1]", "matryoshka.weights has 2 entries but there are 4 dims"),
        ("eval.compare_to=/nonexistent", "eval.compare_to='/nonexistent' holds no results.json"),
        (
            "callbacks.progress_bar=fancy",
            "callbacks.progress_bar='fancy' must be one of rich, tqdm",
        ),
    ],
)
def test_bad_config_is_one_line_and_leaves_no_run_folder(
    data_dir, run_main, tmp_path, capsys, override, message
):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_main(["+exp=allnli_mrl", *FAST, override], run_dir)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not run_dir.exists()


def test_data_file_missing_a_column(data_dir, run_main, tmp_path, capsys):
    (data_dir / "stsb/validation.jsonl").write_text('{"sentence1": "a", "score": 1.0}\n')
    with pytest.raises(SystemExit):
        run_main(["+exp=allnli_mrl", *FAST], tmp_path / "run")
    err = capsys.readouterr().err.strip()
    assert "validation.jsonl lacks column(s) ['sentence2']" in err
    assert not (tmp_path / "run").exists()


def _cli(args, tmp_path, data_dir):
    env = {**os.environ, "MRL_DATA_DIR": str(data_dir), "MRL_OUTPUT_DIR": str(tmp_path / "out")}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_bad_input_exits_nonzero_without_traceback(data_dir, tmp_path):
    unknown = _cli(["+exp=nope", "model=tiny"], tmp_path, data_dir)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: exp=nope is not a config in conf/exp/; choose one of allnli_baseline, "
        "allnli_fixed_dim, allnli_mrl, mixture_mrl, stsb_cosent_baseline, stsb_cosent_mrl."
    )

    too_big = _cli(["+exp=allnli_mrl", *FAST, "matryoshka.dims=[999]"], tmp_path, data_dir)
    assert too_big.returncode == 2 and "Traceback" not in too_big.stderr
    assert too_big.stderr.strip().splitlines()[-1].startswith("error: matryoshka.dims holds 999")
    assert not list((tmp_path / "out").rglob("*.yaml"))  # no half-made run folder
    assert not (tmp_path / "out" / "runs").exists()  # nor the empty folders above it


def test_cached_mode_trains_with_a_random_subset_of_dims(data_dir, run_main, tmp_path):
    run_dir = tmp_path / "run"
    run_main(
        ["+exp=allnli_mrl", *FAST, "trainer.max_steps=3", "data.batch_size=16",
         "loss.cached_mini_batch_size=4", "matryoshka.n_dims_per_step=2",
         "trainer.log_every_n_steps=1"],
        run_dir,
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 3
    lrs = [r["lr-AdamW/pg1"] for r in csv.DictReader((run_dir / "csv/metrics.csv").open())
           if r.get("lr-AdamW/pg1")]  # fmt: skip
    assert len(set(lrs)) > 1  # the scheduler steps in cached mode too


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.cached_mini_batch_size=999"], "loss.cached_mini_batch_size=999 must be between"),
        (["loss.cached_mini_batch_size=4", "trainer.gradient_clip_val=1.0"], "cannot be combined"),
        (["trainer=gpu"], "no CUDA device is visible"),
        (["trainer=ddp"], "no CUDA device is visible"),
        (["trainer.precision=16-mixed"], "not available on the CPU"),
        (["loss=cosent"], "loss=cosent trains on scored pairs but data.train.columns="),
        (["data=stsb_pairs"], "loss=mnrl ignores gold scores"),
        (["loss.name=triplet"], "loss.name='triplet' is unknown; use one of mnrl, cosent"),
    ],
)
def test_impossible_combinations_are_one_line(
    data_dir, run_main, tmp_path, capsys, overrides, message
):
    if "trainer=gpu" in overrides[0] or "trainer=ddp" in overrides[0]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        run_main(["+exp=allnli_mrl", *FAST, *overrides], tmp_path / "run")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("trainer", "bf16", "message"),
    [
        (
            {"accelerator": "gpu", "devices": 4},
            True,
            "trainer.devices=4 but this machine has 1 GPU",
        ),
        (
            {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"},
            False,
            "bf16-mixed but Tesla V100 has no bf16; use trainer.precision=16-mixed",
        ),
        (
            {"accelerator": "gpu", "devices": 1, "precision": "bf16-emulated"},
            True,
            "bf16-emulated checks bf16 numerics on a CPU",
        ),
    ],
)
def test_gpu_combinations_this_machine_cannot_run(compose_cfg, monkeypatch, trainer, bf16, message):
    """Checked without a GPU: torch.cuda reports one V100-like device, with or without bf16."""
    import torch

    from mrl.common.errors import ConfigError
    from mrl.run.checks import check_combinations

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    cfg = compose_cfg(["+exp=allnli_mrl"])
    with pytest.raises(ConfigError, match=message):
        check_combinations(cfg, trainer)
    check_combinations(cfg, {**trainer, "devices": 1, "precision": "16-mixed"})  # this one fits


def _nan_on_call(monkeypatch, bad_calls):
    import mrl.core.matryoshka

    real, calls = mrl.core.matryoshka.matryoshka_loss, []

    def flaky(*args, **kwargs):
        calls.append(1)
        total, per_dim = real(*args, **kwargs)
        if len(calls) in bad_calls:
            per_dim = {d: v * float("nan") if d == 16 else v for d, v in per_dim.items()}
            total = total * float("nan")
        return total, per_dim

    monkeypatch.setattr(mrl.core.matryoshka, "matryoshka_loss", flaky)


def test_nonfinite_loss_stops_with_one_line_and_no_bad_checkpoint(
    data_dir, run_main, tmp_path, capsys, monkeypatch
):
    import torch

    _nan_on_call(monkeypatch, bad_calls={3})
    run_dir = tmp_path / "run"
    args = ["+exp=allnli_mrl", *FAST, "data.batch_size=8", "callbacks.checkpoint_every_n_steps=1"]
    with pytest.raises(SystemExit) as exit_info:
        run_main(args, run_dir)
    assert exit_info.value.code == 3
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and err[0].startswith("error: ")  # (the rest is progress bars)
    assert "the loss is nan at step 2 (non-finite at dims [16])" in err[0]
    assert f"last good checkpoint is {run_dir}/checkpoints/last.ckpt" in err[0]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
    assert not (run_dir / "results.json").exists()


def test_nonfinite_loss_can_skip_the_batch(data_dir, run_main, tmp_path, monkeypatch):
    _nan_on_call(monkeypatch, bad_calls={2, 4})
    run_dir = tmp_path / "run"
    run_main(
        ["+exp=allnli_mrl", *FAST, "data.batch_size=8", "trainer.max_steps=5",
         "loss.on_nonfinite=skip", "trainer.log_every_n_steps=1"],
        run_dir,
    )  # fmt: skip
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert max(float(r["train/skipped_batches"]) for r in rows if r["train/skipped_batches"]) == 2
    results = json.loads((run_dir / "results.json").read_text())
    assert all(v == v for v in results["test"].values())  # finite scores


def test_same_seed_same_results_other_seed_different(data_dir, run_main, tmp_path):
    args = ["+exp=allnli_mrl", *FAST, "data.batch_size=8", "matryoshka.n_dims_per_step=2"]

    def scores(seed, name):
        run_main([*args, f"seed={seed}"], tmp_path / name)
        results = json.loads((tmp_path / name / "results.json").read_text())
        return results["test"], results["validation"]

    first = scores(1, "a")
    assert scores(1, "b") == first
    assert scores(2, "c") != first


def test_every_epoch_draws_a_new_batch_order(data_dir, run_main, tmp_path, monkeypatch):
    """Lightning sets the epoch of a loader's sampler, not of our batch sampler; the module
    does it, so epoch 1 is not a replay of epoch 0."""
    from mrl.data.datamodule import NoDuplicatesBatchSampler

    seen, real = [], NoDuplicatesBatchSampler.__iter__

    def recording(self):
        seen.append((self.epoch, [tuple(b) for b in self.global_batches()]))
        return real(self)

    monkeypatch.setattr(NoDuplicatesBatchSampler, "__iter__", recording)
    run_main(["+exp=allnli_mrl", *FAST, "data.batch_size=16", "trainer.max_epochs=2"], tmp_path)
    epochs = [epoch for epoch, _ in seen]
    assert epochs[-2:] == [0, 1]
    assert seen[-2][1] != seen[-1][1]


def test_a_fixed_dim_run_trains_one_size_and_is_evaluated_at_every_dim(
    data_dir, run_main, tmp_path
):
    run_dir = tmp_path / "run"
    run_main(
        ["+exp=allnli_fixed_dim", *FAST, "matryoshka.fixed_dim=8", "trainer.max_steps=2"], run_dir
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["train_dims"] == [8] and results["weights"] == [0.0, 0.0, 1.0, 0.0]
    assert results["eval_dims"] == [32, 16, 8, 4] and set(results["test"]) == {"32", "16", "8", "4"}
