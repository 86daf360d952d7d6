"""The havoc decoder: a Llama-style pre-norm transformer with grouped-query attention.

    q, k, v = split(wqkv(rms_norm(x)))
    h   = x + wo(attention(rope(q), rope(k), v))
    gate, up = split(w13(rms_norm(h)))
    out = h + w2(silu(gate) * up)
    logits = rms_norm(out_L) @ tok_embeddings.T          (tied head; an `output` Linear otherwise)

The residual add of the attention and the ffn_norm that follows it run as one op (`ops.add_rms_norm`),
and `loss` feeds the final hidden states to `ops.linear_cross_entropy` so training never holds the full
logits.

Every op goes through `havoc.ops`, which picks the Triton, C++ or reference implementation per call.
Names follow Meta's Llama code (wo, w2, attention_norm, ffn_norm), with q/k/v fused as `wqkv` and the
gate/up projections fused as `w13`, as gpt-fast does.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from havoc import ops
from havoc.cache import KVCache, StaticKVCache
from havoc.config import ModelConfig
from havoc.errors import GenerationError


class Linear(nn.Linear):
    """A bias-free projection whose product goes through `havoc.ops.linear` (fast paths per device)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        # One projection for q, k and v: its rows are wq, wk, wv stacked. One GEMM instead of three and
        # one RoPE call over the q|k heads (gpt-fast's layout). With w13 below it took a SmolLM2 decode
        # step from 1647 to 1467 aten ops (transformers: 1677). Separate wq/wk/wv are fused on load.
        self.wqkv = Linear(config.dim, (config.n_heads + 2 * config.n_kv_heads) * config.head_dim)
        self.wo = Linear(config.n_heads * config.head_dim, config.dim)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None,
        key_mask: torch.Tensor | None,
        varlen: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H, KV = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(B, T, H + 2 * KV, self.head_dim)  # (B, T, H + 2 KV, head_dim)
        qk = ops.apply_rope(qkv[:, :, : H + KV], cos, sin)  # (B, T, H + KV, head_dim)
        if varlen is not None:  # packed documents: each attends only within its own segment
            cu_seqlens, max_seqlen = varlen
            flat = (B * T, -1, self.head_dim)
            y = ops.attention_varlen(
                qk[:, :, :H].reshape(flat), qk[:, :, H:].reshape(flat), qkv[:, :, H + KV :].reshape(flat),
                cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=True,
            )  # (B*T, H, head_dim)
            return self.wo(y.view(B, T, H * self.head_dim))
        q = qk[:, :, :H].transpose(1, 2)  # (B, H, T, head_dim)
        k = qk[:, :, H:].transpose(1, 2)  # (B, KV, T, head_dim)
        v = qkv[:, :, H + KV :].transpose(1, 2)  # (B, KV, T, head_dim)
        if cache is None:
            y = ops.attention(q, k, v, causal=True, key_mask=key_mask)  # (B, H, T, head_dim)
        else:  # the cache stores this step's K/V and attends over everything it holds
            y = cache.attend(self.layer_idx, q, k, v)  # (B, H, T, head_dim)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ffn_hidden = config.ffn_hidden
        self.w13 = Linear(config.dim, 2 * config.ffn_hidden)  # rows: w1 (gate), then w3 (up)
        self.w2 = Linear(config.ffn_hidden, config.dim)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.ffn_hidden, dim=-1)  # (..., ffn_hidden) each
        return self.w2(ops.swiglu(gate, up))


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attention = Attention(config, layer_idx)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x, cos, sin, cache, key_mask, varlen=None):
        attn = self.attention(self.attention_norm(x), cos, sin, cache, key_mask, varlen)  # (B, T, dim)
        # h = x + attn and ffn_norm(h) as one op: one pass over the residual stream instead of two
        normed, h = ops.add_rms_norm(attn, x, self.ffn_norm.weight, self.ffn_norm.eps)
        return h + self.feed_forward(normed)


