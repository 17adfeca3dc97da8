"""MTEB's own scoring of a model at every prefix size, in MTEB's results layout.

    python -m mrl.mteb MODEL --tasks STSBenchmark SciFact [--dims 384 128 32] [--out DIR]

MODEL is anything eval.py takes (Hub id, model folder, run folder). Each task runs through the
`mteb` package (`pip install -e ".[mteb]"`): its data, its evaluator, its metrics. A dim d is the
model as `SentenceTransformer(MODEL, truncate_dim=d)` gives it: the first d coordinates of the
full-width embedding, not renormalised. MTEB scores STS and retrieval by cosine (its STS main
score is the cosine Spearman, retrieval ranks by the model's similarity, cosine for our exports
and most models), so its numbers at d equal the renormalised prefixes eval.py scores.

Each text is encoded once, at full width, by MTEB's own sentence-transformers wrapper; every
dim is served from that cache (`PrefixEncoder`), so a run over five dims costs one encode.

Online any MTEB task runs by name. With MRL_DATA_DIR set, the tasks the mirror holds run from
its files through MTEB's custom-task interface (the task's own class with a `load_data` that
reads the mirror through our loaders, `mrl.data.sources` and `mrl.data.beir`), no Hub needed:
  STSBenchmark  stsb/test.jsonl (1,379 pairs)
  SICK-R        sts-extra/sickr-{train,trial,test}.jsonl (MTEB's test split is all 9,927 pairs)
  SciFact       beir/scifact/{corpus,queries}.jsonl, qrels/test.tsv (300 queries, 5,183 docs)
Relevance from the mirror is binary (a qrels score > 0), as eval.py reads it; SciFact's
judgements are all 1, so nothing is lost there.

DIR (default outputs/mteb/<model>/) holds MTEB's layout, one experiment per dim, as
`mteb.ResultCache(DIR)` reads it back:
  results/<model>/<revision>/experiments/embed_dim_<d>/<Task>.json (+ model_meta.json)
and the main score of every task at every dim as mteb_dims.md and mteb_dims.json. The folder is
built beside DIR and renamed into place: a failed run leaves nothing, a re-run replaces its own
earlier folder, and a folder of anything else is refused.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.common.cli import OneLineParser, one_line
from mrl.common.errors import ConfigError
from mrl.common.files import default_dir_mode, default_file_mode, refuse_overwrite
from mrl.common.numbers import strict_json

TABLE_MD, TABLE_JSON = "mteb_dims.md", "mteb_dims.json"
TOOL = "mrl.mteb"  # the marker in TABLE_JSON by which a re-run knows its own folder


@dataclass(frozen=True)
class MirrorTask:
    """Where the mirror holds one MTEB task: `files` under MRL_DATA_DIR, read by `kind`'s
    loader (`sts`: scored pairs, `mrl.data.sources`; `retrieval`: a BEIR folder)."""

    kind: str
    files: tuple[str, ...]


MIRRORED = {
    "STSBenchmark": MirrorTask("sts", ("stsb/test.jsonl",)),
    "SICK-R": MirrorTask(
        "sts",
        (
            "sts-extra/sickr-train.jsonl",
            "sts-extra/sickr-trial.jsonl",
            "sts-extra/sickr-test.jsonl",
        ),
    ),
    "SciFact": MirrorTask("retrieval", ("beir/scifact",)),
}


def _mirror_hint() -> str:
    files = "; ".join(f"{name}: {', '.join(t.files)}" for name, t in MIRRORED.items())
    return f"the mirror (MRL_DATA_DIR, layout of shared/data) runs {files}"


# ---- tasks -------------------------------------------------------------------------------


def check_task_names(names: list[str]) -> None:
    """One ConfigError for the first name MTEB does not know, with its nearest names (a
    case-insensitive match first): before the model loads."""
    import mteb

    for name in names:
        try:
            mteb.get_task(name)
        except KeyError:
            known = sorted({task.metadata.name for task in mteb.get_tasks()})
            by_lower = {k.lower(): k for k in known}
            near = [by_lower[name.lower()]] if name.lower() in by_lower else []
            near += [n for n in difflib.get_close_matches(name, known, n=4) if n not in near]
            hint = f"did you mean {', '.join(near)}?" if near else "see mteb.get_tasks()."
            raise ConfigError(f"--tasks: MTEB has no task {name!r}; {hint}") from None


def _sts_split(files: tuple[str, ...]):
    """The pairs of `files` (MRL_DATA_DIR-relative, scores 0-5) as one Dataset with scores in
    [0, 1], read and checked by `mrl.data.sources.load_source`."""
    from datasets import concatenate_datasets

    from mrl.data.sources import Source, load_source

    parts = [
        load_source(
            Source(
                hub_id="(mirror only)",
                hub_split="test",
                local_file=file,
                columns=("sentence1", "sentence2", "score"),
                local_score_max=5.0,
            )
        )
        for file in files
    ]
    return concatenate_datasets(parts).select_columns(["sentence1", "sentence2", "score"])


def _retrieval_split(folder: str) -> dict:
    """A BEIR folder under MRL_DATA_DIR as MTEB's RetrievalSplitData, read and checked by
    `mrl.data.beir.load_beir` (documents already `title + " " + text`, as MTEB joins them)."""
    from datasets import Dataset

    from mrl.data.beir import BeirSource, load_beir

    data = load_beir(BeirSource(hub_id="(mirror only)", local_dir=folder))
    return {
        "corpus": Dataset.from_dict({"id": data.corpus_ids, "text": data.corpus}),
        "queries": Dataset.from_dict({"id": data.query_ids, "text": data.queries}),
        "relevant_docs": {q: dict.fromkeys(sorted(data.relevant[q]), 1) for q in data.query_ids},
        "top_ranked": None,
    }


def mirror_task(name: str):
    """MTEB's task `name` (its own class: metadata, evaluator, main score) with a `load_data`
    that reads the mirror instead of the Hub: MTEB's custom-task interface."""
    import mteb

    spec = MIRRORED[name]
    base = type(mteb.get_task(name))

    def load_data(self, num_proc=None, **kwargs) -> None:
        if self.data_loaded:
            return
        files = spec.files
        split = _sts_split(files) if spec.kind == "sts" else _retrieval_split(files[0])
        self.dataset = {"default": {self.metadata.eval_splits[0]: split}}
        self.data_loaded = True

    # scores come in [0, 1] (load_source rescales); MTEB's correlations ignore the scale
    attrs = {"load_data": load_data, "min_score": 0, "max_score": 1}
    return type(f"Mirror{base.__name__}", (base,), attrs)()


