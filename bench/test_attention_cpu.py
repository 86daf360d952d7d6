"""The CPU attention kernel (C++, `havoc.backends.cpu.attention`) against torch's own on the same data: the
reference (`kernels/reference.py`), which for a whole causal prompt is SDPA's fused CPU flash attention and
otherwise SDPA over a grouped query with a mask (`pytest bench --benchmark-only`; the summary table gives the
ratios).

Shapes: SmolLM2-135M's attention (9 query heads over 3 KV heads, head_dim 64) and HAVOC-7B's (32 over 8,
head_dim 128). Cases: a whole causal prompt (prefill), the second half of a prompt after a cached first
half (chunked prefill: q_offset > 0), and a packed batch of 4 prompts of different lengths (varlen, the
engine's packed prefill).
"""

from __future__ import annotations

import pytest
import torch

from havoc.backends import cpu
from havoc.kernels import reference

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("attention", "cpu"),
    pytest.mark.op("attention_varlen", "cpu"),
]

SHAPES = {"smollm2": (9, 3, 64), "havoc-7b": (32, 8, 128)}
IMPLS = ("cpp", "torch")


def _qkv(shape: str, T: int, S: int, dtype: torch.dtype, seed: int = 0):
    H, KV, D = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, n, L, D, generator=g).to(dtype) for n, L in ((H, T), (KV, S), (KV, S)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["prompt", "chunk"])
@pytest.mark.parametrize("tokens", [512, 2048])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention(benchmark, record, dtype, shape, tokens, case, impl):
    if shape == "havoc-7b" and tokens == 2048:
        pytest.skip("HAVOC-7B at 2048 tokens: seconds per round on two cores; 512 shows the shape")
    dt = getattr(torch, dtype)
    T = tokens if case == "prompt" else tokens // 2  # chunk: the second half after a cached first half
    q, k, v = _qkv(shape, T, tokens, dt)
    fn = cpu.attention if impl == "cpp" else reference.attention
    kw = dict(causal=True, q_offset=tokens - T)
    if impl == "cpp":  # the same answer as the baseline, or the timing means nothing
        torch.testing.assert_close(fn(q, k, v, **kw).float(), reference.attention(q.float(), k.float(), v.float(), **kw),
                                   atol=2e-2, rtol=2e-2)
    benchmark(fn, q, k, v, **kw)
    record(f"attn {shape} {'fp32' if dtype == 'float32' else 'bf16'} {case} {tokens}", "cpp" if impl == "cpp" else "py", 1, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention_varlen(benchmark, record, dtype, impl):
    """A packed prefill of 4 SmolLM2 prompts of 100-400 tokens."""
    H, KV, D = SHAPES["smollm2"]
    dt = getattr(torch, dtype)
    lens = [100, 400, 230, 170]
    cu = torch.tensor([0] + lens).cumsum(0)
    g = torch.Generator().manual_seed(1)
    N = int(cu[-1])
    q, k, v = (torch.randn(N, n, D, generator=g).to(dt) for n in (H, KV, KV))
    fn = cpu.attention_varlen if impl == "cpp" else reference.attention_varlen
    benchmark(fn, q, k, v, cu, cu, max(lens), max(lens), causal=True)
    record(f"attn_varlen smollm2 {'fp32' if dtype == 'float32' else 'bf16'} 4 prompts", "cpp" if impl == "cpp" else "py", 1, benchmark)
