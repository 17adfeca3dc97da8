"""`python train.py -m` sweeps end to end: job folders, the report, re-runs and failed jobs."""

import json
import subprocess
import sys

import pytest

from mrl.report.build import collect
from tests.conftest import FAST, ROOT, offline_env

SWEEP = [
    "+sweep=weights",
    *FAST,
    "trainer.max_steps=2",
    "data.batch_size=8",
    "optim.lr=1e-2",
    "optim.warmup_ratio=0",
    "eval.score_untrained=false",
]


def run_sweep(tmp_path, *overrides):
    env = offline_env(tmp_path)
    return subprocess.run(
        [sys.executable, "train.py", "-m", *SWEEP, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_two_by_two_sweep_report_and_rerun_skips_finished_resumes_unfinished(tmp_path):
    grid = ("matryoshka.weights=uniform,increasing", "seed=1,2")
    first = run_sweep(tmp_path, *grid)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep_dir = tmp_path / "out" / "sweeps" / "weights"
    results = sorted(sweep_dir.rglob("results.json"))
    assert len(results) == 4
    # one folder per job: <exp>/seed<N>/<overrides without seed, exp, sweep, hardware>
    names = {p.parent.relative_to(sweep_dir).parts[:2] for p in results}
    assert names == {("allnli_mrl", "seed1"), ("allnli_mrl", "seed2")}

    from mrl.report.build import main

    main([str(sweep_dir)])
    report = (sweep_dir / "report.md").read_text()
    for path in results:
        assert f"| {path.parent.relative_to(sweep_dir)} |" in report
    assert "| matryoshka.weights=increasing | 2 |" in report
    assert "| matryoshka.weights=uniform | 2 |" in report
    assert (sweep_dir / "report.png").stat().st_size > 10_000

    # Re-run the same sweep after one job lost its results.json (as if killed after its last
    # checkpoint): the three finished jobs are skipped, the fourth resumes and finishes alike.
    lost = results[0]
    before = json.loads(lost.read_text())
    lost.unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in results[1:]}
    second = run_sweep(tmp_path, *grid)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in results[1:]} == mtimes
    after = json.loads(lost.read_text())
    assert after["test"] == before["test"] and after["global_step"] == before["global_step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, launcher):
    """With Hydra's basic launcher, and with submitit's (the SLURM launcher's code, run with
    submitit's local executor: each job in its own process)."""
    if launcher != "basic":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_sweep(
        tmp_path, "matryoshka.weights=bogus,uniform", "seed=1", f"hydra/launcher={launcher}"
    )
    assert proc.returncode == 1  # the sweep reports that a job failed, after running them all
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # the sweep's summary: one line per failed job
    assert last.startswith("error: job ") and "/seed1/" in last
    assert "matryoshka.weights=bogus" in last  # the job folder
    assert "failed: matryoshka.weights='bogus' must be null, one of uniform" in last  # its error
    sweep_dir = tmp_path / "out" / "sweeps" / "weights"
    failed = list(sweep_dir.rglob("failed.json"))
    assert len(failed) == 1 and "bogus" in str(failed[0].parent)
    assert "must be null, one of uniform" in json.loads(failed[0].read_text())["error"]
    assert len(list(sweep_dir.rglob("results.json"))) == 1  # the job after it still ran
    runs, groups, _ = collect([sweep_dir])
    assert sorted(r.status for r in runs) == ["failed", "finished"]
    assert [g.label for g in groups] == ["matryoshka.weights=uniform"]


def test_sweep_configs_name_the_folder_and_the_wandb_group(compose_cfg):
    cfg = compose_cfg(["+sweep=weights", "+exp=allnli_mrl"])
    assert cfg.sweep_name == "weights"
    assert cfg.logger.wandb.group == "weights"
    assert cfg.hydra.sweep.dir.endswith("sweeps/weights")
    single = compose_cfg(["+exp=allnli_mrl"])
    assert single.logger.wandb.group == "allnli_mrl"


@pytest.mark.parametrize(
    "sweep", sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))
)  # fmt: skip
def test_every_sweep_file_composes_and_says_what_it_answers(compose_cfg, sweep):
    text = (ROOT / "conf" / "sweep" / f"{sweep}.yaml").read_text()
    assert "# Question:" in text and "# Time:" in text and "# Run:" in text
    cfg = compose_cfg([f"+sweep={sweep}"])
    params = cfg.hydra.sweeper.params
    assert "seed" in params and len(params) >= 2