class HavocModel(nn.Module):
    """The decoder. Build from a `ModelConfig`; load with `HavocModel.from_pretrained`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = None if config.tie_embeddings else Linear(config.dim, config.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 n_layers) (GPT-2), unit norms."""
        std = 0.02
        for name, p in self.named_parameters():
            if p.is_meta:
                continue
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, mean=0.0, std=std)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.tok_embeddings.weight if self.output is None else self.output.weight

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for a batch of token ids.

        Args:
            tokens: (B, T) int64 token ids.
            positions: (B, T) absolute positions for RoPE; default: what the cache says comes next (0..T-1
                without a cache).
            cache: a `KVCache`; the tokens are appended to it and attend to everything before them.
            attention_mask: (B, T) bool/int, 0 at padding tokens (left padding of a batch of prompts).
            logits_to_keep: compute the logits of only the last this-many positions (0: all).
            logits_at: (K,) int64 positions along T: compute the logits of only these (a packed prefill's
                last token of each sequence, `PagedKVCache.prepare_packed`); excludes logits_to_keep.

        Returns:
            (B, T or logits_to_keep or K, vocab_size) logits in the model's dtype.
        """
        if logits_at is not None:
            T = tokens.shape[-1] if tokens.dim() else 0
            if logits_to_keep:
                raise GenerationError("give logits_to_keep or logits_at, not both")
            if logits_at.dim() != 1 or logits_at.dtype not in (torch.int32, torch.int64):
                raise GenerationError(
                    f"logits_at must be a (K,) integer tensor, got {logits_at.dtype} {tuple(logits_at.shape)}"
                )
            if logits_at.numel() and not (0 <= int(logits_at.min()) and int(logits_at.max()) < T):
                raise GenerationError(f"logits_at holds positions outside [0, {T})")
        h = self._trunk(tokens, positions, cache, attention_mask)  # (B, T, dim), before the final norm
        if logits_at is not None:
            h = h.index_select(1, logits_at.to(h.device))  # (B, K, dim)
        elif logits_to_keep:
            h = h[:, -logits_to_keep:]
        return ops.linear(self.norm(h), self.lm_head_weight)  # (B, T', vocab)

    def loss(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        ignore_index: int = -100,
        positions: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int = 0,
    ) -> torch.Tensor:
        """Mean cross-entropy of the logits at every position against `targets` (training).

        Goes through `ops.linear_cross_entropy`, whose fast path never materialises the (B, T, vocab)
        logits.

        Args:
            tokens: (B, T) int64 token ids.
            targets: (B, T) ids of the token that should follow each position; ignore_index where none.
            ignore_index: the target id that contributes nothing.
            positions: (B, T) RoPE positions (packed documents restart at 0); default 0..T-1.
            cu_seqlens: (S+1,) int32 cumulative segment lengths over the flattened B*T tokens: packed
                documents attend only within their segment (`ops.attention_varlen`). None: causal rows.
            max_seqlen: the longest segment (the CUDA kernel's grid); needed with cu_seqlens.

        Returns:
            The scalar loss, fp32.
        """
        varlen = None if cu_seqlens is None else (cu_seqlens, max_seqlen)
        h = self.norm(self._trunk(tokens, positions, None, None, varlen))  # (B, T, dim)
        return ops.linear_cross_entropy(h, self.lm_head_weight, targets, ignore_index=ignore_index)

    def _trunk(self, tokens, positions, cache, attention_mask, varlen=None) -> torch.Tensor:
        if tokens.dim() != 2:
            raise GenerationError(f"tokens must be (batch, seq_len), got shape {tuple(tokens.shape)}")
        B, T = tokens.shape
        mask = None if attention_mask is None else attention_mask.bool()
        if cache is not None:
            next_positions = cache.begin(B, T, mask)  # checks capacity, records the mask
            key_mask = None
        else:
            next_positions = torch.arange(T, device=tokens.device).expand(B, T)
            key_mask = mask
        if positions is None:
            positions = next_positions

        cos, sin = ops.rope_cos_sin(positions, self.config.rotary_dim, self.config.rope_theta)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B, T, 1, rotary_dim): once, for every layer
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        for layer in self.layers:
            h = layer(h, cos, sin, cache, key_mask, varlen)
        if cache is not None:
            cache.end()
        return h

    def new_cache(self, batch_size: int, max_len: int | None = None) -> StaticKVCache:
        """A contiguous KV cache on this model's device and dtype (max_len defaults to the context)."""
        p = self.tok_embeddings.weight
        return StaticKVCache(
            self.config, batch_size, max_len or self.config.max_seq_len, dtype=p.dtype, device=p.device
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, path: str | Path) -> None:
        """Write `config.json` and `model.safetensors` into the folder `path` (atomically, no pickle)."""
        from havoc.io.checkpoint import save_pretrained

        save_pretrained(self, path)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
    ) -> HavocModel:
        """Load a folder written by `save_pretrained` (safetensors only; nothing is unpickled)."""
        from havoc.io.checkpoint import load_pretrained

        return load_pretrained(path, dtype=dtype, device=device)
