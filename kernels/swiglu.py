"""SwiGLU's gating, silu(gate) * up, in Triton, forward and backward, as torch ops.

Formula (as `reference.swiglu`, with PyTorch's rounding): with sig = sigmoid(g) in fp32,

    a   = cast(g * sig)                  (F.silu's output in the input dtype)
    out = cast(a * u)

and the backward, recomputing sig and silu from g instead of storing the activation (one read of g is
cheaper than a write and a read of a saved (tokens, ffn_hidden) tensor):

    dup   = dy * silu(g)
    dgate = dy * u * sig * (1 + g * (1 - sig))

The decoder's gate and up are the two halves of its fused w13 output, (..., 2F) split into strided
(..., F) views; the kernels read them in place through their row strides (no copies).

Memory traffic (M rows of F, element size e): forward reads 2*M*F*e and writes M*F*e; backward reads
3*M*F*e (dy, gate, up) and writes 2*M*F*e.

Reference: Shazeer 2020, "GLU Variants Improve Transformer"; Liger-Kernel's `swiglu.py` (recompute in
the backward).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from havoc.kernels._common import check_device, check_float, check_last_dim_contiguous, interpreting

__all__ = ["swiglu"]


# ------------------------------------------------------------------------------------------ kernels
@triton.jit
def _swiglu_fwd_kernel(G, U, OUT, stride_g, stride_u, stride_o, F, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < F
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0)
    gf = g.to(tl.float32)
    a = (gf * tl.sigmoid(gf)).to(g.dtype)  # F.silu rounds to the input dtype before the product
    out = a.to(tl.float32) * u.to(tl.float32)
    tl.store(OUT + row * stride_o + cols, out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(
    DY, G, U, DG, DU,
    stride_dy, stride_g, stride_u, stride_dg, stride_du,
    F, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < F
    dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    du = dy * silu
    dg = dy * u * sig * (1.0 + g * (1.0 - sig))
    tl.store(DG + row * stride_dg + cols, dg.to(DG.dtype.element_ty), mask=mask)
    tl.store(DU + row * stride_du + cols, du.to(DU.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------- launchers
def _block(F: int) -> int:
    # NOTE: 1024 elements a program (8 per thread at 4 warps) is Liger-Kernel's choice for elementwise
    # work; the interpreter runs one program at a time, so it gets whole rows in fewer, larger blocks.
    return 4096 if interpreting() else 1024


def _check(op: str, gate: torch.Tensor, up: torch.Tensor) -> None:
    check_float(op, "gate", gate)
    check_float(op, "up", up)
    if gate.shape != up.shape:
        raise ValueError(f"{op}: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if gate.dtype != up.dtype:
        raise TypeError(f"{op}: gate ({gate.dtype}) and up ({up.dtype}) must have the same dtype")
    if gate.dim() == 0:
        raise ValueError(f"{op}: gate and up must have at least one dimension")
    check_last_dim_contiguous(op, "gate", gate)
    check_last_dim_contiguous(op, "up", up)


def _rows(t: torch.Tensor) -> torch.Tensor:
    # (..., F) -> (M, F): a view for the strided halves of w13's output (their leading dims merge)
    return t.reshape(-1, t.shape[-1])


def _forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    if out.numel() == 0:
        return out
    g2, u2, o2 = _rows(gate), _rows(up), out.view(-1, gate.shape[-1])
    M, F = g2.shape
    block = _block(F)
    _swiglu_fwd_kernel[(M, triton.cdiv(F, block))](
        g2, u2, o2, g2.stride(0), u2.stride(0), o2.stride(0), F, BLOCK=block, num_warps=4
    )
    return out


def _backward(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Two separate buffers: a custom op's outputs may not alias each other (so not halves of one tensor).
    dgate = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    dup = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    if dgate.numel() == 0:
        return dgate, dup
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    dy2, g2, u2 = _rows(dy), _rows(gate), _rows(up)
    dg2, du2 = _rows(dgate), _rows(dup)
    M, F = g2.shape
    block = _block(F)
    _swiglu_bwd_kernel[(M, triton.cdiv(F, block))](
        dy2, g2, u2, dg2, du2,
        dy2.stride(0), g2.stride(0), u2.stride(0), dg2.stride(0), du2.stride(0),
        F, BLOCK=block, num_warps=4,
    )
    return dgate, dup


# ---------------------------------------------------------------------------------------- torch ops
@torch.library.custom_op("havoc::swiglu", mutates_args=())
def _swiglu_op(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    _check("swiglu", gate, up)
    check_device("swiglu", gate, up)
    return _forward(gate, up)


@_swiglu_op.register_fake
def _(gate, up):
    _check("swiglu", gate, up)
    return gate.new_empty(gate.shape)


@torch.library.custom_op("havoc::swiglu_backward", mutates_args=())
def _swiglu_backward_op(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(dy, gate, up)


@_swiglu_backward_op.register_fake
def _(dy, gate, up):
    return gate.new_empty(gate.shape), gate.new_empty(gate.shape)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad(ctx, dy):
    gate, up = ctx.saved_tensors
    return _swiglu_backward_op(dy, gate, up)


_swiglu_op.register_autograd(_grad, setup_context=_setup)


# ------------------------------------------------------------------------------------- functional
def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, elementwise (Triton).

    Args:
        gate: (..., F); may be a strided view (the first half of a fused w13 output).
        up: (..., F), same shape and dtype as gate.

    Returns:
        (..., F), contiguous, in gate's dtype.
    """
    return _swiglu_op(gate, up)
