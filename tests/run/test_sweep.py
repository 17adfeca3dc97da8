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
    # The re-run's grid also leads with a value that fails (Hydra's basic launcher; submitit's
    # in the test below): each such job is recorded and the sweep goes on, then exits 1.
    lost = results[0]
    before = json.loads(lost.read_text())
    lost.unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in results[1:]}
    second = run_sweep(tmp_path, "matryoshka.weights=bogus,uniform,increasing", "seed=1,2")
    assert_failed_jobs_recorded(second, sweep_dir, ["/seed1/", "/seed2/"])
    assert {p: p.stat().st_mtime_ns for p in results[1:]} == mtimes
    after = json.loads(lost.read_text())  # it ran after the failed jobs
    assert after["test"] == before["test"] and after["global_step"] == before["global_step"] == 2
    runs, groups, _ = collect([sweep_dir])
    assert sorted(r.status for r in runs) == ["failed"] * 2 + ["finished"] * 4
    assert sorted(g.label for g in groups) == [
        "matryoshka.weights=increasing",
        "matryoshka.weights=uniform",
    ]


def assert_failed_jobs_recorded(proc, sweep_dir, seeds: list[str]) -> None:
    """The sweep ran every job, then exited 1 with one line per failed (bogus) job, each of
    which left failed.json with its one-line error."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()[-len(seeds) :]  # one line per failed job
    for line, seed in zip(lines, seeds, strict=True):
        assert line.startswith("error: job ") and seed in line, line
        assert "matryoshka.weights=bogus" in line  # the job folder
        assert "failed: matryoshka.weights='bogus' must be null, one of uniform" in line
    failed = list(sweep_dir.rglob("failed.json"))
    assert len(failed) == len(seeds) and all("bogus" in str(f.parent) for f in failed)
    for f in failed:
        assert "must be null, one of uniform" in json.loads(f.read_text())["error"]


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on_under_submitit(tmp_path):
    """With submitit's launcher (the SLURM launcher's code, run with submitit's local executor:
    each job in its own process); Hydra's basic launcher: the re-run of the 2 x 2 sweep above."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_sweep(
        tmp_path, "matryoshka.weights=bogus,uniform", "seed=1", "hydra/launcher=submitit_local"
    )
    sweep_dir = tmp_path / "out" / "sweeps" / "weights"
    assert_failed_jobs_recorded(proc, sweep_dir, ["/seed1/"])
    assert len(list(sweep_dir.rglob("results.json"))) == 1  # the job after it still ran
    runs, groups, _ = collect([sweep_dir])
    assert sorted(r.status for r in runs) == ["failed", "finished"]
    assert [g.label for g in groups] == ["matryoshka.weights=uniform"]
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
