"""KV caches for incremental decoding.

The model talks to a cache through three calls per forward (the `KVCache` protocol):

    positions = cache.begin(batch, n_tokens, attention_mask)  # check room, record padding; RoPE positions
    y = cache.attend(layer, q, k, v)                          # per layer: store k/v, attend over all held
    cache.end()                                               # the tokens are now part of the cache

`StaticKVCache` is the contiguous cache: per layer a K and a V buffer of shape
(batch, n_kv_heads, max_len, head_dim), preallocated once, filled left to right. All rows share one
write column; a batch of prompts of different lengths is left-padded and the padding is masked. The paged
cache (C++ block manager) implements the same protocol.
"""

from __future__ import annotations

from typing import Protocol

import torch

from havoc import ops
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
