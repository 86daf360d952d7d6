"""The CPU backend: the C++ extension's kernels (csrc/, no libtorch) and torch's own GEMMs, for CPU tensors.

Registered with `havoc.backends`, one implementation per op:

- linear(x, weight): the C++ decode kernels (csrc/cpu_decode.cpp) for products of at most `MAX_ROWS`
  activation rows (decode, small batches) and int8 weights at any size; above that the formulation of the
  product measured fastest for the shape (`_planned`), the C++ kernel among the candidates;
- write_kv(k_pool, v_pool, k, v, slots), copy_blocks(pools, copies), paged_decode_attention(q, k_pool,
  v_pool, block_tables, lengths): the paged KV cache's kernels (csrc/paged_attention.cpp).

Tensors reach the extension as NumPy views (bf16 as its int16 bits: NumPy has no bfloat16), never copies;
the extension checks every slot, block id and length against the pools before touching memory and raises
IndexError (nothing written) for a bad one.

The decode kernels (csrc/cpu_decode.h) stream a weight matrix row-major in tiles of weight rows x
activation rows held in registers, fp32 accumulation, threads over weight rows. Kernel variants are chosen
at run time from the CPU's instructions (`variant_status()`): AVX2 or AVX-512 FMAs over weights widened
to fp32, AVX-VNNI / AVX512-VNNI int8 dot products, AVX512-BF16 bf16 dot products, AMX tiles from 4
activation rows. Each weight format means one formula on every variant: fp32 x fp32; bf16 weights x
activations rounded to bf16; int8 weights (`Int8Weight`) x activations quantized to int8 per row and group
of 64 (as llama.cpp's Q8_0 x Q8_0), or x fp32 activations (activations="fp32").

Decode-sized torch products: how fast torch's CPU x @ W.T runs depends erratically on how the product is
put to the BLAS (measured on SmolLM2's shapes, 2-core Xeon without AVX512-BF16: (W @ x.T).T was 2-4x
faster than F.linear at 8-32 rows in fp32 but 2-4x slower at 2-4; bf16 GEMMs were emulated and upcasting
x and W to fp32 was 2-4x faster at 64-512 rows). No fixed rule fits, so the first call of each (weight
shape, row bucket, dtype) times the candidates that apply and keeps the fastest (as cuDNN's benchmark
mode does); a candidate must beat F.linear by 10% to be chosen. Calls recorded by autograd always take
F.linear. Every candidate computes the same product with fp32 accumulation; they differ in rounding order
only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from havoc import _C, backends
from havoc.errors import ConfigError
from havoc.kernels import reference

MAX_ROWS = 64  # ops.linear takes the C++ kernel up to this many rows without timing anything
INT8_GROUP = 64  # inputs per int8 scale (a multiple of 64)
INT8_ACTIVATIONS = ("int8", "fp32")
INT8_LAYOUTS = ("rows", "interleaved")
DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}  # what the C++ kernels take, by name


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (bf16 as its int16 bits). No copy."""
    t = t.detach()
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def isas() -> list[str]:
    """Kernel variants of the decode kernels this CPU runs, narrowest first."""
    return list(_C.linear_isas())


def auto_isa() -> str:
    """The variant "auto" runs: the widest in `isas()`, passing over avx512_bf16 where vdpbf16ps issues too
    slowly to beat widened bf16 (`_C.bf16_dot_rate()`, measured once per process)."""
    return _C.linear_auto()


def variant_status() -> dict[str, str]:
    """Every kernel variant of the build, narrowest first: "runs" (and which "auto" picks) or why it cannot."""
    auto = auto_isa()
    out = {}
    for v in _C.linear_variants():
        why = _C.linear_variant_missing(v)
        out[v] = ("runs ('auto' picks it)" if v == auto else "runs") if not why else f"unavailable: {why}"
    return out


# --- int8 weights --------------------------------------------------------------------------------------


