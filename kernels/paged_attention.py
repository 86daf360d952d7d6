"""Paged decode attention in Triton (split-K with a log-sum-exp merge), and the paged K/V write, as torch ops.

The ops keep havoc.ops' names and argument orders: `paged_decode_attention(q, k_pool, v_pool, block_tables,
lengths)` and `write_kv(k_pool, v_pool, k, v, slots)`.

Formula (as `reference.paged_decode_attention`): one query token per sequence b, n_heads = G * n_kv_heads,

    token j of b lives at pool[block_tables[b, j // block_size], j % block_size, kv_head]
    o_bh = softmax_j(scale * q_bh . k_j) @ v_j  over j < lengths[b]     (0 when lengths[b] = 0)

The layout is the paged cache's: per layer K and V pools of shape [num_blocks, block_size, n_kv_heads,
head_dim], an int32 block table (batch, max_blocks) padded past each sequence's last block, and int32
lengths (batch,).

A program owns one (sequence, KV head) and one split of its tokens, and packs the KV head's G query
heads into the rows of one tile (padded to 16 for tl.dot), so each K/V token is read once per KV head,
not once per query head. Tokens are gathered BLOCK_N at a time through the block table, so any block size
works (1, 16, 17...) and the tile stays large when blocks are small.

Split-K: decode has only batch * n_kv_heads independent (sequence, KV head) pairs; when that is fewer
than the GPU has SMs, each pair's tokens are cut into NUM_SPLITS contiguous ranges, each program writes
its partial (o_s normalised, lse_s) in fp32, and a merge kernel combines them,

    lse = log sum_s exp(lse_s),   o = sum_s exp(lse_s - lse) * o_s

The number of splits comes from the block table's shape and the SM count, never from the lengths on the
device, so the op has no host synchronisation and CUDA graphs can capture it.

Memory traffic: every cached K and V element once (2 * sum_b lengths[b] * n_kv_heads * head_dim * e),
plus q and o; with splits, 2 * (batch * n_heads * NUM_SPLITS * (head_dim + 1)) * 4 bytes of partials.

`write_kv` stores a step's new keys and values into their slots (a flat slot index per token,
block * block_size + offset, negative to skip): the cache update of a decode step as an op that declares
its in-place writes (mutates_args), so torch.compile orders it correctly and a CUDA graph can capture it.

References: Kwon et al. 2023, "Efficient Memory Management for LLM Serving with PagedAttention" (vLLM);
flash-decoding (Dao et al. 2023) for split-K with the log-sum-exp merge.
"""

from __future__ import annotations

import math

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

__all__ = ["paged_decode_attention", "write_kv"]

LOG2E = 1.4426950408889634
MAX_SPLITS = 64


