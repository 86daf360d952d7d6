"""Triton paged decode attention and the paged K/V write against the reference and the contiguous attention."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.kernels import reference as ref

from .triton_support import DEVICE, DTYPES, assert_close, randn

pytestmark = [  # tests/test_ops_coverage.py
    pytest.mark.op("paged_decode_attention", "triton"),
    pytest.mark.op("write_kv", "triton"),
]

K = pytest.importorskip("havoc.kernels.paged_attention")


def _paged(lens, H, KV, D, block_size, dtype, spare_blocks=3):
    """A paged cache holding sequences of `lens` tokens in shuffled blocks; block tables padded with -1."""
    B = len(lens)
    needed = [(n + block_size - 1) // block_size for n in lens]
    num_blocks = sum(needed) + spare_blocks
    max_blocks = max(needed + [1]) + 1  # one padding column at least
    k_pool = randn(num_blocks, block_size, KV, D, dtype=dtype)
    v_pool = randn(num_blocks, block_size, KV, D, dtype=dtype)
    order = torch.randperm(num_blocks)
    tables = torch.full((B, max_blocks), -1, dtype=torch.int32)
    used = 0
    for b, n in enumerate(needed):
        tables[b, :n] = order[used : used + n].int()
        used += n
    lengths = torch.tensor(lens, dtype=torch.int32)
    q = randn(B, H, D, dtype=dtype)
    return q, k_pool, v_pool, tables.to(DEVICE), lengths.to(DEVICE)


def _check(lens, H, KV, D, block_size, dtype, num_splits=0):
    q, kc, vc, tables, lengths = _paged(lens, H, KV, D, block_size, dtype)
    out = K.paged_decode_attention(q, kc, vc, tables, lengths, num_splits=num_splits)
    expected = ref.paged_decode_attention(q.float(), kc.float(), vc.float(), tables, lengths)
    assert out.shape == q.shape and out.dtype == dtype
    assert_close(out, expected, dtype, "out")
    assert (out[lengths == 0] == 0).all()


@pytest.mark.parametrize("H, KV", [(4, 4), (9, 3), (32, 8), (8, 1)])  # GQA ratios 1, 3, 4, 8
@pytest.mark.parametrize("D", [64, 128])
def test_paged_decode_gqa(H, KV, D):
    torch.manual_seed(H + KV + D)
    _check([37, 1, 0, 70], H, KV, D, 16, torch.float32)


@pytest.mark.parametrize("block_size", [1, 7, 16, 32])
@pytest.mark.parametrize("num_splits", [1, 3, 0])
def test_paged_decode_block_sizes_and_splits(block_size, num_splits):
    # one split (no merge), several (the lse merge, with splits that hold no tokens), and the default
    torch.manual_seed(block_size * 10 + num_splits)
    _check([45, 2, 17], 6, 2, 64, block_size, torch.float32, num_splits=num_splits)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.values[0] != torch.float32])
def test_paged_decode_half_precision(dtype):
    torch.manual_seed(3)
    _check([50, 9], 32, 8, 128, 16, dtype, num_splits=2)


def test_paged_equals_contiguous_decode_attention():
    # the same keys held contiguously and in blocks: one decode step attends identically
    torch.manual_seed(4)
    B, H, KV, D, S, bs = 2, 9, 3, 64, 29, 16
    k, v = randn(B, KV, S, D), randn(B, KV, S, D)
    q = randn(B, H, D)
    nb = (S + bs - 1) // bs
    kc = torch.zeros(B * nb * bs, KV, D, device=DEVICE)
    vc = torch.zeros_like(kc)
    for b in range(B):
        kc[b * nb * bs : b * nb * bs + S] = k[b].transpose(0, 1)
        vc[b * nb * bs : b * nb * bs + S] = v[b].transpose(0, 1)
    tables = torch.arange(B * nb, dtype=torch.int32, device=DEVICE).view(B, nb)
    lengths = torch.full((B,), S, dtype=torch.int32, device=DEVICE)
    out = K.paged_decode_attention(q, kc.view(-1, bs, KV, D), vc.view(-1, bs, KV, D), tables, lengths)
    expected = ref.attention(q[:, :, None], k, v, causal=True)[:, :, 0]
    assert_close(out, expected, torch.float32, "out")


@settings(max_examples=10, deadline=None)
@given(
    lens=st.lists(st.integers(0, 60), min_size=1, max_size=3),
    KV=st.integers(1, 3),
    G=st.sampled_from([1, 2, 3, 4, 8]),
    D=st.sampled_from([16, 64, 80]),
    block_size=st.integers(1, 20),
    num_splits=st.sampled_from([0, 1, 2, 5]),
    seed=st.integers(0, 2**16),
)
def test_paged_decode_any_shape(lens, KV, G, D, block_size, num_splits, seed):
    torch.manual_seed(seed)
    _check(lens, KV * G, KV, D, block_size, torch.float32, num_splits=num_splits)


def test_kv_write_then_decode():
    torch.manual_seed(5)
    num_blocks, bs, KV, D = 6, 4, 2, 16
    kc = torch.zeros(num_blocks, bs, KV, D, device=DEVICE)
    vc = torch.zeros_like(kc)
    k, v = randn(3, KV, D), randn(3, KV, D)
    slots = torch.tensor([5, -1, 22], dtype=torch.int32, device=DEVICE)  # block 1 slot 1; skipped; block 5 slot 2
    K.write_kv(kc, vc, k, v, slots)
    assert torch.equal(kc[1, 1], k[0]) and torch.equal(vc[1, 1], v[0])
    assert torch.equal(kc[5, 2], k[2]) and torch.equal(vc[5, 2], v[2])
    assert kc.count_nonzero() == 2 * KV * D  # nothing else was touched (token 1 was padding)
    # a 7-token sequence over blocks [1, 5] holds the written keys as its tokens 1 and 6 (zeros elsewhere)
    q = randn(1, 4, D)
    tables = torch.tensor([[1, 5]], dtype=torch.int32, device=DEVICE)
    lengths = torch.tensor([7], dtype=torch.int32, device=DEVICE)
    out = K.paged_decode_attention(q, kc, vc, tables, lengths)
    assert_close(out, ref.paged_decode_attention(q, kc, vc, tables, lengths), torch.float32, "out")


def test_kv_write_is_a_declared_mutation():
    schema = torch.ops.havoc.write_kv.default._schema
    mutated = [a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    assert mutated == ["k_pool", "v_pool"]


def test_empty_batch():
    q, kc, vc, tables, lengths = _paged([], 4, 2, 16, 16, torch.float32)
    assert K.paged_decode_attention(q, kc, vc, tables, lengths).shape == (0, 4, 16)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(tables=lambda t: t.long()), "block_tables must be int32"),
        (dict(lengths=lambda s: s[:1]), r"lengths must be int32 of shape \(2,\)"),
        (dict(q=lambda q: q[:, :3]), "must be a multiple of the cache's n_kv_heads"),
        (dict(q=lambda q: q[:, None]), "one token per sequence"),
        (dict(kc=lambda c: c[..., :8]), "head_dim 16 but the cache has 8"),
    ],
)
def test_bad_inputs(change, message):
    q, kc, vc, tables, lengths = _paged([5, 9], 4, 2, 16, 4, torch.float32)
    args = dict(q=q, kc=kc, vc=vc, tables=tables, lengths=lengths)
    for name, fn in change.items():
        args[name] = fn(args[name])
    if "kc" in change:
        args["vc"] = change["kc"](args["vc"])
    with pytest.raises(ValueError, match=message):
        K.paged_decode_attention(args["q"], args["kc"], args["vc"], args["tables"], args["lengths"])
