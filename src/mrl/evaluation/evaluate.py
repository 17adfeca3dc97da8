"""Evaluating any encoder at every dimension: STS-B, STS12-16 and SICK-R (Spearman), and BEIR
retrieval sets (nDCG@10, MRR@10, recall@100, MAP@100; `benchmarks=scifact`), each encoded once.

`python eval.py model=<hub id | local folder | run folder>` (the root shim) calls `main`.
Models load through `mrl.artifacts.models` (sentence-transformers, so any of its models works, ours
exported included); a run folder uses its `sentence-transformers/` export, or exports its
checkpoint. No training code is imported (no Lightning, no wandb).

A retrieval set (`task: retrieval`, see `mrl.data.beir`) has its queries and corpus encoded once at
full width; each dim's prefix is renormalised and searched with FAISS (`mrl.evaluation.retrieval`,
`retrieval.index=flat` exact, `ivf`/`hnsw` approximate). Its metrics are stored as benchmarks
named `<set>/<metric>` (e.g. `scifact/ndcg@10`), so STS and retrieval share one table per dim.

`transform=pca|rotation|adaptor|random_subset|csr` (`mrl.evaluation.posthoc`,
docs/comparators.md) fits a map on training texts and applies it to every benchmark's full-width
embeddings before the prefixes are cut (random_subset: a random d-subset per draw, the mean of
the draws; csr: a k-sparse code per k instead of a prefix); the map is saved in the eval folder.
`storage=[float32,float16,int8,binary]` (`mrl.evaluation.storage`) scores each prefix as stored
(int8 and binary calibrated on training texts), every kind from the same encode: the first kind
in the eval folder, each other in `storage/<kind>/`, a complete eval folder of its own; each
results.json's `storage` gives the kind and the bytes per embedding at every dim.
Each STS benchmark's per-pair cosines at every dim are
saved (`mrl.artifacts.pairs`): the test benchmark's as `test_pairs.npz`, as a training run writes
them, the others as `pairs/<name>.npz`, so a report can put intervals on eval folders too.

The folder is `outputs/evals/<model>/` plus, when given, the overrides of the settings that
change the numbers (`dims`, `max_seq_length`, `benchmarks`, `retrieval`, `transform`,
`transform_fit`), so a re-run with other settings gets its own folder; results.json keeps
those settings and a folder that holds other ones (e.g. a fixed hydra.run.dir) is refused in
one line rather than reported as done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mrl.artifacts.models import check_device, embedding_width, load_model, model_eval_dims, slug
from mrl.artifacts.pairs import PAIRS, write_pairs
from mrl.artifacts.results import RunResults, load_results, write_run_outputs
from mrl.artifacts.run_folder import EXPORT_DIR, RunFolder
from mrl.common.config_keys import (
    composed_from,
    file_keys,
    nearest_key,
    refused_override_key,
    unknown_key_message,
    unknown_keys,
)
from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.common.redact import redact
from mrl.core.schedule import check_dims
from mrl.data.beir import BeirSource
from mrl.data.lengths import check_length, model_positions
from mrl.data.sources import Source, load_source
from mrl.evaluation.grid import GRID_PNG, check_grid, grid_png, grid_record, parse_grid
from mrl.evaluation.metrics import spearman_of_similarities
from mrl.evaluation.posthoc import check_fit_data, check_transform, export_posthoc, fit_posthoc
from mrl.evaluation.retrieval import (
    IndexSpec,
    QueryScores,
    is_retrieval,
    load_and_encode,
    mean_by_dim,
    write_query_scores,
)
from mrl.evaluation.storage import bytes_per_embedding, check_kinds, fit_storage

# the settings (besides the model) that change the numbers; batch size and device do not
SETTINGS = (
    "dims",
    "max_seq_length",
    "benchmarks",
    "retrieval",
    "transform",
    "transform_fit",
    "grid",
    "storage",
    "storage_calibration",
)
MAX_FOLDER_NAME = 100
QUERIES = "queries"  # <eval folder>/queries/<set>.npz: per-query retrieval metrics by dim
STORAGE = "storage"  # <eval folder>/storage/<kind>/: a further storage kind's eval folder


def eval_dir(model, overrides: str | None = None) -> str:
    """The folder name under evals/: the model, then the overrides of `SETTINGS` (Hydra's
    override_dirname, which leaves out the keys that do not change the numbers)."""
    name = slug(model)
    if overrides:
        settings = slug(overrides)
        if len(settings) > MAX_FOLDER_NAME:
            digest = hashlib.sha1(settings.encode()).hexdigest()[:10]
            settings = f"{settings[: MAX_FOLDER_NAME - 11]}-{digest}"
        name = f"{name}/{settings}"
    return name


for _name, _resolver in (("slug", slug), ("eval_dir", eval_dir)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def encode_benchmark(model, ds, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides' full-width embeddings, each distinct text encoded once."""
    first, second = list(ds["sentence1"]), list(ds["sentence2"])
    texts = list(dict.fromkeys(first + second))
    embeddings = model.encode(
        texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    ).float()
    index = {t: i for i, t in enumerate(texts)}
    left = embeddings[[index[t] for t in first]]
    right = embeddings[[index[t] for t in second]]
    return left, right


