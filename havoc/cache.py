"""KV caches for incremental decoding.

The model talks to a cache through three calls per forward (the `KVCache` protocol):

    positions = cache.begin(batch, n_tokens, attention_mask)  # check room, record padding; RoPE positions
    y = cache.attend(layer, q, k, v)                          # per layer: store k/v, attend over all held
    cache.end()                                               # the tokens are now part of the cache

`StaticKVCache` is the contiguous cache: per layer a K and a V buffer of shape
(batch, n_kv_heads, max_len, head_dim), preallocated once, filled left to right. All rows share one
write column; a batch of prompts of different lengths is left-padded and the padding is masked.

`PagedKVCache` holds many sequences of their own lengths in shared per-layer pools of fixed-size blocks
that the C++ block manager hands out (forks share blocks copy-on-write; full blocks are reused across
sequences by the prefix cache). The protocol's `begin` names no sequences, so a forward over a paged cache
starts with `prepare(seq_ids, tokens)`, which says which sequences the forward extends and by which tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from havoc import ops
from havoc.block_manager import BlockManager
from havoc.config import ModelConfig
from havoc.errors import GenerationError


class KVCache(Protocol):
    def begin(self, batch_size: int, n_tokens: int, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Prepare to take `n_tokens` more per row; return their default positions, (batch, n_tokens)."""
        ...

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store k, v ((B, n_kv_heads, T, head_dim)) of `layer`; attend q ((B, n_heads, T, head_dim))."""
        ...

    def end(self) -> None:
        """Commit the tokens of the current forward."""
        ...


def _check_fits(config: ModelConfig, shape: tuple[int, ...], dtype: torch.dtype, device, what: str, hint: str) -> None:
    """Refuse, with the figures, K and V buffers of `shape` per layer that the device cannot hold."""
    from havoc.resources import ensure_fits

    per_layer = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    ensure_fits(2 * config.n_layers * per_layer, device, what, hint)


class StaticKVCache:
    """Contiguous per-layer K/V buffers for a fixed batch.

    Invariants: columns [0, length) of every layer's K and V hold the keys/values of the tokens seen so
    far; `key_mask`, when not None, is (batch, max_len) bool, False exactly at padding columns;
    `next_position[b]` is the RoPE position of row b's next real token.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size <= 0:
            raise GenerationError(f"batch_size must be positive, got {batch_size}")
        if max_len <= 0:
            raise GenerationError(f"max_len must be positive, got {max_len}")
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        _check_fits(config, shape, dtype, device, f"a static KV cache of {batch_size} x {max_len} tokens",
                    "lower the batch or max_new_tokens")
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0
        self.key_mask: torch.Tensor | None = None
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._pending = 0

    @property
    def device(self) -> torch.device:
        return self.k[0].device

    def reset(self) -> None:
        """Forget every token (the buffers are reused, not freed)."""
        self.length = 0
        self.key_mask = None
        self.next_position.zero_()
        self._pending = 0

    def begin(self, batch_size: int, n_tokens: int, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if batch_size != self.batch_size:
            raise GenerationError(f"the cache holds {self.batch_size} rows but the batch has {batch_size}")
        if self.length + n_tokens > self.max_len:
            raise GenerationError(
                f"{self.length + n_tokens} tokens exceed the KV cache capacity of {self.max_len}"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (batch_size, n_tokens):
            raise GenerationError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(batch_size, n_tokens)}"
            )
        cols = slice(self.length, self.length + n_tokens)
        if attention_mask is not None and self.key_mask is None:
            self.key_mask = torch.ones(self.batch_size, self.max_len, dtype=torch.bool, device=self.device)
        if self.key_mask is not None:
            self.key_mask[:, cols] = True if attention_mask is None else attention_mask
        if attention_mask is None:
            steps = torch.arange(n_tokens, device=self.device)
            positions = self.next_position[:, None] + steps  # (B, T)
            self.next_position += n_tokens
        else:  # padding takes no position: the first real token of every row sits at its next position
            counts = attention_mask.long().cumsum(1)  # (B, T)
            positions = self.next_position[:, None] + (counts - 1).clamp(min=0)
            self.next_position += counts[:, -1]
        self._pending = n_tokens
        return positions

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, n = self.length, k.shape[2]
        self.k[layer].narrow(2, start, n).copy_(k)
        self.v[layer].narrow(2, start, n).copy_(v)
        keys = self.k[layer].narrow(2, 0, start + n)  # (B, n_kv_heads, S, head_dim)
        values = self.v[layer].narrow(2, 0, start + n)
        key_mask = None if self.key_mask is None else self.key_mask.narrow(1, 0, start + n)
        return ops.attention(q, keys, values, causal=True, q_offset=start, key_mask=key_mask)

    def end(self) -> None:
        self.length += self._pending
        self._pending = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows (e.g. when finished sequences leave the batch)."""
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, rows)
        self.next_position = self.next_position.index_select(0, rows)
        self.batch_size = int(rows.numel())


@dataclass
class _Forward:
    """What the next forward computes (set by `PagedKVCache.prepare`, used by begin/attend, cleared by end)."""

    seq_ids: list[int]
    n_tokens: int  # T: new tokens per sequence (packed: all of them, in one row)
    starts: np.ndarray  # (B,) int64: position of each sequence's first new token
    slots: torch.Tensor  # (B * T,) int64: pool slots of the new tokens, sequence-major
    copies: torch.Tensor  # (k, 2) int64 (src, dst): copy-on-write, before any write of this forward
    positions: torch.Tensor  # (B, T) RoPE positions; packed: (1, N)
    tables: torch.Tensor | None = None  # decode (T == 1): (B, width) int32 block tables ...
    lengths: torch.Tensor | None = None  # ... and (B,) int32 lengths, the new token included
    gather: torch.Tensor | None = None  # prefill, all starts equal: (B, start + T) int64 slots to attend
    gathers: list[torch.Tensor] | None = None  # prefill, ragged starts: per sequence
    # packed prefill (prepare_packed): sequence b's new tokens are row 0's [cu_q[b], cu_q[b+1]) and it attends
    # over gather[cu_k[b]:cu_k[b+1]] (its whole length)
    counts: np.ndarray | None = None  # (B,) int64 new tokens per sequence
    cu_q: torch.Tensor | None = None
    cu_k: torch.Tensor | None = None
    begun: bool = False

    @property
    def packed(self) -> bool:
        return self.counts is not None


@dataclass
class RowsPlan:
    """A forward as token rows (`PagedKVCache.prepare_rows`): row i is token `tokens[i]` at `positions[i]`,
    its K/V going to `slots[i]`, attending over the first `lengths[i]` tokens of the sequence whose block
    table is `tables[i]`. `last[j]` is the row of the j-th sequence's last token."""

    tokens: np.ndarray  # (N,) int64
    positions: np.ndarray  # (N,) int64
    slots: np.ndarray  # (N,) int64
    tables: np.ndarray  # (N, width) int32
    lengths: np.ndarray  # (N,) int32
    last: np.ndarray  # (B,) int64


