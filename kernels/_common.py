"""What every Triton kernel file shares: the interpreter switch, the device's size, input checks.

Kept to the few helpers each launcher would otherwise repeat word for word; the kernels themselves share
nothing (STYLE.md: a little repetition over the wrong abstraction).

TRITON_INTERPRET=1 (read by Triton when a `@triton.jit` function is *defined*, i.e. when a kernel module
is imported) runs every kernel through Triton's NumPy interpreter on CPU tensors. The launchers then use
fixed, small block sizes: the interpreter executes programs one after another, so small tiles keep the
tests fast and exercise the masking at block edges. On a GPU the same code picks the sizes noted beside
each launcher.
"""

from __future__ import annotations

import functools

import torch
import triton

from havoc.kernels._interpreter import interpreting

__all__ = ["interpreting", "sm_count", "next_pow2", "check_device", "check_float", "check_last_dim_contiguous"]


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; a nominal 8 for the CPU interpreter.

    Launchers size their grids (persistent programs, split-K) from it; on the interpreter a small count
    keeps the serial execution short while still giving several programs.
    """
    if device.type == "cuda":
        return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 8


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def check_device(op: str, *tensors: torch.Tensor) -> None:
    """All tensors on one device, and a device Triton can run on (CUDA, or CPU when interpreting)."""
    device = tensors[0].device
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(f"{op}: all inputs must be on one device, got {device} and {t.device}")
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        raise ValueError(
            f"{op}: the Triton kernel needs CUDA tensors (got {device}); CPU tensors run only through "
            "Triton's interpreter (TRITON_INTERPRET=1 set before havoc.kernels is imported)"
        )


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_last_dim_contiguous(op: str, name: str, t: torch.Tensor) -> None:
    # Every kernel reads feature vectors as contiguous runs; anything else is a copy the caller should see.
    if t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(
            f"{op}: {name} must have a contiguous last dimension (stride 1), got strides {tuple(t.stride())}; "
            "call .contiguous() first"
        )
