"""Causal grouped-query flash attention in Triton, forward and backward, as a torch op.

Formula (as `reference.attention` / `reference.attention_varlen`): for query i and key j of one sequence,

    s_ij = scale * q_i . k_j,   allowed(i, j) = j < S  [and j <= i + q_offset when causal]  [and key_mask_j]
    p_ij = exp(s_ij - lse_i),   lse_i = log sum_{allowed j} exp(s_ij),   o_i = sum_j p_ij v_j

with n_heads = G * n_kv_heads and query head h reading KV head h // G. A query with no allowed key gets
o = 0 and lse = -inf (the reference's convention for all-padding rows).

Grouped queries share K/V tiles: a program owns one (sequence, KV head) and a tile of BLOCK_M "packed
rows", row r being query t = r // G of group member g = r % G. Each K/V tile loaded serves all G heads of
the group, K/V are never repeated in memory, and at T = 1 (decode) one tile holds the whole group.

Forward (FlashAttention-2): online softmax over BLOCK_N key tiles in base 2 (exp2 of scores pre-scaled by
log2 e), fp32 accumulators; saves the log-sum-exp per row (natural log, fp32, (B, H, T) or (H, total_q)).
Key tiles wholly inside every row's allowed range run without masks; only the tiles on the causal
diagonal or past the end of the keys pay for them.

Backward: delta_i = sum_d do_i * o_i (a small pre-pass), then two kernels that recompute p from q, k and
the saved lse instead of storing it:

    dkdv: a program per (KV head, key tile) walks every packed row of its group:
          dv += p^T do,  dp = do v^T,  ds = p * (dp - delta),  dk += ds^T q * scale
          so dk/dv are summed over the G query heads in registers (no G x buffer, no atomics);
    dq:   a program per (KV head, row tile) walks the key tiles: dq += ds k * scale.

Ragged batches: with cumulative sequence lengths (`attention_varlen`, flash-attn's layout:
(total, heads, head_dim) with cu_seqlens (B+1,) int32) each program reads its sequence's bounds, so packed
training sequences never attend across documents; causal masking is bottom-right aligned per sequence.
The batched form takes a q_offset instead (prefill against an existing cache: query t sits at key
position t + q_offset) and an optional (B, S) key mask (left padding).

FLOPs: forward 4 * B * H * T * S_eff * D (S_eff ~ S/2 when causal and T = S); backward 2.5x that
(five matmuls where the forward has two, the dkdv/dq split recomputing q k^T once more: 3x in practice).
Memory traffic: q, k, v, o once each per program that needs them; no T x S tensor is written.

Numerics: fp32 inputs multiply in IEEE fp32 (input_precision="ieee"; TF32 would miss the tests' 1e-4);
fp16/bf16 inputs go to the tensor cores with fp32 accumulation, p is rounded to the input dtype before
the p @ v product, as FlashAttention does.

References: Dao 2023, "FlashAttention-2"; Triton's fused-attention tutorial (06) for the split backward;
flash-attn's varlen interface for cu_seqlens; Ainslie et al. 2023 (GQA).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from havoc.kernels._common import check_device, check_float, check_last_dim_contiguous, interpreting, next_pow2

__all__ = ["attention", "attention_varlen"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
MAX_HEAD_DIM = 256


# ------------------------------------------------------------------------------------------ kernels
# The kernels do not specialise on lengths and offsets (Triton would otherwise compile a separate kernel
# whenever one equals 1, e.g. for every decode step's T = 1, and treat it as a constant).
@triton.jit
def _seq_bounds(CU_Q, CU_K, b, T, S, q_offset, IS_VARLEN: tl.constexpr):
    """(q_start, q_len, k_start, k_len, offset) of sequence b, all as tensors.

    `x + b * 0` turns a scalar argument into a tensor, so the function returns tensors on both branches
    (a constexpr in a returned tuple is not something every Triton version compiles).
    """
    if IS_VARLEN:
        q_start = tl.load(CU_Q + b)
        q_len = tl.load(CU_Q + b + 1) - q_start
        k_start = tl.load(CU_K + b)
        k_len = tl.load(CU_K + b + 1) - k_start
        offset = k_len - q_len  # bottom-right aligned: a sequence's queries are its last keys
    else:
        q_start = b * 0
        q_len = T + b * 0
        k_start = b * 0
        k_len = S + b * 0
        offset = q_offset + b * 0
    return q_start, q_len, k_start, k_len, offset


@triton.jit
def _allowed(t_idx, n, k_len, offset, km_row, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr):
    """(BLOCK_M, BLOCK_N) mask of the keys n each packed row (query t_idx) may attend."""
    ok = (n < k_len)[None, :] & (t_idx >= 0)[:, None]  # the second term only broadcasts to 2-D
    if CAUSAL:
        ok = ok & (n[None, :] <= t_idx[:, None] + offset)
    if HAS_KEY_MASK:
        km = tl.load(km_row + n, mask=n < k_len, other=0)
        ok = ok & (km != 0)[None, :]
    return ok


@triton.jit
def _allowed_t(t_idx, n, k_len, offset, km_row, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr):
    """`_allowed` laid out (BLOCK_N, BLOCK_M), built directly rather than by transposing a boolean tile."""
    ok = (n < k_len)[:, None] & (t_idx >= 0)[None, :]
    if CAUSAL:
        ok = ok & (n[:, None] <= t_idx[None, :] + offset)
    if HAS_KEY_MASK:
        km = tl.load(km_row + n, mask=n < k_len, other=0)
        ok = ok & (km != 0)[:, None]
    return ok


@triton.jit
def _fwd_tiles(
    acc, l_i, m_i, q, k_base, v_base, km_row,
    stride_kt, stride_vt,
    t_idx, offset, k_len, d, dmask, qk_scale, lo, hi,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        n = start_n + tl.arange(0, BLOCK_N)
        if MASKED:
            kv_ok = (n < k_len)[:, None] & dmask[None, :]
            k = tl.load(k_base + n[:, None] * stride_kt + d[None, :], mask=kv_ok, other=0.0)
            v = tl.load(v_base + n[:, None] * stride_vt + d[None, :], mask=kv_ok, other=0.0)
        else:
            k = tl.load(k_base + n[:, None] * stride_kt + d[None, :], mask=dmask[None, :], other=0.0)
            v = tl.load(v_base + n[:, None] * stride_vt + d[None, :], mask=dmask[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        if MASKED:
            s = tl.where(_allowed(t_idx, n, k_len, offset, km_row, CAUSAL, HAS_KEY_MASK), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen no allowed key keeps m = -inf; subtracting 0 instead keeps exp2 finite
        # (p = exp2(-inf) = 0, alpha = exp2(-inf) = 0) rather than NaN from -inf - -inf.
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["T", "S", "q_offset"])
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, KEY_MASK,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    stride_lb, stride_lh, stride_lt,
    stride_mb,
    T, S, q_offset, n_kv_heads, D, qk_scale,
    G: tl.constexpr, IS_VARLEN: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_kv_heads
    kh = pid_bh % n_kv_heads
    q_start, q_len, k_start, k_len, offset = _seq_bounds(CU_Q, CU_K, b, T, S, q_offset, IS_VARLEN)
    b64 = b.to(tl.int64)

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    t_idx = rows // G
    h_idx = kh * G + rows % G
    row_ok = t_idx < q_len
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    q_tok = (q_start + t_idx).to(tl.int64)
    q = tl.load(
        Q + b64 * stride_qb + q_tok[:, None] * stride_qt + h_idx[:, None] * stride_qh + d[None, :],
        mask=row_ok[:, None] & dmask[None, :], other=0.0,
    )
    k_base = K + b64 * stride_kb + k_start.to(tl.int64) * stride_kt + kh * stride_kh
    v_base = V + b64 * stride_vb + k_start.to(tl.int64) * stride_vt + kh * stride_vh
    km_row = KEY_MASK + b64 * stride_mb

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    # Key range: [0, hi) holds every key some row of this tile may see; [0, lo_free) the tiles every row
    # sees in full (no causal cut, no end of keys, no key mask), which skip the masking.
    t_first = (pid_m * BLOCK_M) // G
    t_last = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, q_len - 1)
    hi = k_len
    if CAUSAL:
        hi = tl.minimum(hi, t_last + offset + 1)
    hi = tl.where(t_first < q_len, tl.maximum(hi, 0), 0)  # tiles past the sequence do nothing
    if HAS_KEY_MASK:
        lo_free = 0
    else:
        free = k_len
        if CAUSAL:
            free = tl.minimum(free, t_first + offset + 1)
        lo_free = tl.minimum(tl.maximum(free, 0) // BLOCK_N * BLOCK_N, hi // BLOCK_N * BLOCK_N)
    acc, l_i, m_i = _fwd_tiles(
        acc, l_i, m_i, q, k_base, v_base, km_row, stride_kt, stride_vt,
        t_idx, offset, k_len, d, dmask, qk_scale, 0, lo_free,
        False, CAUSAL, HAS_KEY_MASK, BLOCK_N, DOT_PRECISION,
    )
    acc, l_i, m_i = _fwd_tiles(
        acc, l_i, m_i, q, k_base, v_base, km_row, stride_kt, stride_vt,
        t_idx, offset, k_len, d, dmask, qk_scale, lo_free, hi,
        True, CAUSAL, HAS_KEY_MASK, BLOCK_N, DOT_PRECISION,
    )

    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    o = acc / l_safe[:, None]  # rows without keys: acc = 0, so o = 0
    lse = tl.where(has_keys, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    tl.store(
        O + b64 * stride_ob + q_tok[:, None] * stride_ot + h_idx[:, None] * stride_oh + d[None, :],
        o.to(O.dtype.element_ty), mask=row_ok[:, None] & dmask[None, :],
    )
    tl.store(LSE + b64 * stride_lb + h_idx * stride_lh + q_tok * stride_lt, lse, mask=row_ok)


@triton.jit(do_not_specialize=["T"])
def _attn_bwd_delta_kernel(
    O, DO, DELTA, CU_Q,
    stride_ob, stride_oh, stride_ot,
    stride_db, stride_dh, stride_dt,
    stride_lb, stride_lh, stride_lt,
    T, n_heads, D,
    IS_VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """delta = rowsum(do * o) per (token, head), fp32, in the lse layout."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    if IS_VARLEN:
        q_start = tl.load(CU_Q + b)
        q_len = tl.load(CU_Q + b + 1) - q_start
    else:
        q_start = b * 0
        q_len = T
    b64 = b.to(tl.int64)
    t = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    tok = (q_start + t).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    mask = (t < q_len)[:, None] & (d < D)[None, :]
    o = tl.load(O + b64 * stride_ob + h * stride_oh + tok[:, None] * stride_ot + d[None, :], mask=mask, other=0.0)
    do = tl.load(DO + b64 * stride_db + h * stride_dh + tok[:, None] * stride_dt + d[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + b64 * stride_lb + h * stride_lh + tok * stride_lt, delta, mask=t < q_len)


@triton.jit(do_not_specialize=["T", "S", "q_offset"])
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K, KEY_MASK,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot,
    stride_lb, stride_lh, stride_lt,
    stride_dkb, stride_dkh, stride_dkt,
    stride_dvb, stride_dvh, stride_dvt,
    stride_mb,
    T, S, q_offset, n_kv_heads, D, qk_scale, sm_scale,
    G: tl.constexpr, IS_VARLEN: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_kv_heads
    kh = pid_bh % n_kv_heads
    q_start, q_len, k_start, k_len, offset = _seq_bounds(CU_Q, CU_K, b, T, S, q_offset, IS_VARLEN)
    b64 = b.to(tl.int64)

    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    kv_mask = (n < k_len)[:, None] & dmask[None, :]
    k_tok = (k_start + n).to(tl.int64)
    k = tl.load(K + b64 * stride_kb + kh * stride_kh + k_tok[:, None] * stride_kt + d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b64 * stride_vb + kh * stride_vh + k_tok[:, None] * stride_vt + d[None, :], mask=kv_mask, other=0.0)
    km_row = KEY_MASK + b64 * stride_mb
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)

    # Packed rows that may see a key of this tile: under causal masking, queries t >= n_start - offset.
    n_start = pid_n * BLOCK_N
    row_lo = 0
    if CAUSAL:
        row_lo = tl.maximum(n_start - offset, 0) * G // BLOCK_M * BLOCK_M
    row_hi = tl.where(n_start < k_len, q_len * G, 0)  # key tiles past the sequence do nothing
    for start_m in range(row_lo, row_hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        t_idx = rows // G
        h_idx = kh * G + rows % G
        row_ok = t_idx < q_len
        q_tok = (q_start + t_idx).to(tl.int64)
        rmask = row_ok[:, None] & dmask[None, :]
        q = tl.load(Q + b64 * stride_qb + h_idx[:, None] * stride_qh + q_tok[:, None] * stride_qt + d[None, :], mask=rmask, other=0.0)
        do = tl.load(DO + b64 * stride_dob + h_idx[:, None] * stride_doh + q_tok[:, None] * stride_dot + d[None, :], mask=rmask, other=0.0)
        l_off = b64 * stride_lb + h_idx * stride_lh + q_tok * stride_lt
        lse = tl.load(LSE + l_off, mask=row_ok, other=float("inf")) * 1.4426950408889634
        lse = tl.where(lse == float("-inf"), float("inf"), lse)  # rows without keys: p = 0, not NaN
        delta = tl.load(DELTA + l_off, mask=row_ok, other=0.0)

        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        ok = _allowed_t(t_idx, n, k_len, offset, km_row, CAUSAL, HAS_KEY_MASK)
        p_t = tl.where(ok, tl.exp2(s_t - lse[None, :]), 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)

    dk = dk * sm_scale
    tl.store(DK + b64 * stride_dkb + kh * stride_dkh + k_tok[:, None] * stride_dkt + d[None, :], dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + b64 * stride_dvb + kh * stride_dvh + k_tok[:, None] * stride_dvt + d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit(do_not_specialize=["T", "S", "q_offset"])
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, KEY_MASK,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot,
    stride_lb, stride_lh, stride_lt,
    stride_dqb, stride_dqh, stride_dqt,
    stride_mb,
    T, S, q_offset, n_kv_heads, D, qk_scale, sm_scale,
    G: tl.constexpr, IS_VARLEN: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_kv_heads
    kh = pid_bh % n_kv_heads
    q_start, q_len, k_start, k_len, offset = _seq_bounds(CU_Q, CU_K, b, T, S, q_offset, IS_VARLEN)
    b64 = b.to(tl.int64)

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    t_idx = rows // G
    h_idx = kh * G + rows % G
    row_ok = t_idx < q_len
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    q_tok = (q_start + t_idx).to(tl.int64)
    rmask = row_ok[:, None] & dmask[None, :]
    q = tl.load(Q + b64 * stride_qb + h_idx[:, None] * stride_qh + q_tok[:, None] * stride_qt + d[None, :], mask=rmask, other=0.0)
    do = tl.load(DO + b64 * stride_dob + h_idx[:, None] * stride_doh + q_tok[:, None] * stride_dot + d[None, :], mask=rmask, other=0.0)
    l_off = b64 * stride_lb + h_idx * stride_lh + q_tok * stride_lt
    lse = tl.load(LSE + l_off, mask=row_ok, other=float("inf")) * 1.4426950408889634
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    delta = tl.load(DELTA + l_off, mask=row_ok, other=0.0)
    k_base = K + b64 * stride_kb + k_start.to(tl.int64) * stride_kt + kh * stride_kh
    v_base = V + b64 * stride_vb + k_start.to(tl.int64) * stride_vt + kh * stride_vh
    km_row = KEY_MASK + b64 * stride_mb

    t_first = (pid_m * BLOCK_M) // G
    t_last = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, q_len - 1)
    hi = k_len
    if CAUSAL:
        hi = tl.minimum(hi, t_last + offset + 1)
    hi = tl.where(t_first < q_len, tl.maximum(hi, 0), 0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (n < k_len)[:, None] & dmask[None, :]
        k = tl.load(k_base + n[:, None] * stride_kt + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + n[:, None] * stride_vt + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        ok = _allowed(t_idx, n, k_len, offset, km_row, CAUSAL, HAS_KEY_MASK)
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + b64 * stride_dqb + h_idx[:, None] * stride_dqh + q_tok[:, None] * stride_dqt + d[None, :], dq.to(DQ.dtype.element_ty), mask=rmask)


# ----------------------------------------------------------------------------------------- launchers
class _Layout:
    """Strides of one tensor as (batch, head, token): (B, H, T, D) batched, (total, H, D) varlen."""

    def __init__(self, t: torch.Tensor, varlen: bool) -> None:
        if varlen:
            self.strides = (0, t.stride(1), t.stride(0))
        else:
            self.strides = (t.stride(0), t.stride(1), t.stride(2))


def _lse_strides(lse: torch.Tensor, varlen: bool) -> tuple[int, int, int]:
    # batched lse is (B, H, T); varlen lse is (H, total_q)
    return (0, lse.stride(0), lse.stride(1)) if varlen else (lse.stride(0), lse.stride(1), lse.stride(2))


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs must not round to TF32 on the GPU (the tests hold fp32 to 1e-4 relative);
    # the setting is ignored for fp16/bf16 operands.
    return "ieee" if dtype == torch.float32 else "tf32"


def _fwd_config(dtype: torch.dtype, block_d: int, rows: int) -> dict:
    if interpreting():
        # NOTE: the interpreter runs programs one after another; 32 x 32 tiles ran the attention tests in
        # half the time of 16 x 16. The tests' lengths straddle them, and test_other_tile_shapes runs
        # 16-row and asymmetric tiles too.
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    # NOTE: FlashAttention-2's Triton settings for H100 as the starting point (BLOCK_M 128, BLOCK_N 64,
    # 8 warps at head_dim 128); not yet tuned on our GPUs. fp32 operands double the shared memory.
    block_m = 128 if rows >= 128 else max(16, next_pow2(rows))
    if dtype == torch.float32:
        return dict(BLOCK_M=min(block_m, 64), BLOCK_N=32, num_warps=4, num_stages=2)
    return dict(BLOCK_M=block_m, BLOCK_N=64, num_warps=8 if block_d >= 128 else 4, num_stages=3)


def _bwd_config(dtype: torch.dtype, block_d: int) -> dict:
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    # NOTE: dk/dv accumulators of BLOCK_N x head_dim fp32 each live in registers; 64 x 128 x 2 at 8 warps
    # is the tutorial's budget. Untuned.
    if dtype == torch.float32:
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    return dict(BLOCK_M=32 if block_d >= 128 else 64, BLOCK_N=64, num_warps=8 if block_d >= 128 else 4, num_stages=2)


def _check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    key_mask: torch.Tensor | None,
) -> None:
    op = "attention"
    varlen = cu_seqlens_q is not None
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float(op, name, t)
        check_last_dim_contiguous(op, name, t)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    want = 3 if varlen else 4
    layout = "(total, heads, head_dim)" if varlen else "(batch, heads, seq, head_dim)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != want:
            raise ValueError(f"{op}: {name} must be {layout}, got shape {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"{op}: k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    H, KV, D = q.shape[1], k.shape[1], q.shape[-1]
    if k.shape[-1] != D:
        raise ValueError(f"{op}: q has head_dim {D} but k has {k.shape[-1]}")
    if D > MAX_HEAD_DIM:
        raise ValueError(f"{op}: head_dim {D} exceeds the supported {MAX_HEAD_DIM}")
    if KV == 0 or H % KV:
        raise ValueError(f"{op}: n_heads ({H}) must be a multiple of n_kv_heads ({KV})")
    if varlen:
        if cu_seqlens_k is None:
            raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k go together")
        for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
            if cu.dtype != torch.int32 or cu.dim() != 1 or cu.shape[0] < 1:
                raise ValueError(f"{op}: {name} must be a 1-D int32 tensor of batch + 1 offsets, got {cu.dtype} {tuple(cu.shape)}")
        if cu_seqlens_q.shape != cu_seqlens_k.shape:
            raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k must describe the same number of sequences")
        if key_mask is not None:
            raise ValueError(f"{op}: key_mask is for the batched layout; a packed batch has no padding to mask")
    else:
        if k.shape[0] != q.shape[0]:
            raise ValueError(f"{op}: q has batch {q.shape[0]} but k has {k.shape[0]}")
        if key_mask is not None:
            if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (k.shape[0], k.shape[2]):
                raise ValueError(
                    f"{op}: key_mask must be bool of shape (batch, keys) = {(k.shape[0], k.shape[2])}, "
                    f"got {key_mask.dtype} {tuple(key_mask.shape)}"
                )


def _out_like(x: torch.Tensor, varlen: bool) -> torch.Tensor:
    """A fresh tensor shaped like q (or k) stored token-major, (B, T, H, D), viewed as (B, H, T, D).

    The decoder's next step flattens (B, T, H * D), which is then free; its gradients flow back into
    the (B, T, heads, D) layout of the fused qkv projection just as cheaply.
    """
    if varlen:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    B, H, T, D = x.shape
    return torch.empty((B, T, H, D), dtype=x.dtype, device=x.device).transpose(1, 2)


def _dims(q, k, cu_seqlens_q, varlen):
    if varlen:
        return cu_seqlens_q.shape[0] - 1, q.shape[1], k.shape[1], q.shape[2]
    return q.shape[0], q.shape[1], k.shape[1], q.shape[3]


def _forward(q, k, v, cu_q, cu_k, key_mask, max_q, max_k, causal, q_offset, scale):
    varlen = cu_q is not None
    B, H, KV, D = _dims(q, k, cu_q, varlen)
    G = H // KV
    T = max_q if varlen else q.shape[2]
    S = max_k if varlen else k.shape[2]
    o = _out_like(q, varlen)
    lse = torch.empty((H, q.shape[0]) if varlen else (B, H, T), dtype=torch.float32, device=q.device)
    if o.numel() == 0 or B == 0 or T == 0:
        return o, lse
    block_d = max(16, next_pow2(D))
    cfg = _fwd_config(q.dtype, block_d, T * G)
    km = key_mask.view(torch.uint8) if key_mask is not None else lse  # any pointer when unused
    if key_mask is not None and km.stride(-1) != 1:
        km = km.contiguous()
    cu_q_arg = cu_q if varlen else lse
    cu_k_arg = cu_k if varlen else lse
    grid = (triton.cdiv(T * G, cfg["BLOCK_M"]), B * KV)
    _attn_fwd_kernel[grid](
        q, k, v, o, lse, cu_q_arg, cu_k_arg, km,
        *_Layout(q, varlen).strides, *_Layout(k, varlen).strides, *_Layout(v, varlen).strides,
        *_Layout(o, varlen).strides, *_lse_strides(lse, varlen),
        km.stride(0) if key_mask is not None else 0,
        T, S, q_offset, KV, D, scale * LOG2E,
        G=G, IS_VARLEN=varlen, CAUSAL=causal, HAS_KEY_MASK=key_mask is not None,
        BLOCK_D=block_d, DOT_PRECISION=_dot_precision(q.dtype), **cfg,
    )
    return o, lse


def _backward(do, q, k, v, o, lse, cu_q, cu_k, key_mask, max_q, max_k, causal, q_offset, scale):
    varlen = cu_q is not None
    B, H, KV, D = _dims(q, k, cu_q, varlen)
    G = H // KV
    T = max_q if varlen else q.shape[2]
    S = max_k if varlen else k.shape[2]
    dq, dk, dv = _out_like(q, varlen), _out_like(k, varlen), _out_like(v, varlen)
    if B == 0 or dq.numel() == 0:
        return dq, dk.zero_(), dv.zero_()  # no query attends: keys get zero gradient
    if do.stride(-1) != 1:
        do = do.contiguous()
    block_d = max(16, next_pow2(D))
    delta = torch.empty_like(lse)
    km = key_mask.view(torch.uint8) if key_mask is not None else lse
    if key_mask is not None and km.stride(-1) != 1:
        km = km.contiguous()
    cu_q_arg = cu_q if varlen else lse
    cu_k_arg = cu_k if varlen else lse
    lse_strides = _lse_strides(lse, varlen)
    do_strides = _Layout(do, varlen).strides
    dm = 16 if interpreting() else 64
    _attn_bwd_delta_kernel[(triton.cdiv(T, dm), B * H)](
        o, do, delta, cu_q_arg, *_Layout(o, varlen).strides, *do_strides, *lse_strides,
        T, H, D, IS_VARLEN=varlen, BLOCK_M=dm, BLOCK_D=block_d,
    )
    cfg = _bwd_config(q.dtype, block_d)
    common = dict(
        G=G, IS_VARLEN=varlen, CAUSAL=causal, HAS_KEY_MASK=key_mask is not None,
        BLOCK_D=block_d, DOT_PRECISION=_dot_precision(q.dtype), **cfg,
    )
    strides_qkv = (*_Layout(q, varlen).strides, *_Layout(k, varlen).strides, *_Layout(v, varlen).strides)
    km_stride = km.stride(0) if key_mask is not None else 0
    _attn_bwd_dkdv_kernel[(triton.cdiv(S, cfg["BLOCK_N"]), B * KV)](
        q, k, v, do, lse, delta, dk, dv, cu_q_arg, cu_k_arg, km,
        *strides_qkv, *do_strides, *lse_strides,
        *_Layout(dk, varlen).strides, *_Layout(dv, varlen).strides, km_stride,
        T, S, q_offset, KV, D, scale * LOG2E, scale, **common,
    )
    _attn_bwd_dq_kernel[(triton.cdiv(T * G, cfg["BLOCK_M"]), B * KV)](
        q, k, v, do, lse, delta, dq, cu_q_arg, cu_k_arg, km,
        *strides_qkv, *do_strides, *lse_strides,
        *_Layout(dq, varlen).strides, km_stride,
        T, S, q_offset, KV, D, scale * LOG2E, scale, **common,
    )
    return dq, dk, dv


# ---------------------------------------------------------------------------------------- torch ops
@torch.library.custom_op("havoc::attention", mutates_args=())
def _attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    key_mask: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool,
    q_offset: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k, key_mask)
    extra = [t for t in (cu_seqlens_q, cu_seqlens_k, key_mask) if t is not None]
    check_device("attention", q, k, v, *extra)
    return _forward(q, k, v, cu_seqlens_q, cu_seqlens_k, key_mask, max_seqlen_q, max_seqlen_k, causal, q_offset, scale)


@_attention_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, key_mask, max_seqlen_q, max_seqlen_k, causal, q_offset, scale):
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k, key_mask)
    varlen = cu_seqlens_q is not None
    if varlen:
        return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    B, H, T, D = q.shape
    return q.new_empty((B, T, H, D)).transpose(1, 2), q.new_empty((B, H, T), dtype=torch.float32)


