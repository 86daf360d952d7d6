"""The CPU elementwise kernels (C++, csrc/elementwise.cpp) against the torch reference: RMSNorm, the
residual add + RMSNorm, rotate-half RoPE and SwiGLU over awkward widths (1, odd, no multiple of any vector
width) and the model's strided views, on every compiled ISA variant; bf16 with the reference's roundings
(the same bits in bf16 here); dispatch through `ops`; bad input named.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from havoc import _C, backends, ops
from havoc.backends import cpu
from havoc.kernels import reference

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("rms_norm", "cpu"),
    pytest.mark.op("add_rms_norm", "cpu"),
    pytest.mark.op("apply_rope", "cpu"),
    pytest.mark.op("swiglu", "cpu"),
]

ISAS = _C.decode_attention_isas()  # "scalar" always; "avx2"/"avx512" where this CPU has them
DTYPES = [torch.float32, torch.bfloat16]
# fp32: the sums run in another order than torch's; bf16: one rounding step where a sum lands on a tie
TOL = {torch.float32: dict(atol=3e-6, rtol=3e-6), torch.bfloat16: dict(atol=1e-2, rtol=8e-3)}
WIDTHS = [1, 7, 64, 577, 1536]


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", WIDTHS)
def test_rms_norm_and_add_rms_norm_match_the_reference(D, dtype, isa):
    x, r = randn(3, 5, D, dtype=dtype, seed=D), randn(3, 5, D, dtype=dtype, seed=D + 1) * 4
    w = randn(D, dtype=dtype, seed=2) + 1
    torch.testing.assert_close(cpu.rms_norm(x, w, 1e-5, isa=isa), reference.rms_norm(x, w, 1e-5), **TOL[dtype])
    normed, h = cpu.add_rms_norm(x, r, w, 1e-6, isa=isa)
    want_normed, want_h = reference.add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(h, want_h)  # one rounding of one add: the same bits
    torch.testing.assert_close(normed, want_normed, **TOL[dtype])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("F", WIDTHS)
def test_swiglu_matches_the_reference_on_the_projections_halves(F, dtype, isa):
    gu = randn(2, 9, 2 * F, dtype=dtype, seed=F) * 3  # w13's output: gate | up, strided halves
    gate, up = gu[..., :F], gu[..., F:]
    torch.testing.assert_close(cpu.swiglu(gate, up, isa=isa), reference.swiglu(gate, up), **TOL[dtype])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim, rot", [(64, 64), (64, 32), (128, 128), (10, 6), (40, 2)])
def test_rope_matches_the_reference_on_the_qk_view(head_dim, rot, dtype, isa):
    B, T, H, KV = 2, 11, 6, 2
    qkv = randn(B, T, H + 2 * KV, head_dim, dtype=dtype, seed=head_dim)
    x = qkv[:, :, : H + KV]  # the q|k heads of the fused projection: a strided view
    positions = torch.arange(T)[None].expand(B, T) + torch.tensor([[0], [37]])
    cos, sin = reference.rope_cos_sin(positions, rot, 10000.0)
    got = cpu.apply_rope(x, cos, sin, isa=isa)
    torch.testing.assert_close(got, reference.apply_rope(x, cos, sin), **TOL[dtype])
    assert torch.equal(got[..., rot:], x[..., rot:])  # the tail passes through
    one = reference.rope_cos_sin(torch.arange(T)[None], rot, 10000.0)  # batch 1 broadcasts
    torch.testing.assert_close(cpu.apply_rope(x, *one, isa=isa), reference.apply_rope(x, *one), **TOL[dtype])
    four = (one[0].unsqueeze(2), one[1].unsqueeze(2))  # (B, T, 1, rot), as the reference also takes
    torch.testing.assert_close(cpu.apply_rope(x, *four, isa=isa), reference.apply_rope(x, *four), **TOL[dtype])


def test_every_variant_gives_the_same_answer_as_auto():
    x, w = randn(4, 577, seed=1), randn(577, seed=2)
    gu = randn(4, 2 * 300, seed=3)
    for isa in ISAS:
        torch.testing.assert_close(cpu.rms_norm(x, w, 1e-5, isa=isa), cpu.rms_norm(x, w, 1e-5), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(cpu.swiglu(gu[:, :300], gu[:, 300:], isa=isa), cpu.swiglu(gu[:, :300], gu[:, 300:]),
                                   atol=1e-6, rtol=1e-6)


def test_large_and_special_values():
    x = torch.tensor([[1e30, -1e30, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    w = torch.ones(4)
    torch.testing.assert_close(cpu.rms_norm(x, w, 1e-5), reference.rms_norm(x, w, 1e-5))  # zeros stay zeros
    g = torch.tensor([[-100.0, -20.0, 0.0, 20.0, 100.0, float("-inf")]])
    got = cpu.swiglu(g, torch.ones_like(g))  # silu(-inf) is NaN, as torch's
    torch.testing.assert_close(got, reference.swiglu(g, torch.ones_like(g)), equal_nan=True)
    assert got[0, 5].isnan()


@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "apply_rope", "swiglu"])
def test_ops_dispatch_picks_the_kernel_and_autograd_takes_the_reference(op, monkeypatch):
    D = 64
    x, r, w = randn(2, 3, D, seed=1), randn(2, 3, D, seed=2), randn(D, seed=3)
    cos, sin = reference.rope_cos_sin(torch.arange(3)[None], D, 10000.0)
    args = {"rms_norm": (x, w, 1e-5), "add_rms_norm": (x, r, w, 1e-5), "swiglu": (x, r),
            "apply_rope": (x.view(2, 3, 1, D), cos, sin)}[op]
    calls = []
    impl = backends.fast(op, "cpu")
    spy = dataclasses.replace(impl, fn=lambda *a, **kw: calls.append(1) or impl.fn(*a, **kw))
    monkeypatch.setitem(backends._IMPLS, (op, "cpu"), spy)
    getattr(ops, op)(*args)
    assert calls == [1]
    with ops.use_backend("reference"):
        getattr(ops, op)(*args)
    assert calls == [1]
    # training: recorded calls go to the reference, so gradients flow
    xg = args[0].clone().requires_grad_()
    out = getattr(cpu, op)(xg, *args[1:])
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # float16 has no C++ path
    half = [a.half() if isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a is not cos and a is not sin
            else a for a in args]
    got, want = getattr(cpu, op)(*half), getattr(reference, op)(*half)
    for g, wnt in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(g, wnt)


def test_model_forward_is_the_reference_models():
    from havoc.config import ModelConfig
    from havoc.model import HavocModel

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, dim=96, n_layers=2, n_heads=6, n_kv_heads=2, ffn_hidden=160, max_seq_len=256,
                      rotary_dim=12)
    model = HavocModel(cfg).eval()
    ids = torch.randint(0, 97, (2, 40))
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        m = model.to(dtype)
        with torch.inference_mode():
            fast = m(ids).float()
            with ops.use_backend("reference"):
                ref = m(ids).float()
        torch.testing.assert_close(fast, ref, atol=tol, rtol=tol)


def test_bad_input_is_named():
    x, w = randn(3, 8), randn(8)
    with pytest.raises(ValueError, match="weight must be"):
        _C.rms_norm(x.numpy(), randn(7).numpy(), 1e-5, dtype="float32", out=x.clone().numpy())
    with pytest.raises(ValueError, match="out must be"):
        _C.rms_norm(x.numpy(), w.numpy(), 1e-5, dtype="float32", out=randn(3, 9).numpy())
    with pytest.raises(ValueError, match="bfloat16"):
        _C.swiglu(x.numpy(), x.numpy(), dtype="bfloat16", out=x.clone().numpy())
    with pytest.raises(ValueError, match="gate and up"):
        _C.swiglu(x.numpy(), randn(4, 8).numpy(), dtype="float32", out=x.clone().numpy())
    q = randn(1, 3, 2, 8)
    cos, sin = reference.rope_cos_sin(torch.arange(3)[None], 8, 10000.0)
    with pytest.raises(ValueError, match="cos and sin"):
        _C.apply_rope(q.numpy(), cos[:, :2].contiguous().numpy(), sin.numpy(), dtype="float32", out=q.clone().numpy())
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        _C.apply_rope(q.numpy(), cos[..., :3].contiguous().numpy(), sin[..., :3].contiguous().numpy(),
                      dtype="float32", out=q.clone().numpy())
    with pytest.raises(ValueError, match="not available"):
        cpu.rms_norm(x, w, 1e-5, isa="sse9")
