"""Triton kernels vs the torch eager reference vs torch.compile of the reference (vs PyTorch SDPA,
flash-attn and Liger-Kernel where installed), at HAVOC-7B and SmolLM2-135M shapes, forward and
forward+backward, in the hardware's units.

Every row reports the median time per call and, by the op's nature, GB/s (memory-bound: rms_norm, rope,
swiglu, paged decode) or TFLOP/s (attention, cross-entropy), as a fraction of the device's spec peak and,
for bandwidth, of the copy bandwidth measured at the start of the session (the issue's goals are stated
against the measured copy: >= 80% for the elementwise ops, >= 70% for paged decode at batch >= 32).
The device name is in every row. The terminal summary prints one table for the whole run;
`--benchmark-json` keeps every figure in `extra_info` for bench/report.py.

Timing: a call runs once untimed (compilation, autotuning, allocator warm-up), then each round repeats
it enough times to last ~20 ms and synchronises once, so a microsecond kernel is not measured as its
launch latency plus a device sync. Bytes count each tensor a kernel must read or write once (the
minimum traffic); FLOPs count matmul work only (causal attention: half the square; backward 2.5x the
forward, FlashAttention-2's convention; fused cross-entropy: 3 GEMMs of 2 * tokens * vocab * dim).

    pytest bench/test_kernels.py --benchmark-only [--benchmark-json=FILE]     # on a CUDA machine

Without CUDA every benchmark skips. `HAVOC_BENCH_SMOKE=1` instead runs them all on CPU through Triton's
interpreter at toy shapes, one round each: a check that the harness itself runs (providers, byte and FLOP
counts, the summary) before a GPU session spends its time on it; its numbers mean nothing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

SMOKE = os.environ.get("HAVOC_BENCH_SMOKE") == "1"
if SMOKE and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

pytestmark = [
    pytest.mark.skipif(
        not (torch.cuda.is_available() or SMOKE),
        reason="the Triton kernel benchmarks need a CUDA device (HAVOC_BENCH_SMOKE=1 checks the harness on CPU)",
    ),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]

from havoc.kernels import reference as ref  # noqa: E402  (after the interpreter switch)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32  # the interpreter has no bf16 dot
ROUNDS = 1 if SMOKE else 10
ROUND_S = 0.0 if SMOKE else 0.02

MODELS = {
    "havoc-7b": dict(dim=4096, n_heads=32, n_kv_heads=8, head_dim=128, ffn=11008, vocab=70000),
    "smollm2": dict(dim=576, n_heads=9, n_kv_heads=3, head_dim=64, ffn=1536, vocab=49152),
}
if SMOKE:
    MODELS = {"toy": dict(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn=96, vocab=500)}
TOKENS = 24 if SMOKE else 8192  # rows for the per-token ops: a training micro-batch of 4 x 2048
# (batch, seq) for causal attention; the goals are at 4k-16k, head_dim 128
ATTN_SHAPES = {"havoc-7b": [(4, 4096), (2, 8192), (1, 16384)], "smollm2": [(8, 2048)], "toy": [(1, 40)]}
PAGED_BATCHES = [3] if SMOKE else [1, 8, 32, 64]
PAGED_CONTEXT = {"havoc-7b": 4096, "smollm2": 2048, "toy": 37}
PAGED_BLOCK = 16

# Spec sheets: (HBM GB/s, dense bf16 tensor TFLOP/s), matched against torch.cuda.get_device_name.
PEAKS = {
    "H100 80GB HBM3": (3350, 989),  # SXM5
    "H100 PCIe": (2000, 756),
    "H100 NVL": (3900, 835),
    "H200": (4800, 989),
    "A100-SXM4-80GB": (2039, 312),
    "A100-SXM4-40GB": (1555, 312),
    "A100 80GB PCIe": (1935, 312),
    "L40S": (864, 362),
    "RTX 4090": (1008, 165),
}


# ------------------------------------------------------------------------------------------ harness
def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _device_info() -> dict:
    if DEVICE.type != "cuda":
        return dict(name="CPU (Triton interpreter, smoke run)", peak_gbs=None, peak_tflops=None, copy_gbs=None)
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAKS.items() if k in name), (None, None))
    # measured copy bandwidth: 1 GiB read + 1 GiB written, best of 10
    src = torch.empty(1 << 30, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del src, dst
    return dict(name=name, peak_gbs=peak[0], peak_tflops=peak[1], copy_gbs=2 * (1 << 30) / best / 1e9)


@pytest.fixture(scope="session")
def device_info() -> dict:
    return _device_info()


def _time_per_call(benchmark, fn: Callable[[], object]) -> float | None:
    """Median seconds per call of fn, by pytest-benchmark, with many calls per synchronised round."""
    fn()  # warm: compile, autotune, allocate
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    once = time.perf_counter() - t0
    inner = max(1, min(10_000, int(ROUND_S / max(once, 1e-7))))

    def round_() -> None:
        for _ in range(inner):
            fn()
        _sync()

    benchmark.pedantic(round_, rounds=ROUNDS, warmup_rounds=0 if SMOKE else 1, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable
        return None
    return benchmark.stats.stats.median / inner


def _peak_mib(fn: Callable[[], object]) -> float | None:
    """Device memory a call needs above what is allocated before it (CUDA only)."""
    if DEVICE.type != "cuda":
        return None
    _sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    _sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _run(benchmark, device_info, kernel_results, *, group: str, provider: str, fn: Callable[[], object],
         bytes_moved: float | None = None, flops: float | None = None, memory: bool = False) -> None:
    benchmark.group = group
    seconds = _time_per_call(benchmark, fn)
    row = dict(kind="kernel", group=group, provider=provider, device=device_info["name"], dtype=str(DTYPE).removeprefix("torch."))
    if seconds is not None:
        row["ms"] = seconds * 1e3
        if bytes_moved:
            row["gb_s"] = bytes_moved / seconds / 1e9
            if device_info["peak_gbs"]:
                row["frac_peak_bw"] = row["gb_s"] / device_info["peak_gbs"]
            if device_info["copy_gbs"]:
                row["frac_copy_bw"] = row["gb_s"] / device_info["copy_gbs"]
        if flops:
            row["tflop_s"] = flops / seconds / 1e12
            if device_info["peak_tflops"]:
                row["frac_peak_flops"] = row["tflop_s"] / device_info["peak_tflops"]
    if memory:
        row["peak_mib"] = _peak_mib(fn)
    benchmark.extra_info.update(row)
    kernel_results.append(row)


def _compiled(fn: Callable) -> Callable:
    # inductor on the GPU; in a smoke run aot_eager (traces the same graph, skips the C++/Triton codegen)
    return torch.compile(fn, backend="aot_eager" if SMOKE else "inductor")


def _liger(name: str):
    """A Liger-Kernel entry point, or pytest.skip when Liger (or that API) is not installed."""
    if importlib.util.find_spec("liger_kernel") is None:
        pytest.skip("Liger-Kernel is not installed")
    try:
        if name == "rms_norm":
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            return lambda x, w, eps: LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama")
        if name == "swiglu":
            from liger_kernel.ops.swiglu import LigerSiLUMulFunction

            return LigerSiLUMulFunction.apply
        if name == "rope":
            from liger_kernel.transformers.rope import liger_rotary_pos_emb

            return liger_rotary_pos_emb
        if name == "cross_entropy":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            loss = LigerFusedLinearCrossEntropyLoss()
            return lambda h, w, t: loss(w, h, t)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"this Liger-Kernel version lacks {name}: {e}")
    raise ValueError(name)


def _rand(*shape, scale=1.0, grad=False):
    return (torch.randn(*shape, device=DEVICE, dtype=torch.float32) * scale).to(DTYPE).requires_grad_(grad)


def _fwd_bwd(fn: Callable, inputs: tuple, grad_out: torch.Tensor | None = None) -> Callable[[], object]:
    """A call of fn(*inputs) followed by its backward into the inputs that require grad."""
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def step():
        out = fn(*inputs)
        first = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(first, leaves, grad_out if first.dim() else None)

    return step


def _no_grad(fn: Callable, inputs: tuple) -> Callable[[], object]:
    def call():
        with torch.no_grad():
            return fn(*inputs)

    return call


MODES = ["fwd", "fwd+bwd"]


# --------------------------------------------------------------------------------------- rms_norm
@pytest.mark.op("rms_norm", "triton")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["triton", "eager", "compile", "liger"])
@pytest.mark.parametrize("model", list(MODELS))
def test_rms_norm(benchmark, device_info, kernel_results, model, provider, mode):
    from havoc.kernels import rms_norm as K

    N = MODELS[model]["dim"]
    x, w = _rand(TOKENS, N, grad=True), _rand(N, grad=True)
    fn = {"triton": K.rms_norm, "eager": ref.rms_norm, "compile": _compiled(ref.rms_norm)}.get(provider) or _liger("rms_norm")
    e = x.element_size()
    if mode == "fwd":
        call, moved = _no_grad(fn, (x, w, 1e-5)), 2 * TOKENS * N * e
    else:
        call, moved = _fwd_bwd(fn, (x, w, 1e-5), _rand(TOKENS, N)), 5 * TOKENS * N * e  # fwd 2, bwd 3 passes
    _run(benchmark, device_info, kernel_results, group=f"rms_norm {model} {TOKENS}x{N} {mode}", provider=provider,
         fn=call, bytes_moved=moved)


@pytest.mark.op("add_rms_norm", "triton")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["triton", "eager", "compile"])
@pytest.mark.parametrize("model", list(MODELS))
def test_add_rms_norm(benchmark, device_info, kernel_results, model, provider, mode):
    from havoc.kernels import rms_norm as K

    N = MODELS[model]["dim"]
    x, r, w = _rand(TOKENS, N, grad=True), _rand(TOKENS, N, grad=True), _rand(N, grad=True)
    fn = {"triton": K.add_rms_norm, "eager": ref.add_rms_norm, "compile": _compiled(ref.add_rms_norm)}[provider]
    e = x.element_size()
    if mode == "fwd":
        call, moved = _no_grad(fn, (x, r, w, 1e-5)), 4 * TOKENS * N * e
    else:
        call, moved = _fwd_bwd(fn, (x, r, w, 1e-5), _rand(TOKENS, N)), 8 * TOKENS * N * e
    _run(benchmark, device_info, kernel_results, group=f"add_rms_norm {model} {TOKENS}x{N} {mode}", provider=provider,
         fn=call, bytes_moved=moved)


# ------------------------------------------------------------------------------------------- rope
@pytest.mark.op("apply_rope", "triton")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["triton", "eager", "compile", "liger"])
@pytest.mark.parametrize("model", list(MODELS))
def test_rope(benchmark, device_info, kernel_results, model, provider, mode):
    from havoc.kernels import rope as K

    m = MODELS[model]
    H, KV, D = m["n_heads"], m["n_kv_heads"], m["head_dim"]
    B, T = 4, TOKENS // 4
    qkv = _rand(B, T, H + 2 * KV, D, grad=True)
    positions = torch.arange(T, device=DEVICE).expand(B, T)
    cos, sin = ref.rope_cos_sin(positions, D, 1e4)
    g = _rand(B, T, H + KV, D)
    grads_out = g
    if provider == "liger":
        liger = _liger("rope")

        def fn(x, c, s):  # Liger takes q and k as (B, heads, T, D) and returns them apart
            return liger(x[:, :, :H].transpose(1, 2), x[:, :, H:].transpose(1, 2), c, s)

        grads_out = (g[:, :, :H].transpose(1, 2), g[:, :, H:].transpose(1, 2))
    else:
        fn = {"triton": K.apply_rope, "eager": ref.apply_rope, "compile": _compiled(ref.apply_rope)}[provider]
    args = (qkv[:, :, : H + KV], cos, sin)
    moved = 2 * B * T * (H + KV) * D * qkv.element_size()
    if mode == "fwd":
        call = _no_grad(fn, args)
    else:

        def call():
            torch.autograd.grad(fn(*args), (qkv,), grads_out)

        moved *= 2
    _run(benchmark, device_info, kernel_results, group=f"rope {model} {B}x{T}x{H + KV}x{D} {mode}", provider=provider,
         fn=call, bytes_moved=moved)


# ----------------------------------------------------------------------------------------- swiglu
@pytest.mark.op("swiglu", "triton")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["triton", "eager", "compile", "liger"])
@pytest.mark.parametrize("model", list(MODELS))
def test_swiglu(benchmark, device_info, kernel_results, model, provider, mode):
    from havoc.kernels import swiglu as K

    Fh = MODELS[model]["ffn"]
    w13 = _rand(TOKENS, 2 * Fh, grad=True)
    gate, up = w13.split(Fh, dim=-1)
    fn = {"triton": K.swiglu, "eager": ref.swiglu, "compile": _compiled(ref.swiglu)}.get(provider) or _liger("swiglu")
    e = w13.element_size()
    if mode == "fwd":
        call, moved = _no_grad(fn, (gate, up)), 3 * TOKENS * Fh * e
    else:
        g = _rand(TOKENS, Fh)

        def call():
            torch.autograd.grad(fn(gate, up), (w13,), g)

        moved = 8 * TOKENS * Fh * e  # fwd: read 2, write 1; bwd: read 3, write 2
    _run(benchmark, device_info, kernel_results, group=f"swiglu {model} {TOKENS}x{Fh} {mode}", provider=provider,
         fn=call, bytes_moved=moved)


# -------------------------------------------------------------------------------------- attention
def _attention_cases():
    return [(model, B, T) for model in MODELS for B, T in ATTN_SHAPES[model]]


@pytest.mark.op("attention", "triton")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["triton", "eager", "compile", "sdpa", "flash_attn"])
@pytest.mark.parametrize("model, B, T", _attention_cases())
def test_attention(benchmark, device_info, kernel_results, model, B, T, provider, mode):
    from havoc.kernels import flash_attention as K

    m = MODELS[model]
    H, KV, D = m["n_heads"], m["n_kv_heads"], m["head_dim"]
    qkv = _rand(B, T, H + 2 * KV, D, grad=True)  # the decoder's fused projection
    q, k, v = (qkv[:, :, :H].transpose(1, 2), qkv[:, :, H : H + KV].transpose(1, 2), qkv[:, :, H + KV :].transpose(1, 2))
    if provider == "flash_attn":
        if importlib.util.find_spec("flash_attn") is None:
            pytest.skip("flash-attn is not installed")
        from flash_attn import flash_attn_func

        def fn(q, k, v):  # (B, T, heads, D) in, as flash-attn takes them
            return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True).transpose(1, 2)
    elif provider == "sdpa":
        def fn(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        fn = {"triton": K.attention, "eager": ref.attention, "compile": _compiled(ref.attention)}[provider]
    flops = 4 * B * H * T * T * D / 2  # causal: half of QK^T and PV
    if mode == "fwd":
        call = _no_grad(fn, (q, k, v))
    else:
        g = _rand(B, H, T, D)

        def call():
            torch.autograd.grad(fn(q, k, v), (qkv,), g)

        flops *= 3.5  # forward + backward (2.5x)
    _run(benchmark, device_info, kernel_results, group=f"attention {model} causal B{B} T{T} H{H}/{KV} D{D} {mode}",
         provider=provider, fn=call, flops=flops)


@pytest.mark.op("attention_varlen", "triton")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["triton", "eager"])
@pytest.mark.parametrize("model, B, T", _attention_cases())
def test_attention_varlen(benchmark, device_info, kernel_results, model, B, T, provider, mode):
    """B documents of T tokens packed into one row (cu_seqlens), causal within each: the same work as the
    batched causal case, through the varlen entry point training's packed batches use."""
    from havoc.kernels import flash_attention as K

    m = MODELS[model]
    H, KV, D = m["n_heads"], m["n_kv_heads"], m["head_dim"]
    qkv = _rand(B * T, H + 2 * KV, D, grad=True)
    q, k, v = qkv[:, :H], qkv[:, H : H + KV], qkv[:, H + KV :]
    cu = torch.arange(0, (B + 1) * T, T, dtype=torch.int32, device=DEVICE)
    if provider == "triton":
        def fn(q, k, v):
            return K.attention_varlen(q, k, v, cu, cu, T, T, causal=True)
    else:
        def fn(q, k, v):
            return ref.attention_varlen(q, k, v, cu, cu, causal=True)
    flops = 4 * B * H * T * T * D / 2
    if mode == "fwd":
        call = _no_grad(fn, (q, k, v))
    else:
        g = _rand(B * T, H, D)

        def call():
            torch.autograd.grad(fn(q, k, v), (qkv,), g)

        flops *= 3.5
    _run(benchmark, device_info, kernel_results, group=f"attention_varlen {model} {B}x{T} packed H{H}/{KV} D{D} {mode}",
         provider=provider, fn=call, flops=flops)


