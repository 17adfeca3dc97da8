"""The random states a resumed run needs (torch, Python, CUDA), saved in and restored from a
checkpoint, so a run killed mid-epoch sees the same dropout masks and `n_dims_per_step`
subsets after the resume as an uninterrupted one."""

from __future__ import annotations

import random

import torch


def random_states() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_random_states(states: dict | None) -> None:
    if not states:
        return
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
