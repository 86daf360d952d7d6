"""The fast paths of every op, registered in one place.

Every op of `havoc.ops` has a reference implementation (`havoc.kernels.reference`, plain PyTorch) and at most
one fast implementation per device type, registered here by the backend modules when `load()` imports them:

- `havoc.backends.cpu`: CPU tensors. `linear` (the C++ decode kernels of csrc/cpu_decode.cpp up to 64 rows,
  torch's GEMMs above, planned per shape), `write_kv`, `copy_blocks`, `paged_decode_attention` (the paged
  cache's C++ kernels, csrc/paged_attention.cpp).
- `havoc.backends.triton`: the Triton kernels of havoc.kernels: the fast path on CUDA tensors, and what
  HAVOC_OPS=triton runs on any device (CPU tensors through Triton's interpreter).

Each (op, device type) is registered once: a second registration raises instead of silently replacing the
first. Where a backend cannot run (Triton not installed) it records why (`unavailable`), and `havoc env`
shows it. An op keeps one name and one argument order from `havoc.ops` through the reference, the backend
function, the Triton launcher or C++ binding, to its tests and benchmarks: `write_kv(k_pool, v_pool, k, v,
slots)` everywhere. tests/test_ops_coverage.py checks that every op has its reference, a test and a
benchmark per fast implementation, and a compile scenario per Triton kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from havoc.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Impl:
    """A registered fast implementation.

    Attributes:
        op: the op's name in havoc.ops.
        device: the torch device type it is the fast path for ("cpu", "cuda").
        backend: the module that registered it ("cpu", "triton").
        fn: the implementation, with the op's signature.
        description: what runs, for `havoc env`.
    """

    op: str
    device: str
    backend: str
    fn: Callable
    description: str


_IMPLS: dict[tuple[str, str], Impl] = {}
_WHY_NOT: dict[tuple[str, str], str] = {}


def _check_op(op: str) -> None:
    from havoc.ops import OPS

    if op not in OPS:
        raise ConfigError(f"unknown op {op!r}; ops are {list(OPS)}")


def register(op: str, device: str, backend: str, fn: Callable, description: str) -> None:
    """Make `fn` the fast implementation of `op` for tensors on `device`.

    Raises:
        ConfigError: an unknown op, or (op, device) registered already.
    """
    _check_op(op)
    if (op, device) in _IMPLS:
        raise ConfigError(
            f"op {op!r} on {device} is registered twice (by backend {_IMPLS[op, device].backend!r} and {backend!r})"
        )
    _IMPLS[op, device] = Impl(op, device, backend, fn, description)
    _WHY_NOT.pop((op, device), None)


def unavailable(op: str, device: str, reason: str) -> None:
    """Record why `op` has no fast implementation on `device` (shown by `havoc env`)."""
    _check_op(op)
    _WHY_NOT[op, device] = reason


def fast(op: str, device: str) -> Impl | None:
    """The fast implementation of `op` for tensors on `device`, if one is registered."""
    return _IMPLS.get((op, device))


def of_backend(op: str, backend: str) -> Impl | None:
    """`op`'s implementation by `backend` (e.g. its Triton kernel, which HAVOC_OPS=triton runs anywhere)."""
    return next((i for i in _IMPLS.values() if i.op == op and i.backend == backend), None)


def why_not(op: str, device: str) -> str | None:
    """Why `op` has no fast implementation on `device`, where a backend said so."""
    return _WHY_NOT.get((op, device))


def implementations() -> list[Impl]:
    """Every registered implementation, in registration order."""
    return list(_IMPLS.values())


_loaded = False


def load() -> None:
    """Import the backend modules once; each registers its implementations."""
    global _loaded
    if not _loaded:
        _loaded = True
        from havoc.backends import cpu, triton  # noqa: F401
