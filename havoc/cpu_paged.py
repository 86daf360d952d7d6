"""The paged KV cache's CPU kernels (C++, `csrc/paged_attention.cpp`), registered with `havoc.ops`.

Three ops on CPU tensors — write new K/V rows into their pool slots, copy blocks for copy-on-write, and
decode attention over block tables — for fp32 and bf16 storage. Tensors reach the extension as NumPy views
(bf16 as its int16 bits; NumPy has no bfloat16), never copies; the extension checks every slot, block id and
length against the pool before touching memory and raises IndexError (nothing written) for a bad one.
Other dtypes (float16) take the reference path.

Decode attention reads each sequence's blocks in place: one pass over K and V with an online softmax, the
G = n_heads / n_kv_heads query heads of a KV head together so each K/V row is read once per KV head,
threads over (sequence, KV head[, split]) via OpenMP. The reference gathers the blocks into a padded
contiguous K/V first (a second copy of everything it reads) and then calls SDPA; bench/RESULTS.md compares.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from havoc import _C, ops
from havoc.kernels import reference

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


def _np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (bf16 as int16 bits). No copy."""
    t = t.detach()
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _features_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _check_pools(k_pool: torch.Tensor, v_pool: torch.Tensor) -> None:
    if k_pool.dim() != 4 or k_pool.shape != v_pool.shape:
        raise ValueError(
            f"k_pool and v_pool must share one shape (num_blocks, block_size, n_kv_heads, head_dim), got "
            f"{tuple(k_pool.shape)} and {tuple(v_pool.shape)}"
        )
    if k_pool.dtype != v_pool.dtype:
        raise ValueError(f"k_pool is {k_pool.dtype} but v_pool is {v_pool.dtype}")
    if not (k_pool.is_contiguous() and v_pool.is_contiguous()):
        raise ValueError("the pools must be contiguous")


def write_kv(k_pool: torch.Tensor, v_pool: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    """pool[slots[i]] = row i, for K and V (C++; in place).

    Args:
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim), contiguous, fp32 or bf16.
        k, v: (n, n_kv_heads, head_dim) in the pools' dtype; rows and heads may be strided, so the model's
            views of its fused q|k|v projection go in without a copy (a strided head_dim is copied first).
        slots: (n,) int64 slot indices, distinct, each in [0, num_blocks * block_size).

    Raises:
        ValueError: shapes or dtypes that do not fit the pools.
        IndexError: a slot outside the pool (nothing is written).
    """
    _check_pools(k_pool, v_pool)
    if k_pool.dtype not in _DTYPES:
        return reference.write_kv(k_pool, v_pool, k, v, slots)
    if k.dtype != k_pool.dtype or v.dtype != k_pool.dtype:
        raise ValueError(f"k and v must be {k_pool.dtype} like the pools, got {k.dtype} and {v.dtype}")
    if slots.dtype != torch.int64:
        raise ValueError(f"slots must be int64, got {slots.dtype}")
    # The kernel reads head_dim contiguously; a transposed projection (havoc.cpu_ops may return
    # (W @ x.T).T) has it strided, and is copied.
    k, v = _features_contiguous(k), _features_contiguous(v)
    _C.write_kv(_np(k_pool), _np(v_pool), _np(k), _np(v), slots.numpy())


def copy_blocks(pools: list[torch.Tensor], copies: torch.Tensor) -> None:
    """For every pool, block dst = block src for each (src, dst) row of `copies` (C++; in place).

    Args:
        pools: same-shaped contiguous tensors (num_blocks, block_size, n_kv_heads, head_dim), e.g. every
            layer's K and V pool.
        copies: (k, 2) int64 (src, dst) block ids, as `BlockManager.step` returns them; destinations
            distinct and never a source.

    Raises:
        ValueError: mismatched pools, or copies that do not commute.
        IndexError: a block id outside the pool (nothing is copied).
    """
    if pools[0].dtype not in _DTYPES:
        return reference.copy_blocks(pools, copies)
    for p in pools:
        if p.dtype != pools[0].dtype or p.shape != pools[0].shape or not p.is_contiguous():
            raise ValueError("the pools must be contiguous tensors of one shape and dtype")
    if copies.dtype != torch.int64:
        raise ValueError(f"copies must be int64, got {copies.dtype}")
    _C.copy_blocks([_np(p) for p in pools], copies.numpy())


def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    *,
    scale: float | None = None,
    num_splits: int = 0,
    isa: str = "auto",
) -> torch.Tensor:
    """Decode attention over paged K/V (C++): one query token per sequence.

    Args:
        q: (B, n_heads, head_dim), any strides; n_heads a multiple of the pools' n_kv_heads.
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim), contiguous, q's dtype.
        block_tables: (B, width) int32 block ids (entries past a sequence's last block are not read).
        lengths: (B,) int32 tokens per sequence, at most width * block_size; 0 gives zeros.
        scale: softmax scale, default 1 / sqrt(head_dim).
        num_splits: split-K chunks per sequence; 0 lets the kernel choose (it splits only when
            batch x n_kv_heads is too small to keep the threads busy).
        isa: kernel variant, "auto" or one of `_C.decode_attention_isas()` (tests force each).

    Returns:
        (B, n_heads, head_dim) in q's dtype.

    Raises:
        ValueError: shapes or dtypes that do not fit.
        IndexError: a block id outside the pool or a length beyond the table (nothing is read).
    """
    _check_pools(k_pool, v_pool)
    if q.dtype not in _DTYPES:
        return reference.paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, scale=scale)
    if q.dtype != k_pool.dtype:
        raise ValueError(f"q is {q.dtype} but the pools are {k_pool.dtype}")
    if block_tables.dtype != torch.int32 or lengths.dtype != torch.int32:
        raise ValueError(f"block_tables and lengths must be int32, got {block_tables.dtype} and {lengths.dtype}")
    q = _features_contiguous(q)
    out = torch.empty(q.shape, dtype=q.dtype)
    _C.paged_decode_attention(
        _np(out), _np(q), _np(k_pool), _np(v_pool), block_tables.numpy(), lengths.numpy(),
        scale=1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale),
        dtype=_DTYPES[q.dtype], num_splits=num_splits, isa=isa,
    )
    return out


ops.register_fast("write_kv", "cpu", write_kv)
ops.register_fast("copy_blocks", "cpu", copy_blocks)
ops.register_fast("paged_decode_attention", "cpu", paged_decode_attention)
