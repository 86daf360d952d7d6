"""Reference implementations of every havoc op in plain PyTorch.

The oracle for the kernel tests, the baseline of the benchmarks and the path taken wherever no fast
kernel applies (CPU tensors, forced with HAVOC_OPS=reference). Short and obviously correct first; the
numerics follow Hugging Face's Llama so that the parity tests compare like with like:

- linear:    y = x @ W.T (no bias); linear_int8 the same for int8 weights with one scale per group of
             inputs, with the activations quantized alike (quantize_int8) or kept in fp32.
- rms_norm:  y = w * (x / sqrt(mean(x^2) + eps)), the normalisation in fp32, cast to x's dtype before
             the weight multiply (Llama's convention).
- rope:      rotate-half convention over the first `rotary_dim` features of each head (queries and
             keys in one call),
             angle(p, i) = p * theta^(-2i / rotary_dim); the rotation is computed in fp32.
- add_rms_norm: h = x + residual (in x's dtype), then (rms_norm(h), h): the decoder's residual add and
             the next sublayer's norm as one op.
- swiglu:    silu(gate) * up.
- attention: causal (bottom-right aligned, so queries may sit at an offset into the keys) grouped-query
             attention. Query heads are grouped per KV head by a reshape, so K and V are never repeated
             in memory; the grouped problem goes to torch's scaled_dot_product_attention (fp32
             accumulation). Tests check it against an explicit float64 softmax.
- attention_varlen: the same per sequence of a packed (ragged) batch given by cumulative lengths, so
             tokens never attend across sequences.
- paged KV cache (pools of shape (num_blocks, block_size, n_kv_heads, head_dim); token t of a sequence
             lives at slot table[t // block_size] * block_size + t % block_size):
             write_kv     pool[slot[i]] = row i (an index_copy_);
             copy_blocks  pool[dst] = pool[src] for every (src, dst) pair, every pool;
             paged_decode_attention  gather each sequence's blocks into a contiguous (padded) K/V, mask
             the padding, and call `attention` — 2x the K/V traffic of a kernel that reads blocks in place.
- linear_cross_entropy: mean (or summed) cross-entropy of logits h @ W.T against target ids, ignoring
             `ignore_index`; the fp32 logits are materialised here, which the fused kernel avoids.

This module never imports Triton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "linear",
    "quantize_int8",
    "linear_int8",
    "rms_norm",
    "add_rms_norm",
    "rope_cos_sin",
    "apply_rope",
    "swiglu",
    "attention",
    "attention_varlen",
    "write_kv",
    "copy_blocks",
    "paged_decode_attention",
    "linear_cross_entropy",
]

def _f32(x: torch.Tensor) -> torch.Tensor:
    # NOTE: x.float() on an fp32 tensor is still an op dispatch; on the decode path (~2000 ops a token)
    # skipping it saved 6% of the ops.
    return x if x.dtype == torch.float32 else x.float()


def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T: (..., in) x (out, in) -> (..., out)."""
    return F.linear(x, weight)