def benchmark_table(
    scores: dict[str, dict[int, float]], dims: list[int], sts: list[str] | None = None
) -> str:
    """One row per benchmark, one column per dim: the STS rows (`sts`, default all), their
    mean, then the retrieval rows (a mean across Spearman and nDCG would mean nothing)."""
    sts = list(scores) if sts is None else sts
    lines = [
        "| benchmark | " + " | ".join(str(d) for d in dims) + " |",
        "|" + " --- |" * (len(dims) + 1),
    ]

    def row(name: str, by_dim: dict[int, float]) -> None:
        lines.append(f"| {name} | " + " | ".join(f"{by_dim[d]:.4f}" for d in dims) + " |")

    for name in sts:
        row(name, scores[name])
    if sts:
        row("**mean**", {d: sum(scores[s][d] for s in sts) / len(sts) for d in dims})
    for name in (n for n in scores if n not in sts):
        row(name, scores[name])
    return "\n".join(lines) + "\n"


def _settings(config: dict) -> dict:
    values = {key: config.get(key) for key in ("model", *SETTINGS)}
    if isinstance(values["dims"], list):  # the same dims in another order are the same numbers
        values["dims"] = sorted(values["dims"], key=str)
    if isinstance(values["transform_fit"], dict):  # the export changes no number
        values["transform_fit"] = {
            k: v for k, v in values["transform_fit"].items() if k != "export"
        }
    return values