# ----------------------------------------------------------------------------------- paged decode
@pytest.mark.op("paged_decode_attention", "triton")
@pytest.mark.parametrize("provider", ["triton", "eager", "sdpa_contiguous"])
@pytest.mark.parametrize("batch", PAGED_BATCHES)
@pytest.mark.parametrize("model", list(MODELS))
def test_paged_decode(benchmark, device_info, kernel_results, model, batch, provider):
    from havoc.kernels import paged_attention as K

    m = MODELS[model]
    H, KV, D, L = m["n_heads"], m["n_kv_heads"], m["head_dim"], PAGED_CONTEXT[model]
    blocks_per_seq = -(-L // PAGED_BLOCK)
    num_blocks = batch * blocks_per_seq
    k_pool, v_pool = _rand(num_blocks, PAGED_BLOCK, KV, D), _rand(num_blocks, PAGED_BLOCK, KV, D)
    tables = torch.randperm(num_blocks, device=DEVICE).int().view(batch, blocks_per_seq)  # scattered blocks
    lengths = torch.full((batch,), L, dtype=torch.int32, device=DEVICE)
    q = _rand(batch, H, D)
    if provider == "triton":
        call = _no_grad(K.paged_decode_attention, (q, k_pool, v_pool, tables, lengths))
    elif provider == "eager":
        call = _no_grad(ref.paged_decode_attention, (q, k_pool, v_pool, tables, lengths))
    else:  # the same attention over K/V already contiguous: what paging costs, at best
        k, v = _rand(batch, KV, L, D), _rand(batch, KV, L, D)
        call = _no_grad(lambda q, k, v: F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True),
                        (q, k, v))
    moved = 2 * batch * L * KV * D * q.element_size() + 2 * q.numel() * q.element_size()
    _run(benchmark, device_info, kernel_results, group=f"paged_decode {model} batch{batch} ctx{L} block{PAGED_BLOCK}",
         provider=provider, fn=call, bytes_moved=moved)