def quantize_int8(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each run of `group` features of the last dimension.

    scale = max |x| over the group / 127; q = round-half-even(x * (1 / scale)) clamped to [-127, 127];
    a group of zeros gets scale 0 and q 0. In fp32, in this order, so the C++ kernels (which quantize
    activations per call) reproduce it exactly.

    Args:
        x: (..., K) float tensor.
        group: features per scale; the last group of a row may be shorter.

    Returns:
        (q, scales): (..., K) int8 and (..., ceil(K / group)) fp32.
    """
    K = x.shape[-1]
    xg = F.pad(_f32(x), (0, -K % group)).unflatten(-1, (-1, group))  # (..., G, group)
    scales = xg.abs().amax(-1) / 127.0  # (..., G)
    inv = torch.where(scales > 0, 1.0 / scales, torch.zeros_like(scales))
    q = torch.round(xg * inv[..., None]).clamp_(-127, 127).to(torch.int8).flatten(-2)[..., :K]
    return q, scales


def linear_int8(
    x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, group: int, *, activations: str = "int8"
) -> torch.Tensor:
    """x @ W.T for int8 weights W = q * scale (one scale per `group` inputs of a row), in fp32.

    activations="int8" quantizes x the same way (`quantize_int8`, the same groups) and sums per group the
    exact integer products times both scales, as llama.cpp's Q8_0 x Q8_0 dot product does; "fp32" keeps x
    as it is (weight-only quantization).

    Args:
        x: (..., in) activations.
        q: (out, in) int8 weight values.
        scales: (out, ceil(in / group)) fp32.
        group: inputs per scale.
        activations: "int8" or "fp32".

    Returns:
        (..., out) fp32.
    """
    K = q.shape[-1]
    wg = F.pad(q.double(), (0, -K % group)).unflatten(-1, (-1, group))  # (out, G, group)
    if activations == "fp32":
        w = (wg * scales.double()[..., None]).flatten(-2)[:, :K]
        return (_f32(x).double() @ w.T).float()
    if activations != "int8":
        raise ValueError(f"activations must be 'int8' or 'fp32', got {activations!r}")
    xq, xs = quantize_int8(x, group)
    xg = F.pad(xq.double(), (0, -K % group)).unflatten(-1, (-1, group))  # (..., G, group)
    dots = torch.einsum("...gk,ngk->...ng", xg, wg)  # exact: integers below 2^53
    return (dots * xs.double()[..., None, :] * scales.double()).sum(-1).float()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension.

    Args:
        x: (..., dim) activations.
        weight: (dim,) gain.
        eps: added to the mean square before the square root.

    Returns:
        (..., dim) in x's dtype.
    """
    xf = _f32(x)
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * _cast(normed, x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add followed by RMSNorm.

    Args:
        x: (..., dim) the sublayer output to add.
        residual: (..., dim) the residual stream.
        weight: (dim,) gain.
        eps: added to the mean square before the square root.

    Returns:
        (rms_norm(h, weight, eps), h) with h = x + residual, the new residual stream.
    """
    h = x + residual
    return rms_norm(h, weight, eps), h

def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotary angles for absolute token positions (transformers' layout).

    Args:
        positions: integer tensor of any shape (typically (B, T)).
        rotary_dim: number of rotated features per head (even).
        theta: the RoPE base.

    Returns:
        (cos, sin), each positions.shape + (rotary_dim,), fp32; the angles of features i and
        i + rotary_dim/2 are equal (the rotate-half pairing).
    """
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=positions.device).float() / rotary_dim
    inv_freq = 1.0 / (theta**exponent)  # (rotary_dim/2,)
    angles = positions[..., None].float() * inv_freq  # (..., rotary_dim/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., rotary_dim)
    return angles.cos(), angles.sin()

def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (rotate-half convention), computed in fp32.

    Queries and keys are rotated in one call: pass the q|k heads of a fused projection together.

    Args:
        x: (B, T, heads, head_dim); may be a strided view (e.g. the q|k slice of a qkv tensor).
        cos, sin: (B, T, rotary_dim) from `rope_cos_sin`, or already (B, T, 1, rotary_dim); B may be 1
            to broadcast.

    Returns:
        (B, T, heads, head_dim), contiguous, in x's dtype.
    """
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B, T, 1, rot): broadcast over heads
    rot = cos.shape[-1]
    xf = _f32(x)
    xr = xf[..., :rot] if rot < x.shape[-1] else xf
    x1, x2 = xr.chunk(2, dim=-1)
    out = xr * cos + torch.cat((-x2, x1), dim=-1) * sin  # x * cos + rotate_half(x) * sin
    if rot < x.shape[-1]:  # partial rotary: the tail passes through
        out = torch.cat((out, xf[..., rot:]), dim=-1)
    return _cast(out, x.dtype)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, elementwise."""
    return F.silu(gate) * up

def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    q_offset: int | None = None,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Grouped-query scaled dot-product attention.

    Args:
        q: (B, n_heads, T, head_dim).
        k, v: (B, n_kv_heads, S, head_dim); n_heads must be a multiple of n_kv_heads. Query head h reads
            KV head h // (n_heads // n_kv_heads).
        causal: query i may attend key j only if j <= q_offset + i.
        q_offset: absolute position of the first query among the keys; defaults to S - T (the queries
            are the last T keys, as in prefill or decode against a cache).
        key_mask: optional (B, S) bool, False for keys that must be ignored (padding). A query with no
            key left to attend gets a zero output rather than NaN.
        scale: softmax scale, default 1 / sqrt(head_dim).

    Returns:
        (B, n_heads, T, head_dim) in q's dtype.
    """
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    G = H // KV
    offset = S - T if q_offset is None else q_offset
    if causal and key_mask is None and T == S and offset == 0:
        # A whole causal prompt: SDPA's own causal GQA kernel (reads K/V per group, no repeat).
        # NOTE: 1.8x faster than the grouped path below for a 512-token SmolLM2 prefill (fp32 6.4 vs
        # 11.3 ms a layer; bf16 6.3 vs 8.3); for decode the grouped path wins (bf16 up to 7x).
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    # Each KV head's query group becomes one (G*T)-row query matrix: K/V are read, never repeated.
    # Row r of a group is query r % T.
    qg = q.reshape(B, KV, G * T, D)  # (B, KV, G*T, D)
    allowed = None
    if causal:
        if offset < S - 1:  # otherwise every query sees every key (decode): no mask needed
            qpos = torch.arange(T, device=q.device)[:, None] + offset
            allowed = (torch.arange(S, device=q.device)[None, :] <= qpos).repeat(G, 1)  # (G*T, S)
    if key_mask is not None:
        km = key_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        allowed = km if allowed is None else allowed & km
    # NOTE: SDPA's fused CPU kernel over the grouped query was 2-8x faster than matmul + softmax + matmul
    # for SmolLM2 shapes (decode at S=100: 38 vs 155 us fp32; bf16 prefill 512: 6.8 vs 22 ms).
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=allowed, scale=scale)  # (B, KV, G*T, D)
    if key_mask is not None:
        out = out.nan_to_num(0.0)  # queries whose keys are all padding
    return out.view(B, H, T, D)


def write_kv(k_pool: torch.Tensor, v_pool: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    """Store K/V rows into their slots of a paged pool, in place.

    Args:
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim), contiguous.
        k, v: (n, n_kv_heads, head_dim) rows, in the pools' dtype.
        slots: (n,) int64 slot indices (block * block_size + offset), distinct.
    """
    kv, d = k_pool.shape[2], k_pool.shape[3]
    k_pool.view(-1, kv, d).index_copy_(0, slots, k)
    v_pool.view(-1, kv, d).index_copy_(0, slots, v)


def copy_blocks(pools: list[torch.Tensor], copies: torch.Tensor) -> None:
    """Copy whole blocks inside each pool (the copy-on-write of a fork), in place.

    Args:
        pools: tensors of shape (num_blocks, ...), e.g. every layer's K and V pool.
        copies: (k, 2) int64 (src, dst) block ids; destinations distinct and never a source.
    """
    if copies.numel() == 0:
        return
    src, dst = copies[:, 0], copies[:, 1]
    for pool in pools:
        pool.index_copy_(0, dst, pool.index_select(0, src))


def attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int = 0,
    max_seqlen_k: int = 0,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Grouped-query attention over a packed batch of sequences of different lengths.

    Sequence b owns query rows cu_seqlens_q[b]:cu_seqlens_q[b+1] and key rows cu_seqlens_k[b]:
    cu_seqlens_k[b+1]; causal masking is bottom-right aligned per sequence (its queries are its last
    keys), as `attention` with the default q_offset.

    Args:
        q: (total_q, n_heads, head_dim).
        k, v: (total_k, n_kv_heads, head_dim).
        cu_seqlens_q, cu_seqlens_k: (batch + 1,) int cumulative lengths starting at 0.
        max_seqlen_q, max_seqlen_k: the longest sequences (the op's arguments, which size the Triton grid;
            the reference reads the lengths from cu_seqlens and ignores them).
        causal: mask keys after each query's position.
        scale: softmax scale, default 1 / sqrt(head_dim).

    Returns:
        (total_q, n_heads, head_dim) in q's dtype; a query with no key to attend gets zeros.
    """
    out = torch.zeros_like(q)
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[b], bounds_q[b + 1], bounds_k[b], bounds_k[b + 1]
        if q1 == q0 or k1 == k0:
            continue  # nothing to compute, or no keys: zeros
        qb = q[q0:q1].transpose(0, 1)[None]  # (1, H, T_b, D)
        kb, vb = k[k0:k1].transpose(0, 1)[None], v[k0:k1].transpose(0, 1)[None]  # (1, KV, S_b, D)
        offset = (k1 - k0) - (q1 - q0)
        if causal and offset < 0:  # the first queries precede every key: give them explicit zeros
            key_mask = torch.ones(1, k1 - k0, dtype=torch.bool, device=q.device)
            ob = attention(qb, kb, vb, causal=True, q_offset=offset, key_mask=key_mask, scale=scale)
        else:
            ob = attention(qb, kb, vb, causal=causal, q_offset=offset, scale=scale)
        out[q0:q1] = ob[0].transpose(0, 1)
    return out


