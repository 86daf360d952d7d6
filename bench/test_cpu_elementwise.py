"""The CPU elementwise kernels (C++, csrc/elementwise.cpp) against the reference's torch ops on the same data,
at SmolLM2-135M's prefill shapes (512 tokens: dim 576, 9 + 3 query/key heads of 64, SwiGLU 1536) and
HAVOC-7B's (dim 4096, 32 + 8 heads of 128, SwiGLU 11008) at 128 tokens (`pytest bench --benchmark-only`;
the summary table gives the ratios).
"""

from __future__ import annotations

import pytest
import torch

from havoc.backends import cpu
from havoc.kernels import reference

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("rms_norm", "cpu"),
    pytest.mark.op("add_rms_norm", "cpu"),
    pytest.mark.op("apply_rope", "cpu"),
    pytest.mark.op("swiglu", "cpu"),
]

# tokens, dim, query heads, KV heads, head_dim, SwiGLU hidden
SHAPES = {"smollm2": (512, 576, 9, 3, 64, 1536), "havoc-7b": (128, 4096, 32, 8, 128, 11008)}


def _case(op: str, shape: str, dtype: torch.dtype):
    T, D, H, KV, hd, Fh = SHAPES[shape]
    g = torch.Generator().manual_seed(0)

    def randn(*s):
        return torch.randn(*s, generator=g).to(dtype)

    if op == "rms_norm":
        return randn(1, T, D), randn(D), 1e-5
    if op == "add_rms_norm":
        return randn(1, T, D), randn(1, T, D), randn(D), 1e-5
    if op == "apply_rope":
        qkv = randn(1, T, H + 2 * KV, hd)
        cos, sin = reference.rope_cos_sin(torch.arange(T)[None], hd, 10000.0)
        return qkv[:, :, : H + KV], cos, sin  # the model's strided q|k view
    gu = randn(1, T, 2 * Fh)
    return gu[..., :Fh], gu[..., Fh:]  # w13's halves


@pytest.mark.parametrize("impl", ("cpp", "torch"))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "apply_rope", "swiglu"])
def test_elementwise(benchmark, record, op, dtype, shape, impl):
    args = _case(op, shape, getattr(torch, dtype))
    fn = getattr(cpu if impl == "cpp" else reference, op)
    with torch.inference_mode():
        if impl == "cpp":  # the same answer as the baseline, or the timing means nothing
            got, want = fn(*args), getattr(reference, op)(*args)
            for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                torch.testing.assert_close(a.float(), b.float(), atol=1e-2, rtol=1e-2)
        benchmark(fn, *args)
    record(f"{op} {shape} {'fp32' if dtype == 'float32' else 'bf16'} {SHAPES[shape][0]} tokens",
           "cpp" if impl == "cpp" else "py", 1, benchmark)
