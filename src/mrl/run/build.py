"""From a composed config to the objects of one run: `build(cfg, run_dir)` checks the whole
config first (`mrl.run.checks`), then makes the module, the data module and the trainer.

Each config group reaches its consumer whole (`cfg.model`, `cfg.matryoshka`, `cfg.loss`,
`cfg.optim` -> the module; `cfg.data` -> the data module; `cfg.trainer` -> Lightning), so a new
option is one yaml line plus the code that reads it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf

from mrl.artifacts.run_folder import CHECKPOINTS, METRICS, RunFolder
from mrl.common.files import write_atomic
from mrl.common.hub import wandb_mode
from mrl.common.redact import redact
from mrl.data.datamodule import MatryoshkaDataModule
from mrl.run.checks import check_config, check_qat_warmup
from mrl.run.module import MatryoshkaModule
from mrl.run.precision import (
    cpu_bf16_support,
    cpu_bf16_warning,
    lightning_precision,
    resolve_precision,
)
from mrl.run.reliability import AtomicCheckpointIO, StopOnSignal

log = logging.getLogger(__name__)


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def dataset_losses(cfg: DictConfig) -> dict[str, str] | None:
    """{dataset: base loss name} of `data.mixture` (None: one dataset, trained with loss.name)."""
    mixture = cfg.data.get("mixture")
    return {name: d.loss for name, d in mixture.datasets.items()} if mixture else None


def build_module(cfg: DictConfig) -> MatryoshkaModule:
    """The LightningModule from the model, matryoshka, loss and optim groups and the losses of
    a data mixture (checks the dims and weights against the backbone)."""
    return MatryoshkaModule(
        model=plain(cfg.model),
        matryoshka=plain(cfg.matryoshka),
        loss=plain(cfg.loss),
        optim=plain(cfg.optim),
        dataset_losses=dataset_losses(cfg),
        qat=plain(cfg.qat) if cfg.get("qat") is not None else None,
    )


def build_datamodule(cfg: DictConfig) -> MatryoshkaDataModule:
    d = cfg.data
    mixture = d.get("mixture")
    return MatryoshkaDataModule(
        backbone=cfg.model.backbone,
        train=None if mixture else plain(d.train),
        mixture=plain(mixture) if mixture else None,
        validation=plain(cfg.eval.validation),
        test=plain(cfg.eval.test),
        batch_size=d.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        max_seq_length=d.max_seq_length,
        max_train_samples=d.max_train_samples,
        no_duplicates=d.no_duplicates,
        num_workers=d.num_workers,
        seed=cfg.seed,
        trust_remote_code=cfg.model.trust_remote_code,
        pooling=cfg.model.pooling,
        prompts=plain(d.prompts) if d.get("prompts") else None,
        eval_prompt=cfg.eval.get("prompt"),
    )


def trainer_args(cfg: DictConfig) -> dict:
    """The `trainer` group, passed to `lightning.Trainer`, with its precision resolved
    (`mrl.run.precision`: `auto`, and `bf16-emulated` as a plugin)."""
    args = plain(cfg.trainer)
    args["precision"] = resolve_precision(
        str(args.get("precision")), args.get("accelerator"), cpu_bf16_support()
    )
    if cfg.callbacks.progress_bar == "none":
        args["enable_progress_bar"] = False
    return args


class HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is kept: the rows of the
    steps before `resume_step` stay (once), later rows (to be re-done) go."""

    def __init__(self, log_dir: str, resume_step: int | None):
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header, rows = list(reader.fieldnames or []), list(reader)
        keep = [
            row
            for row in rows
            if self.resume_step is not None and int(float(row.get("step") or 0)) < self.resume_step
        ]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows(keep)
        write_atomic(path, out.getvalue())  # the kept history is on disk before training goes on
        self.metrics_keys = header  # later rows append under this header (or rewrite it)


