"""Rotary position embedding (rotate-half convention) in Triton, forward and backward, as torch ops.

Formula (as `reference.apply_rope`): for each head vector x of a token, its first R = rotary_dim features
split into halves x1, x2 (R/2 each), with the token's tables c = cos[..., :R], s = sin[..., :R] split the
same way (c1, c2, s1, s2),

    out1 = x1 * c1 - x2 * s1
    out2 = x2 * c2 + x1 * s2            (= x * cos + rotate_half(x) * sin)
    out[R:] = x[R:]                     (partial rotary: the tail passes through)

computed in fp32 and stored in x's dtype. The transpose of that linear map is the backward:

    dx1 = dy1 * c1 + dy2 * s2
    dx2 = dy2 * c2 - dy1 * s1,          dx[R:] = dy[R:]

The tables are per token (B or 1, T, R), built from a per-token position tensor by
`reference.rope_cos_sin`, so decode at an offset, prefill after a cache and packed sequences whose
positions restart are all just different tables. Queries and keys go through one call: the decoder passes
the q|k heads of its fused qkv projection as one strided view (B, T, n_heads + n_kv_heads, head_dim),
which the kernel reads in place (no copy of the view).

Memory traffic per token: reads heads * head_dim * e bytes of x and 2 * R * 4 bytes of tables (shared by
all heads of the token), writes heads * head_dim * e bytes. One program per (token, block of heads).

Reference: Su et al. 2021 (RoFormer); the rotate-half layout of Hugging Face's Llama.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from havoc.kernels._common import check_device, check_float, check_last_dim_contiguous, next_pow2

__all__ = ["apply_rope"]


# ------------------------------------------------------------------------------------------ kernels
@triton.jit
def _rope_kernel(
    X, COS, SIN, OUT,
    stride_xb, stride_xt, stride_xh,
    stride_cb, stride_ct,
    stride_sb, stride_st,
    stride_ob, stride_ot, stride_oh,
    T, NH, HALF, TAIL,
    BACKWARD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_TAIL: tl.constexpr,
):
    token = tl.program_id(0)
    b = (token // T).to(tl.int64)
    t = (token % T).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    r = tl.arange(0, BLOCK_R)
    rmask = r < HALF
    hmask = heads < NH
    mask = hmask[:, None] & rmask[None, :]

    # the token's tables, loaded once for all its heads
    cos_row = COS + b * stride_cb + t * stride_ct
    sin_row = SIN + b * stride_sb + t * stride_st
    c1 = tl.load(cos_row + r, mask=rmask, other=0.0).to(tl.float32)
    c2 = tl.load(cos_row + HALF + r, mask=rmask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_row + r, mask=rmask, other=0.0).to(tl.float32)
    s2 = tl.load(sin_row + HALF + r, mask=rmask, other=0.0).to(tl.float32)

    x_rows = X + b * stride_xb + t * stride_xt + heads[:, None] * stride_xh  # (BLOCK_H, 1)
    o_rows = OUT + b * stride_ob + t * stride_ot + heads[:, None] * stride_oh
    a1 = tl.load(x_rows + r[None, :], mask=mask, other=0.0).to(tl.float32)
    a2 = tl.load(x_rows + HALF + r[None, :], mask=mask, other=0.0).to(tl.float32)
    if BACKWARD:
        o1 = a1 * c1[None, :] + a2 * s2[None, :]
        o2 = a2 * c2[None, :] - a1 * s1[None, :]
    else:
        o1 = a1 * c1[None, :] - a2 * s1[None, :]
        o2 = a2 * c2[None, :] + a1 * s2[None, :]
    tl.store(o_rows + r[None, :], o1.to(OUT.dtype.element_ty), mask=mask)
    tl.store(o_rows + HALF + r[None, :], o2.to(OUT.dtype.element_ty), mask=mask)
    if BLOCK_TAIL > 0:  # features past the rotary dim are copied (their gradient passes through)
        tcols = tl.arange(0, BLOCK_TAIL)
        tmask = hmask[:, None] & (tcols < TAIL)[None, :]
        tail = tl.load(x_rows + 2 * HALF + tcols[None, :], mask=tmask, other=0.0)
        tl.store(o_rows + 2 * HALF + tcols[None, :], tail.to(OUT.dtype.element_ty), mask=tmask)


# ----------------------------------------------------------------------------------------- launchers
def _tables(op: str, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check x and the tables; return the tables as (B, T, R) views (batch broadcast by a 0 stride)."""
    check_float(op, "x", x)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (batch, seq, heads, head_dim), got shape {tuple(x.shape)}")
    check_last_dim_contiguous(op, "x", x)
    B, T, _, D = x.shape
    tables = []
    for name, tab in (("cos", cos), ("sin", sin)):
        check_float(op, name, tab)
        if tab.dim() == 4:
            if tab.shape[2] != 1:
                raise ValueError(f"{op}: a 4-D {name} table must be (B, T, 1, rotary_dim), got {tuple(tab.shape)}")
            tab = tab.squeeze(2)
        if tab.dim() != 3 or tab.shape[0] not in (1, B) or tab.shape[1] != T:
            raise ValueError(
                f"{op}: {name} must be ({B} or 1, {T}, rotary_dim) to match x {tuple(x.shape)}, got {tuple(tab.shape)}"
            )
        check_last_dim_contiguous(op, name, tab)
        tables.append(tab.expand(B, T, tab.shape[-1]))
    R = tables[0].shape[-1]
    if tables[1].shape[-1] != R:
        raise ValueError(f"{op}: cos and sin have different rotary dims ({R} and {tables[1].shape[-1]})")
    if R == 0 or R % 2 or R > D:
        raise ValueError(f"{op}: rotary_dim must be even and in [2, head_dim={D}], got {R}")
    return tables[0], tables[1]


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    B, T, NH, D = x.shape
    out = torch.empty((B, T, NH, D), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    half = cos.shape[-1] // 2
    tail = D - 2 * half
    block_r = next_pow2(half)
    # NOTE: a (heads x R/2) tile of at most ~4096 elements per half keeps each program's registers
    # modest; HAVOC-7B's 40 q|k heads x 64 fit one program per token.
    block_h = min(next_pow2(NH), max(1, 4096 // block_r))
    grid = (B * T, triton.cdiv(NH, block_h))
    _rope_kernel[grid](
        x, cos, sin, out,
        x.stride(0), x.stride(1), x.stride(2),
        cos.stride(0), cos.stride(1),
        sin.stride(0), sin.stride(1),
        out.stride(0), out.stride(1), out.stride(2),
        T, NH, half, tail,
        BACKWARD=backward, BLOCK_H=block_h, BLOCK_R=block_r, BLOCK_TAIL=next_pow2(tail) if tail else 0,
        num_warps=4,
    )
    return out


# ---------------------------------------------------------------------------------------- torch ops
@torch.library.custom_op("havoc::apply_rope", mutates_args=())
def _apply_rope_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos3, sin3 = _tables("apply_rope", x, cos, sin)
    check_device("apply_rope", x, cos, sin)
    return _launch(x, cos3, sin3, backward=False)


@_apply_rope_op.register_fake
def _(x, cos, sin):
    _tables("apply_rope", x, cos, sin)
    return x.new_empty(x.shape)


@torch.library.custom_op("havoc::apply_rope_backward", mutates_args=())
def _apply_rope_backward_op(dy: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    cos3, sin3 = _tables("apply_rope_backward", dy, cos, sin)
    return _launch(dy, cos3, sin3, backward=True)


@_apply_rope_backward_op.register_fake
def _(dy, cos, sin):
    return dy.new_empty(dy.shape)


def _setup(ctx, inputs, output):
    _, cos, sin = inputs
    ctx.save_for_backward(cos, sin)


def _grad(ctx, dy):
    cos, sin = ctx.saved_tensors
    # The tables come from integer positions: they get no gradient.
    return _apply_rope_backward_op(dy, cos, sin), None, None


_apply_rope_op.register_autograd(_grad, setup_context=_setup)


# ------------------------------------------------------------------------------------- functional
def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE over the first rotary_dim features of every head (Triton).

    Args:
        x: (B, T, heads, head_dim); may be a strided view (the q|k heads of a fused qkv output) as long as
            the last dimension is contiguous.
        cos, sin: (B or 1, T, rotary_dim) or (B or 1, T, 1, rotary_dim) tables from
            `reference.rope_cos_sin`; rotary_dim even and <= head_dim.

    Returns:
        (B, T, heads, head_dim), contiguous, in x's dtype.
    """
    return _apply_rope_op(x, cos, sin)
