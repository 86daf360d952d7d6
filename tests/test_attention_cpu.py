"""The CPU attention kernel (C++, csrc/attention.cpp) against the torch reference: prefill-shaped causal GQA
over awkward shapes on every compiled ISA variant, offsets and key masks, the packed (varlen) form, the
model's strided views, dispatch through `ops`, and bad input rejected with a message.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from havoc import _C, backends, ops
from havoc.backends import cpu
from havoc.kernels import reference

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("attention", "cpu"),
    pytest.mark.op("attention_varlen", "cpu"),
]

ISAS = _C.attention_isas()  # "scalar" always; "avx2"/"avx512"/"avx512_bf16" where this CPU has them
# bf16: the kernel's output is rounded to bf16 once (the reference below runs in fp32 on the same inputs)
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}


def qkv(B, H, KV, T, S, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, n, L, D, generator=g).to(dtype) for n, L in ((H, T), (KV, S), (KV, S)))


def want(q, k, v, **kw):
    return reference.attention(q.float(), k.float(), v.float(), **kw)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("H, KV", [(4, 4), (9, 3), (8, 2), (16, 2)])  # GQA ratios 1, 3, 4, 8
@pytest.mark.parametrize("D", [64, 128, 11, 40])  # 11, 40: no multiple of any vector width
def test_causal_prefill_matches_reference(H, KV, D, dtype, isa):
    # whole prompts around the block sizes (64 keys, 8-64 query tokens), batch 2
    for T in (1, 15, 65, 130):
        q, k, v = qkv(2, H, KV, T, T, D, dtype, seed=T)
        got = cpu.attention(q, k, v, causal=True, isa=isa)
        torch.testing.assert_close(got.float(), want(q, k, v, causal=True), **TOL[dtype])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "T, S, offset",
    [(7, 100, 93), (5, 70, 20), (1, 129, 128), (33, 200, None), (12, 5, None), (3, 9, -2), (6, 64, 0)],
)
def test_offsets_chunks_and_queries_before_every_key(T, S, offset, isa):
    # a chunk of a prompt after a cached prefix (offset = S - T), queries in the middle of the keys, more
    # queries than keys (negative offsets: the first queries see nothing and get zeros, as the reference)
    q, k, v = qkv(1, 6, 2, T, S, 40, seed=S)
    got = cpu.attention(q, k, v, causal=True, q_offset=offset, isa=isa)
    off = S - T if offset is None else offset
    key_mask = torch.ones(1, S, dtype=torch.bool)  # makes the reference zero the queries with no key
    torch.testing.assert_close(got, want(q, k, v, causal=True, q_offset=off, key_mask=key_mask), **TOL[torch.float32])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("causal", [True, False])
def test_key_mask_non_causal_and_custom_scale(causal, isa):
    q, k, v = qkv(3, 8, 2, 19, 100, 64, seed=4)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(3, 100, generator=g) > 0.3
    mask[1] = False  # a row that sees no key at all: zeros
    mask[2, :60] = False  # left padding
    got = cpu.attention(q, k, v, causal=causal, q_offset=81, key_mask=mask, scale=0.2, isa=isa)
    expected = want(q, k, v, causal=causal, q_offset=81, key_mask=mask, scale=0.2)
    torch.testing.assert_close(got, expected, **TOL[torch.float32])
    assert got[1].abs().max() == 0


def test_large_scores_stay_finite_and_long_context():
    q, k, v = qkv(1, 4, 1, 300, 1500, 64, seed=3)
    q = q * 40  # scores in the thousands: the running max keeps every exp in range
    got = cpu.attention(q, k, v, causal=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want(q, k, v, causal=True), atol=1e-4, rtol=1e-4)


def test_takes_the_models_strided_views_and_returns_its_layout():
    # the model's q/k/v are (B, heads, T, D) views of its fused projection: heads and rows strided
    B, T, H, KV, D = 2, 37, 9, 3, 64
    proj = torch.randn(B, T, H + 2 * KV, D)
    q, k, v = (proj[:, :, a:b].transpose(1, 2) for a, b in ((0, H), (H, H + KV), (H + KV, H + 2 * KV)))
    assert not q.is_contiguous()
    got = cpu.attention(q, k, v, causal=True)
    torch.testing.assert_close(got, want(q, k, v, causal=True), **TOL[torch.float32])
    # a view of a (B, T, H, D) buffer: the output projection's reshape needs no copy
    assert got.transpose(1, 2).is_contiguous()
    # head_dim strided (a transposed tensor) is copied, not misread
    qt = q.transpose(2, 3).contiguous().transpose(2, 3)
    assert qt.stride(-1) != 1
    torch.testing.assert_close(cpu.attention(qt, k, v, causal=True), got)


def test_every_variant_gives_the_same_answer_as_auto():
    q, k, v = qkv(1, 9, 3, 70, 70, 64, seed=9)
    base = cpu.attention(q, k, v, causal=True)
    for isa in ISAS:
        torch.testing.assert_close(cpu.attention(q, k, v, causal=True, isa=isa), base, atol=2e-6, rtol=2e-6)


def test_the_bf16_dot_product_variant_where_the_cpu_has_it():
    # vdpbf16ps multiplies pairs: bf16 operands with an even head_dim; others (fp32, odd head_dim) run the
    # avx512 FMA kernel under the same name. The probabilities go to P V rounded to bf16.
    if "avx512_bf16" not in ISAS:
        with pytest.raises(ValueError, match="not available"):
            cpu.attention(*qkv(1, 2, 1, 3, 3, 8), isa="avx512_bf16")
        pytest.skip("this CPU lacks avx512_bf16 (or the build has no dot-product kernels)")
    for D in (64, 128, 2, 38):
        q, k, v = qkv(2, 8, 2, 77, 77, D, torch.bfloat16, seed=D)
        got = cpu.attention(q, k, v, causal=True, isa="avx512_bf16")
        torch.testing.assert_close(got.float(), want(q, k, v, causal=True), **TOL[torch.bfloat16])
        # auto picks it where vdpbf16ps pays on this core, the FMA kernel where it issues too slowly
        auto = "avx512_bf16" if _C.bf16_dot_rate() >= _C.bf16_dot_pays_at else "avx512"
        torch.testing.assert_close(cpu.attention(q, k, v, causal=True),
                                   got if auto == "avx512_bf16" else cpu.attention(q, k, v, causal=True, isa=auto))
    q, k, v = qkv(1, 4, 2, 9, 9, 11, torch.bfloat16)  # odd head_dim: the FMA kernel
    torch.testing.assert_close(cpu.attention(q, k, v, isa="avx512_bf16"), cpu.attention(q, k, v, isa="avx512"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_matches_reference(dtype):
    g = torch.Generator().manual_seed(2)
    q_lens, k_lens = [5, 0, 70, 1, 3], [9, 4, 70, 1, 1]  # an empty sequence; the last: queries before its key
    H, KV, D = 6, 2, 64
    cu_q = torch.tensor([0] + q_lens).cumsum(0)
    cu_k = torch.tensor([0] + k_lens).cumsum(0)
    q = torch.randn(int(cu_q[-1]), H, D, generator=g).to(dtype)
    k = torch.randn(int(cu_k[-1]), KV, D, generator=g).to(dtype)
    v = torch.randn(int(cu_k[-1]), KV, D, generator=g).to(dtype)
    for causal in (True, False):
        got = cpu.attention_varlen(q, k, v, cu_q, cu_k, max(q_lens), max(k_lens), causal=causal)
        expected = reference.attention_varlen(q.float(), k.float(), v.float(), cu_q, cu_k, causal=causal)
        torch.testing.assert_close(got.float(), expected, **TOL[dtype])


def test_ops_dispatch_picks_the_kernel_and_autograd_takes_the_reference(monkeypatch):
    q, k, v = qkv(1, 4, 2, 9, 9, 64, seed=11)
    calls = []
    impl = backends.fast("attention", "cpu")
    spy = dataclasses.replace(impl, fn=lambda *a, **kw: calls.append(1) or impl.fn(*a, **kw))
    monkeypatch.setitem(backends._IMPLS, ("attention", "cpu"), spy)
    ops.attention(q, k, v, causal=True)
    assert calls == [1]
    with ops.use_backend("reference"):
        ops.attention(q, k, v, causal=True)
    assert calls == [1]
    # training: the kernel has no backward, so recorded calls go to the reference and gradients flow
    qg = q.clone().requires_grad_()
    out = cpu.attention(qg, k, v, causal=True)
    out.sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
    # float16 has no C++ path
    half = [t.half() for t in (q, k, v)]
    torch.testing.assert_close(cpu.attention(*half, causal=True).float(), want(*half, causal=True), atol=2e-3, rtol=2e-3)


def test_model_prefill_is_the_reference_models():
    from havoc.config import ModelConfig
    from havoc.model import HavocModel

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, dim=96, n_layers=2, n_heads=6, n_kv_heads=2, ffn_hidden=160, max_seq_len=256)
    model = HavocModel(cfg).eval()
    ids = torch.randint(0, 97, (2, 80))
    with torch.inference_mode():
        fast = model(ids)
        with ops.use_backend("reference"):
            ref = model(ids)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_bad_input_is_named():
    q, k, v = qkv(1, 6, 4, 5, 5, 64)  # 6 heads over 4 KV heads
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        cpu.attention(q, k, v)
    q, k, v = qkv(1, 4, 2, 5, 5, 64)
    with pytest.raises(ValueError, match="do not fit"):
        cpu.attention(q, k[:, :, :3], v)
    with pytest.raises(ValueError, match="key_mask"):
        cpu.attention(q, k, v, key_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="not available"):
        cpu.attention(q, k, v, isa="sse9")
    flat = [t[0].transpose(0, 1).contiguous() for t in (q, k, v)]
    with pytest.raises(ValueError, match="cu_seqlens"):
        cpu.attention_varlen(*flat, torch.tensor([0, 3, 9]), torch.tensor([0, 3, 5]), 6, 3)
    out = _C.attention  # the binding names the dtype it wants
    with pytest.raises(ValueError, match="bfloat16"):
        out(q.numpy(), k.numpy(), v.numpy(), causal=True, q_offset=0, key_mask=None, scale=1 / math.sqrt(64),
            dtype="bfloat16", out=q.clone().numpy())
