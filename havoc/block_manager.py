"""Block manager of the paged KV cache: which pool blocks each sequence's K/V lives in.

`BlockManager` is the C++ implementation (csrc/block_manager.{h,cpp}, bound in havoc._C); `PyBlockManager`
below is a pure-Python model of the same design with the same API — the oracle of the state-machine test
and the baseline of the benchmark. Both hold metadata only; `PagedKVCache` (havoc/cache.py) owns the K/V
pools of shape (num_blocks, block_size, n_kv_heads, head_dim) and follows what the manager hands out.

The design — a pool of fixed-size blocks, copy-on-write forks, the chained-hash prefix cache and its
eviction order, plan-then-mutate, the contract with the tensor side — is written once, beside the data it
protects and its invariants, in csrc/block_manager.h.

Using it from the tensor side
-----------------------------
    skip = bm.add(seq, prompt)                  # prefill only prompt[skip:]
    slots = bm.slots(seq, skip)                 # int64 slots of positions [skip, len)
    slots, copies = bm.step(seq_ids, next_tokens)   # decode: copies (k, 2) first, then write slots
    tables, lengths = bm.block_tables(seq_ids)      # padded int32 (n, max_blocks), int32 (n,)
    indptr, indices, last_len = bm.block_tables_csr(seq_ids)  # the same as CSR

Views and threads (C++ manager)
-------------------------------
`block_table(seq)` is a read-only int32 NumPy view of the manager's own storage (no copy). Its base owns
that storage, so it never dangles, even after the sequence is freed or the manager deleted; but its
contents are the sequence's table only until that sequence is next mutated (take a new view after each
step, as the batch calls do anyway). The batch calls return fresh arrays.
Every method takes one internal mutex, so a manager may be shared between threads; `step`,
`block_tables`, `block_tables_csr`, `lookup`, `evict`, `add`, `check_invariants` and `append` of 256 or
more tokens release the GIL (for one token the release would cost more than the call).
Views are not synchronized: do not read one while another thread mutates that sequence.
`PyBlockManager` is not thread-safe, and its `block_table` returns a copy.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from havoc._C import BlockManager
from havoc.errors import OutOfBlocksError, UnknownSequenceError

__all__ = ["BlockManager", "OutOfBlocksError", "PyBlockManager", "UnknownSequenceError"]

# What step() does with a sequence's partial last block (the same three cases as the C++ planner).
_WRITE, _UNCACHE, _COPY = 0, 1, 2


@dataclass
class _Sequence:
    table: list[int]  # ceil(length / block_size) distinct blocks
    length: int
    namespace: str


@dataclass
class _Published:
    """A block in the prefix cache. Its tokens never change while it is here."""

    parent: int  # the block before it in every table that holds it; -1 for a first block
    namespace: str
    children: int = 0  # published blocks whose parent is this one; only blocks with 0 are evicted
    stamp: int = 0  # clock when its last reference went (meaningful while unreferenced): the LRU key
    key: tuple = field(default=(), repr=False)  # (parent, namespace, tokens): its entry in _index


class PyBlockManager:
    """Pure-Python model of `BlockManager`: same API, same results, block for block.

    Each block is in exactly one state: free (ref 0, unpublished, on `_free`), evictable (ref 0,
    published) or in use (ref > 0). The prefix index is keyed by the full content (parent block,
    namespace, tokens) instead of a hash — the C++ manager's hash plus comparison must behave exactly so.
    """

    def __init__(self, num_blocks: int, block_size: int, *, watermark: float = 0.0, hash_bits: int = 64):
        """Create an empty pool.

        Args:
            num_blocks: blocks in the pool.
            block_size: token slots per block.
            watermark: fraction of the pool `can_allocate` keeps in reserve.
            hash_bits: accepted for API parity; the model compares full keys, so it has no effect.
        """
        if not 1 <= num_blocks < 2**31:
            raise ValueError(f"num_blocks must be in [1, 2^31), got {num_blocks}")
        if not 1 <= block_size <= 2**20:
            raise ValueError(f"block_size must be in [1, 2^20], got {block_size}")
        if num_blocks * block_size >= 2**31:
            raise ValueError("num_blocks * block_size must be below 2^31 slots")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must be a fraction in [0, 1), got {watermark}")
        if not 1 <= hash_bits <= 64:
            raise ValueError(f"hash_bits must be in [1, 64], got {hash_bits}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.watermark_blocks = int(watermark * num_blocks)
        self._ref = [0] * num_blocks
        self._tokens = [[0] * block_size for _ in range(num_blocks)]
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: block 0 is handed out first
        self._published: dict[int, _Published] = {}
        # (parent, namespace, tokens) -> published blocks with that content, oldest first; lookups take
        # the newest, as the C++ collision chain (newest at its head) does.
        self._index: dict[tuple, list[int]] = {}
        self._n_evictable = 0
        # Eviction candidates as a heap of (stamp, block); an entry is stale once the block is no longer an
        # unreferenced published leaf with that stamp, and stale entries are skipped when popped.
        self._lru: list[tuple[int, int]] = []
        self._seqs: dict[int, _Sequence] = {}
        self._clock = 0
        self._evictions = self._cow_copies = 0
        self._prefix_queries = self._prefix_query_tokens = self._prefix_hit_tokens = 0

    # --- helpers ---------------------------------------------------------------------------------------

    def _blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def _seq(self, seq_id: int) -> _Sequence:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise UnknownSequenceError(f"sequence {seq_id} is not in the block manager") from None

    def _is_leaf(self, b: int, stamp: int) -> bool:
        p = self._published.get(b)
        return p is not None and self._ref[b] == 0 and p.children == 0 and p.stamp == stamp

    def _match(self, tokens: list[int], n_blocks: int, namespace: str) -> list[int]:
        hits, parent, bs = [], -1, self.block_size
        for i in range(n_blocks):
            twins = self._index.get((parent, namespace, tuple(tokens[i * bs : (i + 1) * bs])))
            if not twins:
                break
            b = twins[-1]
            hits.append(b)
            parent = b
        return hits

    def _take_block(self) -> int:
        if self._free:  # free blocks first: evicting drops a prefix someone may still ask for
            return self._free.pop()
        return self._evict_one()

    def _evict_one(self) -> int:
        while self._lru:
            stamp, b = heapq.heappop(self._lru)
            if self._is_leaf(b, stamp):
                # Planning counts only blocks free or evictable when the call began, so the victim is
                # never one released by this very call (stamp == clock).
                assert stamp < self._clock, "evicting a block released by the current call"
                self._unpublish(b)
                self._evictions += 1
                return b
        raise AssertionError("asked to evict with no evictable leaf (planning undercounted)")

    def _acquire(self, b: int) -> None:
        if self._ref[b] == 0:  # a prefix hit brings an evictable block back into use
            self._n_evictable -= 1
        self._ref[b] += 1

    def _release(self, b: int) -> None:
        self._ref[b] -= 1
        if self._ref[b] > 0:
            return
        p = self._published.get(b)
        if p is None:
            self._free.append(b)
            return
        p.stamp = self._clock
        self._n_evictable += 1
        if p.children == 0:
            heapq.heappush(self._lru, (p.stamp, b))

    def _publish(self, table: list[int], pos: int, namespace: str) -> None:
        b = table[pos]
        parent = table[pos - 1] if pos > 0 else -1
        # Every full block of a table is published, so the parent (the previous full block) is too.
        assert parent < 0 or parent in self._published, f"publishing onto unpublished block {parent}"
        key = (parent, namespace, tuple(self._tokens[b]))
        # Equal content may be published already; publish this twin too (see the C++ publish()).
        self._published[b] = _Published(parent=parent, namespace=namespace, key=key)
        self._index.setdefault(key, []).append(b)
        if parent >= 0:
            self._published[parent].children += 1

    def _unpublish(self, b: int) -> None:
        p = self._published.pop(b)  # precondition: no published children
        twins = self._index[p.key]
        twins.remove(b)
        if not twins:
            del self._index[p.key]
        if self._ref[b] == 0:
            self._n_evictable -= 1
        if p.parent >= 0:
            q = self._published[p.parent]
            q.children -= 1
            if q.children == 0 and self._ref[p.parent] == 0:
                heapq.heappush(self._lru, (q.stamp, p.parent))

    # --- mutations -------------------------------------------------------------------------------------

    def add(self, seq_id: int, tokens, namespace: str = "") -> int:
        """Add a sequence holding `tokens`, reusing cached whole blocks of its prefix.

        Args:
            seq_id: a new sequence id.
            tokens: the prompt's token ids.
            namespace: prefix-cache namespace (salt); blocks are shared only within one namespace.

        Returns:
            How many leading tokens are already in the cache (a multiple of block_size, < len(tokens)).
        """
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1).tolist()
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} already exists")
        bs, n = self.block_size, len(tokens)
        n_blocks = self._blocks_for(n)
        hits = self._match(tokens, (n - 1) // bs if n > 0 else 0, namespace)
        available = len(self._free) + self._n_evictable - sum(self._ref[h] == 0 for h in hits)
        if n_blocks - len(hits) > available:
            raise OutOfBlocksError(
                f"adding sequence {seq_id} ({n} tokens) needs {n_blocks - len(hits)} new blocks; "
                f"{available} are free or evictable"
            )
        self._clock += 1
        table: list[int] = []
        for h in hits:
            self._acquire(h)
            table.append(h)
        for i in range(len(hits), n_blocks):
            b = self._take_block()
            self._ref[b] = 1
            chunk = tokens[i * bs : (i + 1) * bs]
            self._tokens[b][: len(chunk)] = chunk
            table.append(b)
            if len(chunk) == bs:
                self._publish(table, i, namespace)
        self._prefix_queries += 1
        self._prefix_query_tokens += n
        self._prefix_hit_tokens += len(hits) * bs
        self._seqs[seq_id] = _Sequence(table, n, namespace)
        return len(hits) * bs

    def step(self, seq_ids, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Plan one decode step for a batch.

        Args:
            seq_ids: (n,) distinct sequence ids.
            tokens: (n,) one token per sequence, or (n, t) t tokens each.

        Returns:
            (slots, copies): int64 slots shaped like `tokens`, and an int64 (k, 2) array of (src, dst)
            block copies to perform before writing the slots.
        """
        ids_arr = np.asarray(seq_ids, dtype=np.int64)
        tok = np.asarray(tokens, dtype=np.int32)
        if ids_arr.ndim != 1:
            raise ValueError("seq_ids must be one-dimensional")
        if tok.ndim not in (1, 2) or tok.shape[0] != len(ids_arr):
            raise ValueError("tokens must have shape (len(seq_ids),) or (len(seq_ids), t)")
        t = 1 if tok.ndim == 1 else tok.shape[1]
        slots, copies = self._step(ids_arr.tolist(), tok.reshape(len(ids_arr), t).tolist(), t)
        return (
            np.asarray(slots, dtype=np.int64).reshape(tok.shape),
            np.asarray(copies, dtype=np.int64).reshape(-1, 2),
        )

    def append(self, seq_id: int, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Append tokens to one sequence.

        Args:
            seq_id: the sequence.
            tokens: (t,) token ids.

        Returns:
            (slots, copies) as `step` returns them.
        """
        tok = np.asarray(tokens, dtype=np.int32)
        if tok.ndim != 1:
            raise ValueError("tokens must be one-dimensional")
        slots, copies = self._step([int(seq_id)], [tok.tolist()], len(tok))
        return np.asarray(slots, dtype=np.int64), np.asarray(copies, dtype=np.int64).reshape(-1, 2)

    def _step(self, ids: list[int], rows: list[list[int]], t: int) -> tuple[list[int], list[tuple[int, int]]]:
        bs = self.block_size
        # Plan: what happens to each partial last block, simulating the reference drops of earlier copies
        # in this step (the last of several siblings may write their shared block in place).
        plan: list[tuple[_Sequence, int]] = []
        seen: set[int] = set()
        dropped: dict[int, int] = {}
        need = 0
        for sid in ids:
            s = self._seq(sid)
            if sid in seen:
                raise ValueError(f"sequence {sid} appears twice in one step")
            seen.add(sid)
            action = _WRITE
            if t > 0 and s.length % bs:
                b = s.table[-1]
                r = self._ref[b] - dropped.get(b, 0)
                p = self._published.get(b)
                if r == 1 and p is None:
                    action = _WRITE
                elif r == 1 and p.children == 0:
                    action = _UNCACHE
                else:
                    action = _COPY
                    need += 1
                    dropped[b] = dropped.get(b, 0) + 1
            plan.append((s, action))
            need += self._blocks_for(s.length + t) - self._blocks_for(s.length)
        available = len(self._free) + self._n_evictable
        if need > available:
            raise OutOfBlocksError(
                f"step of {len(ids)} sequences x {t} tokens needs {need} blocks; "
                f"{available} are free or evictable"
            )

        self._clock += 1
        slots: list[int] = []
        copies: list[tuple[int, int]] = []
        for (s, action), row in zip(plan, rows):
            table, n = s.table, s.length
            if t > 0 and action == _COPY:
                src, dst = table[n // bs], self._take_block()
                self._ref[dst] = 1
                self._tokens[dst][:] = self._tokens[src]
                copies.append((src, dst))
                self._cow_copies += 1
                table[n // bs] = dst
                self._release(src)
            elif t > 0 and action == _UNCACHE:
                self._unpublish(table[n // bs])
            for token in row:
                off = n % bs
                if off == 0:
                    b = self._take_block()
                    self._ref[b] = 1
                    table.append(b)
                b = table[n // bs]
                self._tokens[b][off] = token
                slots.append(b * bs + off)
                n += 1
                if off + 1 == bs:
                    self._publish(table, n // bs - 1, s.namespace)
            s.length = n
        return slots, copies

    def truncate(self, seq_id: int, n_tokens: int) -> None:
        """Keep the first `n_tokens` tokens of a sequence.

        Args:
            seq_id: the sequence.
            n_tokens: new length, at most the current one.
        """
        s = self._seq(seq_id)
        if not 0 <= n_tokens <= s.length:
            raise ValueError(f"cannot truncate sequence {seq_id} of length {s.length} to {n_tokens}")
        self._clock += 1
        keep = self._blocks_for(n_tokens)
        while len(s.table) > keep:  # last block first: a chain's leaf is released before its parent
            self._release(s.table.pop())
        s.length = n_tokens

    def free(self, seq_id: int) -> None:
        """Drop a sequence, releasing its blocks (last first).

        Args:
            seq_id: the sequence.
        """
        s = self._seq(seq_id)
        self._clock += 1
        for b in reversed(s.table):
            self._release(b)
        del self._seqs[seq_id]

    def fork(self, parent_id: int, child_id: int) -> None:
        """Create `child_id` sharing every block of `parent_id` (copy-on-write).

        Args:
            parent_id: an existing sequence.
            child_id: a new sequence id.
        """
        p = self._seq(parent_id)
        if child_id in self._seqs:
            raise ValueError(f"sequence {child_id} already exists")
        self._clock += 1
        for b in p.table:
            self._ref[b] += 1
        self._seqs[child_id] = _Sequence(list(p.table), p.length, p.namespace)

    def evict(self, n_blocks: int) -> int:
        """Drop up to `n_blocks` unreferenced cached blocks (LRU leaves first) onto the free list.

        Args:
            n_blocks: how many at most.

        Returns:
            How many were evicted.
        """
        if n_blocks < 0:
            raise ValueError("n_blocks must be >= 0")
        self._clock += 1
        n = min(n_blocks, self._n_evictable)
        for _ in range(n):
            self._free.append(self._evict_one())
        return n

    # --- queries ---------------------------------------------------------------------------------------

    def lookup(self, tokens, namespace: str = "") -> np.ndarray:
        """Cached blocks matching the leading whole blocks of `tokens` (read-only).

        Args:
            tokens: token ids.
            namespace: prefix-cache namespace.

        Returns:
            int32 array of block ids, one per matched block.
        """
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1).tolist()
        return np.asarray(self._match(tokens, len(tokens) // self.block_size, namespace), dtype=np.int32)

    def can_allocate(self, n_tokens: int) -> bool:
        """Whether a new sequence of `n_tokens` fits while leaving the watermark free.

        Args:
            n_tokens: prompt length (prefix hits are not counted).

        Returns:
            True if it fits.
        """
        if n_tokens < 0:
            raise ValueError("n_tokens must be >= 0")
        return self._blocks_for(n_tokens) + self.watermark_blocks <= len(self._free) + self._n_evictable

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._seqs

    def length(self, seq_id: int) -> int:
        """Number of tokens a sequence holds.

        Args:
            seq_id: the sequence.

        Returns:
            Its length in tokens.
        """
        return self._seq(seq_id).length

    def seq_ids(self) -> list[int]:
        """Ids of the sequences held.

        Returns:
            The ids, sorted.
        """
        return sorted(self._seqs)

    def block_table(self, seq_id: int) -> np.ndarray:
        """A sequence's block table (the C++ manager returns a zero-copy view; this model, a copy).

        Args:
            seq_id: the sequence.

        Returns:
            Read-only int32 array of ceil(length / block_size) block ids.
        """
        a = np.asarray(self._seq(seq_id).table, dtype=np.int32)
        a.flags.writeable = False
        return a

    def slots(self, seq_id: int, start: int = 0, end: int | None = None) -> np.ndarray:
        """Slots of positions [start, end) of a sequence.

        Args:
            seq_id: the sequence.
            start: first position.
            end: one past the last position (default: the sequence's length).

        Returns:
            int64 array of slot indices.
        """
        s = self._seq(seq_id)
        end = s.length if end is None else end
        if not 0 <= start <= end <= s.length:
            raise ValueError(f"positions [{start}, {end}) are outside sequence {seq_id} of length {s.length}")
        bs = self.block_size
        return np.asarray([s.table[p // bs] * bs + p % bs for p in range(start, end)], dtype=np.int64)

    def tokens(self, seq_id: int) -> np.ndarray:
        """The sequence's token ids, read back from its blocks.

        Args:
            seq_id: the sequence.

        Returns:
            int32 array of `length(seq_id)` token ids.
        """
        s, bs = self._seq(seq_id), self.block_size
        return np.asarray([self._tokens[s.table[p // bs]][p % bs] for p in range(s.length)], dtype=np.int32)

    def block_tokens(self, block: int) -> np.ndarray:
        """The token ids stored in a block.

        Args:
            block: a block id.

        Returns:
            int32 array of block_size token ids (meaningless past the block's fill).
        """
        if not 0 <= block < self.num_blocks:
            raise ValueError(f"block {block} is outside the pool")
        return np.asarray(self._tokens[block], dtype=np.int32)

    def block_tables(self, seq_ids, *, pad: int = 0, min_width: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Padded block tables of a batch.

        Args:
            seq_ids: (n,) sequence ids.
            pad: value past each row's blocks.
            min_width: at least this many columns (a fixed width for captured graphs).

        Returns:
            (tables, lengths): int32 (n, width) with width = max(min_width, most blocks), int32 (n,).
        """
        seqs = [self._seq(s) for s in np.asarray(seq_ids, dtype=np.int64).reshape(-1).tolist()]
        width = max([min_width, 0] + [len(s.table) for s in seqs])
        tables = np.full((len(seqs), width), pad, dtype=np.int32)
        for i, s in enumerate(seqs):
            tables[i, : len(s.table)] = s.table
        return tables, np.asarray([s.length for s in seqs], dtype=np.int32)

    def block_tables_csr(self, seq_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Block tables of a batch in CSR form.

        Args:
            seq_ids: (n,) sequence ids.

        Returns:
            (indptr, indices, last_block_len), int32: sequence i's blocks are indices[indptr[i]:indptr[i+1]]
            and its last block holds last_block_len[i] tokens (0 for an empty sequence).
        """
        seqs = [self._seq(s) for s in np.asarray(seq_ids, dtype=np.int64).reshape(-1).tolist()]
        indptr = np.zeros(len(seqs) + 1, dtype=np.int32)
        indptr[1:] = np.cumsum([len(s.table) for s in seqs])
        indices = np.asarray([b for s in seqs for b in s.table], dtype=np.int32)
        bs = self.block_size
        last = [s.length - (self._blocks_for(s.length) - 1) * bs if s.length else 0 for s in seqs]
        return indptr, indices, np.asarray(last, dtype=np.int32)

    def stats(self) -> dict[str, int]:
        """Counters of the pool and the prefix cache.

        Returns:
            used/free/cached/evictable blocks (used + free + evictable == num_blocks), evictions,
            cow_copies, prefix_queries (add calls), prefix_query_tokens and prefix_hit_tokens.
        """
        free = len(self._free)
        return {
            "num_blocks": self.num_blocks,
            "block_size": self.block_size,
            "watermark_blocks": self.watermark_blocks,
            "used": self.num_blocks - free - self._n_evictable,
            "free": free,
            "cached": len(self._published),
            "evictable": self._n_evictable,
            "num_seqs": len(self._seqs),
            "evictions": self._evictions,
            "cow_copies": self._cow_copies,
            "prefix_queries": self._prefix_queries,
            "prefix_query_tokens": self._prefix_query_tokens,
            "prefix_hit_tokens": self._prefix_hit_tokens,
        }

    def _leaves(self) -> list[tuple[int, int]]:
        return sorted(
            (p.stamp, b) for b, p in self._published.items() if self._ref[b] == 0 and p.children == 0
        )

    def snapshot(self) -> dict:
        """The full state as plain Python objects (for tests).

        Returns:
            A dict in `BlockManager.snapshot()`'s format; hash keys are None (the model has none).
        """
        bs = self.block_size
        return {
            "clock": self._clock,
            "free_list": list(self._free),
            "ref": list(self._ref),
            "cached": {
                b: {
                    "parent": p.parent,
                    "namespace": p.namespace,
                    "key": None,
                    "children": p.children,
                    "ref": self._ref[b],
                    "stamp": p.stamp if self._ref[b] == 0 else 0,
                    "tokens": tuple(self._tokens[b]),
                }
                for b, p in sorted(self._published.items())
            },
            "evictable_leaves": self._leaves(),
            "seqs": {
                i: {
                    "length": s.length,
                    "namespace": s.namespace,
                    "table": list(s.table),
                    "tokens": [self._tokens[s.table[p // bs]][p % bs] for p in range(s.length)],
                }
                for i, s in sorted(self._seqs.items())
            },
            "stats": self.stats(),
        }

    def check_invariants(self) -> None:
        """Recompute the invariants; raise RuntimeError naming the first one broken."""

        def broken(what: str) -> None:
            raise RuntimeError(f"PyBlockManager invariant broken: {what}")

        refs = [0] * self.num_blocks
        for sid, s in self._seqs.items():
            if len(s.table) != self._blocks_for(s.length):
                broken(f"sequence {sid} has {len(s.table)} blocks for {s.length} tokens")
            if len(set(s.table)) != len(s.table):
                broken(f"sequence {sid} holds a block twice")
            for i, b in enumerate(s.table):
                refs[b] += 1
                p = self._published.get(b)
                if p is None and i < s.length // self.block_size:
                    broken(f"sequence {sid}'s full block {b} is unpublished")
                parent = s.table[i - 1] if i else -1
                if p is not None and (p.parent != parent or p.namespace != s.namespace):
                    broken(f"sequence {sid} holds published block {b} after another parent or namespace")
        if refs != self._ref:
            broken("reference counts differ from the table entries")
        if len(set(self._free)) != len(self._free):
            broken("a block is on the free list twice")
        free = set(self._free)
        for b in range(self.num_blocks):
            if (self._ref[b] == 0 and b not in self._published) != (b in free):
                broken(f"block {b} is free xor on the free list")
        children = dict.fromkeys(self._published, 0)
        for b, p in self._published.items():
            content = (p.parent, p.namespace, tuple(self._tokens[b]))
            if b not in self._index.get(p.key, ()) or p.key != content:
                broken(f"published block {b}'s tokens or index entry changed")
            if p.parent >= 0:
                if p.parent not in self._published:
                    broken(f"published block {b} has an unpublished parent")
                children[p.parent] += 1
                if self._ref[b] > 0 and self._ref[p.parent] == 0:
                    broken(f"referenced published block {b} has an unreferenced parent")
        if sum(len(t) for t in self._index.values()) != len(self._published) or not all(self._index.values()):
            broken("the index holds stale entries")
        if any(children[b] != p.children for b, p in self._published.items()):
            broken("children counts are off")
        if self._n_evictable != sum(self._ref[b] == 0 for b in self._published):
            broken("evictable count is off")
        if not set(self._leaves()) <= set(self._lru):
            broken("an evictable leaf is missing from the LRU heap")
