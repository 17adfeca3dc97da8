"""One check pass over the whole composed training config, before anything expensive.

Every key is one the code reads (`mrl.run.config_keys`), every option's type and range, the
options that are each valid but impossible together (or on this machine), the backbone's
tokenizer, and that the run folder can be written: each problem is one ConfigError line naming
the option and the fix. Nothing is loaded but the backbone's config and tokenizer; no data, no
weights, no folder beyond what Hydra made. `OPTIONS` maps each option to its value check
(`mrl.run.option_values`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from mrl.artifacts.run_folder import RunFolder
from mrl.common.errors import ConfigError
from mrl.core.losses import BASE_LOSSES, base_loss
from mrl.core.qat import ESTIMATORS, check_qat_terms, parse_qat_terms
from mrl.core.schedule import RULES, training_schedule, why_untrained
from mrl.data.lengths import check_length, usable_positions
from mrl.data.mixture import ORDERS
from mrl.data.sources import Source
from mrl.encoder.backbone import backbone_config, check_backbone, load_tokenizer
from mrl.encoder.encoder import encoder_width, projection_dim_problem
from mrl.encoder.lora import lora_problem
from mrl.encoder.pooling import POOLINGS
from mrl.encoder.unpadded import resolve_unpadded
from mrl.run.config_keys import check_keys
from mrl.run.option_values import (
    auto_or_boolean,
    batches,
    boolean,
    chunk_size,
    devices,
    dims_list,
    is_int,
    n_dims_per_step,
    number,
    one_of,
    optimized_metric,
    weights,
    whole,
)

REQUIRED_SOURCE = {"hub_id", "hub_split", "local_file", "columns"}
PRECISIONS = (
    "auto", "32-true", "32", "bf16-mixed", "bf16-emulated", "bf16-true", "16-mixed", "16-true",
    "64-true",
)  # fmt: skip


OPTIONS: dict[str, Callable] = {
    "seed": whole(0, 2**32 - 1),
    "model.pooling": one_of(*POOLINGS),
    "model.chunk_size": chunk_size,
    "model.compile": boolean,
    "model.trust_remote_code": boolean,
    "model.projection_dim": projection_dim_problem,
    "model.lora": lora_problem,
    "model.gradient_checkpointing": boolean,
    "model.unpadded": auto_or_boolean,
    "matryoshka.enabled": boolean,
    "matryoshka.dims": dims_list,
    "matryoshka.rule": one_of(*RULES),
    "matryoshka.min_dim_ratio": number(0, above=True, below=1.0000001),
    "matryoshka.weights": weights,
    "matryoshka.n_dims_per_step": n_dims_per_step,
    "matryoshka.fixed_dim": whole(1, optional=True),
    "matryoshka.alignment_weight": number(0),
    "matryoshka.alignment_temperature": number(0, above=True),
    "qat.warmup_steps": whole(0),
    "qat.momentum": number(0, above=True, below=1.0000001),
    "qat.beta": number(0, above=True),
    "qat.estimator": one_of(*ESTIMATORS),
    "loss.scale": number(0, above=True),
    "loss.cached_mini_batch_size": whole(1, optional=True),
    "loss.on_nonfinite": one_of("stop", "skip"),
    "optim.lr": number(0, above=True),
    "optim.weight_decay": number(0),
    "optim.warmup_ratio": number(0, below=1),
    "data.batch_size": whole(1),
    "data.max_seq_length": whole(1),
    "data.max_train_samples": whole(1, optional=True),
    "data.no_duplicates": boolean,
    "data.num_workers": whole(0),
    "data.mixture.order": one_of(*ORDERS),
    "eval.batch_size": whole(1),
    "eval.score_untrained": boolean,
    "eval.prompt": lambda v: None if v is None or isinstance(v, str) else "must be a text or null",
    "eval.retrieval.max_queries": whole(1, optional=True),
    "eval.retrieval.max_docs": whole(1, optional=True),
    "export.sentence_transformers": boolean,
    "callbacks.checkpoint_every_n_steps": whole(1),
    "callbacks.progress_bar": one_of("rich", "tqdm", "none"),
    "trainer.devices": devices,
    "trainer.num_nodes": whole(1),
    "trainer.precision": one_of(*PRECISIONS),
    "trainer.max_epochs": whole(-1),
    "trainer.max_steps": whole(-1),
    "trainer.min_steps": whole(0, optional=True),
    "trainer.log_every_n_steps": whole(1),
    "trainer.accumulate_grad_batches": whole(1),
    "trainer.gradient_clip_val": number(0, optional=True),
    "trainer.check_val_every_n_epoch": whole(1, optional=True),
    "trainer.num_sanity_val_steps": whole(-1),
    "trainer.limit_train_batches": batches,
    "trainer.limit_val_batches": batches,
    "trainer.limit_test_batches": batches,
    "trainer.overfit_batches": lambda v: (
        "must be a fraction in [0, 1] or a whole number of batches" if v is None else batches(v)
    ),
    "trainer.profiler": one_of(None, "simple", "advanced", "pytorch", "xla"),
    "trainer.fast_dev_run": lambda v: (
        None
        if isinstance(v, bool) or whole(1)(v) is None
        else "must be true, false or a whole number of batches"
    ),
    "trainer.deterministic": lambda v: (
        None if isinstance(v, bool) or v == "warn" else "must be true, false or warn"
    ),
    "optimized_metric": optimized_metric,
    "plan": boolean,  # +plan=true: print the resolved run and stop (mrl.run.build.plan_text)
}


def check_options(cfg: DictConfig) -> None:
    """Type and range of every option in OPTIONS (a missing key is Hydra's business)."""
    for key, check in OPTIONS.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if isinstance(value, str) and value == "<absent>":
            continue
        plain_value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        problem = check(value)
        if problem:
            raise ConfigError(f"{key}={plain_value!r} {problem}.")


def check_loss_columns(loss: str, columns: list, field: str, loss_field: str = "loss") -> None:
    """That the data columns `field` (e.g. data.train.columns) fit the base loss `loss` (set
    by `loss_field`): scores for a pairs loss, none for an in-batch one, the number of texts."""
    base = base_loss(loss)
    texts = [c for c in columns if c != "score"]
    scored = "score" in columns
    if base.scored and not scored:
        raise ConfigError(
            f"{loss_field}={base.name} trains on scored pairs but {field}={columns} has no "
            "score; use scored pairs (columns [sentence1, sentence2, score], e.g. "
            f"data=stsb_pairs) or {loss_field}=mnrl."
        )
    if not base.scored and scored:
        raise ConfigError(
            f"{loss_field}={base.name} ignores gold scores but {field}={columns} has one; use "
            f"{loss_field}=cosent or {loss_field}=angle for scored pairs (as "
            "+exp=stsb_cosent_mrl does)."
        )
    most = base.max_text_columns
    if len(texts) < base.min_text_columns or (most is not None and len(texts) > most):
        want = (
            base.min_text_columns
            if most == base.min_text_columns
            else f">= {base.min_text_columns}"
        )
        raise ConfigError(
            f"{loss_field}={base.name} needs {want} text columns but {field}={columns}; "
            "pick data with the columns it needs."
        )


def check_mixture(mixture, train) -> None:
    """A `data.mixture`: its shape, and each dataset's name, weight, loss and source, and that
    the source's columns fit the loss (`check_loss_columns`)."""
    shape = "{order: proportional, datasets: {NAME: {loss: mnrl, weight: 1.0, source: {...}}}}"
    if not isinstance(mixture, DictConfig) or not set(mixture) <= {"order", "datasets"}:
        raise ConfigError(f"data.mixture must be null or {shape}.")
    if train is not None:
        raise ConfigError(
            "data.mixture replaces data.train, but both are set; set data.train=null (as "
            "data=nli_stsb_mixture does) or data.mixture=null."
        )
    datasets = mixture.get("datasets")
    if not isinstance(datasets, DictConfig) or not datasets:
        value = OmegaConf.to_container(datasets) if OmegaConf.is_config(datasets) else datasets
        raise ConfigError(
            f"data.mixture.datasets={value!r} must name at least one dataset: {shape}."
        )
    for name, dataset in datasets.items():
        field = f"data.mixture.datasets.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
            raise ConfigError(f"{field}: a dataset name must be letters, digits, _ or - only.")
        if not isinstance(dataset, DictConfig) or {"loss", "source"} - set(dataset):
            raise ConfigError(f"{field} must have a loss and a source (and a weight, default 1).")
        if set(dataset) - {"loss", "weight", "source"}:
            extra = sorted(set(dataset) - {"loss", "weight", "source"})
            raise ConfigError(f"{field} has unknown key(s) {extra}; it takes loss, weight, source.")
        weight = dataset.get("weight", 1.0)
        if number(0, above=True)(weight):
            raise ConfigError(
                f"{field}.weight={weight!r} must be a number > 0 (batches per epoch: 1 = every "
                "row once, 0.5 = half of them, 2 = twice)."
            )
        if dataset.loss not in BASE_LOSSES:
            raise ConfigError(
                f"{field}.loss={dataset.loss!r} is unknown; use one of {', '.join(BASE_LOSSES)}."
            )
        source = dataset.source
        fields = {f.name for f in dataclasses.fields(Source)}
        if not isinstance(source, DictConfig) or not (REQUIRED_SOURCE <= set(source) <= fields):
            have = sorted(source) if isinstance(source, DictConfig) else source
            raise ConfigError(
                f"{field}.source={have} must have {', '.join(sorted(REQUIRED_SOURCE))} and may "
                f"have {', '.join(sorted(fields - REQUIRED_SOURCE))} (as data.train has)."
            )
        Source.from_config(source).check()
        check_loss_columns(
            dataset.loss, list(source.columns), f"{field}.source.columns", f"{field}.loss"
        )


def check_prompts(prompts, text_columns: list[str]) -> None:
    """`data.prompts`: null or {column: text}, each column one of the training text columns."""
    if prompts is None:
        return
    if not isinstance(prompts, DictConfig):
        raise ConfigError(
            f"data.prompts={prompts!r} must be null or {{column: text}}, e.g. "
            "{anchor: 'query: ', positive: 'passage: '}."
        )
    for column, prompt in prompts.items():
        if column not in text_columns:
            raise ConfigError(
                f"data.prompts.{column}: the training data has no text column {column!r}; "
                f"use one of {', '.join(dict.fromkeys(text_columns))}."
            )
        if not isinstance(prompt, str):
            raise ConfigError(f"data.prompts.{column}={prompt!r} must be a text (or leave it out).")


def check_combinations(cfg: DictConfig, trainer: dict) -> None:
    """Options that are each valid but impossible together, or on this machine: one line each."""
    mixture = cfg.data.get("mixture")
    if mixture is not None:
        check_mixture(mixture, cfg.data.get("train"))
        sources = [Source.from_config(d.source) for d in mixture.datasets.values()]
    else:
        check_loss_columns(cfg.loss.name, list(cfg.data.train.columns), "data.train.columns")
        sources = [Source.from_config(cfg.data.train)]
    check_prompts(cfg.data.get("prompts"), [c for s in sources for c in s.text_columns])
    mini = cfg.loss.cached_mini_batch_size
    if mini is not None:
        if mini > cfg.data.batch_size:
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
    accelerator, n_devices = trainer.get("accelerator"), trainer.get("devices")
    precision = str(trainer.get("precision"))
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(
                f"trainer.accelerator={accelerator} but no CUDA device is visible; "
                "use trainer=cpu (or check CUDA_VISIBLE_DEVICES)."
            )
        if is_int(n_devices) and n_devices > available:
            raise ConfigError(
                f"trainer.devices={n_devices} but this machine has {available} GPU(s); "
                f"use trainer.devices={available} or trainer.devices=auto."
            )
        if precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"trainer.precision={precision} but {torch.cuda.get_device_name()} has no bf16; "
                "use trainer.precision=16-mixed."
            )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision == "bf16-emulated" and not on_cpu:
        raise ConfigError(
            "trainer.precision=bf16-emulated checks bf16 numerics on a CPU without bf16 units; "
            "on a GPU use trainer.precision=bf16-mixed (or trainer=cpu to emulate)."
        )
    if on_cpu and not (n_devices == "auto" or (is_int(n_devices) and n_devices > 0)):
        msg = f"trainer.devices={n_devices} names GPUs, but this run is on the CPU; give a number"
        raise ConfigError(f"{msg} of processes (trainer.devices=2) or use a GPU trainer.")
    if accelerator == "cpu" and precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision={precision} is not available on the CPU; use 32-true or bf16-mixed."
        )
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if epochs == 0 or steps == 0:
        raise ConfigError(
            f"trainer.max_epochs={epochs} with trainer.max_steps={steps} trains nothing; give "
            "max_epochs >= 1 or max_steps >= 1."
        )
    if epochs == -1 and steps == -1:
        raise ConfigError(
            "trainer.max_epochs=-1 with trainer.max_steps=-1 would train forever; give "
            "trainer.max_steps=N or trainer.max_epochs=N."
        )
    world = (n_devices if is_int(n_devices) and n_devices > 0 else 1) * trainer.get("num_nodes", 1)
    if cfg.data.batch_size < world:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is smaller than the {world} processes "
            f"(trainer.devices x trainer.num_nodes); use data.batch_size >= {world}."
        )


