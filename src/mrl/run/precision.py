"""Numeric precision of a run: what the processor can do in bf16, what `trainer.precision=auto`
resolves to (bf16 on a GPU with bf16 and on a CPU with bf16 units, whose training
experiments/results/bf16_cpu.md found level with fp32), and bf16 numerics at fp32 speed on a
CPU without bf16 units.

A CPU runs bf16 autocast fast only with bf16 dot-product instructions (x86 `avx512_bf16` or
`amx_bf16`, Arm `bf16`). Without them the bf16 matrix multiplies run in a generic kernel: on
the 2-core AVX2 workstation of docs/scale.md a MiniLM forward and backward pass under bf16
autocast took 32x as long as in fp32. So a bf16 request on such a CPU gets one warning line,
and `auto` picks bf16 only on a CPU that has the units.

`bf16-emulated` answers "would bf16 change my results?" on such a CPU: the run is under bf16
autocast exactly as `bf16-mixed` is, except that each matrix-multiply-class op rounds its
operands to bf16, multiplies them in fp32 (exact products, fp32 accumulation: what the bf16
units compute) and rounds the result to bf16. Every other op runs on the same bf16 tensors as
under real autocast, and the gradients are rounded the same way by the casts' backward. It runs
at about fp32 speed; it is a numerics check, never a speed setting.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

log = logging.getLogger(__name__)

EMULATED = "bf16-emulated"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX-512, Arm (aarch64)


def cpu_bf16_support(cpuinfo: str | None = None) -> str | None:
    """The processor's bf16 dot-product feature (`amx_bf16`, `avx512_bf16` or Arm `bf16`), or
    None when it has none. Linux reads /proc/cpuinfo (or `cpuinfo`, for tests); elsewhere
    oneDNN's own check answers."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.exists():
            return "bf16" if _onednn_bf16() else None
        cpuinfo = path.read_text(errors="replace")
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def on_cpu(accelerator: str | None) -> bool:
    return accelerator == "cpu" or (accelerator in ("auto", None) and not torch.cuda.is_available())


def resolve_precision(precision: str, accelerator: str | None, cpu_support: str | None) -> str:
    """`auto`: bf16-mixed on a GPU with bf16 and on a CPU with bf16 units (`cpu_support`, from
    `cpu_bf16_support`: experiments/results/bf16_cpu.md found bf16 training as good as fp32),
    else 32-true. Any other value is returned as it is."""
    if precision != "auto":
        return precision
    if on_cpu(accelerator):
        return "bf16-mixed" if cpu_support is not None else "32-true"
    gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bf16-mixed" if gpu else "32-true"


def cpu_bf16_warning(precision: str, accelerator: str | None, support: str | None) -> str | None:
    """The one line for a bf16 run on a CPU without bf16 units (None when there is nothing to
    say): such a run is many times slower than fp32, which should never come as a surprise."""
    if not (str(precision).startswith("bf16") and precision != EMULATED) or not on_cpu(accelerator):
        return None
    if support is not None:
        return None
    name = platform.processor() or platform.machine()
    return (
        f"trainer.precision={precision} on a CPU without bf16 units ({name}: no avx512_bf16, "
        "amx_bf16 or Arm bf16 flag), so bf16 runs in software, many times slower than fp32; use "
        "trainer=cpu for speed, or trainer.precision=bf16-emulated to check bf16 numerics."
    )


MATMULS = frozenset(
    {
        F.linear,
        torch.matmul,
        torch.mm,
        torch.bmm,
        torch.addmm,
        torch.baddbmm,
        torch.einsum,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
        torch.Tensor.__rmatmul__,
        torch.Tensor.mm,
        torch.Tensor.bmm,
    }
)


def _to_bf16_values(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.bfloat16).float()
    return value


def bf16_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
) -> torch.Tensor:
    """`scaled_dot_product_attention` as the CPU kernel computes it in bf16: scores from bf16
    operands summed in fp32, softmax numerator exp(s - max) in fp32 and rounded to bf16 for
    the product with the values, divided by its fp32 row sum; output in bf16."""
    q, k, v = (_to_bf16_values(t) for t in (query, key, value))
    if enable_gqa and k.size(-3) != q.size(-3):
        k = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
        v = v.repeat_interleave(q.size(-3) // v.size(-3), dim=-3)
    scores = q @ k.transpose(-2, -1) * (q.size(-1) ** -0.5 if scale is None else scale)
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + _to_bf16_values(attn_mask)
    top = scores.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).min)
    weights = torch.exp(scores - top)
    total = weights.sum(-1, keepdim=True)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    out = (weights.to(torch.bfloat16).float() @ v) / torch.where(total > 0, total, 1.0)
    return out.to(torch.bfloat16)


class RoundedBf16Matmuls(TorchFunctionMode):
    """Under CPU bf16 autocast, each op of MATMULS runs as fp32 on bf16-rounded operands and
    returns bf16, and attention runs as `bf16_attention`: the numerics of bf16 units (exact
    products, fp32 sums) at fp32 speed."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            with torch.autocast("cpu", enabled=False):
                return bf16_attention(*args, **kwargs)
        if func not in MATMULS:
            return func(*args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            out = func(*tree_map(_to_bf16_values, args), **tree_map(_to_bf16_values, kwargs))
        return out.to(torch.bfloat16)


@contextlib.contextmanager
def emulated_bf16_autocast() -> Iterator[None]:
    """CPU bf16 autocast with RoundedBf16Matmuls: see the module docstring."""
    with torch.autocast("cpu", dtype=torch.bfloat16), RoundedBf16Matmuls():
        yield


class EmulatedBf16Precision(MixedPrecision):
    """Lightning's bf16-mixed on the CPU (fp32 weights and optimizer state, bf16 autocast in
    the forward) with the matrix multiplies of `emulated_bf16_autocast`."""

    def __init__(self) -> None:
        super().__init__("bf16-mixed", "cpu")

    def autocast_context_manager(self):
        return emulated_bf16_autocast()


def lightning_precision(args: dict) -> tuple[dict, list]:
    """The checked trainer arguments as Lightning takes them, and the precision plugins:
    `bf16-emulated` (a name Lightning does not know) becomes EmulatedBf16Precision."""
    if args.get("precision") != EMULATED:
        return args, []
    args = {k: v for k, v in args.items() if k != "precision"}
    return args, [EmulatedBf16Precision()]
