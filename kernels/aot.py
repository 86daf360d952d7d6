"""Compile every Triton kernel ahead of time for an NVIDIA GPU, on a machine without one.

    python -m havoc.kernels.aot                 # sm_90 (H100/H200), table on stdout, exit 1 on a failure
    python -m havoc.kernels.aot --arch 90 80 --jobs 4 --json report.json

The interpreter (TRITON_INTERPRET=1) checks what the kernels compute, not that they compile: Triton's GPU
path has its own rules (tl.dot shapes and dtypes, constexpr use, shared memory and registers). Triton's
wheel bundles the NVIDIA backend and ptxas, so `triton.compile` can lower a kernel to PTX and a cubin for
any sm without a driver. This module does that for the launches the wrappers would really make:

1. Capture. Each scenario below calls a kernel file's own launcher (`_forward`, `_backward`, ...) on
   CPU tensors shaped like a real model's (HAVOC-7B and SmolLM2-135M) with the kernels swapped for
   recorders, so the block sizes, warps, stages and constexpr flags come from the code the GPU runs, not a
   copy of it. The launchers' GPU branch is taken because the interpreter is off, and `sm_count` answers
   for the target (132 SMs, an H100 SXM) since the split-K and persistent grids depend on it.
2. Bind. Triton's own binder (`create_function_from_signature`) specialises the recorded arguments as a
   launch on the GPU would (pointer dtypes, 16-byte divisibility, integers equal to 1), for the target.
3. Compile. `triton.compile` per distinct (kernel, specialisation, options), in worker processes; shared
   memory is `metadata.shared` (what Triton checks against the device's opt-in limit when it loads the
   kernel); registers and the stack frame are read from the cubin with the bundled `cuobjdump`, spill
   stores from the `ptxas -v` report that Triton prints when TRITON_DUMP_PTXAS_LOG is on.

Nothing is written outside TRITON_CACHE_DIR (set it to a temporary directory to keep the normal cache
clean; the CLI does that unless told otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator

# Opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin), the limit Triton enforces at load.
SHARED_LIMIT = {90: 232448, 80: 166912}  # H100/H200: 227 KiB; A100: 163 KiB
SM_COUNT = {90: 132, 80: 108}  # H100 SXM, A100: the split-K and persistent grids are sized from it
KERNEL_MODULES = ("rms_norm", "rope", "swiglu", "flash_attention", "paged_attention", "cross_entropy")


# ------------------------------------------------------------------------------------------ capture
@dataclasses.dataclass
class Launch:
    """One recorded `kernel[grid](*args, **kwargs)` call of a launcher."""

    module: str
    kernel: Any  # the JITFunction
    args: tuple
    kwargs: dict
    scenario: str = ""


class _Recorder:
    def __init__(self, module: str, kernel: Any, sink: list[Launch]) -> None:
        self.module, self.kernel, self.sink = module, kernel, sink

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.sink.append(Launch(self.module, self.kernel, args, kwargs))

        return launch


@contextlib.contextmanager
def recording(sms: int) -> Iterator[list[Launch]]:
    """Swap every `*_kernel` of the kernel modules for a recorder, and their `sm_count` for `sms`."""
    from triton.runtime.jit import JITFunction

    if _interpreting():
        raise RuntimeError("havoc.kernels.aot needs TRITON_INTERPRET unset (the kernels must be JITFunctions)")
    sink: list[Launch] = []
    saved: list[tuple[Any, str, Any]] = []
    try:
        for name in KERNEL_MODULES:
            mod = __import__(f"havoc.kernels.{name}", fromlist=["_"])
            kernels = [(a, v) for a, v in vars(mod).items() if a.endswith("_kernel") and isinstance(v, JITFunction)]
            if not kernels:  # imported while TRITON_INTERPRET was on: interpreter functions, nothing to compile
                raise RuntimeError(f"havoc.kernels.{name} holds no JIT kernels; import it with TRITON_INTERPRET unset")
            for attr, val in kernels:
                saved.append((mod, attr, val))
                setattr(mod, attr, _Recorder(name, val, sink))
            if hasattr(mod, "sm_count"):
                saved.append((mod, "sm_count", mod.sm_count))
                mod.sm_count = lambda device, _n=sms: _n
        yield sink
    finally:
        for mod, attr, val in saved:
            setattr(mod, attr, val)


def _interpreting() -> bool:
    from havoc.kernels._interpreter import interpreting

    return interpreting()


# ---------------------------------------------------------------------------------------- scenarios
# Model shapes the launches are taken from: (dim, n_heads, n_kv_heads, head_dim, ffn_hidden, vocab).
MODELS = {
    "7b": dict(dim=4096, H=32, KV=8, D=128, F=11008, V=70000),
    "smol": dict(dim=576, H=9, KV=3, D=64, F=1536, V=49152),
}


def _dtypes():
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _scenarios(full: bool = True) -> list[tuple[str, Callable[[], None]]]:
    """(name, thunk) pairs; each thunk runs launchers whose kernel launches are recorded.

    Names read "<op> <case> <model> <dtype>", the op as havoc.ops names it (tests/test_ops_coverage.py
    checks that every op with a Triton kernel has one). Without `full`, only the cases `QUICK` keeps.
    """
    import torch

    from havoc.kernels import cross_entropy, flash_attention, paged_attention, rms_norm, rope, swiglu

    E = torch.empty
    out: list[tuple[str, Callable[[], None]]] = []

    def add(name: str, fn: Callable[[], None]) -> None:
        if full or _quick(name):
            out.append((name, fn))

    for dn, dt in _dtypes().items():
        for mn, m in MODELS.items():
            dim, H, KV, D, F, V = m["dim"], m["H"], m["KV"], m["D"], m["F"], m["V"]
            # rms_norm and add_rms_norm: forward, backward without and with the residual's gradient
            x = E(2048, dim, dtype=dt)
            w = E(dim, dtype=dt)
            add(f"rms_norm all {mn} {dn}", lambda x=x, w=w: (
                rms_norm._forward(x, None, w, 1e-5), rms_norm._backward(x, x, w, 1e-5, None)))
            add(f"add_rms_norm all {mn} {dn}", lambda x=x, w=w: (
                rms_norm._forward(x, x, w, 1e-5), rms_norm._backward(x, x, w, 1e-5, x)))
            # rope over the q|k heads of a fused qkv output, forward and backward
            qkv = E(2, 16, H + 2 * KV, D, dtype=dt)[:, :, : H + KV]
            cs = E(1, 16, D, dtype=torch.float32).expand(2, 16, D)
            add(f"apply_rope all {mn} {dn}", lambda qkv=qkv, cs=cs: (
                rope._launch(qkv, cs, cs, False), rope._launch(qkv, cs, cs, True)))
            # swiglu on the halves of a fused w13 output
            w13 = E(8, 2 * F, dtype=dt)
            g, u = w13[:, :F], w13[:, F:]
            add(f"swiglu all {mn} {dn}", lambda g=g, u=u: (swiglu._forward(g, u), swiglu._backward(g.contiguous(), g, u)))
            # flash attention, forward and backward
            for case in ATTENTION_CASES:
                family = "attention_varlen" if case == "varlen" else "attention"
                add(f"{family} {case} {mn} {dn}",
                    lambda case=case, dt=dt, H=H, KV=KV, D=D: _attention(flash_attention, case, dt, H, KV, D))
            # paged decode (split-K and not) and the cache write
            for case in PAGED_CASES:
                family = "write_kv" if case == "write" else "paged_decode_attention"
                add(f"{family} {case} {mn} {dn}",
                    lambda case=case, dt=dt, H=H, KV=KV, D=D: _paged(paged_attention, case, dt, H, KV, D))
            # fused linear cross-entropy: mean with gradients, sum, loss only (eval)
            add(f"linear_cross_entropy all {mn} {dn}", lambda dt=dt, V=V: _cross_entropy(cross_entropy, dt, V))
    # the widest row rms_norm takes (MAX_FEATURES: 32 warps, at most 64 registers a thread), once
    x = E(256, rms_norm.MAX_FEATURES, dtype=torch.bfloat16)
    w = E(rms_norm.MAX_FEATURES, dtype=torch.bfloat16)
    add("add_rms_norm max-features 7b bf16", lambda x=x, w=w: (
        rms_norm._forward(x, x, w, 1e-5), rms_norm._backward(x, x, w, 1e-5, x)))
    # partial rotary (a tail copied through) and odd paged block sizes, once
    x = E(1, 4, 12, 64, dtype=torch.bfloat16)
    cs = E(1, 4, 32, dtype=torch.float32)
    add("apply_rope partial-rotary smol bf16", lambda x=x, cs=cs: rope._launch(x, cs, cs, False))
    for bs in (17, 1):
        add(f"paged_decode_attention block_size={bs} 7b bf16",
            lambda bs=bs: _paged(paged_attention, "split-k", torch.bfloat16, 32, 8, 128, block_size=bs))
    return out


ATTENTION_CASES = {
    "train": "causal, T = S = 512, forward and backward",
    "bidirectional": "not causal, forward and backward",
    "prefill-key-mask": "64 queries after 448 cached keys (q_offset), left padding (key mask), fwd and bwd",
    "decode": "T = 1 against 300 keys: rows = G, the smallest tile",
    "varlen": "two packed documents (cu_seqlens), causal, forward and backward",
}
PAGED_CASES = {
    "split-k": "batch 1, 4096-token table: split-K and the merge",
    "one-split": "batch 64: as many (sequence, KV head) pairs as SMs, no split",
    "most-splits": "batch 1, 131072-token table: MAX_SPLITS",
    "write": "write_kv, int32 and int64 slots",
}


# The quick set (`--quick`, the test): per "<family> <case>", the (model, dtype) pairs it compiles; families
# not listed compile at every dtype for HAVOC-7B and at bf16 for SmolLM2 (their specialisation changes
# only block sizes with the model). fp32 attention tiles take ~15 s each to compile, so each attention
# variant is compiled once (bf16, head_dim 128) and the training and decode tiles at more dtypes.
_ALL_7B = {("7b", "fp32"), ("7b", "fp16"), ("7b", "bf16")}
QUICK = {
    "attention train": _ALL_7B | {("smol", "bf16")},
    "attention decode": {("7b", "fp16"), ("7b", "bf16"), ("smol", "bf16")},
    "attention bidirectional": {("7b", "bf16")},
    "attention prefill-key-mask": {("7b", "bf16")},
    "attention_varlen varlen": {("7b", "bf16")},
    "paged_decode_attention split-k": _ALL_7B | {("smol", "bf16")},
    "paged_decode_attention one-split": {("7b", "bf16"), ("smol", "bf16")},
    "paged_decode_attention most-splits": set(),
    "paged_decode_attention block_size=17": set(),
    "paged_decode_attention block_size=1": set(),
}


def _quick(name: str) -> bool:
    family, case, model, dtype = name.split(" ")
    pairs = QUICK.get(f"{family} {case}")
    if pairs is None:
        return model == "7b" or dtype == "bf16"
    return (model, dtype) in pairs


def _attention(fa, case: str, dt, H: int, KV: int, D: int) -> None:
    import torch

    E = torch.empty
    scale = D**-0.5

    def qkv(B, T, S):  # the decoder's layout: (B, T, heads, D) storage viewed as (B, heads, T, D)
        q = E(B, T, H, D, dtype=dt).transpose(1, 2)
        k = E(B, S, KV, D, dtype=dt).transpose(1, 2)
        return q, k, E(B, S, KV, D, dtype=dt).transpose(1, 2)

    def fwd_bwd(q, k, v, cu, km, mq, mk, causal, off, backward=True):
        o, lse = fa._forward(q, k, v, cu, cu, km, mq, mk, causal, off, scale)
        if backward:
            fa._backward(o, q, k, v, o, lse, cu, cu, km, mq, mk, causal, off, scale)

    if case in ("train", "bidirectional"):
        fwd_bwd(*qkv(2, 512, 512), None, None, 0, 0, case == "train", 0)
    elif case == "prefill-key-mask":
        fwd_bwd(*qkv(2, 64, 512), None, torch.ones(2, 512, dtype=torch.bool), 0, 0, True, 448)
    elif case == "decode":
        fwd_bwd(*qkv(4, 1, 300), None, None, 0, 0, True, 299, backward=False)
    elif case == "varlen":
        tq, tk = E(700, H, D, dtype=dt), E(700, KV, D, dtype=dt)
        fwd_bwd(tq, tk, tk, torch.tensor([0, 100, 700], dtype=torch.int32), None, 600, 600, True, 0)
    else:
        raise ValueError(case)


def _paged(pa, case: str, dt, H: int, KV: int, D: int, block_size: int = 16) -> None:
    import torch

    E = torch.empty
    if case == "write":  # a decode step's write (one token per sequence) and a prefill's
        cache = E(64, block_size, KV, D, dtype=dt)
        for T, slot_dtype in ((4, torch.int32), (300, torch.int64)):
            kv = E(T, KV, D, dtype=dt)
            pa._write(cache, cache, kv, kv, torch.zeros(T, dtype=slot_dtype))
        return
    B, max_tokens = {"split-k": (1, 4096), "one-split": (64, 4096), "most-splits": (1, 131072)}[case]
    max_blocks = -(-max_tokens // block_size)
    cache = E(B * max_blocks, block_size, KV, D, dtype=dt)
    tables = E(B, max_blocks, dtype=torch.int32)
    lens = E(B, dtype=torch.int32)
    pa._forward(E(B, H, D, dtype=dt), cache, cache, tables, lens, D**-0.5, 0)


def _cross_entropy(ce, dt, V: int) -> None:
    import torch

    dim = 16  # the GEMMs run for real on CPU; the kernel's specialisation does not depend on dim
    h = torch.zeros(64, dim, dtype=dt)
    w = torch.zeros(V, dim, dtype=dt)
    t = torch.zeros(64, dtype=torch.int64)
    ce._forward(h, w, t, -100, "mean", 32, True, True)
    ce._forward(h, w, t.int(), -100, "sum", 32, True, False)
    ce._forward(h, w, t, -100, "mean", 32, False, False)


def capture(arch: int = 90, full: bool = True) -> list[Launch]:
    """Every launch the scenarios make, for a GPU with `SM_COUNT[arch]` SMs."""
    launches: list[Launch] = []
    with recording(SM_COUNT.get(arch, 132)) as sink:
        for name, fn in _scenarios(full):
            n = len(sink)
            fn()
            for launch in sink[n:]:
                launch.scenario = name
        launches.extend(sink)
    return launches


# ------------------------------------------------------------------------------------------ binding
@dataclasses.dataclass
class Job:
    """A distinct compilation: plain data, so that a worker process can take it."""

    module: str
    kernel: str
    arch: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    label: str
    scenarios: list[str]

    def key(self) -> str:
        return repr((self.module, self.kernel, self.arch, self.signature, sorted(self.constexprs.items()),
                     sorted(self.attrs.items()), sorted(self.options.items())))


def _target(arch: int):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch, 32)


def bind(launch: Launch, arch: int) -> Job:
    """Specialise a recorded launch as `JITFunction.run` would on an sm_`arch` device (no driver needed)."""
    from triton import knobs
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    backend = make_backend(_target(arch))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    opts = {k: v for k, v in options.__dict__.items()}
    first_ptr = next((v for v in signature.values() if isinstance(v, str) and v.startswith("*")), "")
    shown = {fn.arg_names[p[0]]: v for p, v in constexprs.items() if len(p) == 1}
    flags = " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in shown.items() if isinstance(v, (int, str)))
    label = f"{first_ptr[1:]} {flags} w{opts.get('num_warps')} s{opts.get('num_stages')}"
    return Job(launch.module, fn.__name__, arch, signature, constexprs, attrs, _plain(opts), label, [launch.scenario])


def _plain(options: dict) -> dict:
    # options hold tuples and enums only as simple values here; keep what pickles and compares
    return {k: v for k, v in options.items() if isinstance(v, (bool, int, float, str, tuple, type(None)))}


def jobs(archs: tuple[int, ...] = (90,), scenario: str | None = None, full: bool = True) -> list[Job]:
    """Distinct compilations over all scenarios, for each arch (launches that specialise alike merge)."""
    out: dict[str, Job] = {}
    for arch in archs:
        for launch in capture(arch, full):
            if scenario and scenario not in launch.scenario:
                continue
            job = bind(launch, arch)
            key = job.key()
            if key in out:
                if launch.scenario not in out[key].scenarios:
                    out[key].scenarios.append(launch.scenario)
            else:
                out[key] = job
    return list(out.values())


# ---------------------------------------------------------------------------------------- compiling
@dataclasses.dataclass
class Result:
    kernel: str
    arch: int
    label: str
    scenarios: list[str]
    ok: bool
    error: str = ""
    shared: int = -1  # bytes of dynamic shared memory (metadata.shared)
    shared_limit: int = 0
    regs: int = -1  # per thread, from the cubin
    spill: int = -1  # bytes of spill stores per thread, from ptxas -v
    stack: int = -1  # bytes of stack frame per thread (where spills go), from the cubin
    seconds: float = 0.0

    @property
    def over_shared(self) -> bool:
        return self.ok and self.shared_limit > 0 and self.shared > self.shared_limit


def _cuobjdump() -> str | None:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else shutil.which("cuobjdump")


def _res_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) per thread of the cubin's kernel, or (-1, -1) without cuobjdump.

    The stack frame holds the spilled registers (cuobjdump's LOCAL stays 0 when ptxas spills).
    """
    tool = _cuobjdump()
    if tool is None:
        return -1, -1
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    reg = re.search(r"REG:(\d+)", text)
    stack = re.search(r"STACK:(\d+)", text)
    return (int(reg.group(1)) if reg else -1, int(stack.group(1)) if stack else -1)


