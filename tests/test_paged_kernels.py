"""The paged cache's CPU kernels (C++) against the torch reference: decode attention over block tables for
awkward shapes, every compiled ISA variant and split-K; exact writes and block copies; bad slots, block ids
and lengths rejected before any memory is touched.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from havoc import _C, backends, ops
from havoc.backends import cpu
from havoc.kernels import reference

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("write_kv", "cpu"),
    pytest.mark.op("copy_blocks", "cpu"),
    pytest.mark.op("paged_decode_attention", "cpu"),
]

ISAS = _C.decode_attention_isas()  # "scalar" always; "avx2"/"avx512" where this CPU has them
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def make_case(lengths, n_heads, kv_heads, head_dim, block_size, dtype=torch.float32, seed=0, spare_blocks=3):
    """Random pools, queries and shuffled block tables; table entries past a sequence's blocks are -7 (never
    a valid id, so reading one would fail the bounds check or the comparison)."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-n // block_size) for n in lengths]
    num_blocks = sum(need) + spare_blocks
    k_pool = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(dtype)
    v_pool = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(dtype)
    q = torch.randn(len(lengths), n_heads, head_dim, generator=g).to(dtype)
    order = torch.randperm(num_blocks, generator=g)
    width = max(max(need), 1)
    tables = torch.full((len(lengths), width), -7, dtype=torch.int32)
    used = 0
    for b, n in enumerate(need):
        tables[b, :n] = order[used : used + n].int()
        used += n
    return q, k_pool, v_pool, tables, torch.tensor(lengths, dtype=torch.int32)


def expected(q, k_pool, v_pool, tables, lengths):
    """The reference in fp32 on the same (possibly bf16-rounded) inputs."""
    return reference.paged_decode_attention(q.float(), k_pool.float(), v_pool.float(), tables, lengths)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_size", [1, 16, 5])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("n_heads, kv_heads", [(4, 4), (9, 3), (8, 2), (16, 2)])  # GQA ratios 1, 3, 4, 8
def test_decode_matches_reference(n_heads, kv_heads, head_dim, block_size, dtype):
    # batch 1 of length 1, and a ragged batch: lengths at, around and off the block boundaries
    for lengths in ([1], [1, block_size, block_size + 1, 3 * block_size - 1, 70]):
        case = make_case(lengths, n_heads, kv_heads, head_dim, block_size, dtype, seed=len(lengths))
        want = expected(*case)
        for isa in ISAS:
            for splits in (0, 1, 3):
                got = cpu.paged_decode_attention(*case, isa=isa, num_splits=splits)
                assert got.dtype == dtype and got.shape == case[0].shape
                torch.testing.assert_close(got.float(), want, **TOL[dtype], msg=f"isa={isa} splits={splits}")


@pytest.mark.parametrize("head_dim", [8, 20, 80, 96])  # below one vector, a scalar tail, 16- and 32-lane tails
def test_decode_odd_head_dims(head_dim):
    case = make_case([1, 7, 40], 6, 2, head_dim, 4, seed=head_dim)
    want = expected(*case)
    for isa in ISAS:
        torch.testing.assert_close(cpu.paged_decode_attention(*case, isa=isa), want, **TOL[torch.float32])


def test_decode_long_context_and_big_batch():
    # 2048 tokens (split-K engages at batch 1) and 48 sequences (it does not)
    for lengths in ([2048], [300 + 13 * i for i in range(48)]):
        case = make_case(lengths, 9, 3, 64, 16, seed=len(lengths))
        torch.testing.assert_close(cpu.paged_decode_attention(*case), expected(*case), **TOL[torch.float32])


def test_decode_large_scores_stay_finite():
    # scores of hundreds: the online softmax must rescale, not overflow (a kernel that skips the max
    # subtraction or the alpha rescale returns inf/nan or the wrong weights here)
    q, k_pool, v_pool, tables, lengths = make_case([5, 64, 33], 8, 2, 64, 16, seed=3)
    k_pool.mul_(8.0)
    k_pool[..., 0] = torch.linspace(-50, 50, k_pool[..., 0].numel()).view_as(k_pool[..., 0])
    q.mul_(8.0)
    want = expected(q, k_pool, v_pool, tables, lengths)
    for isa in ISAS:
        got = cpu.paged_decode_attention(q, k_pool, v_pool, tables, lengths, isa=isa, num_splits=2)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_decode_empty_sequence_gives_zeros_and_custom_scale():
    q, k_pool, v_pool, tables, lengths = make_case([0, 9], 4, 2, 64, 4, seed=5)
    out = cpu.paged_decode_attention(q, k_pool, v_pool, tables, lengths)
    assert out[0].abs().max() == 0
    want = reference.paged_decode_attention(q, k_pool, v_pool, tables, lengths, scale=0.3)
    torch.testing.assert_close(cpu.paged_decode_attention(q, k_pool, v_pool, tables, lengths, scale=0.3), want)