def _short(value) -> str:
    """A setting for a one-line message: a benchmarks map by its names, at most 60 chars."""
    text = str(list(value) if isinstance(value, dict) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def finished(run_dir: Path, config: dict) -> RunResults | None:
    """The earlier results in `run_dir` if they are of these settings, None if there are none;
    ConfigError if the folder holds an evaluation of other settings."""
    run = RunFolder(run_dir)
    if not run.is_finished():
        return None
    done = load_results(run_dir)
    stored, wanted = _settings(done.config), _settings(config)
    for key, value in wanted.items():
        if key in done.config and stored[key] != value:
            then, now = _short(done.config[key]), _short(config.get(key))
            detail = f"{key}={then}, not {now}" if then != now else f"other {key} settings"
            raise ConfigError(
                f"{run_dir} holds an evaluation with {detail}; delete "
                f"{run.results} to re-run it there, or leave hydra.run.dir unset (each setting "
                "gets its own folder)."
            )
    print(f"{run.results} exists: this evaluation is done (delete it to re-run).")
    return done


# subtrees of free names: benchmarks (each STS one's keys are checked against Source's fields
# below, a retrieval set's by BeirSource)
OPEN_KEYS = ("benchmarks",)


def eval_known_keys(conf_dir: Path) -> dict[str, bool]:
    """eval.py's options: the keys conf/evaluate's files set (`mrl.common.config_keys`), and a
    data source's fields under transform_fit.data."""
    keys = dict(file_keys(str(conf_dir), "evaluate.yaml"))
    keys.update({f"transform_fit.data.{f.name}": False for f in dataclasses.fields(Source)})
    return keys


def check_keys(cfg: DictConfig) -> None:
    """One line for the first key nothing reads (`+dimz=[64]`, `+retrieval.nprob=8`), with the
    nearest known one; an STS benchmark's keys are a data source's fields."""
    conf_dir = composed_from() or Path(__file__).resolve().parents[3] / "conf" / "evaluate"
    known = eval_known_keys(conf_dir)
    unknown = unknown_keys(cfg, known, OPEN_KEYS)
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], known, "conf/evaluate/evaluate.yaml"))
    fields = {**{f.name: False for f in dataclasses.fields(Source)}, "task": False}  # task: null
    for name, source_cfg in (cfg.get("benchmarks") or {}).items():
        if not isinstance(source_cfg, DictConfig) or source_cfg.get("task") is not None:
            continue  # a retrieval set: BeirSource.from_config names its unknown keys
        for key in source_cfg:
            if key not in fields:
                near = nearest_key(str(key), fields)
                hint = f"did you mean {near}?" if near else f"it takes {', '.join(fields)}."
                raise ConfigError(
                    f"benchmarks.{name}.{key} is not a field of an STS benchmark, so it would be "
                    f"ignored; {hint}"
                )


def key_error_line(err: Exception) -> tuple[str, int] | None:
    """eval.py's line for Hydra's refusal of an override of a key the config does not have
    (`dimz=[64]`): the nearest known key (`mrl.common.cli.hydra_errors_in_one_line`)."""
    key = refused_override_key(err)
    if key is None:
        return None
    known = eval_known_keys(Path(__file__).resolve().parents[3] / "conf" / "evaluate")
    return unknown_key_message(key, known, "conf/evaluate/evaluate.yaml"), 2


def check_settings(cfg: DictConfig) -> None:
    for key in ("batch_size", "max_seq_length"):
        value = cfg[key]
        if (value is not None or key != "max_seq_length") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{key}={value!r} must be a whole number >= 1, e.g. {key}=128.")
    if not cfg.benchmarks:
        raise ConfigError("benchmarks is empty; give at least one, e.g. benchmarks=sts.")
    check_device(cfg.device)
    if not isinstance(cfg.trust_remote_code, bool):
        raise ConfigError(f"trust_remote_code={cfg.trust_remote_code!r} must be true or false.")
    for name, source_cfg in cfg.benchmarks.items():
        if is_retrieval(name, source_cfg):
            BeirSource.from_config(source_cfg, name)
    check_transform(cfg)
    check_grid(cfg.grid, cfg.transform)
    check_storage(cfg)


def check_storage(cfg: DictConfig) -> None:
    """`storage` and `storage_calibration`, and the kinds this evaluation can store."""
    kinds = check_kinds(OmegaConf.to_container(cfg, resolve=True)["storage"])
    n = cfg.storage_calibration
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(
            f"storage_calibration={n!r} must be a whole number >= 2, e.g. storage_calibration=2000."
        )
    if cfg.transform == "csr" and kinds != ["float32"]:
        raise ConfigError(
            f"storage={kinds} with transform=csr: a CSR code is stored as k (index, float32 "
            "value) pairs, not as a prefix; leave storage at [float32]."
        )
    if cfg.grid and kinds[0] != "float32":
        raise ConfigError(
            f"grid=true scores float32 prefixes, but storage lists {kinds[0]} first; put "
            "float32 first (storage=[float32,...]) or set grid=false."
        )
    if {"int8", "binary"} & set(kinds):
        check_fit_data(cfg.transform_fit.data, cfg.benchmarks)  # calibration: training texts


