"""A Matryoshka adaptor: a small learned map on FROZEN embeddings, trained with our Matryoshka
loss so that the cut prefixes of its output keep what the task needs (the idea of
Matryoshka-Adaptor, Yoon et al. 2024; our own code and loss).

`linear`: a square linear layer initialised to the identity. `residual_mlp`: `x + MLP(x)`
(width -> width -> width, GELU) with the last layer zero-initialised. Both start as the
identity, so training starts from the model's own curve and step 0's loss is the model's.
Training never runs the transformer: the texts are encoded once, and mini-batches of the
cached rows (anchor, positive[, negative]) go through the adaptor and
`mrl.core.matryoshka.MatryoshkaLoss` (MNRL at every eval dim, weight 1 each), AdamW, seeded.

Saved as `adaptor.safetensors` (the state dict) and `adaptor.json` (kind, width, settings and
the loss history); a linear adaptor is also a plain `x @ W.T + b` (`linear_weights`), so it
exports as a stock `Dense` module (`mrl.evaluation.transforms.export_dense`); `residual_mlp` does
not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.core.matryoshka import GlobalBatch, MatryoshkaLoss

KINDS = ("linear", "residual_mlp")
WEIGHTS = "adaptor.safetensors"
INFO = "adaptor.json"
CHUNK = 65536  # rows per forward pass when the adaptor is applied to a benchmark


def check_kind(kind) -> str:
    if kind not in KINDS:
        raise ConfigError(f"transform_fit.kind={kind!r} is unknown; use one of {', '.join(KINDS)}.")
    return kind


class Adaptor(nn.Module):
    """The map `width -> width`, the identity at initialisation (see the module docstring)."""

    def __init__(self, width: int, kind: str = "linear"):
        super().__init__()
        self.width, self.kind = int(width), check_kind(kind)
        if kind == "linear":
            self.linear = nn.Linear(width, width)
            nn.init.eye_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        else:
            self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if self.kind == "linear" else x + self.mlp(x)

    @torch.no_grad()
    def apply_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The map on benchmark embeddings: float32, in chunks, no gradient, on x's device."""
        self.to(x.device).eval()
        x = x.float()
        return torch.cat([self(c) for c in x.split(CHUNK)]) if len(x) else x


def train_adaptor(
    adaptor: Adaptor,
    columns: Sequence[torch.Tensor],
    dims: Sequence[int],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Train `adaptor` in place on cached embeddings, one tensor per text column (rows x
    width: anchors, positives, then any hard negatives); returns the mean loss of each epoch.

    Each epoch shuffles the rows (a generator seeded by `seed`), and each mini-batch's loss is
    the Matryoshka MNRL loss at `dims` (weight 1 each) of the adapted columns: anchor i's
    positive is candidate i among all the batch's positives and negatives.
    """
    loss_fn = MatryoshkaLoss("mnrl", dims, [1.0] * len(dims))

    def batch_loss(batch: list[torch.Tensor]) -> torch.Tensor:
        adapted = [adaptor(c) for c in batch]
        return loss_fn(GlobalBatch(adapted, adapted))[0]

    return fit_on_cached(adaptor, columns, batch_loss, epochs, lr, batch_size, seed, "adaptor",
                         progress)  # fmt: skip


def fit_on_cached(
    module: nn.Module,
    columns: Sequence[torch.Tensor],
    batch_loss: Callable[[list[torch.Tensor]], torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    desc: str,
    progress: bool = True,
) -> list[float]:
    """Train `module` in place on cached embeddings (one tensor per text column, same rows):
    AdamW at a constant `lr`, the rows shuffled each epoch by a generator seeded by `seed`,
    `batch_loss(the columns' rows of one mini-batch)` minimised; returns each epoch's mean
    loss. The post-hoc maps (the adaptor, CSR's coders) all train this way."""
    from tqdm.auto import tqdm

    columns = [c.detach().float() for c in columns]
    module.to(columns[0].device).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    n_rows = len(columns[0])
    history = []
    with tqdm(total=epochs * -(-n_rows // batch_size), desc=desc, disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(n_rows, generator=generator).to(columns[0].device)
            total = 0.0
            for start in range(0, n_rows, batch_size):
                rows = order[start : start + batch_size]
                loss = batch_loss([c[rows] for c in columns])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.4f}")
            history.append(total / n_rows)
    module.eval()
    return history


def new_adaptor(width: int, kind: str, seed: int) -> Adaptor:
    """An adaptor whose random init (residual_mlp's first layer) comes from `seed` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return Adaptor(width, kind)


def save_adaptor(adaptor: Adaptor, folder: Path, info: dict) -> None:
    """adaptor.safetensors and adaptor.json (kind, width and `info`) in `folder`."""
    state = {k: v.detach().cpu().contiguous() for k, v in adaptor.state_dict().items()}
    write_atomic(Path(folder) / WEIGHTS, save(state))
    record = {"kind": adaptor.kind, "width": adaptor.width, **info}
    write_atomic(Path(folder) / INFO, json.dumps(record, indent=2))


def adaptor_info(folder) -> dict:
    """The adaptor.json of a folder that holds a saved adaptor; one line if it holds none."""
    folder = Path(str(folder))
    if not (folder / WEIGHTS).is_file() or not (folder / INFO).is_file():
        raise ConfigError(
            f"transform_fit.load={str(folder)!r} holds no {WEIGHTS} and {INFO}; give the eval "
            "folder of an earlier transform=adaptor run, or transform_fit.load=null to train one."
        )
    try:
        info = json.loads((folder / INFO).read_text())
        check_kind(info["kind"])
        int(info["width"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{folder / INFO} is not a valid adaptor record ({type(err).__name__}: {err}); "
            "train the adaptor again (transform_fit.load=null)."
        ) from None
    return info


def load_adaptor(folder, width: int | None = None) -> tuple[Adaptor, dict]:
    """The saved adaptor of `folder` and its record (safetensors: no code is unpickled);
    `width`: the model's, which the adaptor must have been trained for."""
    info = adaptor_info(folder)
    if width is not None and int(info["width"]) != width:
        raise ConfigError(
            f"transform_fit.load={str(folder)!r} holds an adaptor of width {info['width']}, "
            f"but this model's embeddings have {width}; load one trained on this model."
        )
    adaptor = Adaptor(int(info["width"]), info["kind"])
    try:
        adaptor.load_state_dict(load_file(str(Path(str(folder)) / WEIGHTS)))
    except (RuntimeError, OSError, SafetensorError) as err:
        raise ConfigError(
            f"{Path(str(folder)) / WEIGHTS} does not hold a {info['kind']} adaptor of width "
            f"{info['width']} ({str(err).splitlines()[0]}); train it again."
        ) from None
    return adaptor.eval(), info


def linear_weights(adaptor: Adaptor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a linear adaptor, `x @ weight.T + bias`; one line for residual_mlp."""
    if adaptor.kind != "linear":
        raise ConfigError(
            f"a {adaptor.kind} adaptor (x + MLP(x)) has no stock sentence-transformers module "
            "to export to; set transform_fit.export=false, or use transform_fit.kind=linear."
        )
    return adaptor.linear.weight.detach().cpu(), adaptor.linear.bias.detach().cpu()
