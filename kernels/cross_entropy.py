"""Fused linear cross-entropy: the loss of h @ W.T and its gradients, in chunks of tokens, as a torch op.

Formula (as `reference.linear_cross_entropy`): for token i with hidden state h_i, target y_i and logits
z_i = h_i @ W.T (rounded to h's dtype, as the eager product is),

    loss_i = logsumexp(z_i) - z_i[y_i]          (0 where y_i == ignore_index)
    loss   = sum_i loss_i / n_valid  ("mean", n_valid = #targets != ignore_index; NaN if none) or the sum
    dz_i   = (softmax(z_i) - onehot(y_i)) * c,  c = 1 / max(n_valid, 1) ("mean") or 1, 0 for ignored rows
    dh_i   = dz_i @ W,      dW = sum_i dz_i^T h_i

The training loss of a 70k vocabulary must not materialise [tokens, vocab] fp32 logits (8k tokens x 70k
x 4 bytes = 2.3 GB, and PyTorch's cross-entropy keeps more copies for its backward). Here the tokens go
through in chunks of C rows: one (C, V) buffer in h's dtype receives the chunk's logits (a cuBLAS GEMM),
a Triton kernel turns each row into its loss and, in place, its gradient dz (two passes over the row:
an online max/sum-exp, then softmax - onehot), and two more GEMMs fold dz into dh and dW. The gradients
are therefore computed during the forward (as Liger-Kernel does): the loss is the last op of a training
step, so the backward only scales them by the incoming gradient (a device multiply, no host sync).

C follows Liger-Kernel: next_power_of_two(tokens / ceil(V / dim)), so the chunk's logits are about as
large as h itself. dW accumulates across chunks in W's dtype (one rounding per chunk in bf16, the price
of not holding a V x dim fp32 accumulator: 1.1 GB for HAVOC-7B).

Memory: C * V * e (chunk logits) + the gradients themselves (N * dim and V * dim, which any backward
produces), instead of N * V * (e + 4 + 4) bytes for eager logits, their fp32 copy and softmax.
Memory traffic of the kernel per chunk: reads the logits twice, writes them once (C * V * e each).

Targets must lie in [0, vocab) or equal ignore_index; they are not read back to check (no host sync),
an out-of-range target reads no memory and counts as if its logit were 0.

References: Liger-Kernel's `fused_linear_cross_entropy.py` (chunking, gradient-in-forward); Wijmans et
al. 2024, "Cut Your Losses in Large-Vocabulary Language Models" (the memory argument).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from havoc.kernels._common import check_device, check_float, check_last_dim_contiguous, interpreting, next_pow2

__all__ = ["linear_cross_entropy"]

REDUCTIONS = ("mean", "sum")


# ------------------------------------------------------------------------------------------ kernels
@triton.jit
def _ce_rows_kernel(
    LOGITS, TARGETS, LOSS, N_VALID,
    stride_l, V, ignore_index,
    COMPUTE_GRAD: tl.constexpr, MEAN: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    ptr = LOGITS + row * stride_l
    target = tl.load(TARGETS + row).to(tl.int64)
    cols0 = tl.arange(0, BLOCK_V)

    # pass 1: per-lane running max and sum of exp (base 2), merged across lanes at the end
    m = tl.full((BLOCK_V,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_V,), dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + cols0
        x = tl.load(ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32) * 1.4426950408889634
        m_new = tl.maximum(m, x)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # lanes past V stay empty, not NaN
        s = s * tl.exp2(m - m_use) + tl.exp2(x - m_use)
        m = m_new
    m_all = tl.max(m, 0)
    lse2 = m_all + tl.log2(tl.sum(s * tl.exp2(m - m_all), 0))  # log2-sum-exp2 of the row
    lse = lse2 * 0.6931471805599453

    in_range = (target >= 0) & (target < V)
    ignored = target == ignore_index
    x_t = tl.load(ptr + target, mask=in_range & (target != ignore_index), other=0.0).to(tl.float32)
    tl.store(LOSS + row, tl.where(ignored, 0.0, lse - x_t))

    if COMPUTE_GRAD:
        if MEAN:
            scale = 1.0 / tl.maximum(tl.load(N_VALID), 1).to(tl.float32)
        else:
            scale = 1.0
        scale = tl.where(ignored, 0.0, scale)
        # pass 2: the row's gradient overwrites its logits (they are not needed again)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + cols0
            cmask = cols < V
            x = tl.load(ptr + cols, mask=cmask, other=0.0).to(tl.float32) * 1.4426950408889634
            p = tl.exp2(x - lse2)
            g = (p - tl.where(cols == target, 1.0, 0.0)) * scale
            tl.store(ptr + cols, g.to(LOGITS.dtype.element_ty), mask=cmask)


# ----------------------------------------------------------------------------------------- launchers
def _check(h, weight, targets, reduction) -> None:
    op = "linear_cross_entropy"
    check_float(op, "h", h)
    check_float(op, "weight", weight)
    if h.dtype != weight.dtype:
        raise TypeError(f"{op}: h ({h.dtype}) and weight ({weight.dtype}) must share a dtype")
    if h.dim() < 1 or weight.dim() != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"{op}: h (..., dim) and weight (vocab, dim) disagree: {tuple(h.shape)} vs {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError(f"{op}: the vocabulary is empty")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: targets must be int64 or int32 ids, got {targets.dtype}")
    if tuple(targets.shape) != tuple(h.shape[:-1]):
        raise ValueError(f"{op}: targets shape {tuple(targets.shape)} must be h's leading shape {tuple(h.shape[:-1])}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    check_last_dim_contiguous(op, "h", h)
    check_last_dim_contiguous(op, "weight", weight)


def _chunk_rows(n: int, vocab: int, dim: int) -> int:
    # Liger-Kernel's rule: chunk logits about the size of h (tokens x dim).
    return max(16, min(next_pow2(n), next_pow2(triton.cdiv(n, triton.cdiv(vocab, dim)))))


def _forward(h, weight, targets, ignore_index, reduction, chunk_size, grad_h, grad_w):
    V, dim = weight.shape
    h2 = h.reshape(-1, dim)
    t = targets.reshape(-1)
    N = h2.shape[0]
    loss_rows = torch.empty(N, dtype=torch.float32, device=h.device)
    dh = torch.empty((N, dim) if grad_h else (0,), dtype=h.dtype, device=h.device)
    dw = torch.zeros((V, dim) if grad_w else (0,), dtype=weight.dtype, device=h.device)
    n_valid = (t != ignore_index).sum()  # stays on the device
    C = chunk_size if chunk_size > 0 else _chunk_rows(N, V, dim)
    block_v = 1024 if interpreting() else 4096  # NOTE: Liger uses up to 64K / element size; untuned here
    compute_grad = grad_h or grad_w
    buf = torch.empty((min(C, N), V), dtype=h.dtype, device=h.device) if N else None
    for c0 in range(0, N, C):
        c1 = min(c0 + C, N)
        hc = h2[c0:c1]
        logits = buf[: c1 - c0]
        torch.mm(hc, weight.t(), out=logits)  # (rows, V) in h's dtype
        _ce_rows_kernel[(c1 - c0,)](
            logits, t[c0:c1], loss_rows[c0:c1], n_valid,
            logits.stride(0), V, ignore_index,
            COMPUTE_GRAD=compute_grad, MEAN=reduction == "mean", BLOCK_V=block_v, num_warps=8,
        )
        if grad_h:
            torch.mm(logits, weight, out=dh[c0:c1])  # (rows, dim)
        if grad_w:
            dw.addmm_(logits.t(), hc)  # (V, dim), accumulated in W's dtype
    loss = loss_rows.sum()
    if reduction == "mean":
        loss = loss / n_valid  # NaN without any target, as torch.nn.functional.cross_entropy
    return loss, dh.view(h.shape) if grad_h else dh, dw


# ---------------------------------------------------------------------------------------- torch ops
@torch.library.custom_op("havoc::linear_cross_entropy", mutates_args=())
def _lce_op(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    reduction: str,
    chunk_size: int,
    grad_h: bool,
    grad_w: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(h, weight, targets, reduction)
    check_device("linear_cross_entropy", h, weight, targets)
    return _forward(h, weight, targets, ignore_index, reduction, chunk_size, grad_h, grad_w)


@_lce_op.register_fake
def _(h, weight, targets, ignore_index, reduction, chunk_size, grad_h, grad_w):
    _check(h, weight, targets, reduction)
    dh = h.new_empty(h.shape if grad_h else (0,))
    dw = weight.new_empty(weight.shape if grad_w else (0,))
    return h.new_empty((), dtype=torch.float32), dh, dw


def _setup(ctx, inputs, output):
    _, dh, dw = output
    ctx.save_for_backward(dh, dw)
    ctx.grads = inputs[6], inputs[7]
    ctx.mark_non_differentiable(dh, dw)


def _grad(ctx, dloss, _ddh, _ddw):
    dh, dw = ctx.saved_tensors
    grad_h, grad_w = ctx.grads
    # The gradients were computed in the forward for a loss gradient of 1; scale by the real one.
    return (
        dh * dloss.to(dh.dtype) if grad_h else None,
        dw * dloss.to(dw.dtype) if grad_w else None,
        None, None, None, None, None, None,
    )


_lce_op.register_autograd(_grad, setup_context=_setup)


# ------------------------------------------------------------------------------------- functional
def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of h @ weight.T against targets without materialising the full logits (Triton).

    Gradients for h and weight are computed during this call when autograd will need them (see the
    module docstring), so call it once per step on the final hidden states.

    Args:
        h: (..., dim) final hidden states.
        weight: (vocab, dim) output projection (the tied embedding), same dtype as h.
        targets: h.shape[:-1] int64/int32 ids in [0, vocab) or ignore_index.
        ignore_index: the id of positions without a target.
        reduction: "mean" over positions with a target, or "sum".
        chunk_size: tokens per chunk (default: logits of a chunk about the size of h).

    Returns:
        The scalar loss, fp32.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"linear_cross_entropy: chunk_size must be >= 1, got {chunk_size}")
    grad_on = torch.is_grad_enabled()
    grad_h = grad_on and h.requires_grad
    grad_w = grad_on and weight.requires_grad
    loss, _, _ = _lce_op(h, weight, targets, int(ignore_index), reduction, chunk_size or 0, grad_h, grad_w)
    return loss
