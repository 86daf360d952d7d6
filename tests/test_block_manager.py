"""The block manager under attack: a hypothesis state machine drives the C++ `BlockManager` and the
pure-Python `PyBlockManager` side by side and checks, after every step, that they agree on the full state and
that the invariants hold; targeted tests pin the behaviours a random walk reaches rarely (forced hash
collisions, LRU and leaf order, COW of siblings, zero-copy views) and the thread-safety contract.
"""

from __future__ import annotations

import gc
import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from havoc.block_manager import BlockManager, PyBlockManager
from havoc.errors import HavocError, OutOfBlocksError, UnknownSequenceError

IMPLS = [BlockManager, PyBlockManager]


def strip_keys(snap: dict) -> dict:
    """The C++ snapshot carries hash keys, the model has none: compare everything else."""
    for c in snap["cached"].values():
        c["key"] = None
    return snap


def same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# --- the state machine -----------------------------------------------------------------------------------

TOKENS = st.integers(0, 2)  # a tiny alphabet, so that prompts share prefixes and blocks repeat
NAMESPACES = st.sampled_from(["", "", "tenant-a", "tenant-b"])


class BlockManagerMachine(RuleBasedStateMachine):
    """C++ and Python managers fed the same calls; `expected` is the ground truth of every sequence."""

    @initialize(
        num_blocks=st.integers(1, 32),
        block_size=st.integers(1, 4),
        hash_bits=st.sampled_from([64, 2]),  # 2 bits: nearly every publish collides
        watermark=st.sampled_from([0.0, 0.2]),
    )
    def setup(self, num_blocks, block_size, hash_bits, watermark):
        self.bs = block_size
        self.cpp = BlockManager(num_blocks, block_size, watermark=watermark, hash_bits=hash_bits)
        self.py = PyBlockManager(num_blocks, block_size, watermark=watermark, hash_bits=hash_bits)
        self.expected: dict[int, list[int]] = {}
        self.namespace: dict[int, str] = {}
        self.next_id = 0

    # Run one call on both managers: same result or same exception; a failed call changes nothing.
    def both(self, name, *args, **kwargs):
        before = self.cpp.snapshot(), self.py.snapshot()
        outcome = []
        for m in (self.cpp, self.py):
            try:
                outcome.append(("ok", getattr(m, name)(*args, **kwargs)))
            except (HavocError, ValueError, KeyError) as e:
                outcome.append(("raised", type(e)))
        (kc, rc), (kp, rp) = outcome
        assert kc == kp, f"{name}{args}: C++ {kc} {rc!r}, Python {kp} {rp!r}"
        event(f"{name}: {'ok' if kc == 'ok' else rc.__name__}")
        assert same(rc, rp), f"{name}{args}: C++ returned {rc!r}, Python {rp!r}"
        if kc == "raised":
            assert self.cpp.snapshot() == before[0], f"failed C++ {name} changed the manager"
            assert self.py.snapshot() == before[1], f"failed Python {name} changed the model"
        after = self.cpp.snapshot()
        self.check_evictions(name, before[0], after)
        for counter in ("evictions", "cow_copies", "prefix_hit_tokens"):
            if after["stats"][counter] > before[0]["stats"][counter]:
                event(f"{name}: {counter} grew")
        return kc == "ok", rc, before[0]

    def check_evictions(self, name: str, before: dict, after: dict) -> None:
        for b, c in before["cached"].items():
            kept = after["cached"].get(b)
            if kept is not None and (kept["tokens"], kept["parent"]) == (c["tokens"], c["parent"]):
                continue
            if c["ref"] == 0:
                continue  # evicted: it was unreferenced
            # A referenced block left the cache: only step's unpublish-in-place of a block truncated into,
            # which must be childless and, once this step's siblings have copied away, private.
            assert name in ("step", "append"), f"{name} dropped referenced block {b} from the cache"
            assert after["ref"][b] == 1 and c["children"] == 0, f"block {b} was unpublished while shared"
            event("step: unpublished a block in place")

    def live(self, data):
        return data.draw(st.sampled_from(sorted(self.expected)), label="seq")

    # --- rules ---

    @rule(tokens=st.lists(TOKENS, max_size=10), namespace=NAMESPACES)
    def add(self, tokens, namespace):
        self._add(tokens, namespace)

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), extra=st.lists(TOKENS, max_size=6), other_namespace=st.sampled_from([0, 0, 1]))
    def add_extending(self, data, extra, other_namespace):
        """A prompt that starts like a live sequence: the prefix cache's main customer (and, in another
        namespace, the case where it must not serve)."""
        src = self.live(data)
        cut = data.draw(st.integers(0, len(self.expected[src])), label="cut")
        namespace = self.namespace[src] + ("-other" if other_namespace else "")
        self._add(self.expected[src][:cut] + extra, namespace)

    def _add(self, tokens, namespace):
        sid = self.next_id
        self.next_id += 1
        predicted = self.cpp.lookup(tokens, namespace)
        ok, skip, before = self.both("add", sid, tokens, namespace)
        if not ok:
            return
        n = len(tokens)
        assert skip % self.bs == 0 and (skip < n or n == 0), f"skip {skip} of a {n}-token prompt"
        assert skip == self.bs * min(len(predicted), (n - 1) // self.bs if n else 0)
        table = self.cpp.block_table(sid)
        for i in range(skip // self.bs):  # prefix hits: blocks whose tokens are the prompt's
            b = int(table[i])
            assert b == predicted[i] and before["cached"][b]["namespace"] == namespace
            assert list(self.cpp.block_tokens(b)) == tokens[i * self.bs : (i + 1) * self.bs]
        self.expected[sid] = list(tokens)
        self.namespace[sid] = namespace

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), t=st.sampled_from([0, 1, 1, 1, 2, 3]))
    def step(self, data, t):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.expected)), min_size=1, max_size=5, unique=True))
        row = st.lists(TOKENS, min_size=t, max_size=t)
        toks = data.draw(st.lists(row, min_size=len(ids), max_size=len(ids)))
        arr = np.asarray(toks, dtype=np.int32).reshape(len(ids), t)
        if t == 1 and data.draw(st.booleans(), label="1-D tokens"):
            arr = arr[:, 0]
        ok, out, before = self.both("step", np.asarray(ids, dtype=np.int64), arr)
        if not ok:
            return
        slots, copies = out
        assert slots.shape == arr.shape and slots.dtype == np.int64
        self.check_cow(before, slots.reshape(-1), copies)
        for sid, row in zip(ids, toks):
            self.expected[sid] += row

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), tokens=st.lists(TOKENS, max_size=9))
    def append(self, data, tokens):
        sid = self.live(data)
        ok, out, before = self.both("append", sid, np.asarray(tokens, dtype=np.int32))
        if ok:
            self.check_cow(before, out[0], out[1])
            self.expected[sid] += tokens

    def check_cow(self, before, slots, copies):
        """Copies go from blocks in use to blocks that were free or evictable; writes never hit a block
        that another sequence still holds or that stays published with other content."""
        after = self.cpp.snapshot()
        srcs = {int(s) for s, _ in copies}
        for s, d in copies:
            assert before["ref"][s] > 0 and (before["ref"][s] > 1 or s in before["cached"])
            assert before["ref"][d] == 0 and d not in srcs
        for slot in slots:
            b = int(slot) // self.bs
            assert after["ref"][b] == 1, f"wrote block {b}, which {after['ref'][b]} sequences hold"
            if b in before["cached"] and before["ref"][b] > 0:  # unpublished in place: had no children
                assert before["cached"][b]["children"] == 0, f"wrote published block {b} with children"

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def truncate(self, data):
        sid = self.live(data)
        n = data.draw(st.integers(0, len(self.expected[sid]) + 1), label="n")  # one past: must fail
        if self.both("truncate", sid, n)[0]:
            del self.expected[sid][n:]

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), back=st.integers(1, 5), tokens=st.lists(TOKENS, min_size=1, max_size=4))
    def rollback(self, data, back, tokens):
        """Speculative decoding's pattern: drop the last few tokens, append others (lands in published and
        shared blocks, the unpublish-in-place and copy paths)."""
        sid = self.live(data)
        n = max(0, len(self.expected[sid]) - back)
        if self.both("truncate", sid, n)[0]:
            del self.expected[sid][n:]
        ok, out, before = self.both("append", sid, np.asarray(tokens, dtype=np.int32))
        if ok:
            self.check_cow(before, out[0], out[1])
            self.expected[sid] += tokens

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), tokens=st.lists(TOKENS, min_size=2, max_size=2))
    def fork_and_step(self, data, tokens):
        """Parallel sampling: a fork and its parent both decode, so their shared partial block is copied."""
        parent, child = self.live(data), self.next_id
        self.next_id += 1
        if not self.both("fork", parent, child)[0]:
            return
        self.expected[child] = list(self.expected[parent])
        self.namespace[child] = self.namespace[parent]
        ok, out, before = self.both("step", np.asarray([parent, child]), np.asarray(tokens, dtype=np.int32))
        if ok:
            self.check_cow(before, out[0], out[1])
            self.expected[parent].append(tokens[0])
            self.expected[child].append(tokens[1])

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def fork(self, data):
        parent = self.live(data)
        child = self.next_id
        self.next_id += 1
        if self.both("fork", parent, child)[0]:
            self.expected[child] = list(self.expected[parent])
            self.namespace[child] = self.namespace[parent]

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def free(self, data):
        sid = self.live(data)
        if self.both("free", sid)[0]:
            del self.expected[sid]

    @rule(n=st.integers(0, 4))
    def evict(self, n):
        self.both("evict", n)

    @rule(tokens=st.lists(TOKENS, max_size=12), namespace=NAMESPACES)
    def lookup(self, tokens, namespace):
        _, hits, _ = self.both("lookup", tokens, namespace)
        for i, b in enumerate(hits):
            assert list(self.cpp.block_tokens(int(b))) == tokens[i * self.bs : (i + 1) * self.bs]

    @rule(n=st.integers(0, 30))
    def can_allocate(self, n):
        self.both("can_allocate", n)

    @rule(seq=st.integers(-1, 3), data=st.data())
    def bad_ids(self, seq, data):
        """Unknown ids, repeated ids in one step, existing ids for new sequences: errors, no change."""
        unknown = max(self.expected, default=0) + 100
        ids = [unknown] if not self.expected else [self.live(data)] * 2
        self.both("step", np.asarray(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int32))
        self.both("free", unknown)
        if self.expected:
            self.both("add", self.live(data), [1, 2], "")
            self.both("fork", self.live(data), self.live(data))

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def batch_tables(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.expected)), min_size=1, max_size=6))
        _, (tables, lengths), _ = self.both("block_tables", ids, pad=-1)
        _, (indptr, indices, last), _ = self.both("block_tables_csr", ids)
        for i, sid in enumerate(ids):
            row = self.cpp.block_table(sid)
            n = len(self.expected[sid])
            assert lengths[i] == n and list(tables[i, : len(row)]) == list(row)
            assert (tables[i, len(row) :] == -1).all()
            assert list(indices[indptr[i] : indptr[i + 1]]) == list(row)
            assert last[i] == (n - (len(row) - 1) * self.bs if n else 0)
            assert same(self.cpp.slots(sid), self.py.slots(sid))

    # --- after every step ---

    @invariant()
    def agree_and_hold(self):
        if not hasattr(self, "cpp"):
            return
        self.cpp.check_invariants()
        self.py.check_invariants()
        snap = self.cpp.snapshot()
        assert strip_keys(snap) == self.py.snapshot()
        st_ = snap["stats"]
        assert st_["used"] + st_["free"] + st_["evictable"] == st_["num_blocks"]
        assert all(r >= 0 for r in snap["ref"])
        assert set(snap["free_list"]).isdisjoint(b for s in snap["seqs"].values() for b in s["table"])
        for sid, toks in self.expected.items():  # no write ever reached another sequence's tokens
            assert snap["seqs"][sid]["tokens"] == toks, f"sequence {sid} lost its tokens"
        owner_ns: dict[int, str] = {}
        for sid, s in snap["seqs"].items():  # namespaces never share a block
            for b in s["table"]:
                assert owner_ns.setdefault(b, self.namespace[sid]) == self.namespace[sid]