def write_sts_pairs(run_dir: Path, pairs: dict[str, tuple], test_benchmark: str) -> None:
    """Each STS benchmark's gold scores and per-dim cosines: the test benchmark's as
    test_pairs.npz (a training run's name and layout), the others as pairs/<name>.npz; with
    several draws (random_subset) each draw's in draws/<i>/, to be stacked as seeds are."""
    for name, (gold, draws) in pairs.items():
        for i, sims in enumerate(draws):
            folder = run_dir if len(draws) == 1 else run_dir / "draws" / str(i)
            path = folder / (PAIRS if name == test_benchmark else f"pairs/{slug(name)}.npz")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_pairs(path, gold, sims)


def run(cfg: DictConfig, run_dir: Path) -> RunResults:
    if not cfg.model:
        raise ConfigError(
            "no model given; run python eval.py model=<Hub id | local folder | run folder>."
        )
    check_keys(cfg)  # before the finished check: a key nothing reads is never "done"
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    done = finished(run_dir, config)
    if done is not None:
        return done
    check_settings(cfg)
    spec = IndexSpec.from_config(OmegaConf.to_container(cfg, resolve=True).get("retrieval"))
    with tempfile.TemporaryDirectory() as workdir:
        model = load_model(cfg.model, cfg.device, cfg.trust_remote_code, Path(workdir))
        if cfg.max_seq_length is not None:
            check_length(cfg.max_seq_length, "max_seq_length", model_positions(model), cfg.model)
            model.max_seq_length = cfg.max_seq_length
        width = embedding_width(model)
        requested = OmegaConf.to_container(cfg, resolve=True)["dims"]
        if requested is None:
            dims = model_eval_dims(cfg.model, width)
        else:
            dims = check_dims(requested, width, "dims")
        post = fit_posthoc(model, cfg, dims)
        dims = post.dims or dims  # csr: its k values
        kinds = check_kinds(cfg.storage)
        stores, calibration = fit_storage(kinds, model, cfg.model, cfg, post)
        scored = {kind: Scored() for kind in kinds}
        sts = []
        for name, source_cfg in cfg.benchmarks.items():
            if is_retrieval(name, source_cfg):
                data, q, d = load_and_encode(model, name, source_cfg, cfg.batch_size, spec)
                for kind, storage in stores.items():
                    draws = post.retrieval_draws(q, d, data, dims, spec, storage)
                    means = [{f"{name}/{m}": by for m, by in mean_by_dim(p).items()} for p in draws]
                    scored[kind].add(post.mean_of_draws(means, scored[kind].per_draw))
                    scored[kind].queries[name] = [QueryScores(list(data.query_ids), p)
                                                  for p in draws]  # fmt: skip
                ndcg = scored[kinds[0]].scores[f"{name}/ndcg@10"][dims[0]]
                print(f"{name}: {len(q)} queries, {len(d)} docs, nDCG@10 at {dims[0]}: {ndcg:.4f}")
                continue
            sts.append(name)
            ds = load_source(Source.from_config(source_cfg))
            left, right = encode_benchmark(model, ds, cfg.batch_size)
            gold = list(ds["score"])
            for kind, storage in stores.items():
                draws = post.pair_draws(left, right, dims, storage)
                spearman = [{name: spearman_of_similarities(s, gold)} for s in draws]
                scored[kind].add(post.mean_of_draws(spearman, scored[kind].per_draw))
                scored[kind].pairs[name] = (gold, draws)
            if cfg.grid and len(sts) == 1:  # the layers x dims grid of the test benchmark
                grid = grid_record(model, ds, dims, cfg.batch_size)
            at = scored[kinds[0]].scores[name][dims[0]]
            print(f"{name}: {len(ds)} pairs, Spearman at {dims[0]}: {at:.4f}")
        if post.name and cfg.transform_fit.export:
            shutil.rmtree(run_dir / EXPORT_DIR, ignore_errors=True)  # left by a run that died
            export_posthoc(post, model, cfg.model, dims, run_dir / EXPORT_DIR, Path(workdir) / "x")
    post.save(run_dir)
    grid_extra = grid if cfg.grid and sts else {}
    if grid_extra:
        write_atomic(
            run_dir / GRID_PNG, grid_png(parse_grid(grid["grid"]), f"{cfg.model}: {sts[0]}")
        )
    # each further kind in storage/<kind>/, then the first in run_dir (its results.json: done)
    for i, kind in reversed(list(enumerate(kinds))):
        folder = run_dir if i == 0 else run_dir / STORAGE / kind
        storage = {"kind": kind, **calibration}
        storage["bytes_per_embedding"] = (
            post.record["bytes_per_embedding"]  # csr: k (index, value) pairs per code
            if post.name == "csr"
            else {d: bytes_per_embedding(d, kind) for d in dims}
        )
        if len(kinds) > 1:
            storage["folders"] = {k: f"{STORAGE}/{k}" if j else "." for j, k in enumerate(kinds)}
        extra = grid_extra if i == 0 else {}
        results = write_scored(folder, cfg, config, post, dims, sts, scored[kind], storage, extra)
    return results


