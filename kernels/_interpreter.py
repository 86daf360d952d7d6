"""The switch between Triton's compiler and its CPU interpreter, readable without importing Triton.

TRITON_INTERPRET=1 (read by Triton when a `@triton.jit` function is defined, i.e. when a kernel module is
imported) runs every kernel through Triton's NumPy interpreter on CPU tensors. `havoc.ops` asks before it
hands CPU tensors to a Triton kernel, the launchers to pick interpreter-sized blocks; both read it here.
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
