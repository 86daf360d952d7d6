"""Triton SwiGLU against the reference: strided halves of a fused w13 output, forward and both gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.kernels import reference as ref

from .triton_support import DTYPES, assert_close, leaf32, randn

pytestmark = pytest.mark.op("swiglu", "triton")  # tests/test_ops_coverage.py

K = pytest.importorskip("havoc.kernels.swiglu")


def _check(lead, F, dtype, scale=1.0):
    w13 = randn(*lead, 2 * F, dtype=dtype, scale=scale, requires_grad=True)
    gate, up = w13.split(F, dim=-1)  # the decoder's layout: two strided views of one output
    y = K.swiglu(gate, up)
    w13_32 = leaf32(w13)
    y_ref = ref.swiglu(*w13_32.split(F, dim=-1))
    assert y.dtype == dtype and y.is_contiguous()
    assert_close(y, y_ref, dtype, "y")
    g = randn(*y.shape, dtype=dtype)
    (d,) = torch.autograd.grad(y, (w13,), g)
    (d_ref,) = torch.autograd.grad(y_ref, (w13_32,), g.float())
    assert_close(d[..., :F], d_ref[..., :F], dtype, "dgate")
    assert_close(d[..., F:], d_ref[..., F:], dtype, "dup")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("F", [576, 1536, 4096, 11008])
def test_swiglu_at_model_sizes(F, dtype):
    torch.manual_seed(F)
    _check((2, 3), F, dtype, scale=3.0)


@settings(max_examples=15, deadline=None)
@given(
    lead=st.lists(st.integers(0, 5), min_size=0, max_size=2),
    F=st.integers(1, 5000),
    scale=st.sampled_from([0.1, 1.0, 20.0]),
    seed=st.integers(0, 2**16),
)
def test_swiglu_any_shape(lead, F, scale, seed):
    torch.manual_seed(seed)
    _check(tuple(lead), F, torch.float32, scale)


# the interpreter's NumPy sigmoid overflows exp(100) to inf on the way to the right answer, 0
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_swiglu_saturated_gates():
    # large |gate|: sigmoid saturates to 0 or 1; silu's gradient must stay finite and exact
    gate = torch.tensor([[-100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0]]).to(randn(1).device).requires_grad_()
    up = torch.ones_like(gate).requires_grad_()
    y = K.swiglu(gate, up)
    gate32, up32 = leaf32(gate), leaf32(up)
    y_ref = ref.swiglu(gate32, up32)
    assert_close(y, y_ref, torch.float32, "y")
    dg, du = torch.autograd.grad(y.sum(), (gate, up))
    dg_ref, du_ref = torch.autograd.grad(y_ref.sum(), (gate32, up32))
    assert_close(dg, dg_ref, torch.float32, "dgate")
    assert_close(du, du_ref, torch.float32, "dup")


def test_swiglu_bad_inputs():
    with pytest.raises(ValueError, match="must have the same shape"):
        K.swiglu(randn(2, 8), randn(2, 9))
    with pytest.raises(TypeError, match="must have the same dtype"):
        K.swiglu(randn(2, 8), randn(2, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="contiguous last dimension"):
        K.swiglu(randn(2, 8, 2)[..., 0], randn(2, 8, 2)[..., 0])
