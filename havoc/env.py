"""`havoc env`: what this installation is built with and which fast paths are active (and why not).

In the spirit of PyTorch's collect_env: paste its output into a bug report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _extension() -> dict[str, Any]:
    try:
        from havoc import _C
    except ImportError as e:
        return {"loaded": False, "error": f"{e} (reinstall with `pip install .`)"}
    info: dict[str, Any] = {"loaded": True, **dict(_C.build_info())}
    info["cpu_features"] = " ".join(_C.cpu_features()) or "none detected"
    info["simd_runtime"] = _C.runtime_simd_level()
    info["openmp_threads"] = _C.max_threads()
    return info


def _cpu_kernels() -> dict[str, Any]:
    """The decode kernels' variants (which runs, and why the others cannot) and what the running one does
    per weight format."""
    try:
        from havoc import _C
        from havoc.backends import cpu
    except ImportError as e:
        return {"error": str(e)}
    auto, widest, rate = cpu.auto_isa(), cpu.isas()[-1], _C.bf16_dot_rate()
    why = ("the widest of the variants below this CPU and OS run" if auto == widest else
           f"not {widest}: vdpbf16ps issues at {rate:.2f}x the FMA's rate on this core (below "
           f"{_C.bf16_dot_pays_at}), so bf16 is faster widened to fp32")
    out: dict[str, Any] = {"variant": f"{auto} ({why})"}
    if rate:
        out["vdpbf16ps rate"] = f"{rate:.2f}x the zmm FMA's (measured at start; 'auto' runs it from {_C.bf16_dot_pays_at})"
    for v, status in cpu.variant_status().items():
        out[f"  {v}"] = status
    for fmt in ("float32", "bfloat16", "int8", "int8_weight_only"):
        out[f"{fmt} weights"] = _C.linear_kernel(auto, fmt)
    out["decode attention"] = _C.attention_isa_for(auto)
    streams = _C.batch1_streams()
    out["batch-1 products"] = (f"{streams} weight row{'s' if streams > 1 else ''} streamed at a time per thread ("
                               + ("one sequential stream: what AMD's prefetchers follow best" if streams == 1 else
                                  "a tile of 4: what Intel's prefetchers followed at 98% of the bandwidth") + ")")
    threads = _C.max_threads()
    out["batch-1 steps"] = (f"every layer in one parallel region of {threads} threads (up to "
                            f"{_C.Decoder.split_tokens} tokens of context thread 0 runs attention while the others "
                            "read wo ahead; past that they share it)" if threads > 1 else
                            "one thread: no parallel regions")
    return out


def _cuda() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"available": torch.cuda.is_available(), "torch_built_with": torch.version.cuda or "none"}
    if info["available"]:
        info["devices"] = [
            f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
            for i in range(torch.cuda.device_count())
        ]
    return info


def collect() -> dict[str, Any]:
    """Everything `havoc env` reports, as a JSON-serialisable dict."""
    import torch

    from havoc import __version__, ops

    cuda = _cuda()
    return {
        "havoc": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "torch": torch.__version__,
            "triton": _version("triton"),
            "bitsandbytes": _version("bitsandbytes"),
            "transformers": _version("transformers"),
            "tokenizers": _version("tokenizers"),
            "safetensors": _version("safetensors"),
            "gguf": _version("gguf"),
            "numpy": _version("numpy"),
        },
        "torch": {"threads": torch.get_num_threads(), "cuda": cuda},
        "extension": _extension(),
        "cpu_kernels": _cpu_kernels(),
        "ops_backend": ops.get_backend(),
        "ops_cpu": ops.describe("cpu"),
        # Shown even without a device: which kernel each op would run on CUDA and how far it is verified.
        "ops_cuda": ops.describe("cuda"),
        "environment": {k: v for k, v in os.environ.items() if k.startswith(("HAVOC_", "TRITON_", "OMP_", "CUDA_VISIBLE"))},
        "adapters": _adapters(),
    }


def _adapters() -> dict[str, Any]:
    """Per known model, the LoRA adapter PRIME runs it with by default (--no-adapter: none)."""
    from havoc.train.lora import SHIPPED, read_adapter, shipped_adapter

    out = {}
    for name in SHIPPED:
        folder = shipped_adapter(name)
        if folder is None:
            out[name] = "none shipped: the model runs alone"
        else:
            cfg, _ = read_adapter(folder)
            where = ("on PRIME's tool calls only (from <tool> to </tool>; an adapted copy of the weights, the "
                     "model itself unchanged)" if cfg.span == "call" else "merged into the weights at load")
            out[name] = f"active by default: {folder.name} (LoRA r={cfg.r}, {where}; --no-adapter turns it off)"
    return out


def format_report(info: dict[str, Any]) -> str:
    """The human-readable form of `collect()`."""
    lines = [f"havoc {info['havoc']}  (python {info['python']}, {info['platform']})", ""]

    def section(title: str, items: dict[str, Any]) -> None:
        lines.append(title)
        width = max((len(k) for k in items), default=0)
        for k, v in items.items():
            if isinstance(v, list):
                v = ", ".join(map(str, v)) or "-"
            lines.append(f"  {k:<{width}}  {v}")
        lines.append("")

    section("Versions", info["versions"])
    cuda = info["torch"]["cuda"]
    section("PyTorch", {
        "threads": info["torch"]["threads"],
        "CUDA available": cuda["available"],
        "built with CUDA": cuda["torch_built_with"],
        **({"devices": cuda["devices"]} if "devices" in cuda else {}),
    })
    section("C++ extension (havoc._C)", {k: v for k, v in info["extension"].items()})
    section("CPU decode kernels (csrc/cpu_decode.cpp: linear and the whole decode step)", info["cpu_kernels"])
    section(f"Ops on CPU tensors (backend: {info['ops_backend']})", info["ops_cpu"])
    cuda_title = "Ops on CUDA tensors" + ("" if cuda["available"] else " (no CUDA device on this machine)")
    section(cuda_title, info["ops_cuda"])
    section("LoRA adapters", info["adapters"])
    if info["environment"]:
        section("Environment", info["environment"])
    return "\n".join(lines).rstrip() + "\n"