class Int8Weight:
    """A weight quantized to int8 with one fp32 scale per `group` consecutive inputs of a row (symmetric,
    `reference.quantize_int8`: w ~= q * scale, scale = max |w| over the group / 127), stored for the
    kernels as the unsigned bytes q + 128 in input order, each row padded to a multiple of 64 inputs with
    128 (q = 0) — csrc/cpu_decode.h says why.

    Attributes:
        packed: (out, in rounded up to 64) uint8, the bytes q + 128.
        scales: (out, ceil(in / group)) fp32.
        group: inputs per scale (a multiple of 64).
        shape: (out, in).
        activations: what the product multiplies the weight with: "int8" (activations quantized per row
            and group, llama.cpp's Q8_0 x Q8_0) or "fp32" (weight-only quantization).
        layout: "rows" (each row's bytes in input order) or "interleaved" (each row's 64-byte groups
            interleaved so that a 16-lane vpdpbusd sums whole groups: csrc/cpu_decode.h; int8 activations in
            groups of 64, read by the avx512_vnni and avx512_bf16 variants only). The same numbers either way.
    """

    def __init__(
        self,
        packed: torch.Tensor,
        scales: torch.Tensor,
        group: int,
        shape: tuple[int, int],
        activations: str = "int8",
        layout: str = "rows",
    ) -> None:
        if activations not in INT8_ACTIVATIONS:
            raise ConfigError(f"activations must be one of {INT8_ACTIVATIONS}, got {activations!r}")
        if layout not in INT8_LAYOUTS:
            raise ConfigError(f"layout must be one of {INT8_LAYOUTS}, got {layout!r}")
        if layout == "interleaved" and (activations != "int8" or group != 64):
            raise ConfigError(
                f"the interleaved layout is for int8 activations in groups of 64, got {activations} activations "
                f"in groups of {group}"
            )
        self.packed, self.scales, self.group, self.shape = packed, scales, group, shape
        self.activations, self.layout = activations, layout

    @classmethod
    def quantize(cls, weight: torch.Tensor, group: int = INT8_GROUP, *, activations: str = "int8") -> Int8Weight:
        if group < 64 or group % 64:
            raise ConfigError(f"int8 group size must be a positive multiple of 64, got {group}")
        if weight.dim() != 2:
            raise ConfigError(f"can only quantize 2-D weights, got shape {tuple(weight.shape)}")
        N, K = weight.shape
        q, scales = reference.quantize_int8(weight.detach(), group)  # (N, K) int8, (N, G) fp32
        packed = F.pad(q.to(torch.int16) + 128, (0, -K % 64), value=128).to(torch.uint8)
        return cls(packed.contiguous(), scales.contiguous(), group, (N, K), activations)

    def with_activations(self, activations: str) -> Int8Weight:
        """The same weight bytes, multiplied with `activations` ("int8" or "fp32")."""
        return Int8Weight(self.packed, self.scales, self.group, self.shape, activations, self.layout)

    def with_layout(self, layout: str) -> Int8Weight:
        """The same weight with its bytes in `layout` ("rows" or "interleaved"): a copy where it differs."""
        if layout == self.layout:
            return self
        if layout not in INT8_LAYOUTS:
            raise ConfigError(f"layout must be one of {INT8_LAYOUTS}, got {layout!r}")
        packed = torch.from_numpy(_C.interleave_int8(self.packed.numpy(), inverse=layout == "rows"))
        return Int8Weight(packed, self.scales, self.group, self.shape, self.activations, layout)

    @property
    def rows(self) -> torch.Tensor:
        """The bytes q + 128 in input order (the "rows" layout): (out, in rounded up to 64) uint8."""
        return self.packed if self.layout == "rows" else self.with_layout("rows").packed

    @property
    def q(self) -> torch.Tensor:
        """The int8 values in input order: (out, in)."""
        return (self.rows[:, : self.shape[1]].to(torch.int16) - 128).to(torch.int8)

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight this int8 weight stands for: (out, in)."""
        s = self.scales.repeat_interleave(self.group, dim=1)[:, : self.shape[1]]
        return self.q.float() * s

    def nbytes(self) -> int:
        """Bytes a product streams: the packed weight and its scales."""
        return self.packed.numel() + 4 * self.scales.numel()

    def spec(self) -> tuple:
        if self.activations == "fp32":
            dtype = "int8_weight_only"
        else:
            dtype = "int8_interleaved" if self.layout == "interleaved" else "int8"
        return (self.packed.numpy(), dtype, self.scales.numpy(), self.group, self.shape[1])


def weight_spec(weight: torch.Tensor | Int8Weight) -> tuple:
    """(array, dtype name, scales, group[, cols]): how the extension takes a weight."""
    if isinstance(weight, Int8Weight):
        return weight.spec()
    if weight.dtype not in DTYPES:
        raise ConfigError(f"the CPU decode kernels take fp32, bf16 or int8 weights, got {weight.dtype}")
    if not weight.is_contiguous():
        raise ConfigError("the CPU decode kernels need contiguous weights")
    return (numpy_view(weight), DTYPES[weight.dtype], None, 0)


# --- linear --------------------------------------------------------------------------------------------


def _kernel(x: torch.Tensor, weight: torch.Tensor | Int8Weight, isa: str) -> torch.Tensor:
    spec = weight_spec(weight)
    N, K = weight.shape
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} features but the weight takes {K}")
    x2d = x.detach().reshape(-1, K).float()
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty(x2d.shape[0], N, dtype=torch.float32)
    _C.linear(x2d.numpy(), *spec[:4], cols=K, out=out.numpy(), isa=isa)
    out = out.view(*x.shape[:-1], N)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


def linear(x: torch.Tensor, weight: torch.Tensor | Int8Weight, *, isa: str | None = None) -> torch.Tensor:
    """x @ weight.T on CPU tensors, fp32 accumulation; (..., in) -> (..., out) in x's dtype.

    The C++ kernel for int8 weights, for up to `MAX_ROWS` rows of fp32/bf16 ones outside autograd, and
    whenever `isa` names a variant; otherwise the formulation planned fastest for the shape.

    Args:
        x: (..., in) activations.
        weight: (out, in) contiguous fp32 or bf16 tensor, or an `Int8Weight`.
        isa: force the C++ kernel's variant ("auto" or one of `isas()`; tests force each).

    Raises:
        ConfigError: a weight the C++ kernel does not take where it must run (int8, or `isa` given).
        ValueError: shapes that do not fit.
    """
    if isinstance(weight, Int8Weight) or isa is not None:
        return _kernel(x, weight, isa or "auto")
    rows = x.numel() // max(x.shape[-1], 1)
    if rows == 0 or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.linear(x, weight)  # training: differentiable
    if rows <= MAX_ROWS and _kernel_takes(x, weight):
        return _kernel(x, weight, "auto")
    if rows < 2:
        return F.linear(x, weight)
    return _planned(x, weight, rows)


def _kernel_takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dtype in DTYPES and weight.dtype in DTYPES and weight.is_contiguous()


EXACT_ROWS = 64  # row counts up to this are planned one by one; larger ones by power-of-two bucket
_TRIALS = 3
_MARGIN = 0.9  # a candidate must take < 90% of F.linear's time

# (out, in, row bucket, dtype) -> candidate name. Process-wide, like a BLAS plan cache: it only records
# which of equal products comes fastest.
_plan: dict[tuple[int, int, int, torch.dtype], str] = {}


def _bucket(rows: int) -> int:
    return rows if rows <= EXACT_ROWS else 1 << (rows - 1).bit_length()


def _candidates(x2d: torch.Tensor, weight: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    out: dict[str, Callable[[], torch.Tensor]] = {"plain": lambda: F.linear(x2d, weight)}
    if x2d.shape[0] <= EXACT_ROWS:
        # Decode-sized only: at 512 rows it won alone but lost inside a prefill (0.74x; 0.91x even made
        # contiguous), where the ops after it pay for the layout and the caches are cold.
        out["transposed"] = lambda: torch.mm(weight, x2d.t()).t()  # (rows, out), a transposed view
    if x2d.dtype in (torch.bfloat16, torch.float16):
        out["fp32"] = lambda: F.linear(x2d.float(), weight.float()).to(x2d.dtype)
    if _kernel_takes(x2d, weight):
        out["cpp"] = lambda: _kernel(x2d, weight, "auto")
    return out


def _best_time(fn: Callable[[], torch.Tensor]) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(_TRIALS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _choose(candidates: dict[str, Callable[[], torch.Tensor]]) -> str:
    times = {name: _best_time(fn) for name, fn in candidates.items()}
    name = min(times, key=times.get)
    return name if times[name] < _MARGIN * times["plain"] else "plain"


def _planned(x: torch.Tensor, weight: torch.Tensor, rows: int) -> torch.Tensor:
    """x @ weight.T through the formulation measured fastest for this shape (module docstring)."""
    x2d = x.reshape(rows, x.shape[-1])
    candidates = _candidates(x2d, weight)
    key = (weight.shape[0], weight.shape[1], _bucket(rows), x.dtype)
    name = _plan.get(key)
    if name is None or name not in candidates:
        name = _plan[key] = _choose(candidates)
    if name == "plain":
        return F.linear(x, weight)
    return candidates[name]().view(*x.shape[:-1], weight.shape[0])


# --- the paged KV cache's kernels ------------------------------------------------------------------------


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
        k_pool, v_pool: (num_blocks, block_size, n_kv_heads, head_dim), contiguous, fp32 or bf16 (other
            dtypes take the reference).
        k, v: (n, n_kv_heads, head_dim) in the pools' dtype; rows and heads may be strided, so the model's
            views of its fused q|k|v projection go in without a copy (a strided head_dim is copied first).
        slots: (n,) int64 slot indices, distinct, each in [0, num_blocks * block_size).

    Raises:
        ValueError: shapes or dtypes that do not fit the pools.
        IndexError: a slot outside the pool (nothing is written).
    """
    _check_pools(k_pool, v_pool)
    if k_pool.dtype not in DTYPES:
        return reference.write_kv(k_pool, v_pool, k, v, slots)
    if k.dtype != k_pool.dtype or v.dtype != k_pool.dtype:
        raise ValueError(f"k and v must be {k_pool.dtype} like the pools, got {k.dtype} and {v.dtype}")
    if slots.dtype != torch.int64:
        raise ValueError(f"slots must be int64, got {slots.dtype}")
    # The kernel reads head_dim contiguously; a transposed projection ((W @ x.T).T) has it strided, and is copied.
    k, v = _features_contiguous(k), _features_contiguous(v)
    _C.write_kv(numpy_view(k_pool), numpy_view(v_pool), numpy_view(k), numpy_view(v), slots.numpy())


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
    if pools[0].dtype not in DTYPES:
        return reference.copy_blocks(pools, copies)
    for p in pools:
        if p.dtype != pools[0].dtype or p.shape != pools[0].shape or not p.is_contiguous():
            raise ValueError("the pools must be contiguous tensors of one shape and dtype")
    if copies.dtype != torch.int64:
        raise ValueError(f"copies must be int64, got {copies.dtype}")
    _C.copy_blocks([numpy_view(p) for p in pools], copies.numpy())


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

    One pass over K and V with an online softmax, the G = n_heads / n_kv_heads query heads of a KV head
    together so each K/V row is read once per KV head, threads over (sequence, KV head[, split]).

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
    if q.dtype not in DTYPES:
        return reference.paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, scale=scale)
    if q.dtype != k_pool.dtype:
        raise ValueError(f"q is {q.dtype} but the pools are {k_pool.dtype}")
    if block_tables.dtype != torch.int32 or lengths.dtype != torch.int32:
        raise ValueError(f"block_tables and lengths must be int32, got {block_tables.dtype} and {lengths.dtype}")
    q = _features_contiguous(q)
    out = torch.empty(q.shape, dtype=q.dtype)
    _C.paged_decode_attention(
        numpy_view(q), numpy_view(k_pool), numpy_view(v_pool), block_tables.numpy(), lengths.numpy(),
        scale=1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale),
        dtype=DTYPES[q.dtype], num_splits=num_splits, isa=isa, out=numpy_view(out),
    )
    return out


