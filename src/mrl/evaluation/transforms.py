"""Linear post-hoc maps of frozen embeddings: PCA (axes by decreasing variance) and a random
rotation (the null control), applied as `(x - mean) @ components.T` before the usual prefix cut
and renormalisation; and any square linear map written as a sentence-transformers folder.

PCA puts the most variance first, so a cut prefix keeps as much of the spread as any linear
cut can; a random rotation spreads every direction evenly over all coordinates, so a prefix
keeps a random slice of each: the control that says what "no ordering" scores. Both keep the
full-width geometry (PCA up to centring), so they change the curve, not the top of it.

Plain torch: `eval.py transform=pca|rotation` (`mrl.evaluation.posthoc`) fits them and the tests
pin them. The exported folder is the model's own modules plus a stock `Dense` module (identity
activation, with bias) and loads with `SentenceTransformer(folder)`, no code of ours.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from mrl.common.errors import ConfigError
from mrl.common.files import default_dir_mode, write_atomic

CHUNK = 65536  # rows per matmul when a map is applied (bounds the memory of a big corpus)
DENSE_TYPE = "sentence_transformers.models.Dense"  # the name every release since v2 loads
IDENTITY = "torch.nn.modules.linear.Identity"


@dataclass
class LinearMap:
    """`y = (x - mean) @ components.T`: rows of `components` are the new axes, in order."""

    kind: str
    mean: torch.Tensor  # (width,)
    components: torch.Tensor  # (width, width)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.device, torch.float32)
        components = self.components.to(x.device, torch.float32)
        x = x.float()
        return torch.cat([(c - mean) @ components.T for c in x.split(CHUNK)]) if len(x) else x

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same map as a linear layer, `x @ weight.T + bias`."""
        return self.components, -(self.components @ self.mean)


def fit_pca(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and every principal axis of `embeddings` (samples x width), largest variance
    first, each axis signed so its largest-magnitude coordinate is positive (the same data in
    any row order gives the same axes). Float64 eigendecomposition of the covariance, returned
    as float32; ConfigError when there are fewer samples than axes to fit."""
    x = torch.as_tensor(embeddings).detach().to("cpu", torch.float64)
    n, width = x.shape
    check_pca_samples(n, width)
    mean = x.mean(0)
    centred = x - mean
    values, vectors = torch.linalg.eigh(centred.T @ centred / max(n - 1, 1))
    components = vectors.T.flip(0)  # eigh: ascending eigenvalues, axes as columns
    largest = components.abs().argmax(1)
    components = components * components[torch.arange(width), largest].sign()[:, None]
    return mean.float(), components.float()


def check_pca_samples(n: int, width: int) -> None:
    """One line when `n` embeddings cannot fit `width` principal axes."""
    if n < width:
        raise ConfigError(
            f"PCA needs at least {width} training embeddings to fit {width} axes, got {n}; "
            "raise transform_fit.max_samples (each row gives its distinct texts) or fit on "
            "more data."
        )


def random_rotation(width: int, seed: int) -> torch.Tensor:
    """A random orthogonal width x width matrix, uniform over rotations (Haar): the QR of a
    seeded Gaussian matrix, with R's diagonal signs moved into Q."""
    generator = torch.Generator().manual_seed(int(seed))
    gaussian = torch.randn(width, width, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.diagonal(r).sign()[None, :]).float()


def random_orders(width: int, draws: int, seed: int) -> torch.Tensor:
    """`draws` random orders of the `width` coordinates (draws x width), one seeded generator
    drawing them in turn (so the first draws of seed s are the same for any `draws`). A draw's
    d-subset is its first d coordinates: nested, so d < d' keeps a subset of the d'-subset as a
    prefix does, and each d-subset alone is uniform over all d-subsets."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(width, generator=generator) for _ in range(draws)])


def pca_map(embeddings: torch.Tensor) -> LinearMap:
    mean, components = fit_pca(embeddings)
    return LinearMap("pca", mean, components)


def rotation_map(width: int, seed: int) -> LinearMap:
    return LinearMap("rotation", torch.zeros(width), random_rotation(width, seed))


def save_linear(linear: LinearMap, path: Path, info: dict | None = None) -> None:
    """`mean` and `components` as safetensors (atomic), with `kind` and `info` as metadata."""
    metadata = {"kind": linear.kind, **{k: json.dumps(v) for k, v in (info or {}).items()}}
    tensors = {"mean": linear.mean.contiguous(), "components": linear.components.contiguous()}
    write_atomic(Path(path), save(tensors, metadata=metadata))


def load_linear(path: Path) -> LinearMap:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        kind = file.metadata()["kind"]
    tensors = load_file(str(path))
    return LinearMap(kind, tensors["mean"], tensors["components"])


def export_dense(
    model,
    weight: torch.Tensor,
    bias: torch.Tensor,
    out: Path,
    source: Path | None,
    files: dict[str, str],
) -> Path:
    """`model` with `x @ weight.T + bias` appended as a stock `Dense` module, at `out` (which
    must not exist): a copy of its own folder `source` (None, e.g. a Hub id: `model.save`),
    a `<n>_Dense/` folder (config.json, model.safetensors), a modules.json entry, and `files`
    (name -> text, e.g. a README saying what was appended). Built in a temp folder and
    renamed, so a crash leaves nothing."""
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; remove it or export to another folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if source is not None and (Path(source) / "modules.json").is_file():
            shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        else:
            model.save(str(tmp), safe_serialization=True)
        modules = json.loads((tmp / "modules.json").read_text())
        idx = len(modules)
        name = next(n for n in (f"{idx}_Dense", f"{idx}_Dense_posthoc") if not (tmp / n).exists())
        (tmp / name).mkdir()
        width_out, width_in = weight.shape
        config = {"in_features": width_in, "out_features": width_out, "bias": True,
                  "activation_function": IDENTITY}  # fmt: skip
        (tmp / name / "config.json").write_text(json.dumps(config, indent=2))
        tensors = {"linear.weight": weight.float().contiguous(), "linear.bias": bias.float()}
        (tmp / name / "model.safetensors").write_bytes(save(tensors))
        modules.append({"idx": idx, "name": str(idx), "path": name, "type": DENSE_TYPE})
        (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
        for file_name, text in files.items():
            (tmp / file_name).write_text(text)
        os.chmod(tmp, default_dir_mode())
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