class PagedKVCache:
    """Per-layer K and V pools of shape (num_blocks, block_size, n_kv_heads, head_dim), shared by many
    sequences through the C++ `BlockManager`; implements the `KVCache` protocol.

    A forward over the cache:

        skip = cache.add(seq, prompt_ids)            # prefix-cache hit: the first `skip` tokens are in place
        tokens = cache.prepare([seq])                # the tokens still to compute, (1, len - skip)
        logits = model(tokens, cache=cache)          # writes their K/V, attends over the whole sequence
        tokens = cache.prepare([seq, other], next_ids)   # decode: one new token per sequence
        logits = model(tokens, cache=cache)
        cache.fork(seq, child); cache.free(seq)
        tokens, last = cache.prepare_packed([a, b])  # prompts waiting for different numbers of tokens: one
        logits = model(tokens, cache=cache, logits_at=last)[0]  # row, no padding; (2, vocab) at their ends

    `attend` makes the step's copy-on-write block copies before the first write (in `begin`), writes the new
    K/V into their slots (C++ on CPU) and then attends: one new token per sequence goes through the paged
    decode kernel (`ops.paged_decode_attention`), longer chunks gather their sequence's K/V and call
    `ops.attention` with the query offset, and a packed row calls `ops.attention_varlen` over each
    sequence's gathered K/V. RoPE positions come from each sequence's own length.

    Invariants (checked by `check_invariants`):
      - ``0 <= computed[s] <= manager.length(s)``: positions [0, computed[s]) of sequence s have their K/V in
        the pools; positions [computed[s], length) were planned (their slots handed out) and wait for a
        forward. A forward covers exactly the waiting tokens of its sequences, so after it they are equal.
      - ``ready[b]`` only if block b is full and its K/V are written. The manager publishes a block in the
        prefix cache when it is planned full, before its K/V exist; a sequence whose prefix hit includes a
        block not yet ready (its producer has not run) is in ``unverified`` and may not attend until those
        blocks are ready. `free` of a sequence whose planned blocks were never computed evicts every
        unreferenced cached block, so no later hit is served garbage.

    Not thread-safe: one forward at a time.
    """

    def __init__(
        self,
        config: ModelConfig,
        num_blocks: int,
        block_size: int = 16,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        watermark: float = 0.0,
    ) -> None:
        """Allocate the pools.

        Args:
            config: the model's configuration (layers, KV heads, head dim).
            num_blocks: blocks per pool; the cache holds at most num_blocks * block_size tokens in all.
            block_size: token slots per block (16 is the usual; any positive size works).
            dtype: storage dtype of K and V (the model's dtype).
            device: where the pools live (the model's device).
            watermark: fraction of the pool `can_allocate` keeps in reserve for running sequences.
        """
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise GenerationError(f"num_blocks must be a positive integer, got {num_blocks!r:.40}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise GenerationError(f"block_size must be a positive integer, got {block_size!r:.40}")
        shape = (num_blocks, block_size, config.n_kv_heads, config.head_dim)
        # Before the block manager too: its metadata grows with num_blocks.
        _check_fits(config, shape, dtype, device, f"a paged KV pool of {num_blocks} blocks of {block_size} tokens",
                    "ask for fewer tokens (kv_cache_tokens, --kv-cache-tokens, max_new_tokens)")
        self.manager = BlockManager(num_blocks, block_size, watermark=watermark)
        self.config = config
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self._computed: dict[int, int] = {}
        self._ready = np.zeros(num_blocks, dtype=bool)
        self._unverified: set[int] = set()
        self._fwd: _Forward | None = None
        self._next_id = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, num_blocks: int, block_size: int = 16, **kwargs) -> PagedKVCache:
        """A paged cache on `model`'s device and dtype (keyword arguments as for the constructor)."""
        p = model.tok_embeddings.weight
        return cls(model.config, num_blocks, block_size, dtype=p.dtype, device=p.device, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.k[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.k[0].dtype

    def blocks_for(self, n_tokens: int) -> int:
        """Blocks a sequence of `n_tokens` tokens occupies."""
        return -(-n_tokens // self.block_size)

    # --- sequences ---------------------------------------------------------------------------------------

    def new_seq_id(self) -> int:
        """An id no sequence in the cache has."""
        while self._next_id in self._computed:
            self._next_id += 1
        self._next_id += 1
        return self._next_id - 1

    def add(self, seq_id: int, tokens: Sequence[int] | np.ndarray | torch.Tensor, namespace: str = "") -> int:
        """Add a sequence holding the prompt `tokens`; its K/V are computed by the next `prepare([seq_id])`
        and forward.

        Args:
            seq_id: a new sequence id (see `new_seq_id`).
            tokens: the prompt's token ids (at least one).
            namespace: prefix-cache namespace; sequences share cached blocks only within one namespace.

        Returns:
            How many leading tokens the prefix cache already holds (a multiple of block_size, less than
            len(tokens)): the forward computes only the rest.

        Raises:
            OutOfBlocksError: the pool cannot hold the prompt (nothing changed).
            GenerationError: an empty prompt.
        """
        ids = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int32).reshape(-1)
        if ids.size == 0:
            raise GenerationError(f"sequence {seq_id}: the prompt is empty; give at least one token")
        skip = self.manager.add(seq_id, ids, namespace)
        table = self.manager.block_table(seq_id)
        hits = skip // self.block_size
        self._ready[table[hits:]] = False  # fresh blocks: whatever they held is not this prompt's K/V
        if hits and not self._ready[table[:hits]].all():
            self._unverified.add(seq_id)  # hit blocks whose producer has not run yet
        self._computed[seq_id] = skip
        return skip

    def fork(self, parent_id: int, child_id: int) -> None:
        """New sequence `child_id` sharing all of `parent_id`'s blocks (copy-on-write).

        Raises:
            GenerationError: the parent has tokens not computed yet (fork after its forward).
        """
        if self.pending(parent_id):
            raise GenerationError(
                f"sequence {parent_id} has {self.pending(parent_id)} tokens not computed yet: run its forward "
                "before forking it"
            )
        self.manager.fork(parent_id, child_id)
        self._computed[child_id] = self._computed[parent_id]
        if parent_id in self._unverified:
            self._unverified.add(child_id)

    def free(self, seq_id: int) -> None:
        """Drop a sequence; its blocks return to the pool (full ones stay in the prefix cache until evicted).

        A sequence freed before its planned tokens were computed leaves blocks published with garbage K/V
        (see `havoc/block_manager.py`); then every unreferenced cached block is evicted, at the price of the
        prefix cache, so that no later prompt is served them. (The manager has no call that unpublishes only
        one sequence's blocks; this path is for aborts, not the generation loop.)
        """
        length, computed = self.manager.length(seq_id), self._computed[seq_id]
        # A full block planned but never written, or prefix hits still waiting for their producer (which
        # may be gone): either may be garbage that stays in the prefix cache.
        garbage = length // self.block_size > computed // self.block_size or seq_id in self._unverified
        self.manager.free(seq_id)
        del self._computed[seq_id]
        self._unverified.discard(seq_id)
        if self._fwd is not None and seq_id in self._fwd.seq_ids:
            self._fwd = None  # the prepared forward covered it: cancelled (the others keep their pending tokens)
        if garbage:
            self.manager.evict(self.manager.stats()["evictable"])

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._computed

    def __len__(self) -> int:
        return len(self._computed)

    def seq_ids(self) -> list[int]:
        """Ids of the sequences held, sorted."""
        return sorted(self._computed)

    def length(self, seq_id: int) -> int:
        """Tokens of a sequence, computed or waiting."""
        return self.manager.length(seq_id)

    def ready(self, seq_id: int) -> bool:
        """Whether `prepare` may take the sequence now: every prefix-cache block it reuses has been written
        by a forward (a hit on blocks of a sequence added just before, not computed yet, is not ready)."""
        if seq_id not in self._unverified:
            return True
        hit = self.manager.block_table(seq_id)[: self._computed[seq_id] // self.block_size]
        return bool(self._ready[hit].all())

    def pending(self, seq_id: int) -> int:
        """Tokens of a sequence planned but not computed yet (what `prepare([seq_id])` would run)."""
        return self.manager.length(seq_id) - self._computed[seq_id]

    def tokens(self, seq_id: int) -> list[int]:
        """The sequence's token ids."""
        return self.manager.tokens(seq_id).tolist()

    def can_allocate(self, n_tokens: int) -> bool:
        """Whether a new sequence of `n_tokens` fits, leaving the watermark free (ignores prefix hits)."""
        return self.manager.can_allocate(n_tokens)

    def free_blocks(self) -> int:
        """Blocks a new allocation may take: free ones and unreferenced cached ones (evicted on demand)."""
        st = self.manager.stats()
        return st["free"] + st["evictable"]

    def stats(self) -> dict[str, int]:
        """The block manager's counters (used, free, cached blocks, evictions, COW copies, prefix hits)."""
        return self.manager.stats()

    # --- one forward --------------------------------------------------------------------------------------

    def prepare(self, seq_ids: Sequence[int], tokens: Sequence | np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Say what the next forward covers; returns the token ids to feed it, (B, T) int64 on the cache's device.

        Args:
            seq_ids: distinct sequences, in the order of the forward's batch rows.
            tokens: None to compute each sequence's waiting tokens (a prompt after `add`; all must wait
                the same number T > 0), or new tokens to append, (B,) or (B, T), to sequences with none
                waiting (a decode step when T == 1). Appending plans the blocks (copy-on-write where a block
                is shared) and may raise OutOfBlocksError, leaving the cache unchanged.

        Raises:
            GenerationError: mismatched shapes, or a sequence whose state does not allow it.
            OutOfBlocksError: no room for the appended tokens (nothing changed).
        """
        ids = self._known_ids(seq_ids, "prepare")
        starts = np.array([self._computed[s] for s in ids], dtype=np.int64)
        B, bs = len(ids), self.block_size
        self._verify(ids)

        copies = np.zeros((0, 2), dtype=np.int64)
        if tokens is None:
            waiting = {s: self.pending(s) for s in ids}
            T = waiting[ids[0]]
            if T == 0 or any(w != T for w in waiting.values()):
                raise GenerationError(f"prepare(seq_ids) computes waiting tokens; they must be equal and > 0: {waiting}")
            new = np.stack([self.manager.tokens(s)[self._computed[s] :] for s in ids]).astype(np.int64)
            slots = np.concatenate([self.manager.slots(s, self._computed[s]) for s in ids])
        else:
            busy = {s: self.pending(s) for s in ids if self.pending(s)}
            if busy:
                raise GenerationError(f"sequences {busy} have tokens waiting to be computed: prepare them first")
            tok = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64)
            if tok.ndim == 1:
                tok = tok[:, None]
            if tok.ndim != 2 or tok.shape[0] != B or tok.shape[1] == 0:
                raise GenerationError(f"tokens must be ({B},) or ({B}, T) for {B} sequences, got {tok.shape}")
            T = tok.shape[1]
            step_slots, copies = self.manager.step(np.asarray(ids, dtype=np.int64), tok.astype(np.int32))
            new, slots = tok, step_slots.reshape(-1)
        self._ready[slots // bs] = False  # blocks written by this forward (fresh, copied or partial)
        if len(copies):
            self._ready[copies[:, 1]] = False
        dev = self.device
        fwd = _Forward(
            seq_ids=ids,
            n_tokens=T,
            starts=starts,
            slots=torch.from_numpy(np.ascontiguousarray(slots, dtype=np.int64)).to(dev),
            copies=torch.from_numpy(np.array(copies, dtype=np.int64)).to(dev),  # a copy: the manager's is read-only
            positions=(torch.from_numpy(starts)[:, None] + torch.arange(T)).to(dev),
        )
        if T == 1:
            tables, lengths = self.manager.block_tables(np.asarray(ids, dtype=np.int64))
            fwd.tables, fwd.lengths = torch.from_numpy(tables).to(dev), torch.from_numpy(lengths).to(dev)
        else:
            gathers = [self.manager.slots(s, 0, int(st) + T) for s, st in zip(ids, starts)]
            if (starts == starts[0]).all():
                fwd.gather = torch.from_numpy(np.stack(gathers)).to(dev)
            else:
                fwd.gathers = [torch.from_numpy(g).to(dev) for g in gathers]
        self._fwd = fwd
        return torch.from_numpy(new).to(dev)

    def prepare_packed(self, seq_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Set up one forward over the waiting tokens of sequences that wait for different numbers of them
        (prompts of different lengths, or after prefix hits of different lengths): their tokens go in one
        row, back to back, and each attends only over its own sequence (`ops.attention_varlen`). Every
        projection and MLP then runs once over all the tokens, with no padding.

        Args:
            seq_ids: distinct sequences, each with tokens waiting (after `add`).

        Returns:
            (tokens, last): the (1, N) int64 token ids to feed the forward, N the total waiting, and (B,)
            int64 indices into N of each sequence's last token, in seq_ids' order (for `logits_at`).

        Raises:
            GenerationError: unknown or repeated sequences, or one with nothing waiting.
        """
        ids = self._known_ids(seq_ids, "prepare_packed")
        counts = np.array([self.pending(s) for s in ids], dtype=np.int64)
        if (counts == 0).any():
            idle = [s for s, c in zip(ids, counts) if c == 0]
            raise GenerationError(f"prepare_packed computes waiting tokens; sequences {idle} have none")
        self._verify(ids)
        starts = np.array([self._computed[s] for s in ids], dtype=np.int64)
        bs = self.block_size
        new = np.concatenate([self.manager.tokens(s)[c:] for s, c in zip(ids, starts)]).astype(np.int64)
        whole = [self.manager.slots(s, 0, int(c + n)) for s, c, n in zip(ids, starts, counts)]  # what each attends
        gather = np.concatenate(whole)
        slots = np.concatenate([w[c:] for w, c in zip(whole, starts)])  # its new tokens
        cu_q = np.concatenate([[0], np.cumsum(counts)])
        cu_k = np.concatenate([[0], np.cumsum(starts + counts)])
        # packed token i sits at i - (its sequence's offset in the row) + (that sequence's start)
        positions = np.arange(cu_q[-1]) + np.repeat(starts - cu_q[:-1], counts)
        self._ready[slots // bs] = False  # blocks written by this forward
        dev = self.device
        self._fwd = _Forward(
            seq_ids=ids,
            n_tokens=int(cu_q[-1]),
            starts=starts,
            slots=torch.from_numpy(np.ascontiguousarray(slots, dtype=np.int64)).to(dev),
            copies=torch.empty(0, 2, dtype=torch.int64, device=dev),
            positions=torch.from_numpy(positions)[None].to(dev),
            gather=torch.from_numpy(gather).to(dev),
            counts=counts,
            cu_q=torch.from_numpy(cu_q.astype(np.int32)).to(dev),
            cu_k=torch.from_numpy(cu_k.astype(np.int32)).to(dev),
        )
        return torch.from_numpy(new)[None].to(dev), torch.from_numpy(cu_q[1:] - 1).to(dev)

    def _known_ids(self, seq_ids: Sequence[int], caller: str) -> list[int]:
        """seq_ids as ints, checked to be distinct sequences of this cache."""
        ids = [int(s) for s in seq_ids]
        if not ids or len(set(ids)) != len(ids):
            raise GenerationError(f"{caller} needs distinct sequence ids, got {ids}")
        for s in ids:
            if s not in self._computed:
                raise GenerationError(f"sequence {s} is not in the cache")
        return ids

    def _verify(self, ids: list[int]) -> None:
        """Check that the prefix-cache hits of these sequences have been written by a forward."""
        for s in self._unverified.intersection(ids):
            if not self.ready(s):
                raise GenerationError(
                    f"sequence {s} reuses cached prefix blocks whose K/V no forward has written yet: run the "
                    "forward of the sequence added before it with the same prefix first"
                )
            self._unverified.discard(s)

    def append(self, seq_id: int, tokens: Sequence[int] | np.ndarray) -> None:
        """Plan `tokens` after the end of a sequence with nothing pending; the next forward over the sequence
        (`prepare_rows`, `prepare_packed`, `prepare`) computes them. The copy-on-write copy of a shared
        partial last block, if any, is made now.

        Raises:
            GenerationError: an unknown sequence, or one with tokens still waiting.
            OutOfBlocksError: no room for the tokens (nothing changed).
        """
        self._known_ids([seq_id], "append")
        if self.pending(seq_id):
            raise GenerationError(f"sequence {seq_id} has tokens waiting to be computed: run its forward first")
        tok = np.asarray(tokens, dtype=np.int32).reshape(-1)
        if tok.size == 0:
            return
        slots, copies = self.manager.append(seq_id, tok)
        self._ready[slots // self.block_size] = False
        if len(copies):
            self._ready[copies[:, 1]] = False
            ops.copy_blocks(self.k + self.v, torch.from_numpy(np.array(copies, dtype=np.int64)))

    def truncate(self, seq_id: int, n_tokens: int) -> None:
        """Keep the first `n_tokens` tokens of a sequence with nothing pending (speculative decoding rolls
        back rejected draft tokens). Full blocks it drops stay in the prefix cache: their K/V are those of
        the tokens they hold."""
        self._known_ids([seq_id], "truncate")
        if self.pending(seq_id):
            raise GenerationError(f"sequence {seq_id} has tokens waiting to be computed: run its forward first")
        if not 0 < n_tokens <= self.manager.length(seq_id):
            raise GenerationError(f"cannot truncate sequence {seq_id} of length {self.manager.length(seq_id)} to {n_tokens}")
        self.manager.truncate(seq_id, n_tokens)
        self._computed[seq_id] = n_tokens

    def prepare_rows(self, seq_ids: Sequence[int]) -> RowsPlan:
        """Set up one forward, as token rows, over the waiting tokens of some sequences (any number each: a
        decode token, a prompt chunk): for a kernel that runs the whole forward itself (`havoc.cpu_decode`)
        and attends each row over its own sequence's first `position + 1` tokens. Call `end()` after it.

        Raises:
            GenerationError: unknown or repeated sequences, one with nothing waiting, or one whose prefix
                hits no forward has written yet.
        """
        ids = self._known_ids(seq_ids, "prepare_rows")
        starts = np.fromiter((self._computed[s] for s in ids), dtype=np.int64, count=len(ids))
        counts = np.fromiter((self.pending(s) for s in ids), dtype=np.int64, count=len(ids))
        if (counts == 0).any():
            raise GenerationError(f"prepare_rows computes waiting tokens; sequences {[s for s, c in zip(ids, counts) if not c]} have none")
        self._verify(ids)
        tokens = np.concatenate([self.manager.tokens(s)[c:] for s, c in zip(ids, starts)]).astype(np.int64)
        slots = np.concatenate([self.manager.slots(s, int(c), int(c + n)) for s, c, n in zip(ids, starts, counts)])
        cu = np.concatenate([[0], np.cumsum(counts)])
        positions = np.arange(cu[-1]) + np.repeat(starts - cu[:-1], counts)  # (N,)
        tables, _ = self.manager.block_tables(np.asarray(ids, dtype=np.int64))
        if cu[-1] != len(ids):
            tables = np.repeat(tables, counts, axis=0)  # (N, width): a row per token
        self._ready[slots // self.block_size] = False
        self._fwd = _Forward(
            seq_ids=ids, n_tokens=int(cu[-1]), starts=starts, slots=torch.from_numpy(slots),
            copies=torch.empty(0, 2, dtype=torch.int64), positions=torch.from_numpy(positions)[None], counts=counts,
            begun=True,
        )
        return RowsPlan(tokens, positions, slots, np.ascontiguousarray(tables, dtype=np.int32),
                        (positions + 1).astype(np.int32), cu[1:] - 1)

    def prepare_decode(self, seq_ids: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, ...]:
        """`prepare(seq_ids, tokens)` and `begin` of a one-token decode step, for a kernel that runs the whole
        step itself (`havoc.cpu_decode`): no torch tensors are built but the two `end()` reads.

        Args:
            seq_ids: (B,) int64 distinct sequences with nothing pending.
            tokens: (B,) int64 their new tokens.

        Returns:
            (positions, slots, block_tables, lengths): (B,) int64 positions and slots of the new tokens,
            (B, width) int32 block tables and (B,) int32 lengths counting them. Copy-on-write is done; call
            `end()` after the step.

        Raises:
            GenerationError: unknown, repeated or busy sequences.
            OutOfBlocksError: no room for the tokens (nothing changed).
        """
        ids = seq_ids.tolist()
        try:
            starts = np.fromiter((self._computed[s] for s in ids), dtype=np.int64, count=len(ids))
        except KeyError as e:
            raise GenerationError(f"sequence {e.args[0]} is not in the cache") from None
        if len(set(ids)) != len(ids) or not ids:
            raise GenerationError(f"prepare_decode needs distinct sequence ids, got {ids}")
        busy = {s: self.pending(s) for s in ids if self.pending(s)}
        if busy:
            raise GenerationError(f"sequences {busy} have tokens waiting to be computed: prepare them first")
        self._verify(ids)
        slots, copies = self.manager.step(seq_ids, tokens.astype(np.int32).reshape(-1, 1))
        slots = slots.reshape(-1)
        self._ready[slots // self.block_size] = False
        if len(copies):
            self._ready[copies[:, 1]] = False
            ops.copy_blocks(self.k + self.v, torch.from_numpy(np.array(copies, dtype=np.int64)))
        tables, lengths = self.manager.block_tables(seq_ids)
        self._fwd = _Forward(
            seq_ids=ids, n_tokens=1, starts=starts, slots=torch.from_numpy(slots), copies=torch.empty(0, 2, dtype=torch.int64),
            positions=torch.from_numpy(starts[:, None]), begun=True,
        )
        return starts, slots, tables, lengths

    def begin(self, batch_size: int, n_tokens: int, attention_mask: torch.Tensor | None) -> torch.Tensor:
        fwd = self._fwd
        if fwd is None:
            raise GenerationError("a paged cache needs cache.prepare(seq_ids, tokens) before each forward")
        want = (1, fwd.n_tokens) if fwd.packed else (len(fwd.seq_ids), fwd.n_tokens)
        if (batch_size, n_tokens) != want:
            raise GenerationError(
                f"the forward has shape ({batch_size}, {n_tokens}) but prepare() set up "
                f"({want[0]}, {want[1]}): feed the tokens prepare() returned"
            )
        if attention_mask is not None and not bool(attention_mask.all()):
            raise GenerationError("a paged cache keeps each sequence at its own length: it takes no padding mask")
        if not fwd.begun and fwd.copies.numel():
            # Copy-on-write before any write of this forward, every layer at once (the manager's contract).
            ops.copy_blocks(self.k + self.v, fwd.copies)
        fwd.begun = True
        return fwd.positions

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        fwd = self._fwd
        B, KV, T, D = k.shape
        # (B, T, KV, D) views of the model's fused projection: rows and heads strided, head_dim contiguous
        ops.write_kv(self.k[layer], self.v[layer], k.transpose(1, 2).reshape(B * T, KV, D),
                     v.transpose(1, 2).reshape(B * T, KV, D), fwd.slots)
        if T == 1:
            out = ops.paged_decode_attention(q[:, :, 0], self.k[layer], self.v[layer], fwd.tables, fwd.lengths)
            return out.unsqueeze(2)  # (B, H, 1, D)
        k_flat, v_flat = self.k[layer].view(-1, KV, D), self.v[layer].view(-1, KV, D)
        if fwd.packed:  # one row of several sequences: each attends over its own K/V only
            keys, values = k_flat.index_select(0, fwd.gather), v_flat.index_select(0, fwd.gather)  # (S, KV, D)
            max_q, max_k = int(fwd.counts.max()), int((fwd.starts + fwd.counts).max())
            out = ops.attention_varlen(q[0].transpose(0, 1), keys, values, fwd.cu_q, fwd.cu_k, max_q, max_k, causal=True)
            return out.transpose(0, 1).unsqueeze(0)  # (1, H, N, D)
        if fwd.gather is not None:  # every sequence starts at the same position: one batched call
            S = fwd.gather.shape[1]
            idx = fwd.gather.reshape(-1)
            keys = k_flat.index_select(0, idx).view(B, S, KV, D).transpose(1, 2)  # (B, KV, S, D)
            values = v_flat.index_select(0, idx).view(B, S, KV, D).transpose(1, 2)
            return ops.attention(q, keys, values, causal=True, q_offset=int(fwd.starts[0]))
        outs = []
        for i, idx in enumerate(fwd.gathers):
            keys = k_flat.index_select(0, idx).transpose(0, 1).unsqueeze(0)  # (1, KV, S_i, D)
            values = v_flat.index_select(0, idx).transpose(0, 1).unsqueeze(0)
            outs.append(ops.attention(q[i : i + 1], keys, values, causal=True, q_offset=int(fwd.starts[i])))
        return torch.cat(outs)  # (B, H, T, D)

    def end(self) -> None:
        fwd = self._fwd
        if fwd is None:
            return
        T, bs = fwd.n_tokens, self.block_size
        if fwd.packed:  # a prefill: reading its positions back costs one small copy per forward
            for s, start, n in zip(fwd.seq_ids, fwd.starts, fwd.counts):
                self._computed[s] = int(start + n)
            pos = fwd.positions.cpu().numpy().reshape(-1)
        else:
            for s, start in zip(fwd.seq_ids, fwd.starts):
                self._computed[s] = int(start) + T
            pos = (fwd.starts[:, None] + np.arange(T)).reshape(-1)
        # A block is ready once its last slot is written: the new tokens at positions p with p % bs == bs - 1.
        full = (pos % bs) == bs - 1
        if full.any():
            self._ready[fwd.slots.cpu().numpy()[full] // bs] = True
        self._fwd = None

    def check_invariants(self) -> None:
        """Check the manager's invariants and this cache's; raise AssertionError naming the first broken."""
        self.manager.check_invariants()
        assert sorted(self._computed) == self.manager.seq_ids(), "the cache and the manager hold different sequences"
        for s, c in self._computed.items():
            n = self.manager.length(s)
            assert 0 <= c <= n, f"sequence {s}: computed {c} outside [0, {n}]"
            if s not in self._unverified:
                table = self.manager.block_table(s)
                assert self._ready[table[: c // self.block_size]].all(), f"sequence {s}: a computed full block is not ready"
        assert self._unverified <= set(self._computed), "an unverified sequence is not in the cache"