# --- elementwise ops (csrc/elementwise.cpp) ----------------------------------------------------------------
# Each is one C++ call over rows where torch runs 3-8 ops (a bf16 rms_norm: pow, mean, add, rsqrt, mul, two
# casts, the gain), with the reference's roundings; autograd and other dtypes take the reference.


def _takes(*ts: torch.Tensor) -> bool:
    """Whether the C++ kernels compute this call: fp32/bf16 operands of one dtype, outside autograd."""
    if ts[0].dtype not in DTYPES or any(t.dtype != ts[0].dtype for t in ts):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in ts))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(rows, last dim) view of t (a copy only where no view exists), its elements contiguous."""
    return _features_contiguous(t).reshape(-1, t.shape[-1])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, *, isa: str = "auto") -> torch.Tensor:
    """RMSNorm (C++): `reference.rms_norm`'s contract, one pass over each row."""
    if not _takes(x, weight) or x.shape[-1] == 0:
        return reference.rms_norm(x, weight, eps)
    out = torch.empty(x.shape, dtype=x.dtype)
    _C.rms_norm(numpy_view(_rows(x)), numpy_view(weight.contiguous()), float(eps), dtype=DTYPES[x.dtype], isa=isa,
                out=numpy_view(out.view(-1, x.shape[-1])))
    return out


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, *, isa: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add + RMSNorm (C++): `reference.add_rms_norm`'s contract, (normed, h)."""
    if not _takes(x, residual, weight) or x.shape != residual.shape or x.shape[-1] == 0:
        return reference.add_rms_norm(x, residual, weight, eps)
    out, h = torch.empty(x.shape, dtype=x.dtype), torch.empty(x.shape, dtype=x.dtype)
    D = x.shape[-1]
    _C.add_rms_norm(numpy_view(_rows(x)), numpy_view(_rows(residual)), numpy_view(weight.contiguous()), float(eps),
                    dtype=DTYPES[x.dtype], isa=isa, out=numpy_view(out.view(-1, D)), h=numpy_view(h.view(-1, D)))
    return out, h


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, isa: str = "auto") -> torch.Tensor:
    """Rotate-half RoPE (C++): `reference.apply_rope`'s contract; x may be the q|k view of a fused projection."""
    if cos.dim() == 4 and cos.shape[2] == 1:
        cos, sin = cos.squeeze(2), sin.squeeze(2)
    fits = (
        x.dim() == 4 and cos.dim() == 3 and cos.shape == sin.shape and cos.dtype == sin.dtype == torch.float32
        and cos.shape[0] in (1, x.shape[0]) and cos.shape[1] == x.shape[1] and 0 < cos.shape[2] <= x.shape[3]
        and cos.shape[2] % 2 == 0
    )
    if not _takes(x) or not fits or (torch.is_grad_enabled() and cos.requires_grad):
        return reference.apply_rope(x, cos, sin)
    out = torch.empty(x.shape, dtype=x.dtype)
    _C.apply_rope(numpy_view(_features_contiguous(x)), cos.detach().contiguous().numpy(),
                  sin.detach().contiguous().numpy(), dtype=DTYPES[x.dtype], isa=isa, out=numpy_view(out))
    return out