def check_max_seq_length(cfg: DictConfig) -> None:
    """data.max_seq_length at most the backbone's usable positions (`mrl.data.lengths`): more
    would fail at the first long batch, and be written into the export."""
    name, trust = cfg.model.backbone, cfg.model.trust_remote_code
    limit = usable_positions(backbone_config(name, trust), load_tokenizer(name, trust))
    check_length(cfg.data.max_seq_length, "data.max_seq_length", limit, f"model.backbone={name}")


def check_unpadded(cfg: DictConfig) -> None:
    """model.unpadded=true on a backbone that cannot run unpadded (`mrl.encoder.unpadded`)."""
    mc, value = cfg.model, cfg.model.get("unpadded", "auto")
    if value != "auto":  # auto runs anywhere: no config to read
        resolve_unpadded(value, backbone_config(mc.backbone, mc.trust_remote_code), mc.backbone)


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_qat(cfg: DictConfig, trainer: dict) -> None:
    """The quantization-aware terms against the run they are in: their shape, precision and
    dims against the schedule the run trains (`mrl.core.qat.check_qat_terms`; the baseline
    and `fixed_dim` train one dim only), and a warmup that ends before training does."""
    qat = cfg.get("qat")
    if qat is None:
        return
    terms = parse_qat_terms(_plain(qat.get("terms")))
    if not any(t.weight != 0 for t in terms):
        return
    m, mc = OmegaConf.to_container(cfg.matryoshka, resolve=True), cfg.model
    width = encoder_width(mc.backbone, mc.projection_dim, mc.trust_remote_code)
    source = "model.projection_dim" if mc.projection_dim else None
    dims, _, trained = training_schedule(m, width, source)
    trained_dims = [d for d, w in zip(dims, trained, strict=True) if w != 0]
    check_qat_terms(terms, dims, trained_dims, why_untrained(m))
    steps = trainer.get("max_steps", -1)
    if steps != -1:
        check_qat_warmup(cfg, steps, "trainer.max_steps")


