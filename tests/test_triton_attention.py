"""Triton flash attention against the reference: causal GQA, q_offset, key mask, varlen, lse, gradients.

Lengths are chosen to straddle the kernels' tiles (16 rows and keys under the interpreter, 64-128 on a
GPU): 37, 13, 45 are multiples of nothing.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.kernels import reference as ref

from .triton_support import DEVICE, DTYPES, assert_close, leaf32, randn

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("attention", "triton"),
    pytest.mark.op("attention_varlen", "triton"),
]

K = pytest.importorskip("havoc.kernels.flash_attention")


def _qkv(B, H, KV, T, S, D, dtype):
    """Leaf tensors and the q, k, v views of them the decoder would pass.

    When T == S, q/k/v are transposed head slices of one fused (B, T, heads, D) projection, as in the
    decoder; otherwise q is a transposed (B, T, H, D) tensor and k/v a separate cache.
    """
    if T == S:
        qkv = randn(B, T, H + 2 * KV, D, dtype=dtype, requires_grad=True)
        return (qkv,), lambda t: (
            t[0][:, :, :H].transpose(1, 2),
            t[0][:, :, H : H + KV].transpose(1, 2),
            t[0][:, :, H + KV :].transpose(1, 2),
        )
    leaves = (
        randn(B, T, H, D, dtype=dtype, requires_grad=True),
        randn(B, KV, S, D, dtype=dtype, requires_grad=True),
        randn(B, KV, S, D, dtype=dtype, requires_grad=True),
    )
    return leaves, lambda t: (t[0].transpose(1, 2), t[1], t[2])


def _naive(q, k, v, causal, q_offset, key_mask, scale=None):
    """float64 oracle with explicit repeats; rows without any allowed key give 0 (and 0 gradients)."""
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    k = k.double().repeat_interleave(H // KV, dim=1)
    v = v.double().repeat_interleave(H // KV, dim=1)
    scores = q.double() @ k.transpose(-1, -2) * (scale or 1 / math.sqrt(D))  # (B, H, T, S)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device)
    if causal:
        allowed = torch.arange(S, device=q.device)[None, :] <= torch.arange(T, device=q.device)[:, None] + q_offset
    allowed = allowed[None, None].expand(B, 1, T, S)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    any_key = allowed.any(-1, keepdim=True)
    scores = torch.where(any_key, scores.masked_fill(~allowed, float("-inf")), 0.0)
    p = torch.where(any_key, torch.softmax(scores, -1), 0.0)
    return p @ v


def _check(B, H, KV, T, S, D, dtype, *, causal=True, q_offset=None, key_mask=None, oracle="reference"):
    """Kernel vs oracle (the reference, or the float64 naive one) in `dtype`: output and every gradient."""
    leaves, views = _qkv(B, H, KV, T, S, D, dtype)
    out = K.attention(*views(leaves), causal=causal, q_offset=q_offset, key_mask=key_mask)
    assert out.shape == (B, H, T, D) and out.dtype == dtype
    assert out.transpose(1, 2).is_contiguous()  # token-major, so the decoder's flatten is free
    leaves32 = tuple(leaf32(t) for t in leaves)
    if oracle == "reference":
        expected = ref.attention(*views(leaves32), causal=causal, q_offset=q_offset, key_mask=key_mask)
    else:
        expected = _naive(*views(leaves32), causal, S - T if q_offset is None else q_offset, key_mask)
    assert_close(out, expected, dtype, "out")
    g = randn(B, H, T, D, dtype=dtype)
    grads = torch.autograd.grad(out, leaves, g)
    grads_ref = torch.autograd.grad(expected, leaves32, g.to(expected.dtype))
    for name, a, e in zip(("dqkv",) if T == S else ("dq", "dk", "dv"), grads, grads_ref):
        assert_close(a, e, dtype, name)
    return out, grads


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("H, KV", [(4, 4), (9, 3), (8, 2), (8, 1)])  # GQA ratios 1, 3, 4, 8
def test_causal_prefill_gqa(H, KV, D):
    torch.manual_seed(H * KV + D)
    _check(2, H, KV, 37, 37, D, torch.float32)


@pytest.mark.parametrize(
    "B, T, S, q_offset",
    [
        (2, 1, 50, None),  # decode: one query against a cache
        (1, 13, 45, None),  # prefill after a cache (bottom-right aligned)
        (2, 7, 30, 5),  # an explicit offset: keys past 11 are seen by nobody
        (1, 1, 1, None),  # one token, one key
    ],
)
def test_queries_at_an_offset(B, T, S, q_offset):
    torch.manual_seed(T * 100 + S)
    _check(B, 6, 2, T, S, 64, torch.float32, q_offset=q_offset)


def test_queries_before_every_key_get_zeros():
    # q_offset = -2: the first two queries precede all keys (no key to attend) and must give 0, not NaN
    torch.manual_seed(5)
    out, grads = _check(1, 4, 2, 6, 4, 64, torch.float32, q_offset=-2, oracle="naive")
    assert (out[:, :, :2] == 0).all()
    assert (grads[0][:, :2] == 0).all()  # dq of those queries ((B, T, H, D) leaf)


def test_non_causal():
    torch.manual_seed(6)
    _check(2, 6, 3, 19, 33, 64, torch.float32, causal=False)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.values[0] != torch.float32])
@pytest.mark.parametrize("T, S", [(33, 33), (1, 40)])
def test_half_precision(T, S, dtype):
    torch.manual_seed(T + S)
    _check(2, 8, 2, T, S, 128, dtype)


def test_key_mask_left_padding():
    torch.manual_seed(7)
    B, S = 3, 30
    key_mask = torch.ones(B, S, dtype=torch.bool, device=DEVICE)
    key_mask[1, :4] = False
    key_mask[2, :9] = False
    _check(B, 6, 2, 9, S, 64, torch.float32, key_mask=key_mask)  # every query keeps some key


def test_key_mask_rows_with_only_padding():
    torch.manual_seed(8)
    key_mask = torch.tensor([[False, False, True, True, True]], device=DEVICE)
    out, grads = _check(1, 4, 1, 5, 5, 16, torch.float32, key_mask=key_mask, oracle="naive")
    assert (out[:, :, :2] == 0).all()  # queries 0, 1 see only padding (causal)
    assert torch.isfinite(grads[0]).all()


def test_lse_is_the_log_sum_exp_of_the_scores():
    torch.manual_seed(9)
    B, H, KV, T, S, D = 2, 6, 2, 11, 20, 64
    q, k, v = randn(B, H, T, D), randn(B, KV, S, D), randn(B, KV, S, D)
    _, lse = K.attention(q, k, v, q_offset=-3, return_lse=True)
    scores = q.double() @ k.double().repeat_interleave(H // KV, 1).transpose(-1, -2) / math.sqrt(D)
    allowed = torch.arange(S, device=DEVICE)[None, :] <= torch.arange(T, device=DEVICE)[:, None] - 3
    expected = torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), -1)  # -inf for queries 0..2
    assert lse.shape == (B, H, T) and lse.dtype == torch.float32
    assert torch.equal(torch.isinf(lse), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert_close(lse[finite], expected[finite], torch.float32, "lse")


def test_empty_inputs():
    q, k, v = randn(2, 4, 0, 64), randn(2, 2, 5, 64), randn(2, 2, 5, 64)
    assert K.attention(q, k, v).shape == (2, 4, 0, 64)
    q = randn(2, 4, 3, 64, requires_grad=True)
    k, v = randn(2, 2, 0, 64, requires_grad=True), randn(2, 2, 0, 64, requires_grad=True)
    out = K.attention(q, k, v, q_offset=0)  # no keys at all: zeros
    assert out.shape == (2, 4, 3, 64) and (out == 0).all()
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert (dq == 0).all() and dk.shape == k.shape and dv.shape == v.shape
    assert K.attention(randn(0, 4, 3, 64), randn(0, 2, 3, 64), randn(0, 2, 3, 64)).shape == (0, 4, 3, 64)


def _varlen(lens_q, lens_k, H, KV, D, causal, dtype=torch.float32):
    cu_q = torch.tensor([0, *lens_q], device=DEVICE).cumsum(0).int()
    cu_k = torch.tensor([0, *lens_k], device=DEVICE).cumsum(0).int()
    q = randn(sum(lens_q), H, D, dtype=dtype, requires_grad=True)
    k = randn(sum(lens_k), KV, D, dtype=dtype, requires_grad=True)
    v = randn(sum(lens_k), KV, D, dtype=dtype, requires_grad=True)
    out = K.attention_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=causal)
    q32, k32, v32 = leaf32(q), leaf32(k), leaf32(v)
    expected = ref.attention_varlen(q32, k32, v32, cu_q, cu_k, causal=causal)
    assert_close(out, expected, dtype, "out")
    g = randn(*out.shape, dtype=dtype)
    grads = torch.autograd.grad(out, (q, k, v), g)
    grads_ref = torch.autograd.grad(expected, (q32, k32, v32), g.float())
    for name, a, e in zip(("dq", "dk", "dv"), grads, grads_ref):
        assert_close(a, e, dtype, name)
    return q, k, v, cu_q, out


@pytest.mark.parametrize(
    "lens_q, lens_k, causal",
    [
        ([5, 17, 0, 9], [5, 17, 0, 9], True),  # packed training documents, one of them empty
        ([3, 8], [10, 8], True),  # the first sequence's queries follow 7 cached keys
        ([6, 1], [3, 4], True),  # more queries than keys: the first 3 of sequence 0 see nothing
        ([4, 2], [7, 0], False),
    ],
)
def test_varlen(lens_q, lens_k, causal):
    torch.manual_seed(sum(lens_q))
    _varlen(lens_q, lens_k, 6, 2, 64, causal)


def test_varlen_equals_each_sequence_alone():
    # documents packed together never see each other: each equals its own batched attention
    torch.manual_seed(10)
    lens = [7, 20, 3]
    q, k, v, cu, out = _varlen(lens, lens, 8, 2, 64, True)
    for b, n in enumerate(lens):
        s = slice(cu[b].item(), cu[b + 1].item())
        alone = K.attention(q[s].transpose(0, 1)[None], k[s].transpose(0, 1)[None], v[s].transpose(0, 1)[None])
        assert_close(out[s], alone[0].transpose(0, 1), torch.float32, f"sequence {b}")


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.values[0] != torch.float32])
def test_varlen_half_precision(dtype):
    torch.manual_seed(11)
    _varlen([9, 23], [9, 23], 8, 1, 128, True, dtype)


@settings(max_examples=6, deadline=None)
@given(
    B=st.integers(1, 2),
    KV=st.integers(1, 3),
    G=st.sampled_from([1, 2, 3, 4, 8]),
    T=st.integers(1, 24),
    extra=st.integers(0, 20),
    D=st.sampled_from([16, 32, 64, 80]),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_shape(B, KV, G, T, extra, D, causal, seed):
    torch.manual_seed(seed)
    _check(B, KV * G, KV, T, T + extra, D, torch.float32, causal=causal)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: (randn(1, 6, 4, 64), randn(1, 4, 4, 64), randn(1, 4, 4, 64)), ValueError, r"multiple of n_kv_heads"),
        (lambda: (randn(1, 4, 4, 64), randn(1, 2, 4, 32), randn(1, 2, 4, 32)), ValueError, "head_dim 64 but k has 32"),
        (lambda: (randn(1, 4, 4, 64), randn(1, 2, 4, 64, dtype=torch.float16), randn(1, 2, 4, 64)), TypeError, "share a dtype"),
        (lambda: (randn(4, 4, 64), randn(4, 2, 64), randn(4, 2, 64)), ValueError, r"q must be \(batch, heads, seq, head_dim\)"),
        (lambda: (randn(1, 4, 4, 512), randn(1, 2, 4, 512), randn(1, 2, 4, 512)), ValueError, "exceeds the supported 256"),
        (lambda: (randn(2, 4, 4, 64), randn(1, 2, 4, 64), randn(1, 2, 4, 64)), ValueError, "batch 2 but k has 1"),
    ],
)
def test_bad_inputs(make, error, message):
    q, k, v = make()
    with pytest.raises(error, match=message):
        K.attention(q, k, v)


def test_bad_key_mask_and_offsets():
    q, k, v = randn(2, 4, 3, 16), randn(2, 2, 5, 16), randn(2, 2, 5, 16)
    with pytest.raises(ValueError, match=r"key_mask must be bool of shape \(batch, keys\)"):
        K.attention(q, k, v, key_mask=torch.ones(2, 4, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="key_mask must be bool"):
        K.attention(q, k, v, key_mask=torch.ones(2, 5, device=DEVICE))
    qv, kv = randn(5, 4, 16), randn(5, 2, 16)
    cu = torch.tensor([0, 5], device=DEVICE)
    with pytest.raises(ValueError, match="cu_seqlens_q must be a 1-D int32"):
        K.attention_varlen(qv, kv, kv, cu, cu.int(), 5, 5)


@pytest.mark.parametrize("block_m, block_n", [(16, 16), (16, 32), (32, 16), (64, 32)])
def test_other_tile_shapes(monkeypatch, block_m, block_n):
    # The GPU picks other tiles than the interpreter's 32 x 32: the skip-the-mask range (lo_free), the
    # causal start of the dkdv walk and the packed-row arithmetic must hold for any of them.
    cfg = dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=1)
    monkeypatch.setattr(K, "_fwd_config", lambda *a: cfg)
    monkeypatch.setattr(K, "_bwd_config", lambda *a: cfg)
    torch.manual_seed(block_m + block_n)
    _check(1, 6, 2, 37, 37, 32, torch.float32)
    _check(1, 6, 2, 11, 40, 32, torch.float32)