def _spill_stores(ptxas_log: str) -> int:
    """Bytes of spill stores from ptxas -v (Triton runs it with -v), or -1 if the log is not there."""
    m = re.search(r"(\d+) bytes spill stores", ptxas_log)
    return int(m.group(1)) if m else -1


def compile_job(job: Job) -> Result:
    """Compile one job to a cubin; never raises (a failure is a Result with ok=False)."""
    import io

    import triton
    from triton import knobs
    from triton.compiler import ASTSource

    os.environ["TRITON_INTERPRET"] = "0"
    mod = __import__(f"havoc.kernels.{job.module}", fromlist=["_"])
    fn = getattr(mod, job.kernel)
    res = Result(job.kernel, job.arch, job.label, job.scenarios, ok=False, shared_limit=SHARED_LIMIT.get(job.arch, 0))
    t0 = time.perf_counter()
    log = io.StringIO()
    try:
        src = ASTSource(fn, job.signature, job.constexprs, job.attrs)
        # Triton prints ptxas's -v report when asked: the spill counts come from there (a cache hit has none)
        with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(src, target=_target(job.arch), options=dict(job.options))
        res.ok = True
        res.shared = int(compiled.metadata.shared)
        res.regs, res.stack = _res_usage(compiled.asm["cubin"])
        res.spill = _spill_stores(log.getvalue())
    except Exception as e:  # noqa: BLE001 - every failure is the report's content
        res.error = f"{type(e).__name__}: {e}"
    res.seconds = time.perf_counter() - t0
    return res