def check_qat_warmup(cfg: DictConfig, steps: int, source: str) -> None:
    """A QAT warmup of at least the run's `steps` (from `source`) never switches the terms on."""
    qat = cfg.get("qat")
    warmup = qat.get("warmup_steps", 0) if qat is not None else 0
    terms = parse_qat_terms(_plain(qat.get("terms")) if qat is not None else None)
    if warmup >= steps and any(t.weight != 0 for t in terms):
        raise ConfigError(
            f"qat.warmup_steps={warmup} is not below the {steps} training steps ({source}), so "
            f"the quantization-aware terms would never switch on; use qat.warmup_steps < {steps} "
            f"(e.g. {steps // 10}) or qat=none."
        )


def check_config(cfg: DictConfig, trainer: dict, folder: RunFolder) -> None:
    """The whole check pass: keys, options, combinations, backbone, QAT, writable folders."""
    check_keys(cfg, OPTIONS)  # every key is one the code reads (mrl.run.config_keys)
    check_options(cfg)
    check_combinations(cfg, trainer)
    check_backbone(cfg.model.backbone, cfg.model.trust_remote_code)
    check_max_seq_length(cfg)
    check_unpadded(cfg)
    check_qat(cfg, trainer)  # the QAT terms against the dims this run trains
    folder.check_writable()
