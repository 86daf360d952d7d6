"""The paged KV cache's CPU kernels (C++, `havoc.backends.cpu`) against what torch alone would do on the same
data: decode attention vs gathering each sequence's blocks and calling scaled_dot_product_attention (the
reference `kernels/reference.py` uses), the slot write vs `index_copy_`, the COW block copy vs
`index_select` + `index_copy_` (`pytest bench --benchmark-only`; the summary table gives the ratios).

Shapes: SmolLM2-135M's attention (9 query heads over 3 KV heads, head_dim 64) and HAVOC-7B's (32 over 8,
head_dim 128); block size 16; batches of 1, 8 and 32 sequences of ragged lengths around the context
(each length drawn in [context/2, context], none a multiple of the block size by construction).
"""

from __future__ import annotations

import pytest
import torch

from havoc.backends import cpu
from havoc.kernels import reference

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("write_kv", "cpu"),
    pytest.mark.op("copy_blocks", "cpu"),
    pytest.mark.op("paged_decode_attention", "cpu"),
]

BLOCK = 16
SHAPES = {"smollm2": (9, 3, 64), "havoc-7b": (32, 8, 128)}
IMPLS = ("cpp", "torch")


def paged_batch(batch: int, context: int, shape: str, dtype: torch.dtype, seed: int = 0):
    """(q, k_pool, v_pool, block_tables, lengths) with every sequence's blocks scattered over the pool."""
    H, KV, D = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(context // 2, context + 1, (batch,), generator=g, dtype=torch.int32)
    lengths |= 1  # odd: never a whole number of blocks
    lengths.clamp_(max=context)
    width = (context + BLOCK - 1) // BLOCK
    num_blocks = batch * width
    k_pool = torch.randn(num_blocks, BLOCK, KV, D, generator=g).to(dtype)
    v_pool = torch.randn(num_blocks, BLOCK, KV, D, generator=g).to(dtype)
    tables = torch.randperm(num_blocks, generator=g).to(torch.int32).view(batch, width)
    q = torch.randn(batch, H, D, generator=g).to(dtype)
    return q, k_pool, v_pool, tables, lengths


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 8, 32])
@pytest.mark.parametrize("context", [512, 2048])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_paged_decode_attention(benchmark, record, dtype, shape, context, batch, impl):
    dt = getattr(torch, dtype)
    q, k_pool, v_pool, tables, lengths = paged_batch(batch, context, shape, dt)
    fn = cpu.paged_decode_attention if impl == "cpp" else reference.paged_decode_attention
    if impl == "cpp":  # the same answer as the baseline, or the timing means nothing
        expected = reference.paged_decode_attention(q.float(), k_pool.float(), v_pool.float(), tables, lengths)
        torch.testing.assert_close(fn(q, k_pool, v_pool, tables, lengths).float(), expected, atol=2e-2, rtol=2e-2)
    benchmark(fn, q, k_pool, v_pool, tables, lengths)
    impl_name = "cpp" if impl == "cpp" else "py"
    record(f"decode attn {shape} {'fp32' if dtype == 'float32' else 'bf16'} ctx{context} b{batch}", impl_name, 1, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 32, 256])
def test_write_kv(benchmark, record, batch, impl):
    """One decode step's K/V rows (HAVOC-7B shape, fp32) into scattered slots of one layer's pools."""
    _, k_pool, v_pool, _, _ = paged_batch(max(batch, 8), 512, "havoc-7b", torch.float32)
    KV, D = k_pool.shape[2], k_pool.shape[3]
    k, v = torch.randn(batch, KV, D), torch.randn(batch, KV, D)
    slots = torch.randperm(k_pool.shape[0] * BLOCK)[:batch]
    fn = cpu.write_kv if impl == "cpp" else reference.write_kv
    benchmark(fn, k_pool, v_pool, k, v, slots)
    record(f"write_kv 7b fp32 {batch} rows", "cpp" if impl == "cpp" else "py", 1, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_copy_blocks(benchmark, record, impl):
    """Copy-on-write of 8 forked sequences' last blocks in every pool of a 30-layer SmolLM2 cache."""
    _, k_pool, v_pool, _, _ = paged_batch(8, 256, "smollm2", torch.float32)
    pools = [k_pool.clone() for _ in range(30)] + [v_pool.clone() for _ in range(30)]
    n = k_pool.shape[0]
    copies = torch.stack([torch.arange(8), torch.arange(n - 8, n)], dim=1)
    fn = cpu.copy_blocks if impl == "cpp" else reference.copy_blocks
    benchmark(fn, pools, copies)
    record("copy_blocks 60 pools x 8", "cpp" if impl == "cpp" else "py", 1, benchmark)
