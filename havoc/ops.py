"""The one place that decides which implementation of an op runs.

Every op has a reference implementation (`havoc.kernels.reference`, plain PyTorch) and may have fast
ones registered by device type ("cuda" for the Triton kernels, "cpu" for the C++ extension's kernels).
Per call, the dispatcher takes the fast implementation for the tensor's device when one is registered
and the backend allows it, else the reference.

The switch: the environment variable ``HAVOC_OPS`` (read at import) or `set_backend` / `use_backend`:

- ``auto`` (default): fast where registered, reference elsewhere;
- ``reference``: always the reference;
- ``fast``: the fast path, and an error naming the op and device where none exists.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch

from havoc.errors import ConfigError
from havoc.kernels import reference

OPS = (
    "linear", "rms_norm", "apply_rope", "swiglu", "attention",
    "write_kv", "copy_blocks", "paged_decode_attention",  # the paged KV cache's tensor side
)
BACKENDS = ("auto", "reference", "fast")

# op name -> device type -> implementation. Filled by the fast-path modules when they import.
_FAST: dict[str, dict[str, Callable]] = {name: {} for name in OPS}
# op name -> device type -> why there is no fast implementation (for `havoc env`).
_WHY_NOT: dict[str, dict[str, str]] = {name: {} for name in OPS}


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown ops backend {name!r}; choose one of {list(BACKENDS)} (HAVOC_OPS)")
    return name


_backend = _check_backend(os.environ.get("HAVOC_OPS", "auto"))


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    """Force every op onto the reference path ("reference"), the fast path ("fast"), or choose ("auto")."""
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


def register_fast(op: str, device_type: str, fn: Callable) -> None:
    """Register `fn` as the fast implementation of `op` for tensors on `device_type`."""
    if op not in _FAST:
        raise ConfigError(f"unknown op {op!r}; ops are {list(OPS)}")
    _FAST[op][device_type] = fn
    _WHY_NOT[op].pop(device_type, None)


def note_unavailable(op: str, device_type: str, reason: str) -> None:
    """Record why `op` has no fast implementation on `device_type` (shown by `havoc env`)."""
    _WHY_NOT[op][device_type] = reason


def describe(device_type: str) -> dict[str, str]:
    """For each op, the implementation a tensor on `device_type` gets now, and why."""
    out = {}
    for op in OPS:
        fast = _FAST[op].get(device_type)
        if _backend == "reference":
            out[op] = "reference (forced by HAVOC_OPS=reference)"
        elif fast is not None:
            out[op] = f"fast ({getattr(fast, '__module__', '?')})"
        else:
            why = _WHY_NOT[op].get(device_type, "no fast implementation for this device in this version")
            out[op] = f"reference ({why})"
    return out


def _pick(op: str, x: torch.Tensor) -> Callable | None:
    if _backend == "reference":
        return None
    fast = _FAST[op].get(x.device.type)
    if fast is None and _backend == "fast":
        why = _WHY_NOT[op].get(x.device.type, "none is registered")
        raise ConfigError(f"HAVOC_OPS=fast but op {op!r} has no fast implementation on {x.device.type}: {why}")
    return fast


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    fast = _pick("linear", x)
    return (fast or reference.linear)(x, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    fast = _pick("rms_norm", x)
    return (fast or reference.rms_norm)(x, weight, eps)


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


rope_cos_sin = reference.rope_cos_sin

from havoc import cpu_ops  # noqa: E402,F401  (registers the CPU fast paths)
from havoc import cpu_paged  # noqa: E402,F401  (registers the paged cache's C++ kernels for CPU)