class HistoryCSVLogger(CSVLogger):
    """`csv/metrics.csv` in the run folder, its history kept across resumes."""

    def __init__(self, save_dir: Path, resume_step: int | None):
        super().__init__(save_dir, name=METRICS, version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = HistoryWriter(self.log_dir, self.resume_step)
        return self._experiment


def build_loggers(cfg: DictConfig, run_dir: Path, overrides: list[str], resume_step) -> list:
    loggers = []
    if cfg.logger.get("csv"):
        loggers.append(HistoryCSVLogger(run_dir, resume_step))
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
                tags=redact(list(dict.fromkeys([*cfg.get("tags", []), *w.tags]))),
                config=redact({**plain(cfg), "overrides": overrides}),
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
            dirpath=run_dir / CHECKPOINTS,
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
    retrieval = cfg.eval.get("retrieval")
    if retrieval:
        from mrl.run.retrieval_validation import RetrievalValidation

        callbacks.append(
            RetrievalValidation(
                plain(retrieval.sets),
                retrieval.max_queries,
                retrieval.max_docs,
                cfg.eval.batch_size,
            )  # fmt: skip
        )
    return callbacks


def checkpoint_step(ckpt_path: str | None) -> int | None:
    """The global step a checkpoint was saved at (None: no checkpoint)."""
    if ckpt_path is None:
        return None
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return int(state.get("global_step", 0))


@dataclass
class Run:
    """The objects of one run, made by `build`."""

    module: MatryoshkaModule
    datamodule: MatryoshkaDataModule
    trainer: L.Trainer
    stop_on_signal: StopOnSignal
    ckpt_path: str | None  # where training resumes from (None: from the start)


def build(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> Run:
    """Check the whole config, seed, then make the module, data module (data checked and
    tokenized) and trainer of one run in `run_dir`. Bad input is one ConfigError before any
    of them is made."""
    folder = RunFolder(run_dir)
    trainer_kwargs = trainer_args(cfg)
    check_config(cfg, trainer_kwargs, folder)
    trainer_kwargs, plugins = lightning_precision(trainer_kwargs)
    warning = cpu_bf16_warning(
        str(trainer_kwargs.get("precision")), trainer_kwargs.get("accelerator"), cpu_bf16_support()
    )
    if warning:
        log.warning(warning)
    ckpt_path = folder.resume_checkpoint(cfg.ckpt_path)
    L.seed_everything(cfg.seed, workers=True)  # before the module: a random-init backbone
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # checks the data files before anything is written
    if cfg.get("qat") is not None and cfg.trainer.max_steps == -1 and cfg.qat.warmup_steps > 0:
        # the steps of an epoch-bound run are known once the data is (max_steps: check pass)
        steps = planned_steps(cfg, len(datamodule.train_dataloader()))
        check_qat_warmup(cfg, steps, "trainer.max_epochs x batches per epoch")
    stop_on_signal = StopOnSignal(folder.last_ckpt)
    trainer = L.Trainer(
        **trainer_kwargs,
        logger=build_loggers(cfg, run_dir, overrides, checkpoint_step(ckpt_path)) or False,
        callbacks=[*build_callbacks(cfg, run_dir), stop_on_signal],
        plugins=[AtomicCheckpointIO(), *plugins],
        default_root_dir=run_dir,
    )
    return Run(module, datamodule, trainer, stop_on_signal, ckpt_path)


def planned_steps(cfg: DictConfig, per_epoch: int) -> int | None:
    """The optimizer steps of the run, from `per_epoch` batches (None: not bounded)."""
    t = cfg.trainer
    steps = per_epoch * t.max_epochs // t.accumulate_grad_batches if t.max_epochs > 0 else None
    if t.max_steps != -1:
        steps = t.max_steps if steps is None else min(steps, t.max_steps)
    return steps


def plan_text(cfg: DictConfig, run: Run, folder: RunFolder) -> str:
    """What `+plan=true` shows: the resolved schedule, steps and batch, without training."""
    m, t, n = run.module, cfg.trainer, cfg.matryoshka.n_dims_per_step
    loader = run.datamodule.train_dataloader()
    per_epoch = len(loader)
    steps = planned_steps(cfg, per_epoch)
    world = (t.devices if isinstance(t.devices, int) and t.devices > 0 else 1) * t.num_nodes
    losses = dataset_losses(cfg)
    bases = ", ".join(f"{k}: {v}" for k, v in losses.items()) if losses else cfg.loss.name
    lines = [
        f"experiment       {cfg.exp_name} (seed {cfg.seed})",
        f"backbone         {cfg.model.backbone}",
        f"loss             matryoshka({bases}), scale {cfg.loss.scale}",
        f"schedule dims    {m.schedule_dims}",
        f"weights          {[round(w, 4) for w in m.weights]}",
        f"trained dims     {m.train_dims}" + (f", {n} per step" if n else ""),
        f"eval dims        {m.eval_dims}",
        f"steps            {steps} ({per_epoch} batches per epoch, {t.max_epochs} epoch(s))",
        *([f"mixture          {mixture_plan(cfg, loader.batch_sampler)}"] if losses else []),
        f"effective batch  {cfg.data.batch_size * t.accumulate_grad_batches} rows over {world} "
        "process(es)",
        f"resume from      {run.ckpt_path or 'nothing (fresh run)'}",
        f"run folder       {folder.path}",
    ]
    return "\n".join(lines)


def mixture_plan(cfg: DictConfig, sampler) -> str:
    """Each dataset's batches in the first epoch and its weight, and the order."""
    counts = Counter(i for i, _ in sampler.global_batches())
    mixture = cfg.data.mixture
    parts = [
        f"{name} {counts[i]} batches (weight {d.weight})"
        for i, (name, d) in enumerate(mixture.datasets.items())
    ]
    return ", ".join(parts) + f"; order {mixture.get('order', 'proportional')}"


def print_config_tree(cfg: DictConfig, groups=("data", "model", "matryoshka", "loss", "optim",
                      "trainer", "eval", "logger", "callbacks", "paths")) -> None:  # fmt: skip
    """The composed config as a tree (rich), one branch per group, the rest as one branch."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    rest = {k: v for k, v in plain(cfg).items() if k not in groups}
    for name, node in [*((g, cfg.get(g)) for g in groups if g in cfg), ("other", rest)]:
        text = (
            OmegaConf.to_yaml(node, resolve=True)
            if OmegaConf.is_config(node)
            else (OmegaConf.to_yaml(OmegaConf.create(node)))
        )
        tree.add(name).add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    rich_print(tree)