def test_decode_takes_the_models_strided_query():
    # the model's q is a (B, H, 1, D) view of its fused q|k|v projection: heads and rows strided
    B, H, KV, D = 3, 6, 2, 64
    case = list(make_case([4, 17, 30], H, KV, D, 16, seed=7))
    qkv = torch.randn(B, 1, H + 2 * KV, D)
    case[0] = qkv[:, :, :H].transpose(1, 2)[:, :, 0]  # (B, H, D), not contiguous
    assert not case[0].is_contiguous()
    torch.testing.assert_close(cpu.paged_decode_attention(*case), expected(*case), **TOL[torch.float32])


def test_ops_dispatch_picks_the_kernel_on_cpu(monkeypatch):
    case = make_case([3, 20], 4, 2, 64, 16, seed=11)
    calls = []
    impl = backends.fast("paged_decode_attention", "cpu")
    spy = dataclasses.replace(impl, fn=lambda *a, **k: calls.append(1) or impl.fn(*a, **k))
    monkeypatch.setitem(backends._IMPLS, ("paged_decode_attention", "cpu"), spy)
    ops.paged_decode_attention(*case)
    assert calls == [1]
    with ops.use_backend("reference"):
        ops.paged_decode_attention(*case)
    assert calls == [1]
    # float16 has no C++ path: the fast entry point hands it to the reference
    half = [t.half() if t.is_floating_point() else t for t in case]
    torch.testing.assert_close(cpu.paged_decode_attention(*half).float(), expected(*half), atol=2e-3, rtol=2e-3)


# --- write / copy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_kv_is_exact(dtype):
    g = torch.Generator().manual_seed(0)
    NB, BS, KV, D = 7, 5, 3, 24
    k_pool, v_pool = torch.randn(2, NB, BS, KV, D, generator=g).to(dtype)
    k_ref, v_ref = k_pool.clone(), v_pool.clone()
    slots = torch.randperm(NB * BS, generator=g)[:11]
    # rows of a wider (B, T, heads, D) projection: strided rows and heads, as the model hands them over
    proj = torch.randn(11, 2 * KV + 1, D, generator=g).to(dtype)
    k, v = proj[:, :KV], proj[:, KV + 1 :]
    assert not k.is_contiguous()
    cpu.write_kv(k_pool, v_pool, k, v, slots)
    reference.write_kv(k_ref, v_ref, k, v, slots)
    assert torch.equal(k_pool, k_ref) and torch.equal(v_pool, v_ref)
    assert torch.equal(k_pool.view(-1, KV, D)[slots], k)