@dataclass
class Scored:
    """One storage kind's scores (benchmark -> dim -> score), its random_subset draws'
    (`posthoc.per_draw`), and what intervals resample: STS pairs and per-query metrics."""

    scores: dict = field(default_factory=dict)
    per_draw: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    queries: dict = field(default_factory=dict)

    def add(self, scores: dict) -> None:
        self.scores.update(scores)


def write_scored(folder, cfg, config, post, dims, sts, scored, storage, extra) -> RunResults:
    """One storage kind's eval folder: results.json (last), benchmarks.md, the curve, STS
    pairs (`write_sts_pairs`) and per-query retrieval scores (`queries/<set>.npz`)."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = scored.scores
    first = next(iter(scores))
    posthoc = {**post.record, "per_draw": scored.per_draw} if scored.per_draw else post.record
    stored = "" if storage["kind"] == "float32" else f", stored as {storage['kind']}"
    results = RunResults(
        experiment=f"eval {cfg.model}" + (f" + {post.name}" if post.name else "") + stored,
        run_dir=str(folder),
        backbone=cfg.model,
        eval_dims=dims,
        test=scores[first],
        config=config,
        model=cfg.model,
        test_benchmark=first,
        benchmarks=scores,
        extra={**({"posthoc": posthoc} if post.name else {}), "storage": storage, **extra},
    )
    write_sts_pairs(folder, scored.pairs, first)
    for name, draws in scored.queries.items():  # what a bootstrap over queries resamples
        for i, per_query in enumerate(draws):  # several draws: as their STS pairs, draws/<i>/
            queries = (folder if len(draws) == 1 else folder / "draws" / str(i)) / QUERIES
            queries.mkdir(parents=True, exist_ok=True)
            write_query_scores(queries / f"{slug(name)}.npz", per_query)
    table = benchmark_table(scores, dims, sts)
    write_atomic(folder / "benchmarks.md", table)
    write_run_outputs(folder, results)
    what = "STS Spearman and retrieval metrics" if sts else "Retrieval metrics (cosine)"
    what = "Spearman (cosine)" if len(sts) == len(scores) else what
    print(f"\n{what} by dimension, {results.experiment[5:]}:\n{table}run folder: {folder}")
    return results


def main(cfg: DictConfig) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build it tried
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, run_dir)
    except ConfigError as err:
        output_dir = cfg.get("output_dir")
        RunFolder(run_dir).remove_startup_files(keep=Path(output_dir) if output_dir else None)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