def swiglu(gate: torch.Tensor, up: torch.Tensor, *, isa: str = "auto") -> torch.Tensor:
    """silu(gate) * up (C++): `reference.swiglu`'s contract for operands of one shape."""
    if not _takes(gate, up) or gate.shape != up.shape or gate.shape[-1] == 0:
        return reference.swiglu(gate, up)
    out = torch.empty(gate.shape, dtype=gate.dtype)
    _C.swiglu(numpy_view(_rows(gate)), numpy_view(_rows(up)), dtype=DTYPES[gate.dtype], isa=isa,
              out=numpy_view(out.view(-1, gate.shape[-1])))
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    q_offset: int | None = None,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
    isa: str = "auto",
) -> torch.Tensor:
    """Grouped-query attention (C++, csrc/attention.cpp): the reference's contract, fp32 arithmetic.

    FlashAttention's one pass over K and V per (sequence, KV head, block of queries), the G query heads of
    a KV head together; scores are computed keys x queries with the queries in the vector lanes, so the
    online softmax needs no horizontal reduction. Calls recorded by autograd, and dtypes other than
    fp32/bf16, take the reference.

    Args:
        q: (B, n_heads, T, head_dim); k, v: (B, n_kv_heads, S, head_dim); any strides (head_dim is made
            contiguous where it is not).
        causal, q_offset, key_mask, scale: as `reference.attention`.
        isa: kernel variant, "auto" or one of `_C.attention_isas()` (tests force each); "auto" takes
            vdpbf16ps for bf16 where the CPU has AVX512-BF16.

    Returns:
        (B, n_heads, T, head_dim) in q's dtype: a view of a (B, T, n_heads, head_dim) buffer, which is the
        layout the model's output projection reads.
    """
    if not _takes(q, k, v):
        return reference.attention(q, k, v, causal=causal, q_offset=q_offset, key_mask=key_mask, scale=scale)
    B, H, T, D = q.shape
    if k.dim() != 4 or k.shape[0] != B or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} do not fit q {tuple(q.shape)}")
    S = k.shape[2]
    out = torch.empty(B, T, H, D, dtype=q.dtype).transpose(1, 2)
    mask = None
    if key_mask is not None:
        if key_mask.shape != (B, S):
            raise ValueError(f"key_mask must be (batch, keys) = {(B, S)}, got {tuple(key_mask.shape)}")
        mask = key_mask.to(torch.bool).contiguous().view(torch.uint8).numpy()
    _C.attention(
        numpy_view(_features_contiguous(q)), numpy_view(_features_contiguous(k)), numpy_view(_features_contiguous(v)),
        causal=causal, q_offset=S - T if q_offset is None else int(q_offset), key_mask=mask,
        scale=1.0 / math.sqrt(D) if scale is None else float(scale), dtype=DTYPES[q.dtype], isa=isa,
        out=numpy_view(out),
    )
    return out


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
    isa: str = "auto",
) -> torch.Tensor:
    """Attention over a packed batch (C++): `reference.attention_varlen`'s contract, each sequence through
    the kernel of `attention` with no copy of its rows. Autograd and other dtypes take the reference."""
    if not _takes(q, k, v):
        return reference.attention_varlen(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal, scale=scale
        )
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    _C.attention_varlen(
        numpy_view(_features_contiguous(q)), numpy_view(_features_contiguous(k)), numpy_view(_features_contiguous(v)),
        cu_seqlens_q.to(torch.int64).numpy(), cu_seqlens_k.to(torch.int64).numpy(), int(max_seqlen_q),
        int(max_seqlen_k), causal=causal, scale=1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale),
        dtype=DTYPES[q.dtype], isa=isa, out=numpy_view(out),
    )
    return out


