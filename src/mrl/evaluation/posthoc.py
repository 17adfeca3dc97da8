"""Post-hoc comparators for any model (`eval.py transform=pca|rotation|adaptor|random_subset|csr`):
a map fitted on TRAINING texts the model encodes, applied to every benchmark's full-width
embeddings before each prefix is cut and renormalised. They answer "what would a cheap fix of a
model that was not trained for prefixes score?", beside our Matryoshka runs.

- `pca` (`mrl.evaluation.transforms`): centre, then rotate onto the principal axes, largest variance
  first. `rotation`: a seeded random orthogonal matrix, no data needed (the null control).
- `adaptor` (`mrl.evaluation.adaptor`): a linear or residual-MLP map trained with the Matryoshka
  loss at the eval dims on the cached training embeddings; `transform_fit.load` reuses a saved
  one.
- `random_subset` (`mrl.evaluation.transforms.random_orders`): d coordinates drawn at random
  instead of the first d, `transform_fit.draws` times (nested within a draw: a random order of
  the coordinates, then the usual prefix cut); each score is the mean over the draws and
  results.json keeps every draw's (`posthoc.per_draw`).
- `csr` (`mrl.evaluation.csr`): not a prefix at all: a top-k sparse autoencoder per k (the eval
  dims, or `transform_fit.k`) trained with CSR's objective on the cached training embeddings;
  a text is its k-sparse code, compared by cosine, stored as k (index, value) pairs.

The texts: `transform_fit.data` (default: the AllNLI train triplets, the training data of
conf/data/allnli.yaml; a test split, or a benchmark's own file, is refused), its first
`max_samples` rows in file order (as data.max_train_samples), each distinct text of their
columns encoded once. The map is saved in the eval folder (`pca.safetensors`,
`rotation.safetensors`, or `adaptor.safetensors` + `adaptor.json`) and `results.json` keeps
what it was fitted on (`posthoc`); with `transform_fit.export=true` a linear map is also
written as a sentence-transformers folder (the model plus a stock Dense module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from mrl.artifacts.models import embedding_width, model_folder, slug
from mrl.artifacts.run_folder import MRL_INFO
from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.data.sources import Source, load_source
from mrl.evaluation.adaptor import (
    Adaptor,
    adaptor_info,
    check_kind,
    linear_weights,
    load_adaptor,
    new_adaptor,
    save_adaptor,
    train_adaptor,
)
from mrl.evaluation.csr import SparseCoder, check_k, code_bytes, new_coder, save_coders, train_coder
from mrl.evaluation.metrics import pair_similarities
from mrl.evaluation.retrieval import retrieval_per_query
from mrl.evaluation.transforms import (
    LinearMap,
    check_pca_samples,
    export_dense,
    pca_map,
    random_orders,
    rotation_map,
    save_linear,
)

TRANSFORMS = ("pca", "rotation", "adaptor", "random_subset", "csr")
FIT_KEYS = ("data", "max_samples", "seed", "kind", "epochs", "lr", "batch_size", "load", "export",
            "draws", "latent_mult", "k")  # fmt: skip
ORDERS = "random_subset.safetensors"
PROGRESS_MIN = 1000  # texts: an encode this long shows a progress bar


@dataclass
class PostHoc:
    """The fitted map (`name` None: the model as it is) and what results.json keeps of it.
    `orders` (random_subset: one random order of the coordinates per draw) and `coders` (csr:
    one sparse coder per k) replace the prefix cut itself, so they score each dim their own
    way (`pair_draws`, `retrieval_draws`); `dims`: csr's k values, the table's columns."""

    name: str | None = None
    linear: LinearMap | None = None
    adaptor: Adaptor | None = None
    orders: torch.Tensor | None = None
    coders: dict[int, SparseCoder] | None = None
    dims: list[int] | None = None
    record: dict = field(default_factory=dict)

    def apply(self, x):
        """The map on full-width embeddings (a torch tensor or a numpy array, kept as given)."""
        if self.name is None:
            return x
        is_numpy = isinstance(x, np.ndarray)
        t = torch.from_numpy(x) if is_numpy else x
        y = self.linear(t) if self.linear is not None else self.adaptor.apply_frozen(t)
        return y.cpu().numpy() if is_numpy else y

    def pair_draws(self, left, right, dims, storage=None) -> list[dict[int, np.ndarray]]:
        """Each pair's cosine at every dim (csr: every k), one dict per draw (random_subset
        has `transform_fit.draws`, every other map one); `storage`
        (`mrl.evaluation.storage.Storage`): each prefix as stored, None: float32."""
        if self.orders is not None:
            orders = self.orders.to(left.device)
            return [pair_similarities(left[:, o], right[:, o], dims, _stored(storage, o.cpu()))
                    for o in orders]  # fmt: skip
        if self.coders is not None:
            return [{k: pair_similarities(c.codes(left, k), c.codes(right, k), [c.latent])[c.latent]
                     for k, c in self.coders.items()}]  # fmt: skip
        return [pair_similarities(self.apply(left), self.apply(right), dims, _stored(storage))]

    @property
    def per_dim(self) -> bool:
        """True when each dim is scored its own way (random_subset, csr), not as one map
        applied before the prefix cut."""
        return self.orders is not None or self.coders is not None

    def retrieval_draws(
        self, queries: np.ndarray, docs: np.ndarray, data, dims, spec, storage=None
    ) -> list[dict[str, dict[int, np.ndarray]]]:
        """A BEIR set's per-query metrics (metric -> dim -> values, `retrieval_per_query`) from
        its full-width query and document embeddings, one dict per draw (as `pair_draws`,
        `storage` likewise); csr searches each k's codes (latent wide, k non-zeros) by
        cosine."""
        if self.orders is not None:
            orders = self.orders.numpy()
            views = [(queries[:, o], docs[:, o], _stored(storage, o, True)) for o in orders]
            return [retrieval_per_query(q, d, data, dims, spec, st) for q, d, st in views]
        if self.coders is not None:
            per_query: dict[str, dict[int, np.ndarray]] = {}
            q, d = torch.from_numpy(queries), torch.from_numpy(docs)
            for k, c in self.coders.items():
                at_k = retrieval_per_query(c.codes(q, k).numpy(), c.codes(d, k).numpy(), data,
                                           [c.latent], spec)  # fmt: skip
                for metric, by_dim in at_k.items():
                    per_query.setdefault(metric, {})[k] = by_dim[c.latent]
            return [per_query]
        q, d = self.apply(queries), self.apply(docs)
        return [retrieval_per_query(q, d, data, dims, spec, _stored(storage, searched=True))]

    def calibration_inputs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """What a storage calibration sees: the map applied (random_subset reorders its
        calibration per draw instead, `Storage.reordered`)."""
        return embeddings if self.per_dim else self.apply(embeddings)

    def mean_of_draws(self, draws: list[dict[str, dict[int, float]]], per_draw: dict) -> dict:
        """benchmark -> dim -> the mean over the draws; with several draws, each draw's scores
        go to `per_draw` (benchmark -> dim -> list; results.json's `posthoc.per_draw`), so an
        interval can be formed."""
        if len(draws) == 1:
            return draws[0]
        means = {}
        for name in draws[0]:
            per_draw[name] = {d: [s[name][d] for s in draws] for d in draws[0][name]}
            means[name] = {d: float(np.mean(v)) for d, v in per_draw[name].items()}
        return means

    def save(self, folder: Path) -> None:
        """The map's file(s) in `folder` (nothing for no map)."""
        if self.linear is not None:
            save_linear(self.linear, Path(folder) / f"{self.name}.safetensors", self.record)
        elif self.adaptor is not None:
            save_adaptor(self.adaptor, Path(folder), self.record)
        elif self.orders is not None:
            write_atomic(Path(folder) / ORDERS, save_orders(self.orders, self.record))
        elif self.coders is not None:
            save_coders(self.coders, Path(folder), self.record)

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.linear is not None:
            return self.linear.weight_bias()
        return linear_weights(self.adaptor)


def _stored(storage, order=None, searched: bool = False):
    """`storage`'s `stored` function (pairs) or `searched` (an index), for coordinates taken in
    `order`; None for float32 (the prefix as it is)."""
    if storage is None or storage.kind == "float32":
        return None
    storage = storage if order is None else storage.reordered(order)
    return storage.searched if searched else storage.stored


def _whole(fit: dict, key: str, example: int, allow_none: bool = False) -> None:
    value = fit[key]
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"transform_fit.{key}={value!r} must be a whole number >= 1, e.g. "
            f"transform_fit.{key}={example}."
        )


