"""Quantization-aware Matryoshka training: the base loss also on quantized prefixes, so a prefix
learns to survive int8 or binary storage.

The quantizers are the ones `mrl.quantization` evaluates with, so training and evaluation
quantize the same way:
  int8   each dim's calibrated [low, high] mapped linearly onto [-128, 127] (clipped), then
         dequantized; cosine of the dequantized prefixes.
  binary one bit per dim, above the dim's calibrated threshold (the median) or not, stored as
         +-1 codes; their cosine is 1 - 2 * Hamming / dim, the same order as the fraction of
         equal bits that search and evaluation use.
Gradients pass by a straight-through estimator: int8 has the gradient of the identity inside
[low, high] and 0 where it clips; binary has that of hardtanh(x - threshold), i.e. the float
gradient wherever |x - threshold| < 1 (the code is not saturated), or with `estimator=tanh` the
smooth tanh(beta * (x - threshold)) instead of the code.

The calibration (`RunningCalibration`) is running statistics of the full-width training
embeddings: per-dim min, max and median of each batch, averaged with `momentum`, kept in
buffers, so they are saved in checkpoints (a resumed run continues them exactly) and exported.
Plain torch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrl.common.errors import ConfigError
from mrl.core.losses import BaseLoss
from mrl.core.matryoshka import GlobalBatch, matryoshka_loss

PRECISIONS = ("int8", "binary")
QAT_CALIBRATION = "qat_calibration.json"  # in a QAT run's folder and its export
ESTIMATORS = ("ste", "tanh")


class RunningCalibration(nn.Module):
    """Per-dim low/high (int8) and threshold (binary) of the embeddings, as running averages
    of each training batch's min, max and median (the first batch sets them)."""

    def __init__(self, width: int, momentum: float = 0.01):
        super().__init__()
        if not 0 < momentum <= 1:
            raise ConfigError(f"qat.momentum={momentum} must be in (0, 1], e.g. 0.01.")
        self.momentum = momentum
        self.register_buffer("low", torch.zeros(width))
        self.register_buffer("high", torch.ones(width))
        self.register_buffer("threshold", torch.zeros(width))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor) -> None:
        x = embeddings.detach().float()
        stats = (x.min(0).values, x.max(0).values, x.median(0).values)
        m = 1.0 if int(self.batches) == 0 else self.momentum
        for buffer, value in zip((self.low, self.high, self.threshold), stats, strict=True):
            buffer.mul_(1 - m).add_(m * value)
        self.batches += 1

    def as_dict(self) -> dict[str, list[float]]:
        """The calibration as plain lists (the export's qat_calibration.json)."""
        return {k: getattr(self, k).tolist() for k in ("low", "high", "threshold")}


