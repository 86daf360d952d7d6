"""Triton RoPE against the reference: q|k heads of a fused qkv view, partial rotary, any positions, gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.kernels import reference as ref

from .triton_support import DEVICE, DTYPES, assert_close, leaf32, randn

pytestmark = pytest.mark.op("apply_rope", "triton")  # tests/test_ops_coverage.py

K = pytest.importorskip("havoc.kernels.rope")


def _check(B, T, H, KV, D, rot, positions, dtype, theta=1e4, table_batch=None):
    qkv = randn(B, T, H + 2 * KV, D, dtype=dtype, requires_grad=True)
    x = qkv[:, :, : H + KV]  # the q|k heads of a fused projection: a strided view
    cos, sin = ref.rope_cos_sin(positions.to(DEVICE), rot, theta)
    if table_batch == 1:
        cos, sin = cos[:1], sin[:1]
    elif table_batch == "4d":
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    y = K.apply_rope(x, cos, sin)
    qkv32 = leaf32(qkv)
    y_ref = ref.apply_rope(qkv32[:, :, : H + KV], cos, sin)
    assert y.dtype == dtype and y.is_contiguous()
    assert_close(y, y_ref, dtype, "y")
    g = randn(*y.shape, dtype=dtype)
    (dqkv,) = torch.autograd.grad(y, (qkv,), g)
    (dqkv_ref,) = torch.autograd.grad(y_ref, (qkv32,), g.float())
    assert_close(dqkv, dqkv_ref, dtype, "dqkv")
    assert (dqkv[:, :, H + KV :] == 0).all()  # v gets nothing from the rotation


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, H, KV, D, rot",
    [
        (2, 7, 32, 8, 128, 128),  # HAVOC-7B heads
        (2, 5, 9, 3, 64, 64),  # SmolLM2 heads
        (1, 3, 6, 2, 64, 32),  # partial rotary: half the features pass through
        (3, 1, 4, 4, 128, 96),  # a one-token decode step, rotary dim not a power of two
    ],
)
def test_rope_on_fused_qkv_views(B, T, H, KV, D, rot, dtype):
    torch.manual_seed(B * 100 + T)
    positions = torch.randint(0, 4096, (B, T))  # decode at arbitrary offsets, different per row
    _check(B, T, H, KV, D, rot, positions, dtype)


def test_rope_packed_sequences_restart_positions():
    # two documents packed in one row: the second restarts at position 0
    positions = torch.cat([torch.arange(5), torch.arange(6)])[None]
    _check(1, 11, 6, 2, 64, 64, positions, torch.float32, theta=1e5)


@pytest.mark.parametrize("table_batch", [1, "4d"])
def test_rope_broadcast_tables(table_batch):
    positions = torch.arange(4).expand(2, 4) + 17
    _check(2, 4, 3, 1, 64, 64, positions, torch.float32, table_batch=table_batch)


@settings(max_examples=15, deadline=None)
@given(
    B=st.integers(1, 3),
    T=st.integers(0, 9),
    H=st.integers(1, 10),
    KV=st.integers(0, 3),
    half_d=st.integers(1, 40),
    rot_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_rope_any_shape(B, T, H, KV, half_d, rot_frac, seed):
    torch.manual_seed(seed)
    D = 2 * half_d
    rot = 2 * max(1, round(half_d * rot_frac))
    positions = torch.randint(0, 10_000, (B, T))
    _check(B, T, H, KV, D, rot, positions, torch.float32)


def test_rope_empty_batch():
    cos, sin = ref.rope_cos_sin(torch.zeros(2, 0, dtype=torch.long, device=DEVICE), 16, 1e4)
    assert K.apply_rope(randn(2, 0, 3, 16), cos, sin).shape == (2, 0, 3, 16)


@pytest.mark.parametrize(
    "x_shape, rot, table_shape, message",
    [
        ((2, 4, 3, 16), 18, None, "rotary_dim must be even and in"),
        ((2, 4, 3, 16), None, (2, 5, 16), r"cos must be \(2 or 1, 4, rotary_dim\)"),
        ((2, 4, 16), None, None, r"x must be \(batch, seq, heads, head_dim\)"),
        ((2, 4, 3, 16), None, (2, 4, 2, 16), r"must be \(B, T, 1, rotary_dim\)"),
    ],
)
def test_rope_bad_inputs(x_shape, rot, table_shape, message):
    x = randn(*x_shape)
    if table_shape is None:
        cos = sin = randn(2, 4, rot or 16)
    else:
        cos = sin = randn(*table_shape)
    with pytest.raises(ValueError, match=message):
        K.apply_rope(x, cos, sin)
    odd = randn(2, 4, 7)
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        K.apply_rope(randn(2, 4, 3, 16), odd, odd)