def load_tasks(names: list[str]) -> list:
    """Each task with its data loaded, before anything is encoded or written: from the mirror
    when MRL_DATA_DIR is set and holds it, else from the Hub (offline: the Hugging Face cache).
    A task that cannot be loaded is one ConfigError saying where its data would come from."""
    import mteb

    from mrl.common.hub import datasets_offline, hub_reachable

    mirror = os.environ.get("MRL_DATA_DIR")
    tasks = []
    for name in names:
        if mirror and name in MIRRORED:
            task = mirror_task(name)
            task.load_data()  # the loaders' own one-line errors name a missing or broken file
            tasks.append(task)
            continue
        task = mteb.get_task(name)
        online = hub_reachable()
        try:
            if online:
                task.load_data()
            else:
                with datasets_offline():
                    task.load_data()
        except Exception as err:
            if online:
                raise ConfigError(
                    f"{name}: MTEB could not load its data: {one_line(err)}."
                ) from None
            where = task.metadata.dataset["path"]
            if name in MIRRORED:
                fix = f"set MRL_DATA_DIR to a mirror with {', '.join(MIRRORED[name].files)}"
            else:
                fix = f"run it online once (datasets caches it), or use a task {_mirror_hint()}"
            raise ConfigError(
                f"{name} needs the Hub (dataset {where}), which cannot be reached, and the "
                f"Hugging Face cache has no copy; {fix}."
            ) from None
        tasks.append(task)
    return tasks


# ---- the model at every dim --------------------------------------------------------------


def prefix_encoder(model, name: str, revision: str | None):
    """A `PrefixEncoder` (MTEB's sentence-transformers wrapper that encodes each text once at
    full width) for a loaded SentenceTransformer; `name` and `revision` name it in the results."""
    from mteb.models import SentenceTransformerEncoderWrapper

    class PrefixEncoder(SentenceTransformerEncoderWrapper):
        """MTEB's wrapper of `model`, answering at `dim`: each (task, prompt type, text) is
        encoded once at full width by the wrapper itself (prompts, query/document encode as
        MTEB resolves them) and every dim is its first `dim` columns, exactly what
        `SentenceTransformer(..., truncate_dim=dim)` returns. `at_dim` switches the dim and the
        ModelMeta (`embed_dim` and the experiment `embed_dim_<dim>` its results are filed under)."""

        def __init__(self):
            super().__init__(model)
            self.full_meta = self.mteb_model_meta.model_copy(
                update={"name": name, "revision": revision or "no_revision_available"}
            )
            self.dim = None
            self.cache: dict[tuple, dict[str, np.ndarray]] = {}

        def at_dim(self, dim: int) -> None:
            self.dim = dim
            update = {"embed_dim": dim, "experiment_kwargs": {"embed_dim": dim}}
            self.mteb_model_meta = self.full_meta.model_copy(update=update)

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kw):
            texts = [text for batch in inputs for text in batch["text"]]
            store = self.cache.setdefault((task_metadata.name, str(prompt_type)), {})
            if any(text not in store for text in texts):
                full = super().encode(
                    inputs,
                    task_metadata=task_metadata,
                    hf_split=hf_split,
                    hf_subset=hf_subset,
                    prompt_type=prompt_type,
                    **kw,
                )
                store.update(zip(texts, np.asarray(full, dtype=np.float32), strict=True))
            return np.stack([store[text] for text in texts])[:, : self.dim]

    return PrefixEncoder()


def model_name(model: str) -> str:
    """The name results are filed under: a Hub id as given, a local folder by its path (as
    eval.py names its folders)."""
    from mrl.artifacts.models import slug

    return slug(model) if Path(model).exists() else model


