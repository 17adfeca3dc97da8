"""The training entry point: compose -> seed -> data, module, trainer -> fit -> test -> results.

`python train.py +exp=allnli_mrl` (the root shim) calls `main` with the composed config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write

from mrl.data import MatryoshkaDataModule
from mrl.errors import ConfigError
from mrl.export import EXPORT_DIR, export_encoder
from mrl.hub import wandb_mode
from mrl.module import MatryoshkaModule, NonFiniteLoss
from mrl.redact import redact, refuse_secret_overrides
from mrl.reliability import AtomicCheckpointIO, StopOnSignal
from mrl.results import curve_rows, load_results, write_atomic, write_run_outputs

log = logging.getLogger("mrl")

# Files Hydra and this module create in a run folder before training starts; a run that fails
# on bad input removes exactly these (never anything else) so no half-made run is left behind.
STARTUP_FILES = (".hydra", "train.log", "eval.log", "wandb", "csv")


def module_args(cfg: DictConfig) -> dict:
    """The LightningModule's plain arguments, gathered from the config groups."""
    m = cfg.matryoshka
    return {
        "backbone": cfg.model.backbone,
        "pooling": cfg.model.pooling,
        "chunk_size": cfg.model.chunk_size,
        "compile": cfg.model.compile,
        "trust_remote_code": cfg.model.trust_remote_code,
        "dims": list(m.dims) if m.dims is not None else None,
        "rule": m.rule,
        "min_dim_ratio": m.min_dim_ratio,
        "weights": list(m.weights) if OmegaConf.is_list(m.weights) else m.weights,  # or a name
        "n_dims_per_step": m.n_dims_per_step,
        "matryoshka": m.enabled,
        "loss": cfg.loss.name,
        "scale": cfg.loss.scale,
        "cached_mini_batch_size": cfg.loss.cached_mini_batch_size,
        "on_nonfinite": cfg.loss.on_nonfinite,
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay,
        "warmup_ratio": cfg.optim.warmup_ratio,
    }


def datamodule_args(cfg: DictConfig) -> dict:
    d = cfg.data
    return {
        "backbone": cfg.model.backbone,
        "train": OmegaConf.to_container(d.train),
        "validation": OmegaConf.to_container(cfg.eval.validation),
        "test": OmegaConf.to_container(cfg.eval.test),
        "batch_size": d.batch_size,
        "eval_batch_size": cfg.eval.batch_size,
        "max_seq_length": d.max_seq_length,
        "max_train_samples": d.max_train_samples,
        "no_duplicates": d.no_duplicates,
        "num_workers": d.num_workers,
        "seed": cfg.seed,
        "trust_remote_code": cfg.model.trust_remote_code,
    }


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = []
    if cfg.logger.get("csv"):
        loggers.append(L.pytorch.loggers.CSVLogger(run_dir, name="csv", version=""))
    if cfg.logger.get("wandb"):
        from lightning.pytorch.loggers import WandbLogger

        w = cfg.logger.wandb
        loggers.append(
            WandbLogger(
                project=w.project,
                group=w.group,
                name=run_dir.name if run_dir.name else cfg.exp_name,
                id=hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16],
                resume="allow",  # a resumed run continues the same wandb run
                save_dir=str(run_dir),
                mode=wandb_mode(w.mode),
                tags=redact(list(w.tags)),
                config=redact(
                    {
                        **OmegaConf.to_container(cfg, resolve=True),
                        "overrides": list(HydraConfig.get().overrides.task),
                    }
                ),
            )
        )
    return loggers


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch.callbacks import (
        LearningRateMonitor,
        ModelCheckpoint,
        RichProgressBar,
        TQDMProgressBar,
    )

    c = cfg.callbacks
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=c.checkpoint_every_n_steps,
        )
    ]
    if c.progress_bar == "rich":
        callbacks.append(RichProgressBar())
    elif c.progress_bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    if cfg.logger.get("wandb") or cfg.logger.get("csv"):
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks


def trainer_args(cfg: DictConfig) -> dict:
    """The `trainer` group, passed to `lightning.Trainer`; precision `auto` picks bf16 on GPU."""
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if args.get("precision") == "auto":
        gpu = args.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        args["precision"] = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
    if cfg.callbacks.progress_bar == "none":
        args["enable_progress_bar"] = False
    return args