@pytest.mark.op("write_kv", "triton")
@pytest.mark.parametrize("provider", ["triton", "eager"])
@pytest.mark.parametrize("batch", PAGED_BATCHES)
@pytest.mark.parametrize("model", list(MODELS))
def test_write_kv(benchmark, device_info, kernel_results, model, batch, provider):
    """A decode step's K/V writes: one token per sequence into scattered slots of one layer's pools."""
    from havoc.kernels import paged_attention as K

    m = MODELS[model]
    KV, D = m["n_kv_heads"], m["head_dim"]
    num_blocks = batch * -(-PAGED_CONTEXT[model] // PAGED_BLOCK)
    k_pool, v_pool = _rand(num_blocks, PAGED_BLOCK, KV, D), _rand(num_blocks, PAGED_BLOCK, KV, D)
    k, v = _rand(batch, KV, D), _rand(batch, KV, D)
    slots = torch.randperm(num_blocks * PAGED_BLOCK, device=DEVICE)[:batch]
    fn = K.write_kv if provider == "triton" else ref.write_kv
    call = _no_grad(fn, (k_pool, v_pool, k, v, slots))
    moved = 2 * 2 * k.numel() * k.element_size()  # read the rows, write them into the pools
    _run(benchmark, device_info, kernel_results, group=f"write_kv {model} batch{batch}", provider=provider, fn=call,
         bytes_moved=moved)


# ------------------------------------------------------------------------------ fused cross-entropy
@pytest.mark.op("linear_cross_entropy", "triton")
@pytest.mark.parametrize("provider", ["triton", "eager", "compile", "liger"])
@pytest.mark.parametrize("model", list(MODELS))
def test_linear_cross_entropy(benchmark, device_info, kernel_results, model, provider):
    from havoc.kernels import cross_entropy as K

    m = MODELS[model]
    N, d, V = TOKENS, m["dim"], m["vocab"]
    h = _rand(N, d, grad=True)
    w = _rand(V, d, scale=d**-0.5, grad=True)
    t = torch.randint(0, V, (N,), device=DEVICE)
    fn = {"triton": K.linear_cross_entropy, "eager": ref.linear_cross_entropy,
          "compile": _compiled(ref.linear_cross_entropy)}.get(provider) or _liger("cross_entropy")
    call = _fwd_bwd(fn, (h, w, t))  # loss and both gradients: the fused op computes them together
    _run(benchmark, device_info, kernel_results, group=f"linear_cross_entropy {model} {N}x{d} vocab {V} fwd+bwd",
         provider=provider, fn=call, flops=3 * 2 * N * V * d, memory=True)
