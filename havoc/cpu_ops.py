"""CPU fast paths built on torch's own kernels, registered with `havoc.ops` for CPU tensors.

linear: a decode step multiplies a few rows (the batch) by each weight. torch hands x @ W.T with
2..64 rows to a BLAS routine whose speed depends erratically on the orientation of the problem: measured
on SmolLM2's shapes (2-core Xeon, fp32), computing it as (W @ x.T).T was 2-4x faster for 8-32 rows
(LM head at 32 rows: 29.8 -> 13.7 ms) and 2-4x slower for 2-4 rows; in bf16 it was slower at 8 rows and
1.1x faster at 32. No fixed rule fits, so the first call of each (weight shape, rows, dtype) times both
orientations and keeps the faster, as cuDNN's benchmark mode does. Above 64 rows (prefill) the two
measured equal and F.linear is used untimed; with autograd recording, F.linear always.

The C++ GEMV kernels of the CPU fast-decode work replace this; it only reorders torch's own products.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from havoc import ops

MIN_ROWS, MAX_ROWS = 2, 64
_TRIALS = 3

# (out, in, rows, dtype) -> True when (W @ x.T).T was faster. Process-wide, like a BLAS plan cache:
# it only records which of two equal results comes faster.
_orientation: dict[tuple[int, int, int, torch.dtype], bool] = {}


def _best_time(fn) -> float:
    best = float("inf")
    for _ in range(_TRIALS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _transposed_is_faster(x2d: torch.Tensor, weight: torch.Tensor) -> bool:
    F.linear(x2d, weight), torch.mm(weight, x2d.t())  # warm both
    plain = _best_time(lambda: F.linear(x2d, weight))
    transposed = _best_time(lambda: torch.mm(weight, x2d.t()))
    return transposed < 0.9 * plain  # keep F.linear unless clearly beaten


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T, choosing the faster BLAS orientation for small row counts (see module docstring)."""
    rows = x.numel() // x.shape[-1]
    if not MIN_ROWS <= rows <= MAX_ROWS or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.linear(x, weight)
    x2d = x.reshape(rows, x.shape[-1])
    key = (weight.shape[0], weight.shape[1], rows, x.dtype)
    use_transposed = _orientation.get(key)
    if use_transposed is None:
        use_transposed = _orientation[key] = _transposed_is_faster(x2d, weight)
    if not use_transposed:
        return F.linear(x, weight)
    return torch.mm(weight, x2d.t()).t().view(*x.shape[:-1], weight.shape[0])  # (..., out), a transposed view


ops.register_fast("linear", "cpu", linear)
for _op in ("rms_norm", "apply_rope", "swiglu", "attention"):
    ops.note_unavailable(_op, "cpu", "torch's own kernels are the CPU path until the C++ decode kernels land")