TestBlockManagerStateMachine = BlockManagerMachine.TestCase
TestBlockManagerStateMachine.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- targeted tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_skip_is_never_the_whole_prompt(impl):
    m = impl(32, 4)
    prompt = list(range(12))  # exactly 3 blocks
    assert m.add(0, prompt) == 0
    assert m.add(1, prompt) == 8  # 2 of the 3 cached blocks: the last token is computed
    assert m.add(2, prompt + [99]) == 12  # one more token: all three blocks are reused
    assert m.add(3, prompt[:1]) == 0
    assert m.add(4, []) == 0
    assert list(m.tokens(1)) == prompt and list(m.tokens(2)) == prompt + [99]
    s = m.stats()
    assert s["prefix_queries"] == 5 and s["prefix_query_tokens"] == 38 and s["prefix_hit_tokens"] == 20


def test_forced_collisions_never_serve_wrong_data():
    """With 1-bit keys every lookup meets blocks of other content, other parents and other namespaces
    under its key; only the comparison stands between them and a wrong hit. Block size 2 over a 2-token
    alphabet makes equal blocks under different parents (the case a key-only check gets wrong) common."""
    rng = random.Random(0)
    tiny = BlockManager(256, 2, hash_bits=1)
    full = BlockManager(256, 2)
    model = PyBlockManager(256, 2)
    prompts = [[rng.randrange(2) for _ in range(rng.randrange(1, 12))] for _ in range(40)]
    for i, p in enumerate(prompts):
        ns = "ab"[i % 2]
        skips = {m.add(i, p, ns) for m in (tiny, full, model)}
        assert len(skips) == 1, f"collisions changed the hit for prompt {i}"
        assert list(tiny.tokens(i)) == p
        for m in (tiny, full):  # every lookup agrees with the exact model
            assert m.lookup(p, ns).tolist() == model.lookup(p, ns).tolist()
    snap = tiny.snapshot()
    keys = [c["key"] for c in snap["cached"].values()]
    assert len(keys) > 20 and len(set(keys)) <= 2, "the test needs real collisions"
    tiny.check_invariants()
    assert strip_keys(snap) == strip_keys(full.snapshot()) == model.snapshot()


