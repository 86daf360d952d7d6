"""ops.linear on CPU tensors (havoc.backends.cpu.linear): the same products as the reference, taken where
they should be. Up to 64 rows (and for int8 weights) the C++ decode kernel; above, the formulation planned
fastest for the shape (torch's GEMMs or the C++ kernel), timed once per (shape, row bucket, dtype)."""

import pytest
import torch
import torch.nn.functional as F

from havoc import ConfigError, ops
from havoc.backends import cpu

pytestmark = pytest.mark.op("linear", "cpu")  # tests/test_ops_coverage.py


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 17, 32, 64, 65, 130, 512])
@pytest.mark.parametrize("shape", [(960, 576), (576, 1536), (7, 5)])
def test_linear_matches_f_linear(rows, shape, dtype, tol):
    torch.manual_seed(rows)
    w = torch.randn(shape, dtype=dtype)
    x = torch.randn(rows, 1, shape[1], dtype=dtype)  # (B, T, in) as in decode
    with torch.inference_mode():
        out = ops.linear(x, w)
    assert out.shape == (rows, 1, shape[0])
    torch.testing.assert_close(out, F.linear(x, w), atol=tol * shape[1] ** 0.5, rtol=tol)


def test_the_product_is_planned_once_per_shape_and_row_bucket(monkeypatch):
    planned = []
    real = cpu._choose
    monkeypatch.setattr(cpu, "_plan", {})
    monkeypatch.setattr(cpu, "_choose", lambda c: planned.append(sorted(c)) or real(c))
    w = torch.randn(48, 32)
    with torch.inference_mode():
        for _ in range(3):
            cpu.linear(torch.randn(8, 1, 32), w)  # decode-sized: the C++ kernel, never timed
        cpu.linear(torch.randn(1, 1, 32), w)
        cpu.linear(torch.randn(100, 32), w)  # prefill-sized: bucket 128
        cpu.linear(torch.randn(120, 32), w)  # same bucket: no new timing
        cpu.linear(torch.randn(300, 32).bfloat16(), w.bfloat16())  # bf16 may upcast
        cpu.linear(torch.randn(8, 32).half(), w.half())  # float16: no C++ kernel, planned even when small
    assert planned == [["cpp", "plain"], ["cpp", "fp32", "plain"], ["fp32", "plain", "transposed"]]
    assert set(cpu._plan) == {(48, 32, 128, torch.float32), (48, 32, 512, torch.bfloat16), (48, 32, 8, torch.float16)}


@pytest.mark.parametrize("dtype, rows, names", [
    (torch.float32, 8, ["plain", "transposed", "cpp"]),
    (torch.bfloat16, 8, ["plain", "transposed", "fp32", "cpp"]),
    (torch.bfloat16, 300, ["plain", "fp32", "cpp"]),
])
def test_every_candidate_gives_the_same_values(monkeypatch, dtype, rows, names):
    monkeypatch.setattr(cpu, "_plan", {})
    torch.manual_seed(0)
    w, x = torch.randn(960, 576, dtype=dtype), torch.randn(rows, 1, 576, dtype=dtype)
    expected = F.linear(x.float(), w.float())
    tol = 1e-4 if dtype == torch.float32 else 0.15
    for name in names:
        cpu._plan[(960, 576, cpu._bucket(rows), dtype)] = name
        with torch.inference_mode():
            out = cpu._planned(x, w, rows)
        assert out.dtype == dtype and out.shape == (rows, 1, 960)
        torch.testing.assert_close(out.float(), expected, atol=tol, rtol=1e-2), name


def test_autograd_and_reference_backend_bypass_the_fast_path(monkeypatch):
    monkeypatch.setattr(cpu, "_choose", lambda c: pytest.fail("timed a product"))
    monkeypatch.setattr(cpu, "_kernel", lambda *a: pytest.fail("ran the C++ kernel"))
    monkeypatch.setattr(cpu, "_plan", {})
    w = torch.randn(16, 8, requires_grad=True)
    ops.linear(torch.randn(80, 8), w).sum().backward()  # training: F.linear, differentiable
    assert w.grad is not None
    with ops.use_backend("reference"), torch.inference_mode():
        ops.linear(torch.randn(8, 8), w.detach())


def test_forcing_fast_names_the_missing_op():
    with ops.use_backend("fast"):
        with pytest.raises(ConfigError, match="op 'linear_cross_entropy' has no fast implementation on cpu"):
            ops.linear_cross_entropy(torch.randn(2, 4), torch.randn(5, 4), torch.tensor([1, 3]))
        ops.rms_norm(torch.randn(2, 4), torch.ones(4), 1e-5)  # has one: csrc/elementwise.cpp
    with pytest.raises(ConfigError, match="unknown ops backend 'turbo'"):
        ops.set_backend("turbo")