def test_write_kv_large_parallel_chunk():
    NB, BS, KV, D = 64, 16, 4, 128  # 1024 rows x 2 KB: above the threshold where the copy goes parallel
    k_pool, v_pool = torch.zeros(2, NB, BS, KV, D)
    slots = torch.randperm(NB * BS)
    k, v = torch.randn(2, NB * BS, KV, D)
    cpu.write_kv(k_pool, v_pool, k, v, slots)
    assert torch.equal(k_pool.view(-1, KV, D)[slots], k) and torch.equal(v_pool.view(-1, KV, D)[slots], v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_copy_blocks_is_exact(dtype):
    g = torch.Generator().manual_seed(1)
    pools = [torch.randn(9, 4, 2, 16, generator=g).to(dtype) for _ in range(4)]  # 2 layers x (K, V)
    refs = [p.clone() for p in pools]
    copies = torch.tensor([[0, 5], [3, 1], [3, 8]], dtype=torch.int64)  # one source twice is fine
    cpu.copy_blocks(pools, copies)
    reference.copy_blocks(refs, copies)
    for p, r in zip(pools, refs):
        assert torch.equal(p, r)
        assert torch.equal(p[5], p[0]) and torch.equal(p[1], p[3]) and torch.equal(p[8], p[3])


# --- bounds and shapes -------------------------------------------------------------------------------------


def test_write_kv_rejects_out_of_bounds_slots_and_writes_nothing():
    k_pool, v_pool = torch.zeros(2, 4, 8, 2, 16)
    rows = torch.ones(3, 2, 16)
    for bad in (32, -1, 2**40):
        with pytest.raises(IndexError, match="outside the pool"):
            cpu.write_kv(k_pool, v_pool, rows, rows, torch.tensor([0, bad, 5]))
        assert k_pool.abs().sum() == 0 and v_pool.abs().sum() == 0  # not even the valid first slot
    with pytest.raises(ValueError, match="int64"):
        cpu.write_kv(k_pool, v_pool, rows, rows, torch.tensor([0, 1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"must be \(3, 2, 16\)"):
        cpu.write_kv(k_pool, v_pool, torch.ones(3, 2, 8), rows, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="must be torch.float32 like the pools"):
        cpu.write_kv(k_pool, v_pool, rows.double(), rows, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="different dtypes"):  # the extension checks on its own too
        _C.write_kv(k_pool.numpy(), v_pool.numpy(), rows.double().numpy(), rows.numpy(), torch.tensor([0, 1, 2]).numpy())
    with pytest.raises(ValueError, match="read-only"):
        ro = k_pool.numpy().copy()
        ro.flags.writeable = False
        _C.write_kv(ro, v_pool.numpy(), rows.numpy(), rows.numpy(), torch.tensor([0, 1, 2]).numpy())
    with pytest.raises(ValueError, match="contiguous"):
        _C.write_kv(k_pool.numpy(), v_pool.numpy(), rows.transpose(1, 2).contiguous().transpose(1, 2).numpy(),
                    rows.numpy(), torch.tensor([0, 1, 2]).numpy())


def test_copy_blocks_rejects_bad_ids_and_conflicting_copies():
    pools = [torch.zeros(4, 2, 1, 8), torch.zeros(4, 2, 1, 8)]
    pools[0][1] = 1.0
    before = [p.clone() for p in pools]
    for copies, error, match in [
        ([[1, 4]], IndexError, "outside the pool"),
        ([[-1, 2]], IndexError, "outside the pool"),
        ([[1, 2], [3, 2]], ValueError, "same destination"),
        ([[1, 2], [2, 3]], ValueError, "both a copy's source and a destination"),
    ]:
        with pytest.raises(error, match=match):
            cpu.copy_blocks(pools, torch.tensor(copies))
        assert all(torch.equal(p, b) for p, b in zip(pools, before))
    with pytest.raises(ValueError, match="one shape"):
        cpu.copy_blocks([pools[0], torch.zeros(5, 2, 1, 8)], torch.tensor([[0, 1]]))


def test_decode_rejects_bad_block_ids_and_lengths():
    q, k_pool, v_pool, tables, lengths = make_case([5, 20], 4, 2, 16, 8, seed=2)
    nb = k_pool.shape[0]
    for bad in (nb, -1):
        t = tables.clone()
        t[1, 2] = bad  # the third block of a 20-token sequence: read
        with pytest.raises(IndexError, match=f"block id {bad}"):
            cpu.paged_decode_attention(q, k_pool, v_pool, t, lengths)
    t = tables.clone()
    t[0, 1] = nb + 100  # past the 5-token sequence's one block: never read, so accepted
    torch.testing.assert_close(cpu.paged_decode_attention(q, k_pool, v_pool, t, lengths), expected(q, k_pool, v_pool, tables, lengths))
    with pytest.raises(IndexError, match="does not fit its block table"):
        cpu.paged_decode_attention(q, k_pool, v_pool, tables, torch.tensor([5, tables.shape[1] * 8 + 1], dtype=torch.int32))
    with pytest.raises(IndexError, match="does not fit"):
        cpu.paged_decode_attention(q, k_pool, v_pool, tables, torch.tensor([-1, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="multiple of"):
        cpu.paged_decode_attention(q[:, :3], k_pool, v_pool, tables, lengths)
    with pytest.raises(ValueError, match="int32"):
        cpu.paged_decode_attention(q, k_pool, v_pool, tables.long(), lengths)
    with pytest.raises(ValueError, match="batch"):
        cpu.paged_decode_attention(q, k_pool, v_pool, tables[:1], lengths)
    with pytest.raises(ValueError, match="q is torch.bfloat16"):
        cpu.paged_decode_attention(q.bfloat16(), k_pool, v_pool, tables, lengths)
    with pytest.raises(ValueError, match="not available|kernel variant"):
        cpu.paged_decode_attention(q, k_pool, v_pool, tables, lengths, isa="sve")


def test_split_count_heuristic():
    threads = _C.max_threads()
    assert _C.decode_attention_splits(64, 2048, 16) == 1  # enough sequences to share out
    assert _C.decode_attention_splits(1, 100, 16) == 1  # too short to be worth splitting
    expect = 1 if threads == 1 else min(4 * threads, 2048 // 256)
    assert _C.decode_attention_splits(1, 2048, 16) == expect