@pytest.mark.parametrize("impl", IMPLS)
def test_eviction_is_lru_among_leaves(impl):
    m = impl(6, 2)
    for sid, first in enumerate([10, 20, 30]):
        m.add(sid, [first, first + 1, first + 2])  # one published block + one partial each
    for sid in (0, 2, 1):  # release order: 0 is the least recently used, then 2, then 1
        m.free(sid)
    assert m.stats()["evictable"] == 3
    order = []
    for _ in range(3):
        assert m.evict(1) == 1
        order.append(next(p for p in (10, 20, 30) if len(m.lookup([p, p + 1])) == 0 and p not in order))
    assert order == [10, 30, 20]


@pytest.mark.parametrize("impl", IMPLS)
def test_leaves_are_evicted_before_their_parents(impl):
    m = impl(8, 2)
    m.add(0, [1, 2, 3, 4, 5, 6, 7])  # a chain of three published blocks, 0 -> 1 -> 2, plus a partial one
    m.free(0)  # all released by one call: the same stamp, so only the leaf rule orders them
    assert len(m.lookup([1, 2, 3, 4, 5, 6])) == 3
    for left in (2, 1, 0):
        m.evict(1)
        assert len(m.lookup([1, 2, 3, 4, 5, 6])) == left
        m.check_invariants()


