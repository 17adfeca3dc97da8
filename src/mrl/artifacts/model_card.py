"""The model card (README.md) of an export: its Hub metadata and its text.

The metadata uses the fields sentence-transformers 6 writes for its own models
(sentence_transformers/base/model_card.py): library_name, pipeline_tag, tags, base_model,
datasets, a sentence-similarity widget and a `model-index` with one result per benchmark and
dim, so a pushed export shows its size-vs-quality curve among the Hub's evaluation results:

- STS-B test Spearman (cosine) at each eval dim: task sentence-similarity, dataset
  sentence-transformers/stsb (test split), metric `spearman_cosine`, named `sts-test-<dim>`;
- eval.py's other STS benchmarks alike, named `<benchmark>-<dim>` (sts12-64, sickr-64, ...);
- retrieval benchmarks (keys `<benchmark>/<metric>@<k>`, e.g. `scifact/ndcg@10`): task
  retrieval, metrics such as `ndcg_at_10`, named `<benchmark>-<dim>`.

Datasets come from the run's config (hub_id and split; a retrieval set's qrels split), else
sentence-transformers/stsb for STS-B, mteb/<benchmark>-sts for other STS sets and
BeIR/<benchmark> for retrieval sets. Weights that are not the tested ones (a `note`)
and debug runs get no results. base_model is set only when the backbone is a Hub id.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult
from huggingface_hub.repocard_data import eval_results_to_model_index
from huggingface_hub.utils import HFValidationError, validate_repo_id

from mrl.artifacts.results import ByDim, RunResults, curve_rows

TAGS = ["sentence-transformers", "sentence-similarity", "matryoshka", "feature-extraction"]
EXAMPLE = "A man is playing a guitar."
WIDGET = [
    {
        "source_sentence": EXAMPLE,
        "sentences": [
            "A person is playing an instrument.",
            "A man is playing a flute.",
            "A woman is slicing an onion.",
        ],
    }
]
STSB = {"hub_id": "sentence-transformers/stsb", "hub_split": "test"}
SIMILARITY = ("sentence-similarity", "Semantic Similarity", "spearman_cosine", "Spearman Cosine")
__all__ = ["card_metadata", "eval_results", "model_card", "model_index"]


def hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub model id (org/name or name), None for a local path."""
    if not name or name.startswith((".", "/", "~")) or Path(name).exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _source(results: RunResults, benchmark: str | None, retrieval: bool) -> dict:
    """hub_id, hub_split, hub_subset and revision of a benchmark as its config gives them
    (None: train.py's STS-B test); a retrieval set's split is that of its qrels."""
    config = results.config or {}
    if benchmark is None:
        given = (config.get("eval") or {}).get("test")
    else:
        given = (config.get("benchmarks") or {}).get(benchmark)
    given = given if isinstance(given, dict) and given.get("hub_id") else {}
    if retrieval:
        split = given.get("qrels_split") or "test"
        return {"hub_id": given.get("hub_id") or f"BeIR/{benchmark}", "hub_split": split,
                "revision": given.get("revision")}  # fmt: skip
    default = STSB if benchmark in (None, "stsb") else {"hub_id": f"mteb/{benchmark}-sts"}
    return {"hub_split": "test", **default, **{k: v for k, v in given.items() if v is not None}}


def _metric(name: str) -> tuple[str, str]:
    """A retrieval metric key (`ndcg@10`) as the Hub's metric type and name."""
    base, at, k = name.partition("@")
    pretty = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP"}.get(base.lower(), base.title())
    return re.sub(r"\W+", "_", name.replace("@", "_at_")).strip("_").lower(), pretty + at + k


def eval_results(results: RunResults) -> list[EvalResult]:
    """One result per (benchmark, dim): STS-B test (and eval.py's benchmarks) by dim."""
    benchmarks: dict[str | None, ByDim] = {results.test_benchmark: results.test}
    benchmarks.update(results.benchmarks)
    if "stsb" in benchmarks:
        benchmarks.pop(None, None)  # `test` is STS-B test, listed under its name
    out = []
    for key, by_dim in benchmarks.items():
        benchmark, _, metric = (key or "").partition("/")
        source = _source(results, benchmark or None, bool(metric))
        task_type, task_name, metric_type, metric_name = SIMILARITY
        if metric:
            task_type, task_name = "retrieval", "Retrieval"
            metric_type, metric_name = _metric(metric)
        label = "sts-test" if benchmark in ("", "stsb") else benchmark
        for dim in sorted(by_dim, reverse=True):
            out.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=source["hub_id"],
                    dataset_name=f"{label}-{dim}",
                    dataset_config=source.get("hub_subset"),
                    dataset_split=source.get("hub_split"),
                    dataset_revision=source.get("revision"),
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=float(by_dim[dim]),
                )
            )
    return out