def main_score(result) -> float:
    """A TaskResult's main score: the mean over its evaluated splits and subsets (MTEB's)."""
    return float(result.get_score())


def evaluate_dims(encoder, tasks: list, dims: list[int], out: Path, batch_size: int) -> dict:
    """Every task at every dim through `mteb.evaluate`, results filed in `out` (MTEB's layout);
    returns {task: {"main_score": metric, "scores": {dim: value}}}. The task's data stays
    loaded and its texts cached across dims, then both are dropped."""
    import mteb

    cache = mteb.ResultCache(out)
    table = {}
    for task in tasks:
        scores = {}
        for dim in dims:
            encoder.at_dim(dim)
            result = mteb.evaluate(
                encoder,
                task,
                cache=cache,
                overwrite_strategy="always",
                encode_kwargs={"batch_size": batch_size},
                show_progress_bar=False,
                co2_tracker=False,
            )
            scores[dim] = main_score(result.task_results[0])
            print(f"{task.metadata.name} at {dim}: {task.metadata.main_score} {scores[dim]:.4f}")
        table[task.metadata.name] = {"main_score": task.metadata.main_score, "scores": scores}
        encoder.cache.clear()
        task.unload_data()
    return table


def markdown(table: dict, dims: list[int], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| task | metric | " + " | ".join(str(d) for d in dims) + " |",
        "|" + " --- |" * (len(dims) + 2),
    ]
    for name, row in table.items():
        values = " | ".join(f"{row['scores'][d]:.4f}" for d in dims)
        lines.append(f"| {name} | {row['main_score']} | {values} |")
    return "\n".join(lines) + "\n"


# ---- the output folder -------------------------------------------------------------------


def is_ours(path: Path) -> bool:
    """An empty folder, or one this tool wrote (its TABLE_JSON names the tool)."""
    if path.is_dir() and not any(path.iterdir()):
        return True
    try:
        return json.loads((path / TABLE_JSON).read_text()).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def build_in_place(out: Path, build: Callable[[Path], None]) -> None:
    """`build(folder)` fills a temp folder beside `out`, which then replaces `out` (an earlier
    output of this tool): on any failure the temp folder goes and `out` is untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        build(tmp)
        for root, folders, files in os.walk(tmp):
            for entry in folders:
                os.chmod(Path(root) / entry, default_dir_mode())
            for entry in files:
                os.chmod(Path(root) / entry, default_file_mode())
        os.chmod(tmp, default_dir_mode())
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- command line ------------------------------------------------------------------------


def run(args) -> Path:
    """Check everything (tasks, model, dims, --out, the tasks' data), then evaluate and write."""
    from mrl.artifacts.models import embedding_width, load_model, model_eval_dims, slug
    from mrl.core.schedule import check_dims

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1, e.g. --batch-size 32.")
    check_task_names(args.tasks)
    if len(set(args.tasks)) != len(args.tasks):
        raise ConfigError(f"--tasks {args.tasks} repeats a task; list each once.")
    out = args.out or Path("outputs") / "mteb" / slug(args.model)
    refuse_overwrite([out], is_ours)
    with tempfile.TemporaryDirectory() as workdir:
        model = load_model(args.model, args.device, False, Path(workdir))
        width = embedding_width(model)
        dims = model_eval_dims(args.model, width) if args.dims is None else args.dims
        dims = check_dims(dims, width, "--dims")
        tasks = load_tasks(args.tasks)
        encoder = prefix_encoder(model, model_name(args.model), None)
        title = f"{args.model}: MTEB main score by dimension (mteb {_mteb_version()})"

        def build(folder: Path) -> None:
            table = evaluate_dims(encoder, tasks, dims, folder, args.batch_size)
            record = {
                "tool": TOOL,
                "model": args.model,
                "mteb_version": _mteb_version(),
                "max_seq_length": model.max_seq_length,
                "dims": dims,
                "mirror": bool(os.environ.get("MRL_DATA_DIR")),
                "tasks": table,
            }
            (folder / TABLE_JSON).write_text(strict_json(record, "mteb", indent=2))
            (folder / TABLE_MD).write_text(markdown(table, dims, title))
            print("\n" + markdown(table, dims, title))

        build_in_place(out, build)
    print(f"results: {out}")
    return out


def _mteb_version() -> str:
    import mteb

    return mteb.__version__


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(
        prog="python -m mrl.mteb",
        description="MTEB's own scoring of a model at every prefix size (mrl.tools.mteb_bridge).",
    )
    parser.add_argument("model", help="Hub id, model folder or run folder")
    parser.add_argument(
        "--tasks", nargs="+", required=True, help="MTEB task names, e.g. STSBenchmark SciFact"
    )
    parser.add_argument(
        "--dims", type=int, nargs="+", help="prefix sizes (default: the model's eval dims)"
    )
    parser.add_argument("--out", type=Path, help="results folder (outputs/mteb/<model>/)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (32)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    args = parser.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" on every load
    try:
        import mteb  # noqa: F401
    except ImportError:
        print('error: mrl.mteb needs mteb; pip install -e ".[mteb]".', file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
