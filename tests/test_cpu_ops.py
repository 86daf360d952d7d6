"""CPU fast paths registered with havoc.ops: same results as the reference, used where they should be."""

import pytest
import torch
import torch.nn.functional as F

from havoc import ConfigError, ops
from havoc import cpu_ops


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 17, 32, 64, 65, 512])
@pytest.mark.parametrize("shape", [(960, 576), (576, 1536), (7, 5)])
def test_linear_matches_f_linear(rows, shape, dtype, tol):
    torch.manual_seed(rows)
    w = torch.randn(shape, dtype=dtype)
    x = torch.randn(rows, 1, shape[1], dtype=dtype)  # (B, T, in) as in decode
    with torch.inference_mode():
        out = ops.linear(x, w)
    assert out.shape == (rows, 1, shape[0])
    torch.testing.assert_close(out, F.linear(x, w), atol=tol * shape[1] ** 0.5, rtol=tol)


def test_orientation_is_chosen_once_per_shape_and_rows(monkeypatch):
    calls = []
    real = cpu_ops._transposed_is_faster
    monkeypatch.setattr(cpu_ops, "_orientation", {})
    monkeypatch.setattr(cpu_ops, "_transposed_is_faster", lambda x, w: calls.append(x.shape) or real(x, w))
    w = torch.randn(48, 32)
    with torch.inference_mode():
        for _ in range(3):
            ops.linear(torch.randn(8, 1, 32), w)
        ops.linear(torch.randn(4, 1, 32), w)
        ops.linear(torch.randn(1, 1, 32), w)  # one row: plain GEMV, never timed
        ops.linear(torch.randn(100, 32), w)  # prefill-sized: untimed
    assert calls == [(8, 32), (4, 32)]
    assert set(cpu_ops._orientation) == {(48, 32, 8, torch.float32), (48, 32, 4, torch.float32)}


def test_both_orientations_give_the_same_values(monkeypatch):
    monkeypatch.setattr(cpu_ops, "_orientation", {})
    torch.manual_seed(0)
    w, x = torch.randn(960, 576), torch.randn(8, 1, 576)
    for choice in (True, False):
        cpu_ops._orientation[(960, 576, 8, torch.float32)] = choice
        with torch.inference_mode():
            torch.testing.assert_close(ops.linear(x, w), F.linear(x, w), atol=1e-4, rtol=1e-5)


def test_autograd_and_reference_backend_bypass_the_fast_path(monkeypatch):
    monkeypatch.setattr(cpu_ops, "_transposed_is_faster", lambda x, w: pytest.fail("timed a product"))
    monkeypatch.setattr(cpu_ops, "_orientation", {})
    w = torch.randn(16, 8, requires_grad=True)
    ops.linear(torch.randn(8, 8), w).sum().backward()  # training: F.linear, differentiable
    assert w.grad is not None
    with ops.use_backend("reference"), torch.inference_mode():
        ops.linear(torch.randn(8, 8), w.detach())


def test_forcing_fast_names_the_missing_op():
    with ops.use_backend("fast"):
        with pytest.raises(ConfigError, match="op 'rms_norm' has no fast implementation on cpu"):
            ops.rms_norm(torch.randn(2, 4), torch.ones(4), 1e-5)
    with pytest.raises(ConfigError, match="unknown ops backend 'turbo'"):
        ops.set_backend("turbo")
