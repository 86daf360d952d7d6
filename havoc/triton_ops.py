"""Registers the Triton kernels of `havoc.kernels` with `havoc.ops`: the fast path on CUDA tensors, and the
implementations the "triton" backend runs anywhere (CPU tensors through TRITON_INTERPRET=1).

Registration is lazy: each op gets a small wrapper that imports its kernel module on first use. Importing
Triton and defining the kernels costs a second, and the interpreter switch (TRITON_INTERPRET) is read when
a kernel module is imported, so deferring the import to the first call keeps `import havoc` light and
lets a test set the switch after importing havoc.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from havoc import ops

# What has been verified of the kernels, shown by `havoc env` next to every Triton op. The GPU session that
# compiles them and passes the kernel tests on CUDA (bf16 included) updates this line.
KERNEL_STATUS = "interpreter-verified on CPU (TRITON_INTERPRET=1); not yet compiled or run on a GPU"

# op -> (module in havoc.kernels, function)
KERNELS: dict[str, tuple[str, str]] = {
    "rms_norm": ("rms_norm", "rms_norm"),
    "add_rms_norm": ("rms_norm", "add_rms_norm"),
    "apply_rope": ("rope", "apply_rope"),
    "swiglu": ("swiglu", "swiglu"),
    "attention": ("flash_attention", "flash_attention"),
    "attention_varlen": ("flash_attention", "flash_attention_varlen"),
    "paged_decode_attention": ("paged_attention", "paged_decode_attention"),
    "linear_cross_entropy": ("cross_entropy", "linear_cross_entropy"),
}


def _lazy(module: str, name: str) -> Callable:
    target = f"havoc.kernels.{module}"
    resolved: list[Callable] = []

    def call(*args, **kwargs):
        if not resolved:
            resolved.append(getattr(importlib.import_module(target), name))
        return resolved[0](*args, **kwargs)

    call.__module__ = target
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Lazily imported `{target}.{name}`."
    call.description = f"Triton kernel {target}.{name}; {KERNEL_STATUS}"  # type: ignore[attr-defined]
    return call


if importlib.util.find_spec("triton") is None:
    for _op in KERNELS:
        ops.note_unavailable(_op, "cuda", "Triton is not installed (pip install triton)")
else:
    for _op, (_module, _name) in KERNELS.items():
        ops.register_triton(_op, _lazy(_module, _name))
