"""Triton RMSNorm and residual-add RMSNorm against the reference: forward, dx, dweight (and dresidual)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.kernels import reference as ref

from .triton_support import DEVICE, DTYPES, ON_GPU, assert_close, leaf32, randn

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("rms_norm", "triton"),
    pytest.mark.op("add_rms_norm", "triton"),
]

K = pytest.importorskip("havoc.kernels.rms_norm")

EPS = 1e-5


def _check_rms_norm(x, w, dtype, dx_atol=None):
    y = K.rms_norm(x, w, EPS)
    x32, w32 = leaf32(x), leaf32(w)
    y_ref = ref.rms_norm(x32, w32, EPS)
    assert y.dtype == torch.promote_types(x.dtype, w.dtype) and y.shape == x.shape and y.is_contiguous()
    assert_close(y, y_ref, dtype, "y")
    g = randn(*y.shape, dtype=y.dtype)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x32, w32), g.float())
    assert dx.dtype == x.dtype and dw.dtype == w.dtype
    if dx_atol is None:
        assert_close(dx, dx_ref, dtype, "dx")
    else:  # a gradient that is zero up to cancellation: compare on the scale of its terms
        torch.testing.assert_close(dx.float(), dx_ref, rtol=0, atol=dx_atol)
    assert_close(dw, dw_ref, dtype, "dweight")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [576, 1536, 4096, 11008])
def test_rms_norm_at_model_sizes(dim, dtype):
    torch.manual_seed(dim)
    x = randn(2, 3, dim, dtype=dtype, scale=3.0, requires_grad=True)
    w = randn(dim, dtype=dtype, requires_grad=True)
    _check_rms_norm(x, w, dtype)


@settings(max_examples=15, deadline=None)
@given(
    lead=st.lists(st.integers(0, 6), min_size=0, max_size=2),
    dim=st.integers(2, 700),  # one feature is its own test: its dx is pure cancellation
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
    seed=st.integers(0, 2**16),
)
def test_rms_norm_any_shape(lead, dim, scale, seed):
    torch.manual_seed(seed)
    x = randn(*lead, dim, scale=scale, requires_grad=True)
    w = randn(dim, requires_grad=True)
    _check_rms_norm(x, w, torch.float32)


def test_rms_norm_strided_rows_and_mixed_dtypes():
    torch.manual_seed(1)
    base = randn(7, 2 * 576, dtype=torch.float16)
    x = base[:, 100:676].detach().requires_grad_()  # rows 1152 apart: a view, not a copy
    assert not x.is_contiguous()
    w = randn(576, requires_grad=True)  # fp32 gain over fp16 activations: the output promotes to fp32
    _check_rms_norm(x, w, torch.float16)
    x_bad = randn(4, 576)[:, ::2]
    with pytest.raises(ValueError, match="contiguous last dimension"):
        K.rms_norm(x_bad, randn(288), EPS)


def test_weight_gradient_is_deterministic_over_many_rows():
    # 67 rows over several programs: dW is the sum of per-program partials, the same bits every time
    torch.manual_seed(2)
    x = randn(67, 576, requires_grad=True)
    w = randn(576, requires_grad=True)
    g = randn(67, 576)
    first = torch.autograd.grad(K.rms_norm(x, w, EPS), (x, w), g)
    second = torch.autograd.grad(K.rms_norm(x, w, EPS), (x, w), g)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    _check_rms_norm(x, w, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [576, 4096, 11008])
def test_add_rms_norm(dim, dtype):
    torch.manual_seed(dim + 1)
    x = randn(3, dim, dtype=dtype, requires_grad=True)
    r = randn(3, dim, dtype=dtype, scale=4.0, requires_grad=True)
    w = randn(dim, dtype=dtype, requires_grad=True)
    y, h = K.add_rms_norm(x, r, w, EPS)
    x32, r32, w32 = leaf32(x), leaf32(r), leaf32(w)
    y_ref, h_ref = ref.add_rms_norm(x32, r32, w32, EPS)
    assert h.dtype == dtype
    assert_close(h, h_ref, dtype, "h")
    assert_close(y, y_ref, dtype, "y")
    gy, gh = randn(*y.shape, dtype=dtype), randn(*h.shape, dtype=dtype)
    # both outputs feed the loss, as in the decoder (the norm goes to the MLP, h on down the stream)
    grads = torch.autograd.grad((y.float() * gy.float()).sum() + (h.float() * gh.float()).sum(), (x, r, w))
    grads_ref = torch.autograd.grad((y_ref * gy.float()).sum() + (h_ref * gh.float()).sum(), (x32, r32, w32))
    for name, a, e in zip(("dx", "dresidual", "dweight"), grads, grads_ref):
        assert_close(a, e, dtype, name)


def test_add_rms_norm_when_only_the_residual_is_used():
    x, r = randn(2, 64, requires_grad=True), randn(2, 64, requires_grad=True)
    w = randn(64, requires_grad=True)
    _, h = K.add_rms_norm(x, r, w, EPS)
    dx, dr = torch.autograd.grad(h.sum(), (x, r))
    assert torch.equal(dx, torch.ones_like(dx)) and torch.equal(dr, torch.ones_like(dr))


def test_rms_norm_empty_and_single_feature():
    w = randn(8, requires_grad=True)
    x = randn(0, 8, requires_grad=True)
    y = K.rms_norm(x, w, EPS)
    assert y.shape == (0, 8)
    dx, dw = torch.autograd.grad(y, (x, w), torch.zeros_like(y))
    assert dx.shape == (0, 8) and torch.equal(dw, torch.zeros_like(dw))
    one = randn(5, 1, requires_grad=True)
    # one feature: y = w * sign(x) up to eps, so dx is a cancellation of O(|w| / |x|) terms
    _check_rms_norm(one, randn(1, requires_grad=True), torch.float32, dx_atol=1e-6 / one.abs().min().item())


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: (randn(3, 8), randn(7)), ValueError, r"weight must have shape \(8,\)"),
        (lambda: (randn(3, 8).int(), randn(8)), TypeError, "x must be float32"),
        (lambda: (randn(3, 8), randn(8, 1)), ValueError, "weight must have shape"),
    ],
)
def test_rms_norm_bad_inputs(make, error, message):
    x, w = make()
    with pytest.raises(error, match=message):
        K.rms_norm(x, w, EPS)


def test_add_rms_norm_bad_residual():
    with pytest.raises(ValueError, match="residual shape"):
        K.add_rms_norm(randn(3, 8), randn(2, 8), randn(8), EPS)
    with pytest.raises(TypeError, match="residual dtype"):
        K.add_rms_norm(randn(3, 8), randn(3, 8, dtype=torch.float16), randn(8), EPS)


@pytest.mark.skipif(ON_GPU, reason="checks the CPU error when the interpreter is off")
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        K.rms_norm(torch.randn(2, 8, device=DEVICE), torch.ones(8, device=DEVICE), EPS)