@pytest.mark.parametrize("impl", IMPLS)
def test_allocation_prefers_free_blocks_then_evicts(impl):
    m = impl(4, 2)
    m.add(0, [1, 2, 3])
    m.free(0)  # block of [1, 2] stays cached; the partial block is free
    m.add(1, [7, 8, 9, 9, 9, 9, 9])  # needs 4: the 3 free ones, then one eviction
    assert m.stats()["evictions"] == 1 and len(m.lookup([1, 2])) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_forked_siblings_copy_on_write(impl):
    m = impl(16, 4)
    m.add(0, [1, 2, 3, 4, 5, 6])  # block a (published) + partial block b
    for child in (1, 2, 3):
        m.fork(0, child)
    a, b = (int(x) for x in m.block_table(0))
    assert m.snapshot()["ref"][b] == 4
    slots, copies = m.step(np.arange(4), np.asarray([7, 8, 9, 10]))
    # Three move off the shared partial block; the last one left writes it in place.
    assert len(copies) == 3 and all(int(s) == b for s, _ in copies)
    assert int(slots[3]) // 4 == b and m.stats()["cow_copies"] == 3
    for sid, tok in enumerate([7, 8, 9, 10]):
        assert list(m.tokens(sid)) == [1, 2, 3, 4, 5, 6, tok] and int(m.block_table(sid)[0]) == a
    m.check_invariants()