# ------------------------------------------------------------------------------------------ kernels
@triton.jit(do_not_specialize=["max_blocks", "tokens_per_split"])
def _paged_decode_kernel(
    Q, K_CACHE, V_CACHE, BLOCK_TABLES, SEQ_LENS, O, O_PART, LSE_PART,
    stride_qb, stride_qh,
    stride_kblk, stride_kslot, stride_kh,
    stride_vblk, stride_vslot, stride_vh,
    stride_tb,
    stride_ob, stride_oh,
    n_kv_heads, D, block_size, max_blocks, tokens_per_split, qk_scale,
    G: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // n_kv_heads
    kh = pid_bh % n_kv_heads
    b64 = b.to(tl.int64)
    # Tokens past the table's capacity cannot be addressed: clamp, so a too-large length reads no wild
    # memory (the launcher cannot check lengths without a host sync).
    seq_len = tl.minimum(tl.load(SEQ_LENS + b), max_blocks * block_size)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, seq_len)

    g = tl.arange(0, BLOCK_G)
    g_ok = g < G
    h = kh * G + g
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    q = tl.load(Q + b64 * stride_qb + h[:, None] * stride_qh + d[None, :], mask=g_ok[:, None] & dmask[None, :], other=0.0)

    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), dtype=tl.float32)
    table = BLOCK_TABLES + b64 * stride_tb
    for n0 in range(start, end, BLOCK_N):
        tok = n0 + tl.arange(0, BLOCK_N)
        ok = tok < end
        blk = tl.load(table + tok // block_size, mask=ok, other=0).to(tl.int64)
        slot = tok % block_size
        kv_mask = ok[:, None] & dmask[None, :]
        k = tl.load(K_CACHE + (blk * stride_kblk + slot * stride_kslot + kh * stride_kh)[:, None] + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V_CACHE + (blk * stride_vblk + slot * stride_vslot + kh * stride_vh)[:, None] + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_G, BLOCK_N), log2 units
        s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])  # every tile has >= 1 valid token, so m_new is finite
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    o = acc / l_safe[:, None]
    if NUM_SPLITS == 1:
        tl.store(O + b64 * stride_ob + h[:, None] * stride_oh + d[None, :], o.to(O.dtype.element_ty), mask=g_ok[:, None] & dmask[None, :])
    else:
        # partials (B, H, NUM_SPLITS, BLOCK_D) fp32 and their lse (B, H, NUM_SPLITS) in log2 units
        part = (b64 * (n_kv_heads * G) + h) * NUM_SPLITS + split
        tl.store(O_PART + part[:, None] * BLOCK_D + d[None, :], o, mask=g_ok[:, None])
        lse = tl.where(has_keys, m_i + tl.log2(l_safe), float("-inf"))
        tl.store(LSE_PART + part, lse, mask=g_ok)


