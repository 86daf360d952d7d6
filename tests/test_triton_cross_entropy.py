"""Triton fused linear cross-entropy against the reference: loss, dh, dW, chunking, ignore_index, reductions."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.kernels import reference as ref

from .triton_support import DEVICE, DTYPES, ON_GPU, assert_close, leaf32, randn

pytestmark = pytest.mark.op("linear_cross_entropy", "triton")  # tests/test_ops_coverage.py

K = pytest.importorskip("havoc.kernels.cross_entropy")


def _inputs(N, dim, V, dtype, ignored=0.2, lead=None):
    h = randn(*(lead or (N,)), dim, dtype=dtype, requires_grad=True)
    w = randn(V, dim, dtype=dtype, scale=dim**-0.5 * 3, requires_grad=True)  # logits of O(3)
    targets = torch.randint(0, V, h.shape[:-1], device=DEVICE)
    targets[torch.rand(h.shape[:-1], device=DEVICE) < ignored] = -100
    return h, w, targets


def _check(h, w, targets, dtype, reduction="mean", chunk_size=None, grad_scale=2.5):
    loss = K.linear_cross_entropy(h, w, targets, reduction=reduction, chunk_size=chunk_size)
    h32, w32 = leaf32(h), leaf32(w)
    expected = ref.linear_cross_entropy(h32, w32, targets, reduction=reduction)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert_close(loss, expected, dtype, "loss")
    # a loss gradient other than 1: the precomputed gradients are scaled in the backward
    dh, dw = torch.autograd.grad(loss * grad_scale, (h, w))
    dh_ref, dw_ref = torch.autograd.grad(expected * grad_scale, (h32, w32))
    assert dh.dtype == h.dtype and dw.dtype == w.dtype
    assert_close(dh, dh_ref, dtype, "dh")
    assert_close(dw, dw_ref, dtype, "dweight")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, dim, V, chunk_size", [(37, 64, 1000, None), (37, 64, 1000, 8), (20, 96, 4099, 16)])
def test_linear_cross_entropy(N, dim, V, chunk_size, dtype):
    torch.manual_seed(N + V)
    _check(*_inputs(N, dim, V, dtype), dtype, chunk_size=chunk_size)


def test_sum_reduction_and_leading_dims():
    torch.manual_seed(1)
    h, w, t = _inputs(0, 48, 384, torch.float32, lead=(3, 7))
    _check(h, w, t, torch.float32, reduction="sum", chunk_size=5)


def test_frozen_weight_and_no_grad():
    torch.manual_seed(2)
    h, w, t = _inputs(9, 32, 100, torch.float32)
    w = w.detach()
    loss = K.linear_cross_entropy(h, w, t)
    (dh,) = torch.autograd.grad(loss, (h,))
    h32 = leaf32(h)
    (dh_ref,) = torch.autograd.grad(ref.linear_cross_entropy(h32, w, t), (h32,))
    assert_close(dh, dh_ref, torch.float32, "dh")
    with torch.no_grad():
        assert_close(K.linear_cross_entropy(h, w, t), ref.linear_cross_entropy(h, w, t), torch.float32, "loss")


def test_every_target_ignored_or_no_tokens():
    # as torch: the mean over no targets is NaN, and the gradients are zero
    h, w, t = _inputs(6, 16, 50, torch.float32, ignored=1.1)
    loss = K.linear_cross_entropy(h, w, t)
    assert torch.isnan(loss)
    dh, dw = torch.autograd.grad(loss, (h, w))
    assert (dh == 0).all() and (dw == 0).all()
    h0, w0, t0 = _inputs(0, 16, 50, torch.float32)
    assert torch.isnan(K.linear_cross_entropy(h0, w0, t0))
    assert K.linear_cross_entropy(h0, w0, t0, reduction="sum") == 0


def test_extreme_logits_stay_finite():
    # logits of +-1000: the online max must keep every exp in range
    torch.manual_seed(3)
    h, w, t = _inputs(5, 8, 300, torch.float32, ignored=0.0)
    with torch.no_grad():
        w.mul_(300.0)
    _check(h, w, t, torch.float32)


@settings(max_examples=12, deadline=None)
@given(
    N=st.integers(0, 40),
    dim=st.integers(1, 48),
    V=st.integers(2, 3000),
    chunk_size=st.sampled_from([None, 1, 7, 64]),
    reduction=st.sampled_from(["mean", "sum"]),
    seed=st.integers(0, 2**16),
)
def test_any_shape(N, dim, V, chunk_size, reduction, seed):
    torch.manual_seed(seed)
    h, w, t = _inputs(N, dim, V, torch.float32)
    if reduction == "mean" and not (t != -100).any():
        return  # NaN loss: covered by test_every_target_ignored_or_no_tokens
    _check(h, w, t, torch.float32, reduction=reduction, chunk_size=chunk_size)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: (randn(4, 8), randn(10, 9), torch.zeros(4, dtype=torch.long)), ValueError, "disagree"),
        (lambda: (randn(4, 8), randn(10, 8, dtype=torch.float16), torch.zeros(4, dtype=torch.long)), TypeError, "share a dtype"),
        (lambda: (randn(4, 8), randn(10, 8), torch.zeros(4)), TypeError, "targets must be int64 or int32"),
        (lambda: (randn(4, 8), randn(10, 8), torch.zeros(5, dtype=torch.long)), ValueError, "targets shape"),
    ],
)
def test_bad_inputs(make, error, message):
    h, w, t = make()
    with pytest.raises(error, match=message):
        K.linear_cross_entropy(h, w, t.to(DEVICE))
    with pytest.raises(ValueError, match="reduction must be one of"):
        K.linear_cross_entropy(randn(4, 8), randn(10, 8), torch.zeros(4, dtype=torch.long, device=DEVICE), reduction="none")


@pytest.mark.skipif(not ON_GPU, reason="peak device memory is measured on CUDA")
def test_memory_is_a_fraction_of_the_logits():
    # 8k tokens x 32k vocab in bf16: eager logits + cross-entropy peak near 8k * 32k * (2 + 4 + 4) bytes
    torch.manual_seed(4)
    h, w, t = _inputs(8192, 1024, 32768, torch.bfloat16, ignored=0.0)

    def peak(fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = fn(h, w, t)
        loss.backward()
        torch.cuda.synchronize()
        h.grad = w.grad = None
        return torch.cuda.max_memory_allocated() - base

    fused = peak(K.linear_cross_entropy)
    eager = peak(ref.linear_cross_entropy)
    assert fused < eager / 4, (fused, eager)