def fake_int8(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Quantize to int8 and back, `mrl.tools.quantization.Calibration.int8` rounding; gradient 1
    inside [low, high], 0 where clipped."""
    span = (high - low).clamp_min(1e-12)
    q = torch.clamp(torch.round((x - low) / span * 255 - 128), -128, 127)
    dequantized = (q + 128) / 255 * span + low
    inside = torch.minimum(torch.maximum(x, low), high)
    return inside + (dequantized - inside).detach()


def binary_codes(
    x: torch.Tensor, threshold: torch.Tensor, estimator: str = "ste", beta: float = 10.0
) -> torch.Tensor:
    """+-1 codes of x > threshold (`ste`: straight-through hardtanh gradient), or the smooth
    tanh(beta * (x - threshold)) (`tanh`)."""
    centred = x - threshold
    if estimator == "tanh":
        return torch.tanh(beta * centred)
    codes = torch.where(centred > 0, 1.0, -1.0).to(x.dtype)
    surrogate = F.hardtanh(centred)
    return surrogate + (codes - surrogate).detach()


@dataclass(frozen=True)
class QatTerm:
    """One (dim, precision) pair the quantization-aware term trains, with its weight."""

    dim: int
    precision: str
    weight: float = 1.0


TERM_KEYS = ("dim", "precision", "weight")
TERM_SHAPE = "{dim: 64, precision: binary, weight: 1.0}"


def parse_qat_terms(raw) -> list[QatTerm]:
    """`qat.terms` (a list of {dim, precision, weight}) as QatTerms; its shape in one line each:
    not a list, an entry that is not a mapping, a missing or unknown key (with the nearest one),
    a dim that is not a whole number >= 1, a weight that is not a number."""
    if raw is None:
        return []
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise ConfigError(f"qat.terms={raw!r} must be a list of {TERM_SHAPE} entries (or []).")
    terms = []
    for entry in raw:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"qat.terms entry {entry!r} must be a mapping like {TERM_SHAPE}.")
        where = f"qat.terms entry {dict(entry)}"
        for key in entry:
            if key not in TERM_KEYS:
                near = difflib.get_close_matches(str(key), TERM_KEYS, n=1, cutoff=0.5)
                hint = f"did you mean {near[0]}?" if near else f"it takes {', '.join(TERM_KEYS)}."
                raise ConfigError(f"{where}: {key!r} is not a key of a term, so it would be "
                                  f"ignored; {hint}")  # fmt: skip
        for key in ("dim", "precision"):
            if key not in entry:
                raise ConfigError(f"{where} has no {key}; give all of {TERM_SHAPE}.")
        dim, weight = entry["dim"], entry.get("weight", 1.0)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"{where}: dim {dim!r} must be a whole number >= 1, e.g. 64.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{where}: weight {weight!r} must be a number >= 0, e.g. 1.0.")
        terms.append(QatTerm(dim, str(entry["precision"]), float(weight)))
    return terms


def check_qat_terms(
    terms: Sequence[QatTerm],
    schedule_dims: Sequence[int],
    trained_dims: Sequence[int] | None = None,
    why_untrained: str = "its weight is 0",
) -> None:
    """One line for a precision that does not exist, a dim beyond the width or outside the
    schedule, a binary dim that is not a whole number of bytes, a negative or non-finite
    weight, a term listed twice, and a weighted term at a dim the run does not train
    (`trained_dims`; e.g. the baseline trains the full width only, `why_untrained` says why):
    its quantized prefix would be trained while its float prefix is not."""
    seen = set()
    for term in terms:
        where = f"qat.terms entry {{dim: {term.dim}, precision: {term.precision}}}"
        if term.precision not in PRECISIONS:
            raise ConfigError(
                f"{where}: precision {term.precision!r} does not exist; use "
                f"{' or '.join(PRECISIONS)}."
            )
        if schedule_dims and term.dim > max(schedule_dims):
            raise ConfigError(
                f"{where}: dim {term.dim} is beyond the embedding width {max(schedule_dims)}; "
                f"quantize a prefix of the schedule {list(schedule_dims)}."
            )
        if term.dim not in schedule_dims:
            raise ConfigError(
                f"{where}: dim {term.dim} is not in the schedule {list(schedule_dims)}; quantize "
                "a trained prefix."
            )
        if term.precision == "binary" and term.dim % 8:
            raise ConfigError(
                f"{where}: a binary prefix of {term.dim} dims is not a whole number of bytes; use "
                "a multiple of 8."
            )
        if not math.isfinite(term.weight) or term.weight < 0:
            raise ConfigError(f"{where}: weight {term.weight} must be >= 0.")
        if (term.dim, term.precision) in seen:
            raise ConfigError(
                f"{where} is listed twice (each would add its loss); give it once, with the "
                "summed weight."
            )
        seen.add((term.dim, term.precision))
        if term.weight != 0 and trained_dims is not None and term.dim not in trained_dims:
            trained = ", ".join(map(str, trained_dims))
            raise ConfigError(
                f"{where}: dim {term.dim} is not trained in this run ({why_untrained}), so only "
                f"its quantized prefix would be; quantize a trained dim ({trained}) or give the "
                "term weight 0."
            )


def quantized(x: torch.Tensor, precision: str, cal: RunningCalibration, estimator: str, beta):
    d = x.shape[-1]
    if precision == "int8":
        return fake_int8(x, cal.low[:d], cal.high[:d])
    return binary_codes(x, cal.threshold[:d], estimator, beta)


def qat_loss(
    base: BaseLoss,
    batch: GlobalBatch,
    terms: Sequence[QatTerm],
    cal: RunningCalibration,
    scale: float = 20.0,
    estimator: str = "ste",
    beta: float = 10.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the base loss on each term's quantized prefix, and each term's loss
    (keyed "<precision>@<dim>"). The prefix is cut first and quantized second, as stored."""
    total, per_term = 0.0, {}
    batch = batch.float()
    for term in terms:
        if term.weight == 0:
            continue

        def q(t: torch.Tensor, term=term) -> torch.Tensor:
            return quantized(t[:, : term.dim], term.precision, cal, estimator, beta)

        qbatch = GlobalBatch(
            [q(t) for t in batch.local], [q(t) for t in batch.world], batch.offset, batch.scores
        )
        loss, _ = matryoshka_loss(base, qbatch, [term.dim], [1.0], scale)
        per_term[f"{term.precision}@{term.dim}"] = loss
        total = total + term.weight * loss
    return total, per_term