@triton.jit
def _paged_merge_kernel(
    O_PART, LSE_PART, O, stride_ob, stride_oh, n_heads, D,
    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)  # one (sequence, query head)
    b = (pid // n_heads).to(tl.int64)
    h = pid % n_heads
    s = tl.arange(0, BLOCK_S)
    s_ok = s < NUM_SPLITS
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(LSE_PART + pid.to(tl.int64) * NUM_SPLITS + s, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)  # a sequence with no tokens: every weight is 0
    w = tl.exp2(lse - m_use)
    total = tl.sum(w, 0)
    part = tl.load(O_PART + (pid.to(tl.int64) * NUM_SPLITS + s)[:, None] * BLOCK_D + d[None, :], mask=s_ok[:, None], other=0.0)
    o = tl.sum(part * w[:, None], 0) / tl.where(total > 0.0, total, 1.0)
    tl.store(O + b * stride_ob + h * stride_oh + d, o.to(O.dtype.element_ty), mask=d < D)


@triton.jit
def _write_kv_kernel(
    K, V, K_CACHE, V_CACHE, SLOTS,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kblk, stride_kslot, stride_kch,
    stride_vblk, stride_vslot, stride_vch,
    n_kv_heads, D, block_size,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(SLOTS + t).to(tl.int64)
    blk = slot // block_size
    off = slot % block_size
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    keep = (h * 0 + slot) >= 0  # a negative slot is padding (as a vector: scalar masks do not broadcast everywhere)
    mask = (keep & (h < n_kv_heads))[:, None] & (d < D)[None, :]
    k = tl.load(K + t * stride_kt + h[:, None] * stride_kh + d[None, :], mask=mask)
    v = tl.load(V + t * stride_vt + h[:, None] * stride_vh + d[None, :], mask=mask)
    tl.store(K_CACHE + blk * stride_kblk + off * stride_kslot + h[:, None] * stride_kch + d[None, :], k, mask=mask)
    tl.store(V_CACHE + blk * stride_vblk + off * stride_vslot + h[:, None] * stride_vch + d[None, :], v, mask=mask)


# ----------------------------------------------------------------------------------------- launchers
def _check(q, k_pool, v_pool, block_tables, lengths) -> None:
    op = "paged_decode_attention"
    for name, t in (("q", q), ("k_pool", k_pool), ("v_pool", v_pool)):
        check_float(op, name, t)
        check_last_dim_contiguous(op, name, t)
    if not (q.dtype == k_pool.dtype == v_pool.dtype):
        raise TypeError(f"{op}: q, k_pool and v_pool must share a dtype, got {q.dtype}, {k_pool.dtype}, {v_pool.dtype}")
    if q.dim() != 3:
        raise ValueError(f"{op}: q must be (batch, n_heads, head_dim) (one token per sequence), got {tuple(q.shape)}")
    if k_pool.dim() != 4 or k_pool.shape != v_pool.shape:
        raise ValueError(
            f"{op}: k_pool and v_pool must both be (num_blocks, block_size, n_kv_heads, head_dim), "
            f"got {tuple(k_pool.shape)} and {tuple(v_pool.shape)}"
        )
    B, H, D = q.shape
    _, block_size, KV, Dk = k_pool.shape
    if Dk != D:
        raise ValueError(f"{op}: q has head_dim {D} but the cache has {Dk}")
    if block_size == 0 or KV == 0 or H % KV:
        raise ValueError(f"{op}: n_heads ({H}) must be a multiple of the cache's n_kv_heads ({KV}), block_size > 0")
    if block_tables.dtype != torch.int32 or block_tables.dim() != 2 or block_tables.shape[0] != B:
        raise ValueError(f"{op}: block_tables must be int32 (batch={B}, max_blocks), got {block_tables.dtype} {tuple(block_tables.shape)}")
    if lengths.dtype != torch.int32 or tuple(lengths.shape) != (B,):
        raise ValueError(f"{op}: lengths must be int32 of shape ({B},), got {lengths.dtype} {tuple(lengths.shape)}")
    check_last_dim_contiguous(op, "block_tables", block_tables)


def _num_splits(device: torch.device, pairs: int, capacity: int, block_n: int) -> int:
    """Splits per (sequence, KV head): enough programs for ~2 waves over the SMs, >= 4 tiles per split."""
    sms = sm_count(device)
    if pairs >= sms:
        return 1
    want = triton.cdiv(2 * sms, pairs)
    most = max(1, capacity // (4 * block_n))
    return max(1, min(want, most, MAX_SPLITS))


def _forward(q, k_pool, v_pool, block_tables, lengths, scale, num_splits):
    B, H, D = q.shape
    _, block_size, KV, _ = k_pool.shape
    G = H // KV
    out = torch.empty((B, H, D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    max_blocks = block_tables.shape[1]
    capacity = max_blocks * block_size
    block_n = 16 if interpreting() else 64
    block_d = max(16, next_pow2(D))
    splits = num_splits if num_splits > 0 else _num_splits(q.device, B * KV, capacity, block_n)
    splits = max(1, min(splits, MAX_SPLITS))
    tokens_per_split = max(block_n, triton.cdiv(triton.cdiv(max(capacity, 1), splits), block_n) * block_n)
    if splits > 1:
        o_part = torch.empty((B, H, splits, block_d), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((B, H, splits), dtype=torch.float32, device=q.device)
    else:
        o_part = lse_part = out  # unused
    _paged_decode_kernel[(B * KV, splits)](
        q, k_pool, v_pool, block_tables, lengths, out, o_part, lse_part,
        q.stride(0), q.stride(1),
        k_pool.stride(0), k_pool.stride(1), k_pool.stride(2),
        v_pool.stride(0), v_pool.stride(1), v_pool.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        KV, D, block_size, max_blocks, tokens_per_split, scale * LOG2E,
        G=G, NUM_SPLITS=splits, BLOCK_G=max(16, next_pow2(G)), BLOCK_N=block_n, BLOCK_D=block_d,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4,
    )
    if splits > 1:
        _paged_merge_kernel[(B * H,)](
            o_part, lse_part, out, out.stride(0), out.stride(1), H, D,
            NUM_SPLITS=splits, BLOCK_S=next_pow2(splits), BLOCK_D=block_d, num_warps=4,
        )
    return out


# ---------------------------------------------------------------------------------------- torch ops
@torch.library.custom_op("havoc::paged_decode_attention", mutates_args=())
def _paged_decode_op(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    num_splits: int,
) -> torch.Tensor:
    _check(q, k_pool, v_pool, block_tables, lengths)
    check_device("paged_decode_attention", q, k_pool, v_pool, block_tables, lengths)
    return _forward(q, k_pool, v_pool, block_tables, lengths, scale, num_splits)


@_paged_decode_op.register_fake
def _(q, k_pool, v_pool, block_tables, lengths, scale, num_splits):
    _check(q, k_pool, v_pool, block_tables, lengths)
    return q.new_empty(q.shape)


@torch.library.custom_op("havoc::write_kv", mutates_args=("k_pool", "v_pool"))
def _write_kv_op(
    k_pool: torch.Tensor, v_pool: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor
) -> None:
    op = "write_kv"
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"{op}: k and v must both be (tokens, n_kv_heads, head_dim), got {tuple(k.shape)}, {tuple(v.shape)}")
    if k_pool.dim() != 4 or k_pool.shape != v_pool.shape or tuple(k_pool.shape[2:]) != tuple(k.shape[1:]):
        raise ValueError(f"{op}: caches {tuple(k_pool.shape)} must be (num_blocks, block_size, {k.shape[1]}, {k.shape[2]})")
    if not (k.dtype == v.dtype == k_pool.dtype == v_pool.dtype):
        raise TypeError(f"{op}: k, v and the caches must share a dtype")
    if slots.dim() != 1 or slots.shape[0] != k.shape[0] or slots.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{op}: slots must be int32/int64 of shape ({k.shape[0]},), got {slots.dtype} {tuple(slots.shape)}")
    for name, t in (("k", k), ("v", v), ("k_pool", k_pool), ("v_pool", v_pool)):
        check_last_dim_contiguous(op, name, t)
    check_device(op, k_pool, v_pool, k, v, slots)
    _write(k_pool, v_pool, k, v, slots)


def _write(k_pool, v_pool, k, v, slots) -> None:
    if k.shape[0] == 0 or k.numel() == 0:
        return
    _write_kv_kernel[(k.shape[0],)](
        k, v, k_pool, v_pool, slots,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_pool.stride(0), k_pool.stride(1), k_pool.stride(2),
        v_pool.stride(0), v_pool.stride(1), v_pool.stride(2),
        k.shape[1], k.shape[2], k_pool.shape[1],
        BLOCK_H=next_pow2(k.shape[1]), BLOCK_D=next_pow2(k.shape[2]), num_warps=4,
    )


@_write_kv_op.register_fake
def _(k_pool, v_pool, k, v, slots):
    return None


# ------------------------------------------------------------------------------------- functional
def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    *,
    scale: float | None = None,
    num_splits: int = 0,
) -> torch.Tensor:
    """One query token per sequence against a paged KV cache (Triton; inference only, no autograd).

    Args:
        q: (batch, n_heads, head_dim).
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim), one layer's pools.
        block_tables: (batch, max_blocks) int32, padded past each sequence's blocks.
        lengths: (batch,) int32 tokens per sequence, each <= max_blocks * block_size (longer lengths
            are clamped to the table's capacity; the op does not read them back to check).
        scale: softmax scale, default 1 / sqrt(head_dim).
        num_splits: force the split-K factor (tests and benchmarks); 0 (the default): chosen from the batch,
            the KV heads, the table's capacity and the SM count.

    Returns:
        (batch, n_heads, head_dim) in q's dtype.
    """
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if num_splits < 0:
        raise ValueError(f"paged_decode_attention: num_splits must be >= 0, got {num_splits}")
    return _paged_decode_op(q, k_pool, v_pool, block_tables, lengths, sm_scale, num_splits)


def write_kv(k_pool: torch.Tensor, v_pool: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    """Store new keys and values into their pool slots, in place (Triton).

    Args:
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim) pools, written in place.
        k, v: (tokens, n_kv_heads, head_dim) this step's keys and values.
        slots: (tokens,) int32/int64 flat slot per token, block * block_size + offset; < 0 skips it.
    """
    _write_kv_op(k_pool, v_pool, k, v, slots)
