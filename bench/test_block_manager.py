"""Block manager operations per second: the C++ `BlockManager` against the pure-Python `PyBlockManager`
in the same run (`pytest bench --benchmark-only`; the summary table at the end gives the ratios).

Goals (issue 4): every operation at least 20x faster in C++, and a 256-sequence decode-step plan under
50 us. Block size 16 throughout (the paged cache's default); prompts of random token ids, so nothing hits
the prefix cache unless the benchmark says so. Rounds are fixed (pedantic) where an operation consumes
state; setup is outside the timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from havoc.block_manager import BlockManager, PyBlockManager

IMPLS = {"cpp": BlockManager, "py": PyBlockManager}
ROUNDS = {"cpp": 300, "py": 30}
B = 16


def prompts(n: int, length: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 32000, length, dtype=np.int32) for _ in range(n)]


def filled(impl: str, num_blocks: int, ps: list[np.ndarray]):
    m = IMPLS[impl](num_blocks, B)
    for i, p in enumerate(ps):
        m.add(i, p)
    return m


@pytest.mark.parametrize("impl", IMPLS)
def test_add_miss(benchmark, record, impl):
    ps = prompts(64, 512)

    def run(m):
        for i, p in enumerate(ps):
            m.add(i, p)

    benchmark.pedantic(run, setup=lambda: ((IMPLS[impl](4096, B),), {}), rounds=ROUNDS[impl])
    record("add: 512 tokens, no hit", impl, len(ps), benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_add_hit(benchmark, record, impl):
    (p,) = prompts(1, 512)

    def run(m):
        for i in range(1, 65):
            assert m.add(i, p) == 496  # 31 of 32 blocks reused; the last is computed
        return m

    benchmark.pedantic(run, setup=lambda: ((filled(impl, 4096, [p]),), {}), rounds=ROUNDS[impl])
    record("add: 512 tokens, 31 blocks hit", impl, 64, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_append(benchmark, record, impl):
    tok = np.asarray([7], dtype=np.int32)

    def run(m):
        for _ in range(256):
            m.append(0, tok)

    benchmark.pedantic(run, setup=lambda: ((filled(impl, 4096, prompts(1, 100)),), {}), rounds=ROUNDS[impl])
    record("append: 1 token", impl, 256, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_append_chunk(benchmark, record, impl):
    """64 tokens per call: a chunked-prefill piece or a speculative-decoding verify."""
    chunk = np.arange(64, dtype=np.int32)

    def run(m):
        for _ in range(32):
            m.append(0, chunk)

    benchmark.pedantic(run, setup=lambda: ((filled(impl, 4096, prompts(1, 100)),), {}), rounds=ROUNDS[impl])
    record("append: 64 tokens", impl, 32, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_fork(benchmark, record, impl):
    def run(m):
        for child in range(1, 65):
            m.fork(0, child)

    benchmark.pedantic(run, setup=lambda: ((filled(impl, 4096, prompts(1, 2040)),), {}), rounds=ROUNDS[impl])
    record("fork: 2040-token parent", impl, 64, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_free(benchmark, record, impl):
    def run(m):
        for i in range(64):
            m.free(i)

    benchmark.pedantic(run, setup=lambda: ((filled(impl, 4096, prompts(64, 512)),), {}), rounds=ROUNDS[impl])
    record("free: 512-token sequence", impl, 64, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_prefix_lookup(benchmark, record, impl):
    (p,) = prompts(1, 2048)
    m = filled(impl, 4096, [p])
    hits = benchmark(m.lookup, p)
    assert len(hits) == 128
    record("lookup: 2048 tokens, 128 blocks hit", impl, 1, benchmark)


def decode_batch(impl: str, n: int, rounds: int):
    """n sequences of 100..2000 tokens in a pool with room for `rounds` more steps."""
    lengths = np.random.default_rng(1).integers(100, 2000, n)
    m = IMPLS[impl](int((lengths.sum() + n * rounds) // B + 2 * n), B)
    for i, length in enumerate(lengths):
        m.add(i, np.random.default_rng(i).integers(0, 32000, length, dtype=np.int32))
    return m


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_step_256(benchmark, record, impl):
    rounds = {"cpp": 3000, "py": 100}[impl]
    m = decode_batch(impl, 256, rounds + 10)
    ids = np.arange(256, dtype=np.int64)
    tokens = np.full(256, 7, dtype=np.int32)
    # Steady decoding: each round is the next step of the same batch (~1/16 of them take a new block).
    benchmark.pedantic(m.step, args=(ids, tokens), rounds=rounds, warmup_rounds=10)
    record("step: 256 seqs x 1 token", impl, 1, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_step_256_forked(benchmark, record, impl):
    """64 prompts x 4 samples, first step: 192 copy-on-write copies of shared partial blocks."""
    ps = prompts(64, 1000)  # 1000 % 16 = 8: a shared partial last block

    def setup():
        m = filled(impl, 8192, ps)
        for i in range(64):
            for k in range(1, 4):
                m.fork(i, 64 * k + i)
        return (m,), {}

    ids = np.arange(256, dtype=np.int64)
    tokens = np.full(256, 7, dtype=np.int32)
    _, copies = benchmark.pedantic(lambda m: m.step(ids, tokens), setup=setup, rounds=ROUNDS[impl])
    assert len(copies) == 192
    record("step: 256 forked seqs, 192 COW", impl, 1, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_block_tables_padded_256(benchmark, record, impl):
    m = decode_batch(impl, 256, 0)
    tables, _ = benchmark(m.block_tables, np.arange(256))
    assert tables.shape[0] == 256
    record("block_tables: 256 seqs, padded", impl, 1, benchmark)


@pytest.mark.parametrize("impl", IMPLS)
def test_block_tables_csr_256(benchmark, record, impl):
    m = decode_batch(impl, 256, 0)
    indptr, _, _ = benchmark(m.block_tables_csr, np.arange(256))
    assert len(indptr) == 257
    record("block_tables_csr: 256 seqs", impl, 1, benchmark)