@torch.library.custom_op("havoc::attention_backward", mutates_args=())
def _attention_backward_op(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    key_mask: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool,
    q_offset: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(
        do, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, key_mask, max_seqlen_q, max_seqlen_k, causal, q_offset, scale
    )


@_attention_backward_op.register_fake
def _(do, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, key_mask, max_seqlen_q, max_seqlen_k, causal, q_offset, scale):
    varlen = cu_seqlens_q is not None
    return _out_like(q, varlen), _out_like(k, varlen), _out_like(v, varlen)


def _setup(ctx, inputs, output):
    q, k, v, cu_q, cu_k, key_mask, max_q, max_k, causal, q_offset, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k, key_mask)
    ctx.args = (max_q, max_k, causal, q_offset, scale)
    ctx.mark_non_differentiable(lse)


def _grad(ctx, do, dlse):
    q, k, v, o, lse, cu_q, cu_k, key_mask = ctx.saved_tensors
    dq, dk, dv = _attention_backward_op(do, q, k, v, o, lse, cu_q, cu_k, key_mask, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None, None


_attention_op.register_autograd(_grad, setup_context=_setup)


# ------------------------------------------------------------------------------------- functional
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    q_offset: int | None = None,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention (Triton), the drop-in for `reference.attention`.

    Args:
        q: (B, n_heads, T, head_dim); any strides with a contiguous last dimension.
        k, v: (B, n_kv_heads, S, head_dim); n_heads a multiple of n_kv_heads; never repeated in memory.
        causal: query t may attend key j only if j <= q_offset + t.
        q_offset: position of the first query among the keys; default S - T (bottom-right aligned).
        key_mask: optional (B, S) bool, False at keys to ignore (padding). Queries without any key to
            attend get zeros.
        scale: softmax scale, default 1 / sqrt(head_dim).
        return_lse: also return the natural-log log-sum-exp of each query's scores, (B, n_heads, T) fp32
            (-inf for a query without keys).

    Returns:
        (B, n_heads, T, head_dim) in q's dtype (stored token-major: `.transpose(1, 2)` is contiguous),
        and the lse when asked.
    """
    T, S = q.shape[-2], k.shape[-2]
    offset = S - T if q_offset is None else int(q_offset)
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    o, lse = _attention_op(q, k, v, None, None, key_mask, 0, 0, causal, offset, sm_scale)
    return (o, lse) if return_lse else o


def attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention over a packed batch of sequences (Triton), as `reference.attention_varlen`.

    Args:
        q: (total_q, n_heads, head_dim), the sequences' queries one after another.
        k, v: (total_k, n_kv_heads, head_dim).
        cu_seqlens_q, cu_seqlens_k: (B + 1,) int32 offsets of each sequence, starting at 0, on q's device.
        max_seqlen_q, max_seqlen_k: the longest sequence's lengths (host ints: they size the grid, so
            the op never reads the offsets back from the device).
        causal: bottom-right aligned causal masking within each sequence.
        scale: softmax scale, default 1 / sqrt(head_dim).
        return_lse: also return the log-sum-exp per (head, query), (n_heads, total_q) fp32.

    Returns:
        (total_q, n_heads, head_dim) in q's dtype, and the lse when asked.
    """
    if max_seqlen_q < 0 or max_seqlen_k < 0:
        raise ValueError("attention_varlen: max_seqlen_q and max_seqlen_k must be >= 0")
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    o, lse = _attention_op(
        q, k, v, cu_seqlens_q, cu_seqlens_k, None, int(max_seqlen_q), int(max_seqlen_k), causal, 0, sm_scale
    )
    return (o, lse) if return_lse else o