def _worker_init() -> None:
    os.environ["TRITON_INTERPRET"] = "0"
    import warnings

    warnings.filterwarnings("ignore")


def compile_all(job_list: list[Job], workers: int = 1, progress: bool = False) -> list[Result]:
    """Compile every job, `workers` processes at a time (spawned: MLIR does not survive a fork)."""
    # the slow ones first, so the pool does not end waiting on one big kernel
    order = sorted(range(len(job_list)), key=lambda i: "attn" not in job_list[i].kernel)
    ordered = [job_list[i] for i in order]
    if workers <= 1:
        return [compile_job(j) for j in ordered]
    import multiprocessing

    results = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as ex:
        futures = [ex.submit(compile_job, j) for j in ordered]
        for fut in as_completed(futures):
            results.append(fut.result())
            if progress:
                r = results[-1]
                print(f"[{len(results)}/{len(ordered)}] {r.kernel} {r.label}: {'ok' if r.ok else 'FAILED'} "
                      f"{r.seconds:.1f} s", file=sys.stderr, flush=True)
    return results


def nvidia_backend_available() -> str | None:
    """None if this Triton can compile for NVIDIA GPUs offline, else the reason it cannot."""
    try:
        import triton  # noqa: F401
        from triton.backends import backends
    except Exception as e:  # noqa: BLE001
        return f"triton is not importable: {e}"
    if "nvidia" not in backends:
        return "this Triton build has no NVIDIA backend"
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        get_ptxas(90).path
    except Exception as e:  # noqa: BLE001
        return f"ptxas for sm_90 not found: {e}"
    return None