backends.register(
    "linear", "cpu", "cpu", linear,
    f"havoc.backends.cpu: C++ decode kernels (variant {auto_isa()!r}) up to {MAX_ROWS} rows and for int8 "
    "weights; above, the fastest of torch's GEMMs and the C++ kernel, timed once per shape",
)
backends.register(
    "write_kv", "cpu", "cpu", write_kv, "havoc.backends.cpu: C++ slot writes (csrc/paged_attention.cpp)"
)
backends.register(
    "copy_blocks", "cpu", "cpu", copy_blocks, "havoc.backends.cpu: C++ block copies (csrc/paged_attention.cpp)"
)
backends.register(
    "paged_decode_attention", "cpu", "cpu", paged_decode_attention,
    f"havoc.backends.cpu: C++ decode attention, variant {_C.attention_isa_for('auto')!r} (csrc/paged_attention.cpp)",
)
_ATTENTION_VARIANTS = (
    f"variant {_C.attention_isa_for('auto')!r}"
    + (", vdpbf16ps for bf16 ('avx512_bf16')" if "avx512_bf16" in _C.attention_isas() else "")
)
backends.register(
    "attention", "cpu", "cpu", attention,
    f"havoc.backends.cpu: C++ flash attention, {_ATTENTION_VARIANTS} (csrc/attention.cpp)",
)
backends.register(
    "attention_varlen", "cpu", "cpu", attention_varlen,
    f"havoc.backends.cpu: C++ flash attention per sequence, {_ATTENTION_VARIANTS} (csrc/attention.cpp)",
)
for _op in ("rms_norm", "add_rms_norm", "apply_rope", "swiglu"):
    backends.register(
        _op, "cpu", "cpu", globals()[_op],
        f"havoc.backends.cpu: C++ rows, variant {_C.attention_isa_for('auto')!r} (csrc/elementwise.cpp)",
    )
backends.unavailable(
    "linear_cross_entropy", "cpu",
    "torch's own ops are the CPU path (the reference materialises the fp32 logits; training only)",
)
