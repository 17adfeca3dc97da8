"""The optimizer and learning-rate schedule of a run: AdamW (fused where the build has it)
without weight decay on biases and LayerNorm weights, linear warm-up then linear decay; frozen
parameters are left out."""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup


def adamw_with_warmup(named_parameters, optim: dict, total_steps: int) -> dict:
    """Lightning's `configure_optimizers` answer for `optim` (lr, weight_decay, warmup_ratio)."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:  # frozen (the backbone under LoRA): no optimizer state
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": optim["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:  # the fused kernel is several times faster than the per-tensor loop, CPU included
        optimizer = torch.optim.AdamW(groups, lr=optim["lr"], fused=True)
    except RuntimeError:
        optimizer = torch.optim.AdamW(groups, lr=optim["lr"])
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(optim["warmup_ratio"] * total_steps), max(total_steps, 1)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
