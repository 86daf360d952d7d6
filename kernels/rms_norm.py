"""RMSNorm and residual-add RMSNorm in Triton, forward and backward, as torch ops.

Formula (Llama's casting, as `reference.rms_norm`): per row x of length N,

    rstd = 1 / sqrt(mean(x^2) + eps)                        (fp32)
    n    = cast(x * rstd, x.dtype)
    y    = w * n                                            (in promote(x.dtype, w.dtype))

The residual variant takes (x, residual) and returns (rms_norm(h), h) with h = cast(x + residual): the
decoder's "add the sublayer output to the stream, then normalise for the next sublayer" in one pass.

Backward, with xhat = x * rstd and dn = dy * w (fp32):

    dx = rstd * (dn - xhat * mean(dn * xhat))      [+ dh from the residual output, when fused]
    dw = sum over rows of dy * n

rstd is not saved: the backward reads each row of x anyway and recomputes it (one extra reduction in a
bandwidth-bound kernel instead of an M-float write and read). dw is deterministic: each of P programs
owns a contiguous run of rows and writes its fp32 partial sum to a (P, N) buffer; the partials are summed
by torch (no atomics, so the same input always gives the same bits).

Memory traffic (element size e, M rows): forward reads M*N*e (+ M*N*e residual) and writes M*N*e
(+ M*N*e new residual); backward reads x and dy (2*M*N*e, + M*N*e residual grad) and writes dx (M*N*e)
plus P*N*4 bytes of partials. Each kernel is one pass over its rows: the whole row sits in registers
(BLOCK_N = next power of two >= N, up to 65536 features).

References: Zhang & Sennrich 2019 (RMSNorm); Liger-Kernel's `rms_norm.py` (row-per-program forward,
per-program dW partials); Llama's `LlamaRMSNorm` for the casting order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from havoc.kernels._common import (
    check_device,
    check_float,
    check_last_dim_contiguous,
    interpreting,
    next_pow2,
    sm_count,
)

__all__ = ["rms_norm", "add_rms_norm"]

MAX_FEATURES = 65536  # one row must fit the registers of one program


# ------------------------------------------------------------------------------------------ kernels
@triton.jit
def _rms_norm_fwd_kernel(
    X, R, Y, H, W,
    stride_x, stride_r, stride_y, stride_h,
    N, eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0)
        # the new residual stream is stored in x's dtype, as `x + residual` in PyTorch would be
        x = (x.to(tl.float32) + r.to(tl.float32)).to(H.dtype.element_ty)
        tl.store(H + row * stride_h + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=0) / N + eps)
    n = (xf * rstd).to(x.dtype)  # Llama rounds the normalised row to x's dtype before the gain
    w = tl.load(W + cols, mask=mask, other=0.0)
    y = w.to(tl.float32) * n.to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_kernel(
    DY, X, W, DH, DX, DW_PARTIAL,
    stride_dy, stride_x, stride_dh, stride_dx,
    M, N, eps, rows_per_program,
    HAS_DH: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    # int64 bounds make the loop variable int64, so row * stride cannot overflow on huge inputs
    row_start = pid.to(tl.int64) * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    for row in range(row_start, row_end):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
        xf = x.to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(xf * xf, axis=0) / N + eps)
        xhat = xf * rstd
        dw += dy * (xhat.to(x.dtype).to(tl.float32))  # the gain multiplied the rounded row
        dn = dy * w
        dx = rstd * (dn - xhat * (tl.sum(dn * xhat, axis=0) / N))
        if HAS_DH:
            dx += tl.load(DH + row * stride_dh + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW_PARTIAL + pid * N + cols, dw, mask=mask)


# ----------------------------------------------------------------------------------------- launchers
def _num_warps(block_n: int) -> int:
    # Liger-Kernel's table: enough warps that each thread holds <= ~64 features of the row.
    if block_n >= 32768:
        return 32
    if block_n >= 8192:
        return 16
    if block_n >= 2048:
        return 8
    return 4


def _check(op: str, x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> None:
    check_float(op, "x", x)
    check_float(op, "weight", weight)
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension (the features)")
    N = x.shape[-1]
    if weight.dim() != 1 or weight.shape[0] != N:
        raise ValueError(f"{op}: weight must have shape ({N},) to match x's last dimension, got {tuple(weight.shape)}")
    if N > MAX_FEATURES:
        raise ValueError(f"{op}: at most {MAX_FEATURES} features per row, got {N}")
    check_last_dim_contiguous(op, "x", x)
    check_last_dim_contiguous(op, "weight", weight)
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"{op}: residual shape {tuple(residual.shape)} differs from x's {tuple(x.shape)}")
        if residual.dtype != x.dtype:
            raise TypeError(f"{op}: residual dtype {residual.dtype} differs from x's {x.dtype}")
        check_last_dim_contiguous(op, "residual", residual)


def _rows(t: torch.Tensor) -> torch.Tensor:
    # (..., N) -> (M, N); a view whenever the leading dims can be merged, else a copy.
    return t.reshape(-1, t.shape[-1])


def _forward(x, residual, weight, eps):
    N = x.shape[-1]
    x2 = _rows(x)
    M = x2.shape[0]
    y = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    h = torch.empty(x.shape, dtype=x.dtype, device=x.device) if residual is not None else None
    if M == 0 or N == 0:
        return y, h
    r2 = _rows(residual) if residual is not None else x2
    y2, h2 = y.view(M, N), (h.view(M, N) if h is not None else y.view(M, N))
    block_n = next_pow2(N)
    _rms_norm_fwd_kernel[(M,)](
        x2, r2, y2, h2, weight,
        x2.stride(0), r2.stride(0), y2.stride(0), h2.stride(0),
        N, eps,
        HAS_RESIDUAL=residual is not None, BLOCK_N=block_n, num_warps=_num_warps(block_n),
    )
    return y, h


def _backward(dy, x, weight, eps, dh):
    N = x.shape[-1]
    x2 = _rows(x)
    M = x2.shape[0]
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return dx, torch.zeros_like(weight)
    dy2 = _rows(dy if dy.stride(-1) == 1 else dy.contiguous())
    dh2 = _rows(dh if dh.stride(-1) == 1 else dh.contiguous()) if dh is not None else dy2
    dx2 = dx.view(M, N)
    # One program per SM, each owning a contiguous run of rows, so dW needs only P partial rows.
    programs = min(M, sm_count(x.device) if not interpreting() else 4)
    rows_per_program = triton.cdiv(M, programs)
    programs = triton.cdiv(M, rows_per_program)
    partial = torch.empty((programs, N), dtype=torch.float32, device=x.device)
    block_n = next_pow2(N)
    _rms_norm_bwd_kernel[(programs,)](
        dy2, x2, weight, dh2, dx2, partial,
        dy2.stride(0), x2.stride(0), dh2.stride(0), dx2.stride(0),
        M, N, eps, rows_per_program,
        HAS_DH=dh is not None, BLOCK_N=block_n, num_warps=_num_warps(block_n),
    )
    return dx, partial.sum(0).to(weight.dtype)


# ---------------------------------------------------------------------------------------- torch ops
@torch.library.custom_op("havoc::rms_norm", mutates_args=())
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    _check("rms_norm", x, weight)
    check_device("rms_norm", x, weight)
    return _forward(x, None, weight, eps)[0]


@_rms_norm_op.register_fake
def _(x, weight, eps):
    _check("rms_norm", x, weight)
    return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype))


@torch.library.custom_op("havoc::add_rms_norm", mutates_args=())
def _add_rms_norm_op(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    _check("add_rms_norm", x, weight, residual)
    check_device("add_rms_norm", x, residual, weight)
    return _forward(x, residual, weight, eps)


@_add_rms_norm_op.register_fake
def _(x, residual, weight, eps):
    _check("add_rms_norm", x, weight, residual)
    return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype)), x.new_empty(x.shape)


@torch.library.custom_op("havoc::rms_norm_backward", mutates_args=())
def _rms_norm_backward_op(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float, dh: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(dy, x, weight, eps, dh)


@_rms_norm_backward_op.register_fake
def _(dy, x, weight, eps, dh):
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


def _setup_rms_norm(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_grad(ctx, dy):
    x, weight = ctx.saved_tensors
    dx, dw = _rms_norm_backward_op(dy, x, weight, ctx.eps, None)
    return dx, dw, None


_rms_norm_op.register_autograd(_rms_norm_grad, setup_context=_setup_rms_norm)


def _setup_add_rms_norm(ctx, inputs, output):
    _, _, weight, eps = inputs
    ctx.save_for_backward(output[1], weight)  # h = x + residual: all the backward needs
    ctx.eps = eps


def _add_rms_norm_grad(ctx, dy, dh):
    h, weight = ctx.saved_tensors
    if dy is None:  # only the new residual was used
        return dh, dh, None, None
    dx, dw = _rms_norm_backward_op(dy, h, weight, ctx.eps, dh)
    # h = x + residual, so both inputs receive dL/dh (autograd's own add backward also returns one
    # tensor for both operands).
    return dx, dx, dw, None


_add_rms_norm_op.register_autograd(_add_rms_norm_grad, setup_context=_setup_add_rms_norm)


# ------------------------------------------------------------------------------------- functional
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension (Triton; see the module docstring for the formula).

    Args:
        x: (..., N) activations; leading dims may be strided, the last must be contiguous.
        weight: (N,) gain.
        eps: added to the mean square before the square root.

    Returns:
        (..., N), contiguous, in promote(x.dtype, weight.dtype) (Llama's convention, as the reference).
    """
    return _rms_norm_op(x, weight, float(eps))


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add and RMSNorm: h = x + residual; return (rms_norm(h, weight, eps), h).

    Args:
        x: (..., N) the sublayer output to add.
        residual: (..., N) the residual stream, same shape and dtype as x.
        weight: (N,) gain.
        eps: added to the mean square before the square root.

    Returns:
        (normed, h): normed in promote(x.dtype, weight.dtype), h (the new residual stream) in x's dtype.
    """
    return _add_rms_norm_op(x, residual, weight, float(eps))
