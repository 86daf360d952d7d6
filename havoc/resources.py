"""What a request asks of the machine, checked before it is allocated: the device exists, the memory fits.

A KV pool sized from a file's metadata (a GGUF that claims a 2^31-token context) or from a careless
flag would otherwise be met by the kernel's out-of-memory killer or a traceback gigabytes later. Every
place that allocates a pool or cache asks `ensure_fits` first and refuses with the figures.
"""

from __future__ import annotations

import os

import torch

from havoc.errors import ConfigError, InsufficientMemoryError

# What an allocation may take of the memory the OS reports available: the rest is for the model's own
# activations, the tokenizer, Python and whatever else runs on the machine.
HEADROOM = 0.8
DEVICE_TYPES = ("cpu", "cuda")


def parse_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device that exists on this machine, or a ConfigError naming it.

    Args:
        device: "cpu", "cuda", "cuda:N" or a torch.device (None means cpu).

    Returns:
        The device.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str):
            raise ConfigError(f"device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"device {device[:40]!r} is not a device: use cpu, cuda or cuda:N") from None
    if dev.type not in DEVICE_TYPES:
        raise ConfigError(f"device {str(dev)!r} is not supported: use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(dev)!r} was asked for but this machine has no CUDA device "
                              "(or torch was built without CUDA): use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory the device can still give, in bytes (None when it cannot be told)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(dev)
            return int(free)
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # macOS and other Unixes: total physical memory is the best figure without psutil
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def ensure_fits(nbytes: int, device: str | torch.device, what: str, hint: str = "") -> None:
    """Raise InsufficientMemoryError, with the figures, if `nbytes` cannot be allocated on `device`.

    Args:
        nbytes: the allocation's size.
        device: where it would live.
        what: what is being allocated, for the message ("the KV pool of 4,096 blocks of 16 tokens").
        hint: what the user can change (a flag, a setting), appended to the message.
    """
    avail = available_bytes(device)
    if avail is None:
        return
    if nbytes > HEADROOM * avail:
        raise InsufficientMemoryError(
            f"{what} needs {gib(nbytes)} but {torch.device(device)} has {gib(avail)} available"
            f" (at most {HEADROOM:.0%} of it is used for one allocation)" + (f"; {hint}" if hint else "")
        )