def check_combinations(cfg: DictConfig, trainer: dict) -> None:
    """Options that are each valid but impossible together, or on this machine: one line each."""
    columns = list(cfg.data.train.columns)
    scored = "score" in columns
    if cfg.loss.name == "cosent" and (not scored or len(columns) != 3):
        raise ConfigError(
            f"loss=cosent trains on scored pairs but data.train.columns={columns}; use "
            "data=stsb_pairs (columns [sentence1, sentence2, score]) or loss=mnrl."
        )
    if cfg.loss.name == "mnrl" and scored:
        raise ConfigError(
            f"loss=mnrl ignores gold scores but data.train.columns={columns} has one; use "
            "loss=cosent for scored pairs (as +exp=stsb_cosent_mrl does)."
        )
    mini = cfg.loss.cached_mini_batch_size
    if mini is not None:
        if mini < 1 or mini > cfg.data.batch_size:
            raise ConfigError(
                f"loss.cached_mini_batch_size={mini} must be between 1 and data.batch_size="
                f"{cfg.data.batch_size}; pick a mini-batch smaller than the batch (e.g. 32)."
            )
        if trainer.get("gradient_clip_val") or trainer.get("accumulate_grad_batches", 1) != 1:
            raise ConfigError(
                "loss.cached_mini_batch_size steps the optimizer itself and cannot be combined "
                "with trainer.gradient_clip_val or trainer.accumulate_grad_batches; unset those "
                "(a larger data.batch_size is what accumulation would give you)."
            )
    accelerator, devices = trainer.get("accelerator"), trainer.get("devices")
    precision = str(trainer.get("precision"))
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(
                f"trainer.accelerator={accelerator} but no CUDA device is visible; "
                "use trainer=cpu (or check CUDA_VISIBLE_DEVICES)."
            )
        if isinstance(devices, int) and devices > available:
            raise ConfigError(
                f"trainer.devices={devices} but this machine has {available} GPU(s); "
                f"use trainer.devices={available} or trainer.devices=auto."
            )
        if precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"trainer.precision={precision} but {torch.cuda.get_device_name()} has no bf16; "
                "use trainer.precision=16-mixed."
            )
    if accelerator == "cpu" and precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision={precision} is not available on the CPU; use 32-true or bf16-mixed."
        )


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` -> this run's last.ckpt (must exist); null -> resume from the newest checkpoint
    this run folder has: last.ckpt, or hpc_ckpt_N.ckpt that Lightning writes on SLURM's requeue
    signal."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path == "last":
        if not last.is_file():
            raise ConfigError(
                f"ckpt_path=last but {last} does not exist; run without ckpt_path to start fresh."
            )
        return str(last)
    if ckpt_path is None:
        found = [p for p in [last, *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} is not a file; give a .ckpt path or 'last'.")
    return ckpt_path


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and evaluate one configuration; returns the results written to results.json."""
    done = run_dir / "results.json"
    if done.is_file():
        log.info("%s exists: this run is finished, nothing to do (delete it to re-run).", done)
        return json.loads(done.read_text())

    refuse_secret_overrides(list(HydraConfig.get().overrides.task))
    L.seed_everything(cfg.seed, workers=True)
    compare = (
        [load_results(cfg.eval.compare_to, "eval.compare_to")] if cfg.eval.compare_to else None
    )
    if cfg.callbacks.progress_bar not in ("rich", "tqdm", "none"):
        raise ConfigError(
            f"callbacks.progress_bar={cfg.callbacks.progress_bar!r} must be rich, tqdm or none."
        )
    trainer_kwargs = trainer_args(cfg)
    check_combinations(cfg, trainer_kwargs)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir)
    module = MatryoshkaModule(**module_args(cfg))  # checks dims/weights against the backbone
    datamodule = MatryoshkaDataModule(**datamodule_args(cfg))
    datamodule.setup("fit")  # checks the data files before anything is written
    log.info("dims %s, trained dims %s, weights %s", module.dims, module.train_dims, module.weights)

    stop_on_signal = StopOnSignal(run_dir / "checkpoints" / "last.ckpt")
    trainer = L.Trainer(
        **trainer_kwargs,
        logger=build_loggers(cfg, run_dir) or False,
        callbacks=[*build_callbacks(cfg, run_dir), stop_on_signal],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
    )

    untrained_file = run_dir / "untrained.json"
    untrained = None
    if cfg.eval.score_untrained:
        if untrained_file.is_file():
            untrained = json.loads(untrained_file.read_text())
        elif ckpt_path is None:
            module.test_prefix = "untrained"
            trainer.test(module, datamodule=datamodule, verbose=False)
            module.test_prefix = "test"
            untrained = {str(d): v for d, v in module.eval_results["untrained"].items()}
            if trainer.is_global_zero:
                write_atomic(untrained_file, json.dumps(untrained, indent=2))

    # Seed again right before training: loading data may draw from the global RNGs a varying
    # number of times (e.g. `datasets` fingerprints). A resumed run then restores the RNG
    # states saved in its checkpoint instead.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # Lightning raises SIGTERMException on SIGTERM (after StopOnSignal saved last.ckpt if the
    # signal came during a training step); either way the run is unfinished: no results.
    sigterm = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        sigterm = True
    if sigterm or stop_on_signal.stopped_at is not None:
        saved = (
            f"at step {stop_on_signal.stopped_at}: saved {stop_on_signal.last_ckpt}"
            if stop_on_signal.stopped_at is not None
            else "outside a training step: the last saved checkpoint stands"
        )
        print(
            f"stopped by {stop_on_signal.received or 'SIGTERM'} {saved}; run the same command "
            "again to resume.",
            file=sys.stderr,
        )
        return {}
    # last.ckpt otherwise holds the last multiple of checkpoint_every_n_steps: save the final
    # weights so the checkpoint (and an export made from it later) is the model that was tested
    # (weights_only=False: the full state, as every last.ckpt; it also silences Lightning's note)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    trainer.test(module, datamodule=datamodule, verbose=False)

    results = {
        "experiment": cfg.exp_name,
        "run_dir": str(run_dir),
        "backbone": cfg.model.backbone,
        "matryoshka": bool(cfg.matryoshka.enabled),
        "dims": module.eval_dims,
        "schedule_dims": module.dims,
        "train_dims": module.train_dims,
        "weights": module.weights,
        "seed": cfg.seed,
        "overrides": redact(list(HydraConfig.get().overrides.task)),
        "global_step": trainer.global_step,
        "test": {str(d): v for d, v in module.eval_results["test"].items()},
        "validation": {str(d): v for d, v in module.eval_results.get("val", {}).items()},
        "untrained_test": untrained,
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
    }
    if trainer.is_global_zero:
        if cfg.export.sentence_transformers:  # before results.json, which marks the run done
            export = run_dir / EXPORT_DIR
            shutil.rmtree(export, ignore_errors=True)  # left by this run if it died right here
            export_encoder(
                module.encoder, datamodule.tokenizer, export, cfg.data.max_seq_length,
                cfg.model.backbone, results,
            )  # fmt: skip
        write_run_outputs(run_dir, results, compare)
        log_curve_to_wandb(trainer, results)
        print_summary(results, run_dir)
    return results


def log_curve_to_wandb(trainer: L.Trainer, results: dict) -> None:
    """The curve as a wandb table and line plot (no-op without a wandb logger)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            rows = curve_rows(results)
            table = wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
            logger.experiment.log(
                {
                    "curve/table": table,
                    "curve/spearman_vs_dim": wandb.plot.line(
                        table, "dim", "test_spearman", title="STS-B test Spearman vs. dim"
                    ),
                    "curve/png": wandb.Image(str(Path(results["run_dir"]) / "curve.png")),
                }
            )


def print_summary(results: dict, run_dir: Path) -> None:
    rows = curve_rows(results)
    lines = ["", f"STS-B test Spearman by dimension ({results['experiment']}):"]
    lines.append(f"{'dim':>6} {'spearman':>9} {'retention':>10} {'untrained':>10}")
    for r in rows:
        before = r.get("untrained_test_spearman")
        lines.append(
            f"{r['dim']:>6} {r['test_spearman']:>9.4f} {100 * r['test_retention']:>9.1f}% "
            f"{'' if before is None else f'{before:.4f}':>10}"
        )
    lines.append(f"run folder: {run_dir}")
    print("\n".join(lines))


def remove_startup_files(run_dir: Path) -> None:
    """Undo what this run created before failing on bad input (only if nothing else is there)."""
    if (run_dir / "checkpoints").exists() or (run_dir / "results.json").exists():
        return
    for name in STARTUP_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    with contextlib.suppress(OSError):  # the folder and its parents, only while empty
        for folder in (run_dir, run_dir.parent, run_dir.parent.parent):
            folder.rmdir()


def fail(run_dir: Path, message: str, exit_code: int, multirun: bool) -> None:
    """Report a failed run in one line. Alone: exit with `exit_code`. In a sweep: leave
    failed.json in the job folder (the report lists the job as failed) and return, so the sweep
    goes on; `SweepFailures` sums the failures up when the sweep ends."""
    print(f"error: {message}", file=sys.stderr)
    if not multirun:
        raise SystemExit(exit_code)
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = list(HydraConfig.get().overrides.task)
    write_atomic(
        run_dir / "failed.json", json.dumps({"error": message, "overrides": overrides}, indent=2)
    )


# what Lightning's subprocess launcher sets in its own environment when it starts DDP workers
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def sweep_job_with_its_own_workers(hydra_cfg: DictConfig, run_dir: Path):
    """One job of a -m sweep whose DDP workers, if Lightning starts any, run this job alone.

    Lightning starts workers by re-running this process's command line (`sys.argv`) with
    `hydra.run.dir=<hydra.run.dir>` added. In a sweep that command line is the whole sweep, so
    each worker would re-run every job, and the next job would find the old process group and
    `LOCAL_RANK` set, and start no workers of its own. Here the command line becomes this job's
    own overrides (no `-m`) in this job's folder, so each worker is a single run there, as under
    `python train.py`; when the job ends, the group and the launcher's variables go. Workers
    started outside (torchrun, srun) set `LOCAL_RANK` or SLURM's variables and are left alone.
    """
    argv, launch_env = sys.argv, {key: os.environ.get(key) for key in LAUNCH_ENV}
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = str(run_dir)
    try:
        yield
    finally:
        sys.argv = argv
        if launch_env["LOCAL_RANK"] is None and "LOCAL_RANK" in os.environ:  # we launched them
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in launch_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class SweepFailures(Callback):
    """Hydra callback (conf/hydra/default.yaml): when a -m sweep ends, one line per job that
    failed during it (its folder and error, from its failed.json), then exit status 1.

    Under launchers that run jobs elsewhere (submitit, SLURM) this is where the errors show."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(
            path for path in sweep_dir.rglob("failed.json") if path.stat().st_mtime >= self.started
        )
        for path in failed:
            error = json.loads(path.read_text())["error"]
            print(
                f"error: job {path.parent.relative_to(sweep_dir)} failed: {error}", file=sys.stderr
            )
        if failed:
            raise SystemExit(1)


def main(cfg: DictConfig) -> float | None:
    """Hydra task: runs `run`, turns bad input into one line, always closes wandb.

    Returns the full-width test Spearman so a Hydra sweeper can optimise it.
    """
    import transformers

    transformers.logging.set_verbosity_error()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    (run_dir / "failed.json").unlink(missing_ok=True)  # a re-run gets a fresh verdict
    job = (
        sweep_job_with_its_own_workers(hydra_cfg, run_dir) if multirun else contextlib.nullcontext()
    )
    with job:
        try:
            results = run(cfg, run_dir)
            return results["test"][str(max(results["dims"]))] if results else None
        except ConfigError as err:
            if not multirun:
                remove_startup_files(run_dir)
            fail(run_dir, str(err), 2, multirun)
        except NonFiniteLoss as err:
            last = run_dir / "checkpoints" / "last.ckpt"
            good = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint yet"
            message = (
                f"{err}; {good} (nothing was saved after the bad step). Lower optim.lr, "
                "or set loss.on_nonfinite=skip to skip such batches."
            )
            fail(run_dir, message, 3, multirun)
        except Exception as err:
            if not multirun:
                raise
            log.exception("job failed")
            fail(run_dir, f"{type(err).__name__}: {err}", 1, multirun)
        finally:
            if "wandb" in sys.modules:
                import wandb

                wandb.finish()
