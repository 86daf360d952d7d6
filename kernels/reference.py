"""Reference implementations of every havoc op in plain PyTorch.

The oracle for the kernel tests, the baseline of the benchmarks and the path taken wherever no fast
kernel applies (CPU tensors, forced with HAVOC_OPS=reference). Short and obviously correct first; the
numerics follow Hugging Face's Llama so that the parity tests compare like with like:

- rms_norm:  y = w * (x / sqrt(mean(x^2) + eps)), the normalisation in fp32, cast to x's dtype before
             the weight multiply (Llama's convention).
- rope:      rotate-half convention over the first `rotary_dim` features of each head,
             angle(p, i) = p * theta^(-2i / rotary_dim); the rotation is computed in fp32.
- swiglu:    silu(gate) * up.
- attention: causal (bottom-right aligned, so queries may sit at an offset into the keys) grouped-query
             attention. Query heads are grouped per KV head by a reshape, so K and V are never repeated
             in memory; the softmax is taken in fp32.

This module never imports Triton.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["rms_norm", "rope_cos_sin", "apply_rope", "swiglu", "attention"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension.

    Args:
        x: (..., dim) activations.
        weight: (dim,) gain.
        eps: added to the mean square before the square root.

    Returns:
        (..., dim) in x's dtype.
    """
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotary angles for absolute token positions.

    Args:
        positions: integer tensor of any shape (typically (B, T)).
        rotary_dim: number of rotated features per head (even).
        theta: the RoPE base.

    Returns:
        (cos, sin), each positions.shape + (rotary_dim // 2,), fp32.
    """
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=positions.device).float() / rotary_dim
    inv_freq = 1.0 / (theta**exponent)  # (rotary_dim/2,)
    angles = positions[..., None].float() * inv_freq  # (..., rotary_dim/2)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, H, hd); cos, sin: (B, T, rot/2)
    half = cos.shape[-1]
    c, s = cos[:, :, None, :], sin[:, :, None, :]  # (B, T, 1, rot/2)
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half : 2 * half]
    rotated = [x1 * c - x2 * s, x2 * c + x1 * s]
    if 2 * half < x.shape[-1]:  # partial rotary: the tail passes through
        rotated.append(xf[..., 2 * half :])
    return torch.cat(rotated, dim=-1).to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding of queries and keys (rotate-half convention).

    Args:
        q: (B, T, n_heads, head_dim).
        k: (B, T, n_kv_heads, head_dim).
        cos, sin: (B, T, rotary_dim // 2) from `rope_cos_sin`; B may be 1 to broadcast.

    Returns:
        (q, k) rotated, in their input dtypes.
    """
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


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
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    qg = q.reshape(B, KV, G * T, D)  # each KV head's query group as one matrix: K/V are read, not repeated
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # (B, KV, G*T, S)
    scores = scores.view(B, KV, G, T, S)

    allowed = None
    if causal:
        offset = S - T if q_offset is None else q_offset
        qpos = torch.arange(T, device=q.device)[:, None] + offset
        allowed = torch.arange(S, device=q.device)[None, :] <= qpos  # (T, S)
    if key_mask is not None:
        km = key_mask[:, None, None, None, :].bool()  # (B, 1, 1, 1, S)
        allowed = km if allowed is None else allowed & km
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if key_mask is not None:
        probs = probs.nan_to_num(0.0)  # rows with every key masked (padding queries)
    out = torch.matmul(probs.view(B, KV, G * T, S).to(v.dtype), v)  # (B, KV, G*T, D)
    return out.view(B, H, T, D)
