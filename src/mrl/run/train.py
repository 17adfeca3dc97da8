"""Run one training configuration: lock the run folder -> build -> score the untrained backbone
-> fit -> test -> export -> results. `python train.py +exp=allnli_mrl` (the root shim) calls `main`.

Bad input is one `error:` line with exit status 2 and no run folder left behind; a NaN loss is
one line with exit status 3; SIGTERM, SIGUSR1 and Ctrl-C save last.ckpt and exit 0 with a
resume hint. Objects come from `mrl.run.build`, files and their names from
`mrl.artifacts.run_folder`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mrl.artifacts.export import export_encoder
from mrl.artifacts.pairs import PAIRS, write_pairs
from mrl.artifacts.results import (
    RunResults,
    curve_rows,
    load_results,
    summary_table,
    write_run_outputs,
)
from mrl.artifacts.run_folder import RunFolder, RunFolderBusy
from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.common.redact import redact, refuse_secret_overrides
from mrl.core.qat import QAT_CALIBRATION
from mrl.evaluation.metrics import mean_over_log2_dims
from mrl.run.build import Run, build, plan_text, print_config_tree
from mrl.run.module import NonFiniteLoss
from mrl.run.run_extras import run_extras
from mrl.run.sweep import job_with_its_own_workers, record_failure

log = logging.getLogger("mrl")


def is_debug_run(cfg: DictConfig) -> bool:
    """fast_dev_run, overfit_batches or a cut train/val/test set: not a result."""
    t = cfg.trainer
    return (
        bool(t.fast_dev_run)
        or bool(t.get("overfit_batches"))
        or any(t.get(f"limit_{split}_batches") is not None for split in ("train", "val", "test"))
    )


def untrained_scores(cfg: DictConfig, run: Run, folder: RunFolder) -> dict[int, float] | None:
    """STS scores of the backbone before training (cached in untrained.json across resumes)."""
    if not cfg.eval.score_untrained:
        return None
    if folder.untrained.is_file():
        return {int(d): v for d, v in json.loads(folder.untrained.read_text()).items()}
    if run.ckpt_path is not None:  # resumed without the file: not measurable any more
        return None
    run.module.test_prefix = "untrained"
    run.trainer.test(run.module, datamodule=run.datamodule, verbose=False)
    run.module.test_prefix = "test"
    scores = run.module.eval_results["untrained"]
    if run.trainer.is_global_zero:
        write_atomic(folder.untrained, json.dumps({str(d): v for d, v in scores.items()}, indent=2))
    return scores


def run(cfg: DictConfig, folder: RunFolder, overrides: list[str]) -> RunResults | None:
    """Train and evaluate one configuration; returns its results (None: stopped or planned)."""
    if folder.is_finished():
        log.info("%s exists: this run is finished, nothing to do (delete it to re-run).", folder)
        return load_results(folder.path)
    refuse_secret_overrides(overrides)
    compare = (
        [load_results(cfg.eval.compare_to, "eval.compare_to")] if cfg.eval.compare_to else None
    )
    run = build(cfg, folder.path, overrides)
    if cfg.get("print_config") and holds_the_lock():  # rank 0, once the config passed its checks
        print_config_tree(OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True))))
    module, trainer = run.module, run.trainer
    if cfg.get("plan"):
        print(plan_text(cfg, run, folder))
        return None
    log.info(
        "dims %s, trained %s, weights %s", module.schedule_dims, module.train_dims, module.weights
    )
    untrained = untrained_scores(cfg, run, folder)
    # Seed again right before training: loading data may draw from the global RNGs a varying
    # number of times (e.g. `datasets` fingerprints). A resumed run then restores the RNG
    # states saved in its checkpoint instead.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    stop = run.stop_on_signal
    try:
        trainer.fit(module, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
    except SIGTERMException:  # raised by Lightning after StopOnSignal saved, or outside a step
        stop.received = stop.received or "SIGTERM"
    if stop.received:
        saved = (
            f"at step {stop.stopped_at}: saved {stop.last_ckpt}"
            if stop.stopped_at is not None
            else "outside a training step: the last saved checkpoint stands"
        )
        print(f"stopped by {stop.received} {saved}; run the same command again to resume.",
              file=sys.stderr)  # fmt: skip
        return None
    if "val" not in module.eval_results:
        log.warning("no validation ran during training; validating the final model once.")
        trainer.validate(module, datamodule=run.datamodule, verbose=False)
    # last.ckpt otherwise holds the last multiple of checkpoint_every_n_steps: save the final
    # weights so the checkpoint (and an export made from it later) is the model that was tested
    trainer.save_checkpoint(folder.last_ckpt, weights_only=False)
    trainer.test(module, datamodule=run.datamodule, verbose=False)
    results = RunResults(
        experiment=cfg.exp_name,
        run_dir=str(folder.path),
        backbone=cfg.model.backbone,
        matryoshka=bool(cfg.matryoshka.enabled),
        eval_dims=module.eval_dims,
        schedule_dims=module.schedule_dims,
        train_dims=module.train_dims,
        weights=module.weights,
        seed=cfg.seed,
        overrides=redact(overrides),
        global_step=trainer.global_step,
        test=module.eval_results["test"],
        validation=module.eval_results.get("val", {}),
        untrained_test=untrained,
        config=redact(OmegaConf.to_container(cfg, resolve=True)),
        debug=is_debug_run(cfg),
    )
    extra, files = run_extras(module, run.datamodule, cfg.exp_name)  # 2D grid, QAT calibration
    results.extra.update(extra)
    # what the run computed in: `auto` resolves by machine (a GPU, or a CPU's bf16 units)
    typed = str(cfg.trainer.precision)
    results.extra["precision"] = typed if typed == "bf16-emulated" else str(trainer.precision)
    if trainer.is_global_zero:
        if cfg.export.sentence_transformers:  # before results.json, which marks the run done
            shutil.rmtree(folder.export, ignore_errors=True)  # left if this run died right here
            export_encoder(
                module.encoder, run.datamodule.tokenizer, folder.export, cfg.data.max_seq_length,
                cfg.model.backbone, results,
            )  # fmt: skip
        for name, content in files.items():
            write_atomic(folder.path / name, content)
            if name == QAT_CALIBRATION and cfg.export.sentence_transformers:
                write_atomic(folder.export / name, content)  # quantize the export the same way
        write_pairs(folder.path / PAIRS, module.eval_pairs["test"].gold,
                    module.eval_pairs["test"].sims)  # fmt: skip
        write_run_outputs(folder.path, results, compare)
        log_curve_to_wandb(trainer, results)
        print(f"\n{summary_table(results)}run folder: {folder.path}")
        if results.debug:
            print("(a debug run: results.json is marked debug; the next run starts over)")
    return results


def log_curve_to_wandb(trainer: L.Trainer, results: RunResults) -> None:
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
                    "curve/png": wandb.Image(str(Path(results.run_dir) / "curve.png")),
                }
            )


def objective(results: RunResults, metric: str) -> float | None:
    """The value of `optimized_metric` (validation only, checked in mrl.run.checks) for a sweeper;
    None when the run has no validation scores (e.g. trainer.limit_val_batches=0)."""
    if not results.validation:
        return None
    if metric == "val/spearman_mean_log2":
        return mean_over_log2_dims(results.validation)
    dim = int(metric.removeprefix("val/spearman@"))
    if dim not in results.validation:
        raise ConfigError(
            f"optimized_metric={metric} names no eval dim of this run ({results.eval_dims})."
        )
    return results.validation[dim]


def holds_the_lock() -> bool:
    """Only the launching process locks the run folder: DDP workers (Lightning's, torchrun's,
    SLURM's) of rank > 0 run inside the lock of rank 0."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(os.environ.get(key, "0") == "0" for key in ranks)


def main(cfg: DictConfig) -> float | None:
    """Hydra task: runs `run` under the run folder's lock, turns bad input into one line,
    always closes wandb. Returns `optimized_metric` (a validation score) for a sweeper."""
    import transformers

    transformers.logging.set_verbosity_error()
    hydra_cfg = HydraConfig.get()
    folder = RunFolder(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    output_root = Path(str(OmegaConf.select(cfg, "paths.output_dir", default="outputs")))
    folder.failed.unlink(missing_ok=True)  # a re-run gets a fresh verdict
    job = job_with_its_own_workers(hydra_cfg, folder.path) if multirun else contextlib.nullcontext()
    lock = folder.locked() if holds_the_lock() else contextlib.nullcontext()
    failure: tuple[str, int] | None = None
    with job:
        try:
            with lock:
                results = run(cfg, folder, overrides)
                if cfg.get("plan"):
                    folder.remove_startup_files(keep=output_root)
            return objective(results, cfg.optimized_metric) if results else None
        except RunFolderBusy as err:  # the other run's files are not ours to clean
            failure = (str(err), 2)
        except ConfigError as err:
            if not multirun:
                folder.remove_startup_files(keep=output_root)
            failure = (str(err), 2)
        except NonFiniteLoss as err:
            last = folder.last_ckpt
            good = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint yet"
            failure = (
                f"{err}; {good} (nothing was saved after the bad step). Lower optim.lr, "
                "or set loss.on_nonfinite=skip to skip such batches.",
                3,
            )
        except Exception as err:
            if not multirun:
                raise
            log.exception("job failed")
            failure = (f"{type(err).__name__}: {err}", 1)
        finally:
            if "wandb" in sys.modules:
                import wandb

                wandb.finish()
            if failure:
                print(f"error: {failure[0]}", file=sys.stderr)
                if multirun:
                    record_failure(folder.path, failure[0], overrides)
    if failure and not multirun:
        raise SystemExit(failure[1])
    return None
