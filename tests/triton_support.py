"""What the Triton kernel tests share: the device they run on, dtype tolerances, comparisons.

Without CUDA the kernels run through Triton's interpreter on CPU (tests/conftest.py sets
TRITON_INTERPRET=1 before anything imports them). bf16 cases run only on CUDA: NumPy has no bf16, the
interpreter emulates it, and its tl.dot on bf16 operands is plainly wrong (a 16x16 product came back off
by 2e10), so a bf16 pass there would say nothing about the GPU's bf16 numerics.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernels need the triton package (pip install '.[test]')")

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")

# Scale-relative tolerance per input dtype: |actual - expected| <= tol * (|expected| + max|expected|).
# The oracle is always the reference evaluated in fp32 (or float64) on the same (rounded) inputs, so the
# table bounds the kernel's own rounding: fp32 tight; fp16 (10-bit mantissa) and bf16 (7-bit) allow for
# outputs and intermediates (p in attention, dz in cross-entropy) rounded to the input dtype.
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}

BF16_ON_CPU = "bf16 kernel tests run on CUDA only: Triton's CPU interpreter cannot do bf16 arithmetic in tl.dot"

DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16", marks=pytest.mark.skipif(not ON_GPU, reason=BF16_ON_CPU)),
]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    """Compare in float64 with the tolerance of `dtype` (TOL), relative to each element and to the tensor's scale."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(a).all() or not torch.isfinite(e).all(), f"{what}: non-finite values"
    tol = TOL[dtype]
    scale = e.abs().max().item() if e.numel() else 0.0
    torch.testing.assert_close(a, e, rtol=tol, atol=tol * max(scale, 1e-6), msg=lambda m: f"{what}: {m}")


def randn(*shape, dtype=torch.float32, scale: float = 1.0, requires_grad: bool = False) -> torch.Tensor:
    """Normal values rounded to `dtype` on the test device."""
    t = (torch.randn(*shape, dtype=torch.float32) * scale).to(device=DEVICE, dtype=dtype)
    return t.requires_grad_(requires_grad)


def leaf32(t: torch.Tensor) -> torch.Tensor:
    """The same values as an fp32 leaf that records gradients (the reference's input)."""
    return t.detach().float().requires_grad_(t.requires_grad)