# --------------------------------------------------------------------------------------------- CLI
def format_table(results: list[Result]) -> str:
    rows = [("kernel", "sm", "config", "shared B", "regs", "spill B", "stack B", "s", "status")]
    for r in sorted(results, key=lambda r: (r.kernel, r.arch, r.label)):
        status = "ok" if r.ok and not r.over_shared else ("SHARED > LIMIT" if r.ok else "FAILED")
        rows.append((r.kernel, str(r.arch), r.label, str(r.shared), str(r.regs), str(r.spill), str(r.stack),
                     f"{r.seconds:.1f}", status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    for r in results:
        if not r.ok:
            lines.append(f"\n{r.kernel} sm_{r.arch} {r.label} ({', '.join(r.scenarios)}):\n{r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m havoc.kernels.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, nargs="+", default=[90], help="compute capabilities, e.g. 90 80")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="compiler processes")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--only", help="compile only kernels whose name contains this")
    p.add_argument("--scenario", help="only the scenarios whose name contains this")
    p.add_argument("--quick", action="store_true", help="the smaller set the test compiles (see _scenarios)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    a = p.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"  # before any kernel module is imported
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # 3.9 warns when unset; 1 is its default
    reason = nvidia_backend_available()
    if reason:
        print(f"cannot compile ahead of time: {reason}", file=sys.stderr)
        return 2
    own_cache = None
    if "TRITON_CACHE_DIR" not in os.environ:
        own_cache = tempfile.mkdtemp(prefix="havoc-aot-")
        os.environ["TRITON_CACHE_DIR"] = own_cache
    try:
        t0 = time.perf_counter()
        job_list = [j for j in jobs(tuple(a.arch), a.scenario, full=not a.quick) if not a.only or a.only in j.kernel]
        results = compile_all(job_list, a.jobs, progress=not a.quiet)
        took = time.perf_counter() - t0
    finally:
        if own_cache:
            shutil.rmtree(own_cache, ignore_errors=True)
    print(format_table(results))
    bad = [r for r in results if not r.ok or r.over_shared]
    print(f"\n{len(results) - len(bad)}/{len(results)} compilations ok in {took:.0f} s ({a.jobs} processes)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
