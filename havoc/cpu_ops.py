"""CPU fast paths built on torch's own kernels, registered with `havoc.ops` for CPU tensors.

linear: how fast torch's CPU x @ W.T runs depends erratically on how the product is put to the BLAS.
Measured on SmolLM2's shapes (2-core Xeon without AVX512-BF16):

- decode, 8-32 rows, fp32: (W @ x.T).T was 2-4x faster than F.linear (LM head at 32 rows: 29.8 -> 13.7
  ms), but 2-4x slower at 2-4 rows; in bf16 slower at 8 rows, 1.1x faster at 32;
- prefill, 64-512 rows, bf16: bf16 GEMMs are emulated on a CPU without native bf16, and upcasting x and
  W to fp32 for the product was 2-4x faster (512 x 3072 x 576: 35.7 -> 8.8 ms); below 32 rows slower.

No fixed rule fits, so the first call of each (weight shape, row bucket, dtype) times the candidates that
apply and keeps the fastest (as cuDNN's benchmark mode does); a candidate must beat F.linear by 10% to
be chosen. One row (a GEMV) and calls recorded by autograd always take F.linear. Every candidate computes
the same product with fp32 accumulation; they differ in rounding order only.

The C++ GEMV kernels of the CPU fast-decode work supersede this for decode.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from havoc import ops

EXACT_ROWS = 64  # row counts up to this are planned one by one; larger ones by power-of-two bucket
_TRIALS = 3
_MARGIN = 0.9  # a candidate must take < 90% of F.linear's time

# (out, in, row bucket, dtype) -> candidate name. Process-wide, like a BLAS plan cache: it only records
# which of equal products comes fastest.
_plan: dict[tuple[int, int, int, torch.dtype], str] = {}


def _bucket(rows: int) -> int:
    return rows if rows <= EXACT_ROWS else 1 << (rows - 1).bit_length()


def _candidates(x2d: torch.Tensor, weight: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    out: dict[str, Callable[[], torch.Tensor]] = {"plain": lambda: F.linear(x2d, weight)}
    if x2d.shape[0] <= EXACT_ROWS:
        # Decode-sized only: at 512 rows it won alone but lost inside a prefill (0.74x; 0.91x even made
        # contiguous), where the ops after it pay for the layout and the caches are cold.
        out["transposed"] = lambda: torch.mm(weight, x2d.t()).t()  # (rows, out), a transposed view
    if x2d.dtype in (torch.bfloat16, torch.float16):
        out["fp32"] = lambda: F.linear(x2d.float(), weight.float()).to(x2d.dtype)
    return out


def _best_time(fn: Callable[[], torch.Tensor]) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(_TRIALS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _choose(candidates: dict[str, Callable[[], torch.Tensor]]) -> str:
    times = {name: _best_time(fn) for name, fn in candidates.items()}
    name = min(times, key=times.get)
    return name if times[name] < _MARGIN * times["plain"] else "plain"


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T, through the product formulation measured fastest for this shape (module docstring)."""
    rows = x.numel() // x.shape[-1]
    if rows < 2 or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.linear(x, weight)
    x2d = x.reshape(rows, x.shape[-1])
    candidates = _candidates(x2d, weight)
    key = (weight.shape[0], weight.shape[1], _bucket(rows), x.dtype)
    name = _plan.get(key)
    if name is None or name not in candidates:
        name = _plan[key] = _choose(candidates)
    if name == "plain":
        return F.linear(x, weight)
    return candidates[name]().view(*x.shape[:-1], weight.shape[0])


ops.register_fast("linear", "cpu", linear)
for _op in ("rms_norm", "apply_rope", "swiglu", "attention"):
    ops.note_unavailable(_op, "cpu", "torch's own kernels are the CPU path until the C++ decode kernels land")
