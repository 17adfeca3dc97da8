"""The LightningModule's hyper-parameters: each group's defaults, and a checkpoint's saved
hyper-parameters (grouped, or the flat keys of old checkpoints) mapped onto the groups."""

from __future__ import annotations

# Each config group's defaults: a checkpoint or test that leaves a key out gets these.
DEFAULTS = {
    "model": {
        "backbone": None, "pooling": "mean", "chunk_size": "auto", "compile": False,
        "trust_remote_code": False, "projection_dim": None, "lora": None,
        "gradient_checkpointing": False, "unpadded": "auto",
    },
    "matryoshka": {
        "enabled": True, "dims": None, "rule": "pow2", "min_dim_ratio": 1 / 12,
        "weights": None, "n_dims_per_step": None, "fixed_dim": None,
        "layers": None, "layer_weighting": "uniform", "layer_pairs": "grid",
        "n_layers_per_step": None, "alignment_weight": 0.0, "alignment_temperature": 0.3,
    },
    "loss": {"name": "mnrl", "scale": 20.0, "cached_mini_batch_size": None, "on_nonfinite": "stop"},
    "optim": {"lr": 2e-5, "weight_decay": 0.01, "warmup_ratio": 0.1},
    "qat": {"terms": [], "warmup_steps": 0, "momentum": 0.01, "estimator": "ste", "beta": 10.0},
    "dataset_losses": {},  # {dataset: base loss} of data.mixture; {}: one dataset, loss.name
}  # fmt: skip
# checkpoints written before the grouped arguments held these flat keys
FLAT_KEYS = {"matryoshka": ("matryoshka", "enabled"), "loss": ("loss", "name")}


def grouped_hparams(hparams: dict) -> dict:
    """A checkpoint's hyper-parameters as the groups of DEFAULTS, from grouped or old flat keys."""
    if isinstance(hparams.get("model"), dict):
        return {group: {**DEFAULTS[group], **(hparams.get(group) or {})} for group in DEFAULTS}
    groups = {group: dict(values) for group, values in DEFAULTS.items()}
    for key, value in hparams.items():
        group, name = FLAT_KEYS.get(key) or next(
            ((g, key) for g, values in DEFAULTS.items() if key in values), (None, None)
        )
        if group:
            groups[group][name] = value
    return groups
