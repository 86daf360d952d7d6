"""The one place that decides which implementation of an op runs.

Every op has a reference implementation (`havoc.kernels.reference`, plain PyTorch) and may have one fast
implementation per device type, registered in `havoc.backends` ("cuda": the Triton kernels; "cpu": the C++
extension's kernels). Per call, the dispatcher takes the fast implementation for the tensor's device when
one is registered and the backend allows it, else the reference. An op has the same name and argument
order here, in the reference and in every backend.

The switch: the environment variable ``HAVOC_OPS`` (read at import) or `set_backend` / `use_backend`:

- ``auto`` (default): fast where registered, reference elsewhere (so the Triton kernels on CUDA tensors,
  the C++ kernels on CPU tensors for the ops that have them, the reference for the others);
- ``reference``: always the reference;
- ``fast``: the fast path, and an error naming the op and device where none exists;
- ``triton``: the Triton kernel of every op that has one, on any device; the reference for the ops that
  have none (linear, copy_blocks). On CUDA tensors this is what ``auto`` picks too. On CPU tensors it runs
  the kernels through Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before
  the first kernel is called (Triton reads it when a kernel module is imported); without it the call
  raises a ConfigError that says so. This is how the kernel tests run the Triton path on a machine
  without a GPU:

      TRITON_INTERPRET=1 HAVOC_OPS=triton pytest ...        # or, in code:
      with ops.use_backend("triton"): model(tokens)

The Triton kernels are registered lazily (Triton and the kernel modules are imported on the first call
that needs them, so `import havoc` stays light on machines without it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch

from havoc import backends
from havoc.errors import ConfigError
from havoc.kernels import reference
from havoc.kernels._interpreter import interpreting

OPS = (
    "linear",
    "rms_norm",
    "add_rms_norm",
    "apply_rope",
    "swiglu",
    "attention",
    "attention_varlen",
    "write_kv",  # the paged KV cache's tensor side: slot writes, COW block copies, decode attention
    "copy_blocks",
    "paged_decode_attention",
    "linear_cross_entropy",
)
BACKENDS = ("auto", "reference", "fast", "triton")


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown ops backend {name!r}; choose one of {list(BACKENDS)} (HAVOC_OPS)")
    return name


_backend = _check_backend(os.environ.get("HAVOC_OPS", "auto"))


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    """Choose the implementation policy for every op: "auto", "reference", "fast" or "triton" (module docstring)."""
    global _backend
    _backend = _check_backend(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager form of `set_backend`; restores the previous backend on exit."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def describe(device_type: str) -> dict[str, str]:
    """For each op, the implementation a tensor on `device_type` gets now, and why."""
    out = {}
    for op in OPS:
        fast = backends.fast(op, device_type)
        if _backend == "reference":
            out[op] = "reference (forced by HAVOC_OPS=reference)"
        elif _backend == "triton":
            impl = backends.of_backend(op, "triton")
            out[op] = f"triton ({impl.description})" if impl is not None else "reference (no Triton kernel for this op)"
        elif fast is not None:
            out[op] = f"fast ({fast.description})"
        else:
            why = backends.why_not(op, device_type) or "no fast implementation for this device in this version"
            out[op] = f"reference ({why})"
    return out


def _pick(op: str, x: torch.Tensor) -> Callable | None:
    if _backend == "reference":
        return None
    if _backend == "triton":
        impl = backends.of_backend(op, "triton")
        if impl is not None and x.device.type != "cuda" and not interpreting():
            raise ConfigError(
                f"HAVOC_OPS=triton on {x.device.type} tensors runs the Triton kernels through Triton's interpreter: "
                "set TRITON_INTERPRET=1 before the first kernel call (or use a CUDA device)"
            )
        return impl.fn if impl is not None else None
    fast = backends.fast(op, x.device.type)
    if fast is None and _backend == "fast":
        why = backends.why_not(op, x.device.type) or "none is registered"
        raise ConfigError(f"HAVOC_OPS=fast but op {op!r} has no fast implementation on {x.device.type}: {why}")
    return fast.fn if fast is not None else None


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    fast = _pick("linear", x)
    return (fast or reference.linear)(x, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    fast = _pick("rms_norm", x)
    return (fast or reference.rms_norm)(x, weight, eps)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual): see `reference.add_rms_norm`."""
    fast = _pick("add_rms_norm", x)
    return (fast or reference.add_rms_norm)(x, residual, weight, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    fast = _pick("apply_rope", x)
    return (fast or reference.apply_rope)(x, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    fast = _pick("swiglu", gate)
    return (fast or reference.swiglu)(gate, up)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    fast = _pick("attention", q)
    return (fast or reference.attention)(q, k, v, **kwargs)


def write_kv(k_pool: torch.Tensor, v_pool: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    """Store rows k, v ((n, n_kv_heads, head_dim)) at `slots` of the paged pools (see the reference)."""
    fast = _pick("write_kv", k_pool)
    (fast or reference.write_kv)(k_pool, v_pool, k, v, slots)


def copy_blocks(pools: list[torch.Tensor], copies: torch.Tensor) -> None:
    """Copy (src, dst) blocks in every pool: the copy-on-write of a paged cache (see the reference)."""
    if not pools or copies.numel() == 0:
        return
    fast = _pick("copy_blocks", pools[0])
    (fast or reference.copy_blocks)(pools, copies)


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
) -> torch.Tensor:
    """Attention over a packed batch: see `reference.attention_varlen`."""
    fast = _pick("attention_varlen", q) or reference.attention_varlen
    return fast(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal, scale=scale)


def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """One query token per sequence over its paged K/V: (B, n_heads, head_dim) (see the reference)."""
    fast = _pick("paged_decode_attention", q)
    return (fast or reference.paged_decode_attention)(q, k_pool, v_pool, block_tables, lengths, **kwargs)



def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of h @ weight.T: see `reference.linear_cross_entropy` (the fast path never builds the logits)."""
    fast = _pick("linear_cross_entropy", h)
    return (fast or reference.linear_cross_entropy)(h, weight, targets, ignore_index=ignore_index, reduction=reduction)


rope_cos_sin = reference.rope_cos_sin

backends.load()  # the backend modules register their fast paths (they need OPS, defined above)
