"""What a training step minimises, from that step's embeddings: the Matryoshka loss of the batch's
dataset (`mrl.core.matryoshka`), over several encoder layers when 2D Matryoshka is on
(`mrl.core.matryoshka2d`, `matryoshka.layers`), plus the quantization-aware term when `qat.terms`
name (dim, precision) pairs (`mrl.core.qat`).

The LightningModule hands it a function that builds the GlobalBatch of one layer (the gather
across ranks is done once, on every trained layer's full-width embeddings), and logs what it
returns: one loss per key — a dim (the last layer), "L<layer>d<dim>" (a shallower layer),
"align@L<layer>", or "<precision>@<dim>" (QAT). With `matryoshka.layers: null` and no QAT
terms it calls exactly today's Matryoshka loss, so such runs are unchanged bit for bit.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn

from mrl.common.errors import ConfigError
from mrl.core.layers import (
    check_n_layers_per_step,
    layer_dim_pairs,
    layer_weights,
    resolve_layers,
    step_layers,
)
from mrl.core.matryoshka import GlobalBatch, MatryoshkaLoss
from mrl.core.matryoshka2d import matryoshka_2d_loss
from mrl.core.qat import (
    ESTIMATORS,
    RunningCalibration,
    check_qat_terms,
    parse_qat_terms,
    qat_loss,
)
from mrl.core.schedule import why_untrained

QAT_DEFAULTS = {"terms": [], "warmup_steps": 0, "momentum": 0.01, "estimator": "ste", "beta": 10.0}


class TrainingObjective(nn.Module):
    """The step's loss and its parts. A module only so the QAT calibration's running
    statistics (buffers) live in checkpoints; it has no parameters."""

    def __init__(self, losses: dict, matryoshka: dict, qat: dict | None, depth: int, width: int):
        super().__init__()
        self.losses = losses
        m, dims = matryoshka, next(iter(losses.values())).dims
        self.layers = None if m.get("layers") is None else resolve_layers(m["layers"], depth)
        self.depth = depth
        if self.layers is None and not isinstance(m.get("layer_pairs", "grid"), str):
            raise ConfigError(
                "matryoshka.layer_pairs lists [layer, dim] pairs but matryoshka.layers is null; "
                "set matryoshka.layers to the layers the pairs use."
            )
        if self.layers is not None:
            self.layer_weights = dict(
                zip(
                    self.layers,
                    layer_weights(self.layers, depth, m["layer_weighting"]),
                    strict=True,
                )
            )
            self.pairs = layer_dim_pairs(
                self.layers, next(iter(losses.values())).dims, m["layer_pairs"]
            )
            check_n_layers_per_step(m["n_layers_per_step"])
            self.n_layers_per_step = m["n_layers_per_step"]
            self.alignment_weight = float(m["alignment_weight"])
            self.alignment_temperature = float(m["alignment_temperature"])  # > 0: mrl.run.checks
        q = {**QAT_DEFAULTS, **(qat or {})}
        self.qat_terms = parse_qat_terms(q["terms"])
        loss = next(iter(losses.values()))
        trained_dims = [d for d, w in zip(dims, loss.train_weights, strict=True) if w != 0]
        check_qat_terms(self.qat_terms, dims, trained_dims, why_untrained(m))
        if q["estimator"] not in ESTIMATORS:
            raise ConfigError(f"qat.estimator={q['estimator']!r} is unknown; use ste or tanh.")
        self.qat_settings = q
        trained = [t for t in self.qat_terms if t.weight != 0]
        self.calibration = RunningCalibration(width, q["momentum"]) if trained else None

    def encode_layers(self) -> list[int] | None:
        """The layers this step encodes (None: the last only, the plain encoder output)."""
        if self.layers is None:
            return None
        # Python's random, seeded by the run and restored on resume, as for n_dims_per_step
        return step_layers(self.layers, self.n_layers_per_step, random)

    def forward(
        self,
        layer_batch: Callable[[int | None], GlobalBatch],
        layers: list[int] | None,
        dataset,
        weights: list[float],
        step: int,
    ) -> tuple[torch.Tensor, dict]:
        """`layer_batch(i)`: the GlobalBatch of the i-th encoded layer (None: plain encode)."""
        loss_fn: MatryoshkaLoss = self.losses[dataset]
        if layers is None:
            last = layer_batch(None)
            total, parts = loss_fn(last, weights)
        else:
            batches = {layer: layer_batch(i) for i, layer in enumerate(layers)}
            last = batches[self.depth]
            total, per_pair = matryoshka_2d_loss(
                loss_fn.base, batches, self.pairs, dict(zip(loss_fn.dims, weights, strict=True)),
                self.layer_weights, loss_fn.scale, self.alignment_weight,
                self.alignment_temperature,
            )  # fmt: skip
            parts = {}
            for (layer, dim), value in per_pair.items():
                key = dim if layer == self.depth else f"L{layer}d{dim}"
                parts[f"align@L{layer}" if dim == 0 else key] = value
        if self.calibration is not None:
            self.calibration.update(torch.cat(last.world))  # every rank's texts: same stats
            if step >= self.qat_settings["warmup_steps"]:
                q = self.qat_settings
                term, per_term = qat_loss(
                    loss_fn.base, last, self.qat_terms, self.calibration, loss_fn.scale,
                    q["estimator"], q["beta"],
                )  # fmt: skip
                total = total + term
                parts.update(per_term)
        return total, parts