def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence over that sequence's cached K/V in a paged pool.

    Gathers every sequence's blocks into a padded contiguous K/V, masks positions >= its length, and
    runs `attention` (no causal mask: the query is the newest token and sees all of its sequence).

    Args:
        q: (B, n_heads, head_dim).
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim).
        block_tables: (B, width) integer block ids; entries past a sequence's last block are ignored.
        lengths: (B,) cached tokens per sequence (the new token's K/V included); 0 gives a zero output.
        scale: softmax scale, default 1 / sqrt(head_dim).

    Returns:
        (B, n_heads, head_dim) in q's dtype.
    """
    B, H, D = q.shape
    block_size, kv = k_pool.shape[1], k_pool.shape[2]
    width = block_tables.shape[1]
    lengths = lengths.to(device=q.device, dtype=torch.long)
    used = torch.arange(width, device=q.device)[None, :] * block_size < lengths[:, None]  # (B, width)
    tables = torch.where(used, block_tables.to(device=q.device, dtype=torch.long), 0)
    k = k_pool[tables].view(B, width * block_size, kv, D).transpose(1, 2)  # (B, KV, S, D)
    v = v_pool[tables].view(B, width * block_size, kv, D).transpose(1, 2)
    key_mask = torch.arange(width * block_size, device=q.device)[None, :] < lengths[:, None]  # (B, S)
    out = attention(q[:, :, None], k, v, causal=False, key_mask=key_mask, scale=scale)  # (B, H, 1, D)
    return out[:, :, 0]


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of the logits h @ weight.T, computed in fp32.

    Args:
        h: (..., dim) hidden states.
        weight: (vocab, dim) output projection (the tied embedding).
        targets: h.shape[:-1] integer ids; positions equal to ignore_index contribute nothing.
        ignore_index: the id that marks positions without a target.
        reduction: "mean" over the positions with a target (NaN when there are none, as PyTorch) or "sum".

    Returns:
        The scalar loss (fp32).
    """
    logits = F.linear(h, weight).float()  # (..., vocab): the tensor the fused kernel never builds
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index, reduction=reduction
    )