def check_fit_data(data, benchmarks) -> Source:
    """The fit data as a Source; one line if it is not one, or is a test split or benchmark."""
    try:
        source = Source.from_config(data)
        split, file = str(source.hub_split), str(source.local_file)
    except (TypeError, ValueError, KeyError):
        raise ConfigError(
            "transform_fit.data is not a data source; give hub_id, hub_split, local_file and "
            "columns (and hub_subset, revision if any), as conf/data/allnli.yaml's train."
        ) from None
    source.check()
    same = [
        name
        for name, bench in benchmarks.items()
        if bench.get("local_file") == source.local_file
        or (bench.get("hub_id"), bench.get("hub_split")) == (source.hub_id, source.hub_split)
    ]
    if same or "test" in split or "test" in Path(file).name:
        what = f"benchmark {same[0]}'s data" if same else "a test split"
        raise ConfigError(
            f"transform_fit.data is {what} ({split}, {file}); fit on "
            "training data only (the default: the AllNLI train triplets)."
        )
    return source


def check_transform(cfg) -> None:
    """One ConfigError for a bad `transform` or `transform_fit` before anything is loaded (the
    fit data and a saved adaptor are looked at only when a transform uses them)."""
    transform = cfg.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise ConfigError(
            f"transform={transform!r} is unknown; use null (the model as it is), "
            f"{', '.join(TRANSFORMS)}."
        )
    fit = OmegaConf.to_container(cfg.transform_fit, resolve=True)
    unknown = sorted(set(fit) - set(FIT_KEYS))
    if unknown:
        raise ConfigError(f"transform_fit has unknown keys {unknown}; it takes {FIT_KEYS}.")
    for key, example in (("epochs", 5), ("batch_size", 128), ("max_samples", 4000), ("draws", 5),
                         ("latent_mult", 4)):  # fmt: skip
        _whole(fit, key, example, allow_none=key == "max_samples")
    if fit["k"] is not None:
        check_k(fit["k"])
    if isinstance(fit["seed"], bool) or not isinstance(fit["seed"], int):
        raise ConfigError(f"transform_fit.seed={fit['seed']!r} must be a whole number.")
    lr = fit["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ConfigError(f"transform_fit.lr={lr!r} must be a number > 0, e.g. 0.001.")
    if not isinstance(fit["export"], bool):
        raise ConfigError(f"transform_fit.export={fit['export']!r} must be true or false.")
    kind = check_kind(fit["kind"])
    if fit["load"] is not None:
        if transform != "adaptor":
            raise ConfigError(
                "transform_fit.load reuses a saved adaptor, but transform="
                f"{transform or 'null'}; set transform=adaptor or transform_fit.load=null."
            )
        kind = adaptor_info(fit["load"])["kind"]
    if transform is None:
        return
    if transform == "adaptor" and fit["export"] and kind != "linear":
        linear_weights(Adaptor(1, kind))  # its one-line refusal
    if transform in ("random_subset", "csr") and fit["export"]:
        raise ConfigError(
            f"transform={transform} is no single linear map, so it has no sentence-transformers "
            "export; set transform_fit.export=false."
        )
    if transform not in ("rotation", "random_subset") and fit["load"] is None:
        source = check_fit_data(cfg.transform_fit.data, cfg.benchmarks)
        if transform in ("adaptor", "csr") and len(source.text_columns) < 2:
            raise ConfigError(
                f"transform_fit.data has text columns {list(source.text_columns)}; {transform} "
                "trains on rows of an anchor, its positive and any negatives (2 columns or more)."
            )


def fit_rows(source: Source, max_samples: int | None) -> tuple[list[str], torch.Tensor]:
    """The distinct texts of the first `max_samples` rows (all: None), and each row's text
    indices into them (rows x text columns)."""
    ds = load_source(source)
    if max_samples is not None and len(ds) > max_samples:
        ds = ds.select(range(max_samples))
    columns = [list(ds[c]) for c in source.text_columns]
    texts = list(dict.fromkeys(t for column in columns for t in column))
    index = {t: i for i, t in enumerate(texts)}
    return texts, torch.tensor([[index[t] for t in column] for column in columns]).T


def fit_posthoc(model, cfg, dims: list[int]) -> PostHoc:
    """The map `cfg.transform` names, fitted for `model` (checked by `check_transform`)."""
    transform = cfg.get("transform")
    if transform is None:
        return PostHoc()
    fit = OmegaConf.to_container(cfg.transform_fit, resolve=True)
    width = embedding_width(model)
    record = {"transform": transform, "width": width}
    if transform == "rotation":
        record["seed"] = fit["seed"]
        return PostHoc("rotation", linear=rotation_map(width, fit["seed"]), record=record)
    if transform == "random_subset":
        record.update(seed=fit["seed"], draws=fit["draws"], nested=True,
                      bytes_per_embedding={d: 4 * d for d in dims})  # fmt: skip
        orders = random_orders(width, fit["draws"], fit["seed"])
        return PostHoc("random_subset", orders=orders, record=record)
    if fit["load"] is not None:
        adaptor, info = load_adaptor(fit["load"], width)
        record = {**info, "transform": transform, "loaded_from": str(fit["load"])}
        return PostHoc("adaptor", adaptor=adaptor, record=record)
    source = Source.from_config(fit["data"])
    texts, rows = fit_rows(source, fit["max_samples"])
    if transform == "pca":
        check_pca_samples(len(texts), width)
    record.update(data=source.local_file, hub_id=source.hub_id, hub_split=source.hub_split,
                  max_samples=fit["max_samples"], rows=len(rows), texts=len(texts))  # fmt: skip
    print(f"transform={transform}: fitting on {len(texts)} texts of {len(rows)} training rows")
    embeddings = model.encode(
        texts,
        batch_size=cfg.batch_size,
        convert_to_tensor=True,
        show_progress_bar=len(texts) >= PROGRESS_MIN,
    ).float()
    if transform == "pca":
        return PostHoc("pca", linear=pca_map(embeddings), record=record)
    columns = [embeddings[rows[:, j].to(embeddings.device)] for j in range(rows.shape[1])]
    if transform == "csr":
        return fit_csr(columns, width, fit, dims, record)
    settings = {k: fit[k] for k in ("kind", "epochs", "lr", "batch_size", "seed")}
    adaptor = new_adaptor(width, fit["kind"], fit["seed"])
    history = train_adaptor(
        adaptor, columns, dims, fit["epochs"], fit["lr"], fit["batch_size"], fit["seed"]
    )
    print(f"adaptor loss by epoch: {', '.join(f'{x:.4f}' for x in history)}")
    record.update(settings, dims=list(dims), loss_history=history)
    return PostHoc("adaptor", adaptor=adaptor, record=record)


def fit_csr(columns, width: int, fit: dict, dims: list[int], record: dict) -> PostHoc:
    """One sparse coder per k (`transform_fit.k`, or the eval dims), each trained with CSR's
    objective on the cached training columns (`mrl.evaluation.csr`)."""
    latent = fit["latent_mult"] * width
    ks = check_k(dims if fit["k"] is None else fit["k"], latent)
    coders, history = {}, {}
    for k in ks:
        coders[k] = new_coder(width, latent, fit["seed"])
        history[k] = train_coder(
            coders[k], columns, k, fit["epochs"], fit["lr"], fit["batch_size"], fit["seed"]
        )
        print(f"csr k={k} loss by epoch: {', '.join(f'{x:.4f}' for x in history[k])}")
    settings = {key: fit[key] for key in ("epochs", "lr", "batch_size", "seed", "latent_mult")}
    record.update(settings, latent=latent, k=ks, loss_history=history,
                  bytes_per_embedding={k: code_bytes(k, latent) for k in ks})  # fmt: skip
    return PostHoc("csr", coders=coders, dims=ks, record=record)


def save_orders(orders: torch.Tensor, record: dict) -> bytes:
    """random_subset's orders (draws x width, int64) as safetensors bytes, the record as
    metadata."""
    from safetensors.torch import save

    metadata = {key: json.dumps(value) for key, value in record.items()}
    return save({"orders": orders.contiguous()}, metadata=metadata)


def export_posthoc(post: PostHoc, model, name: str, dims, out: Path, workdir: Path) -> Path:
    """`model` (`name`: as eval.py was given it) with the fitted linear map appended, as a
    sentence-transformers folder at `out`; its mrl.json holds the eval dims."""
    weight, bias = post.weight_bias()
    note = (
        f"# {slug(name)} + {post.name}\n\n`{name}` with a post-hoc {post.name} map appended as "
        "a stock Dense module (identity activation), fitted by `eval.py "
        f"transform={post.name}` of mrl on training texts only:\n\n```json\n"
        f"{json.dumps(post.record, indent=2)}\n```\n\nLoad it with "
        "`SentenceTransformer(folder, truncate_dim=64)`; the prefixes are of the mapped output.\n"
    )
    files = {
        "README.md": note,
        MRL_INFO: json.dumps({"eval_dims": list(dims), "schedule_dims": []}),
    }
    return export_dense(model, weight, bias, out, model_folder(name, workdir), files)
