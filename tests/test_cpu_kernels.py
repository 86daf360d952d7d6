"""The C++ decode kernels (csrc/cpu_decode.cpp) against torch: the product over fp32, bf16 and int8 weights,
its argmax-only LM head, every ISA variant forced, awkward shapes, bad inputs rejected."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from havoc import _C, cpu_decode, ops
from havoc.cpu_decode import Int8Weight

ISAS = cpu_decode.isas()  # "scalar" always; "avx2"/"avx512" where this CPU has them
# (rows M, in K, out N): 1 row, not multiples of any vector width, SmolLM2's K (576, 1536), a 7B-sized K.
# K: under one 32-column bf16 pair block (17), blocks plus a vector and/or scalar tail (33, 47, 80, 100)
SHAPES = [(1, 576, 960), (1, 1, 1), (3, 17, 5), (5, 1536, 576), (4, 33, 9), (2, 47, 7), (3, 80, 19), (9, 576, 67),
          (2, 11008, 20), (33, 100, 21)]


def _weight(dtype, N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g)
    if dtype == "int8":
        q = Int8Weight.quantize(w, 64)
        return q, q.dequantize()
    wt = w.to(torch.bfloat16) if dtype == "bfloat16" else w
    return wt, wt.float()


def _rel(got, want):
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("M, K, N", SHAPES)
def test_linear_matches_torch(isa, dtype, M, K, N):
    w, wf = _weight(dtype, N, K, seed=M + K + N)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    want = x.double() @ wf.double().T  # the weight the kernel stands for, exactly
    got = cpu_decode.linear(x, w, isa=isa)
    assert got.shape == (M, N) and got.dtype == torch.float32
    # fp32 accumulation over K terms: relative error ~ sqrt(K) * 2^-24
    assert _rel(got.double(), want) < 1e-5 * max(1.0, (K / 576) ** 0.5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_accumulate_adds_to_out_and_strided_rows_work(isa, dtype):
    w, wf = _weight(dtype, 37, 70)
    xbig = torch.randn(6, 90)
    x = xbig[:, 5:75]  # rows strided (90), features contiguous
    out = torch.randn(6, 37)
    want = out + x @ wf.T
    spec = cpu_decode._spec(w)
    _C.linear(out.numpy(), x.numpy(), *spec[:4], cols=70, accumulate=True, isa=isa)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("M, N", [(1, 49152 // 64), (5, 1000), (32, 130), (3, 1)])
def test_linear_argmax_matches_the_full_product(isa, dtype, M, N):
    K = 96
    w, wf = _weight(dtype, N, K, seed=N)
    x = torch.randn(M, K)
    full = cpu_decode.linear(x, w, isa=isa)
    spec = cpu_decode._spec(w)
    idx, val = _C.linear_argmax(x.numpy(), *spec[:4], cols=K, isa=isa)
    assert torch.equal(torch.from_numpy(idx), full.argmax(-1))
    torch.testing.assert_close(torch.from_numpy(val), full.max(-1).values)


def test_linear_argmax_ties_go_to_the_lowest_index():
    w = torch.zeros(300, 16)
    w[[7, 200, 250], 0] = 1.0  # three equal maxima, in different work chunks
    idx, val = _C.linear_argmax(torch.ones(2, 16).numpy(), w.numpy(), "float32")
    assert idx.tolist() == [7, 7] and val.tolist() == [1.0, 1.0]


def test_int8_quantization_error_is_bounded_per_group():
    w = torch.randn(64, 200) * torch.linspace(0.01, 10, 200)  # very different scales along a row
    q = Int8Weight.quantize(w, 64)
    assert q.q.dtype == torch.int8 and q.scales.shape == (64, 4) and q.packed.shape == (64, 256)
    assert torch.equal(q.q, torch.round(w / q.scales.repeat_interleave(64, 1)[:, :200]).to(torch.int8))
    err = (q.dequantize() - w).abs()
    # each element is within half a step of its group's scale
    step = q.scales.repeat_interleave(64, dim=1)[:, :200]
    assert bool((err <= 0.5 * step + 1e-6).all())


def test_ops_linear_takes_the_kernel_for_decode_sizes(monkeypatch):
    calls = []
    real = cpu_decode.linear
    monkeypatch.setattr(cpu_decode, "linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    w = torch.randn(40, 24)
    with torch.inference_mode():
        for rows, dtype in ((1, torch.float32), (8, torch.bfloat16), (64, torch.float32)):
            out = ops.linear(torch.randn(rows, 1, 24, dtype=dtype), w.to(dtype))
            assert out.dtype == dtype and out.shape == (rows, 1, 40)
        assert len(calls) == 3
        ops.linear(torch.randn(65, 24), w)  # prefill-sized: torch's GEMMs
        assert len(calls) == 3
        with ops.use_backend("reference"):
            ops.linear(torch.randn(2, 24), w)
        assert len(calls) == 3


def test_bad_inputs_are_rejected_clearly():
    w = torch.randn(8, 16)
    x = torch.randn(2, 16)
    out = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="features but the weight takes"):
        _C.linear(out, torch.randn(2, 15).numpy(), w.numpy(), "float32")
    with pytest.raises(ValueError, match="out must be"):
        _C.linear(np.zeros((2, 7), np.float32), x.numpy(), w.numpy(), "float32")
    with pytest.raises(ValueError, match="dtype bfloat16 needs"):
        _C.linear(out, x.numpy(), w.numpy(), "bfloat16")
    with pytest.raises(ValueError, match="dtype must be"):
        _C.linear(out, x.numpy(), w.numpy(), "float16")
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.linear(out, x.numpy(), w.t().contiguous().t().numpy(), "float32")
    with pytest.raises(ValueError, match="2-D float32"):
        _C.linear(out, x.double().numpy(), w.numpy(), "float32")
    with pytest.raises(ValueError, match="contiguous along its last"):
        _C.linear(out, torch.randn(16, 2).t().numpy(), w.numpy(), "float32")
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((2, 8), np.float32)
        ro.flags.writeable = False
        _C.linear(ro, x.numpy(), w.numpy(), "float32")
    q = Int8Weight.quantize(w, 64)
    p, s = q.packed.numpy(), q.scales.numpy()
    with pytest.raises(ValueError, match="group must be a positive multiple of 64"):
        _C.linear(out, x.numpy(), p, "int8", s, 32, cols=16)
    with pytest.raises(ValueError, match="need scales"):
        _C.linear(out, x.numpy(), p, "int8", None, 64, cols=16)
    with pytest.raises(ValueError, match="scales must be"):
        _C.linear(out, x.numpy(), p, "int8", q.scales[:, :0].contiguous().numpy(), 64, cols=16)
    with pytest.raises(ValueError, match="do not hold"):
        _C.linear(out, x.numpy(), p, "int8", s, 64, cols=100)
    with pytest.raises(ValueError, match="not available"):
        _C.linear(out, x.numpy(), w.numpy(), "float32", isa="avx9000")
    with pytest.raises(Exception, match="multiple of 64"):
        Int8Weight.quantize(w, 96)
    with pytest.raises(Exception, match="fp32, bf16 or int8"):
        cpu_decode.linear(x.half(), w.half())


def test_reference_backend_gives_the_same_products():
    w = torch.randn(50, 40)
    x = torch.randn(3, 40)
    with torch.inference_mode():
        fast = ops.linear(x, w)
        with ops.use_backend("reference"):
            ref = ops.linear(x, w)
    torch.testing.assert_close(fast, F.linear(x, w))
    torch.testing.assert_close(ref, F.linear(x, w))