def card_metadata(
    results: RunResults | None,
    backbone: str | None,
    note: str | None = None,
    repo_id: str | None = None,
) -> dict:
    """The card's YAML front matter as a dict (see the module docstring)."""
    meta: dict = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": list(TAGS),
    }
    if base := hub_id(backbone):
        meta["base_model"] = base
    config = results.config if results else {}
    data = config.get("data") or {}
    sources = [(data.get("train") or {})] + [
        (entry or {}).get("source") or {}
        for entry in ((data.get("mixture") or {}).get("datasets") or {}).values()
    ]  # one training set, or every dataset of a mixture
    datasets = list(dict.fromkeys(s["hub_id"] for s in sources if s.get("hub_id")))
    if datasets:
        meta["datasets"] = datasets
    meta["widget"] = WIDGET
    evals = eval_results(results) if results and not note and not results.debug else []
    if evals:
        meta["metrics"] = sorted({r.metric_type for r in evals})
        seed = "" if results.seed is None else f", seed {results.seed}"
        name = repo_id or f"Matryoshka encoder ({results.experiment}{seed})"
        meta["model-index"] = model_index(name, evals)
    return meta


def model_index(name: str, evals: list[EvalResult]) -> list[dict]:
    """The model-index with one entry per (benchmark, dim). huggingface_hub's own
    `eval_results_to_model_index` groups results by dataset type and split only, which would
    fold every dim of a benchmark into one entry under the first dim's name."""
    groups: dict[tuple, list[EvalResult]] = {}
    for result in evals:
        groups.setdefault((*result.unique_identifier, result.dataset_name), []).append(result)
    entries = [eval_results_to_model_index(name, group)[0]["results"] for group in groups.values()]
    return [{"name": name, "results": [entry for one in entries for entry in one]}]


def model_card(
    results: RunResults | None,
    backbone: str,
    width: int,
    note: str | None = None,
    repo_id: str | None = None,
) -> str:
    """README.md of the export: Hub metadata, how to load it, the per-dim table, the training
    config. With a `note` (weights that are not the tested ones) the note replaces the table.
    `repo_id` (where it is pushed) names the model in the snippet and the model-index."""
    meta = yaml.safe_dump(card_metadata(results, backbone, note, repo_id), sort_keys=False)
    lines = [
        "---",
        meta.rstrip(),
        "---",
        "",
        f"# Matryoshka sentence encoder ({width} dims) trained with mrl",
        "",
        "Its embedding can be cut to a prefix and keep most of its quality:",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{repo_id or "PATH_TO_THIS_FOLDER"}", truncate_dim=64)',
        f'embeddings = model.encode(["{EXAMPLE}"])',
        "```",
        "",
    ]
    if note:
        lines += [f"Note: {note}.", ""]
    elif results:
        if results.debug:
            lines += ["Note: a debug run (fast_dev_run or cut splits); not a result.", ""]
        lines += [
            f"## STS-B test Spearman (cosine) by dimension — `{results.experiment}`, "
            f"seed {results.seed}",
            "",
            "| dim | Spearman | retention | backbone before training |",
            "| --- | --- | --- | --- |",
        ]
        for row in curve_rows(results):
            before = row.get("untrained_test_spearman")
            lines.append(
                f"| {row['dim']} | {row['test_spearman']:.4f} | "
                f"{100 * row['test_retention']:.1f} % | "
                f"{'-' if before is None else f'{before:.4f}'} |"
            )
        trained, weights = results.train_dims, results.weights
        lines += ["", f"Loss trained at dims {trained}, weights {weights}.", ""]
        lines += ["## Training config", "", "```yaml"]
        lines.append(yaml.safe_dump(results.config, sort_keys=False).rstrip())
        lines += ["```", ""]
    return "\n".join(lines)