@pytest.mark.parametrize("impl", IMPLS)
def test_truncate_into_published_block(impl):
    m = impl(16, 4)
    m.add(0, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    b = int(m.block_table(0)[1])
    m.truncate(0, 6)  # back into block b, published and only ours, no published children: unpublish
    slots, copies = m.append(0, [60, 70])
    assert len(copies) == 0 and int(slots[0]) == b * 4 + 2 and len(m.lookup([1, 2, 3, 4, 5, 6, 7, 8])) == 1
    m.fork(0, 1)  # b (full again, republished with the new tokens) is now shared
    m.truncate(0, 6)  # back into the shared block: appending must copy
    slots, copies = m.append(0, [61])
    assert [tuple(c) for c in copies] == [(b, int(slots[0]) // 4)]
    assert list(m.tokens(1)) == [1, 2, 3, 4, 5, 6, 60, 70] and list(m.tokens(0)) == [1, 2, 3, 4, 5, 6, 61]
    m.check_invariants()


@pytest.mark.parametrize("impl", IMPLS)
def test_namespaces_never_share(impl):
    m = impl(16, 2)
    prompt = [5, 6, 7, 8, 9]
    assert m.add(0, prompt, "alice") == 0
    assert m.add(1, prompt, "bob") == 0 and len(m.lookup(prompt, "bob")) == 2
    assert m.add(2, prompt, "alice") == 4
    assert not set(m.block_table(1).tolist()) & set(m.block_table(0).tolist())


@pytest.mark.parametrize("impl", IMPLS)
def test_out_of_blocks_changes_nothing(impl):
    m = impl(4, 4)
    m.add(0, list(range(10)))
    m.fork(0, 1)
    before = m.snapshot()
    with pytest.raises(OutOfBlocksError) as e:
        m.add(2, list(range(100, 110)))
    assert isinstance(e.value, MemoryError) and isinstance(e.value, HavocError)
    with pytest.raises(OutOfBlocksError):  # 1 copy + 2 new blocks > 1 free
        m.step([0, 1], [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(UnknownSequenceError):
        m.step([0, 7], [1, 2])
    with pytest.raises(ValueError):
        m.step([0, 0], [1, 2])
    assert m.snapshot() == before
    m.check_invariants()


@pytest.mark.parametrize("impl", IMPLS)
def test_can_allocate_keeps_the_watermark(impl):
    m = impl(10, 4, watermark=0.2)  # 2 blocks reserved
    assert m.watermark_blocks == 2
    assert m.can_allocate(32) and not m.can_allocate(33)
    m.add(0, list(range(33)))  # add itself may dip into the reserve
    assert m.stats()["free"] == 1 and not m.can_allocate(1)


@pytest.mark.parametrize("impl", IMPLS)
def test_resubmitted_prompt_keeps_publishing(impl):
    """A fully cached prompt recomputes its last block (at least one token is computed), a twin of the
    published one. The twin is published too, so the new answer's blocks can serve a follow-up turn."""
    m = impl(32, 2)
    prompt = [1, 2, 3, 4]
    m.add(0, prompt)
    assert m.add(1, prompt) == 2
    first, twin = int(m.block_table(0)[1]), int(m.block_table(1)[1])
    assert first != twin and m.stats()["cached"] == 3
    assert m.lookup(prompt).tolist()[1] == twin  # the newest twin serves lookups
    m.append(1, [5, 6])  # the answer
    assert m.add(2, prompt + [5, 6, 7]) == 6
    m.free(1)
    m.free(2)
    m.evict(10)  # the twins and the answer age out; the original, still held, stays
    assert m.lookup(prompt).tolist() == m.block_table(0).tolist()
    m.check_invariants()


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_tables_padded_and_csr(impl):
    m = impl(32, 4)
    m.add(10, list(range(9)))  # 3 blocks, last holds 1
    m.add(11, [])  # empty
    m.add(12, list(range(8)))  # 2 full blocks
    ids = np.asarray([12, 10, 11])
    tables, lengths = m.block_tables(ids, pad=-7, min_width=4)
    assert tables.shape == (3, 4) and tables.dtype == np.int32 and lengths.tolist() == [8, 9, 0]
    assert tables[0].tolist()[2:] == [-7, -7] and tables[2].tolist() == [-7] * 4
    indptr, indices, last = m.block_tables_csr(ids)
    assert indptr.tolist() == [0, 2, 5, 5] and last.tolist() == [4, 1, 0]
    assert indices.tolist() == m.block_table(12).tolist() + m.block_table(10).tolist()
    assert all(a.dtype == np.int32 for a in (indptr, indices, last))
    slots = m.slots(10, 2, 6)
    tbl = m.block_table(10)
    assert slots.dtype == np.int64 and slots.tolist() == [int(tbl[p // 4]) * 4 + p % 4 for p in range(2, 6)]


def test_block_table_is_a_zero_copy_view():
    m = BlockManager(64, 4)
    m.add(0, list(range(10)))
    v = m.block_table(0)
    assert not v.flags.writeable and v.dtype == np.int32
    assert np.shares_memory(v, m.block_table(0))  # both read the manager's own storage
    with pytest.raises(ValueError):
        v[0] = 5
    w = m.block_table(0)
    m.append(0, [1, 2])  # same block count, same storage: the view follows in-place changes
    m.truncate(0, 3)
    assert np.shares_memory(w, m.block_table(0))
    last = v.tolist()
    m.free(0)
    del m
    gc.collect()
    # The storage outlives the sequence and the manager. bytes() copies it with memcpy, which ASan
    # intercepts (NumPy's own loops are not instrumented), so under tools/sanitize.sh a dangling view is a
    # heap-use-after-free report, not a silent pass.
    assert np.frombuffer(bytes(v), dtype=np.int32).tolist() == last


def test_concurrent_threads_keep_invariants():
    """Threads hammer one manager (step and the table builders release the GIL, so C++ runs in parallel);
    each thread owns its sequences and checks their tokens, all share prompt prefixes and blocks."""
    m = BlockManager(4096, 4)
    common = list(range(40))
    errors: list[Exception] = []
    stop = threading.Event()

    def worker(tid: int) -> None:
        rng = random.Random(tid)
        mine: dict[int, list[int]] = {}
        try:
            for it in range(400):
                sid = tid * 1_000_000 + it
                prompt = common[: rng.randrange(1, 40)] + [tid]
                m.add(sid, prompt)
                mine[sid] = prompt
                if rng.random() < 0.3:
                    m.fork(sid, sid + 500_000)
                    mine[sid + 500_000] = list(prompt)
                ids = list(mine)
                toks = np.asarray([rng.randrange(100) for _ in ids], dtype=np.int32)
                m.step(np.asarray(ids), toks)
                for s, t in zip(ids, toks):
                    mine[s].append(int(t))
                m.block_tables(np.asarray(ids))
                m.block_tables_csr(np.asarray(ids))
                while len(mine) > 8:
                    victim = rng.choice(list(mine))
                    m.free(victim)
                    del mine[victim]
                for s, toks_ in mine.items():
                    assert m.tokens(s).tolist() == toks_, f"thread {tid} lost sequence {s}"
        except Exception as e:  # noqa: BLE001 - any failure is re-raised by the main thread
            errors.append(e)
            stop.set()

    def checker() -> None:
        try:
            while not stop.is_set():
                m.check_invariants()
        except Exception as e:  # noqa: BLE001 - re-raised by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    chk = threading.Thread(target=checker)
    chk.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    chk.join()
    assert not errors, errors[0]
    m.check_invariants()
    assert m.stats()["prefix_hit_tokens"] > 0  # the threads really did share blocks


def test_sequence_ids_survive_heavy_churn():
    """The C++ sequence map is open addressing with backward-shift deletion: churn through thousands of
    ids (negative, huge, clustered in the low bits) and check membership against a Python set."""
    rng = random.Random(1)
    m = BlockManager(4096, 4)
    live: set[int] = set()
    pool = [rng.randrange(-(2**63), 2**63) for _ in range(300)]  # anywhere
    pool += [i << 40 for i in range(300)] + list(range(300))  # equal low bits; consecutive
    for _ in range(6000):
        sid = rng.choice(pool)
        if sid in live:
            m.free(sid)
            live.remove(sid)
        else:
            m.add(sid, [sid & 7])
            live.add(sid)
        if rng.random() < 0.05:
            assert m.seq_ids() == sorted(live)
            assert all((s in m) == (s in live) for s in rng.sample(pool, 50))
    assert m.seq_ids() == sorted(live)
    for s in live:
        assert m.tokens(s).tolist() == [s & 7]
    m.check_invariants()


def test_array_arguments_are_converted_or_refused():
    m = BlockManager(16, 4)
    m.add(0, np.arange(5, dtype=np.int64))  # other dtypes are converted
    m.add(1, [1, 2, 3])
    m.add(2, np.arange(10, dtype=np.int32)[::2])  # non-contiguous
    assert m.tokens(2).tolist() == [0, 2, 4, 6, 8]
    slots, copies = m.step([0, 1], np.asarray([[7, 8], [9, 10]], dtype=np.int16))
    assert slots.shape == (2, 2) and copies.shape == (0, 2) and not copies.flags.writeable
    with pytest.raises(TypeError):
        m.append(0, "not tokens")
    with pytest.raises(ValueError):
        m.append(0, [[1, 2]])
    with pytest.raises(ValueError):
        m.step([0, 1], [1, 2, 3])
    m.check_invariants()


def test_fast_single_sequence_calls_agree_with_their_binding():
    """append/fork/free take a vectorcall fast path for positional ints and an int32 vector; every other
    spelling goes to the pybind11 binding. Both must give the same results, errors and state."""
    a, b = BlockManager(6, 4), BlockManager(6, 4)
    for m in (a, b):
        m.add(0, np.arange(6, dtype=np.int32))
    calls = [  # (fast spelling on a, binding on b)
        (lambda m: m.append(0, np.array([7, 8], np.int32)), lambda m: m._append(0, [7, 8])),
        (lambda m: m.fork(0, 1), lambda m: m._fork(parent_id=np.int64(0), child_id=1)),
        (lambda m: m.append(1, np.array([9], np.int32)), lambda m: m._append(seq_id=1, tokens=np.array([9]))),
        (lambda m: m.free(0), lambda m: m._free(seq_id=0)),
    ]
    for fast, slow in calls:
        assert same(fast(a), slow(b))
        assert strip_keys(a.snapshot()) == strip_keys(b.snapshot())
    # keywords, NumPy integers and non-int32 tokens reach the binding through the fast method too
    assert same(a.append(seq_id=np.int64(1), tokens=[1, 2]), b._append(1, np.array([1, 2], np.int64)))
    a.fork(1, child_id=5)
    b._fork(1, 5)
    assert strip_keys(a.snapshot()) == strip_keys(b.snapshot())
    before = a.snapshot()
    with pytest.raises(OutOfBlocksError):  # a COW copy + 3 new blocks, 3 free: nothing changes
        a.append(5, np.arange(13, dtype=np.int32))
    with pytest.raises(UnknownSequenceError):
        a.free(42)
    with pytest.raises(UnknownSequenceError):
        a.fork(42, 43)
    with pytest.raises(ValueError):
        a.append(1, np.zeros((1, 1), np.int32))
    with pytest.raises(TypeError):
        a.free()
    with pytest.raises(TypeError):
        BlockManager.free(object(), 1)
    assert a.snapshot() == before
    a.check_invariants()


def test_append_recycles_only_slot_vectors_nobody_holds():
    """The fast append hands its last slots vector out again only once the caller has dropped it: results
    that are kept, viewed, exported or altered (flags, dtype, shape) stay as they were."""
    m = BlockManager(64, 4)
    m.add(0, np.arange(3, dtype=np.int32))
    one = np.array([9], np.int32)
    kept = [m.append(0, one)[0] for _ in range(3)]  # each held: three distinct arrays
    assert [int(k[0]) for k in kept] == [3, 4, 5] and len({id(k) for k in kept}) == 3
    dropped_id = id(m.append(0, one)[0])  # slot 6, dropped at once
    again, copies = m.append(0, one)
    assert id(again) == dropped_id and int(again[0]) == 7 and copies.shape == (0, 2)  # recycled
    assert again.dtype == np.int64 and again.flags.writeable and again.flags.owndata
    view = again[:]  # a view keeps it referenced
    assert m.append(0, one)[0] is not again and int(view[0]) == 7
    del view
    assert int(again[0]) == 7
    again.flags.writeable = False  # altered, then dropped: not handed out again
    del again
    nxt = m.append(0, one)[0]
    assert nxt.flags.writeable and int(nxt[0]) == 9
    nxt.dtype = np.float64  # same item size, another dtype
    del nxt
    nxt = m.append(0, one)[0]
    assert nxt.dtype == np.int64 and int(nxt[0]) == 10
    del nxt
    two = m.append(0, np.array([1, 2], np.int32))[0]  # another length: a fresh vector
    assert two.tolist() == [11, 12]
    held = m.append(0, np.array([1, 2], np.int32))[0]
    assert held is not two and two.tolist() == [11, 12] and held.tolist() == [13, 14]
    mem = memoryview(held)  # an exported buffer holds a reference too
    del held
    assert m.append(0, np.array([1, 2], np.int32))[0].tolist() == [15, 16] and mem.tolist() == [13, 14]
    m.check_invariants()
