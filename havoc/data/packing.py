"""From documents to training batches: tokenization with loss masks, packing, document boundaries.

Every example becomes (tokens, loss_mask): loss_mask[i] says whether token i is a target the model must
learn to predict.

- Pretraining (`encode_pretrain`): the document's ids followed by EOS, every token a target.
- SFT / polish (`encode_sft`): `{"prompt": ..., "completion": ...}` or `{"messages": [...]}` rendered with
  the tokenizer's chat template; only assistant turns (their content and the end-of-turn tokens the
  template writes) are targets. Reasoning and tool tags are ordinary tokens of the text and are kept.

`Packer` fills rows of `seq_len` tokens back to back. Each row records its segments (one per document or
piece of one), so attention never crosses a document boundary: the batch carries `cu_seqlens` over the
flattened (B*T) tokens for `ops.attention_varlen` (the ragged kernel on CUDA, a per-segment reference
on CPU), and RoPE positions restart at 0 in each segment. The target of a row's last token and of a
segment's last token (an EOS, whose successor is another document) is ignored.

Pretraining rows split a document across rows (no token is wasted); SFT rows never split an example
(its prompt would be lost) and pad the rest of the row instead. An SFT example longer than a row is
truncated from the right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from havoc.data.sources import Mixture
from havoc.errors import ConfigError

IGNORE_INDEX = -100


def encode_pretrain(tokenizer, doc: str | Mapping[str, Any]) -> tuple[list[int], list[bool]]:
    """Ids of a pretraining document (a str, or a record's "text") followed by EOS; all are targets."""
    if isinstance(doc, Mapping):
        if not isinstance(doc.get("text"), str):
            raise ConfigError(f"a pretraining JSONL record needs a string 'text' field, got keys {sorted(doc)}")
        doc = doc["text"]
    ids = tokenizer.encode(doc, add_bos=False) + [tokenizer.eos_id]
    return ids, [True] * len(ids)


def encode_sft(tokenizer, record: Mapping[str, Any]) -> tuple[list[int], list[bool]]:
    """Ids and loss mask of an SFT record: loss only on the assistant's turns.

    A pre-rendered record `{"context_pieces": [str, ...], "completion": str}` (the tool-call examples of
    `havoc.train.toolcalls`) is encoded piece by piece, as PRIME encodes what it writes, with the loss on the
    completion alone.
    """
    if "context_pieces" in record:
        pieces, completion = record["context_pieces"], record.get("completion")
        if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces) or not isinstance(completion, str) \
                or not completion:
            raise ConfigError("a pre-rendered SFT record needs 'context_pieces' (a list of strings) and a non-empty "
                              "'completion' string")
        ids = [t for p in pieces for t in tokenizer.encode(p, add_bos=False)]
        target = tokenizer.encode(completion, add_bos=False)
        return ids + target, [False] * len(ids) + [True] * len(target)
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ConfigError("an SFT record's 'messages' must be a list of {'role': str, 'content': str}")
    elif isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    else:
        raise ConfigError(
            f"an SFT record needs 'prompt' and 'completion' strings or a 'messages' list, got keys {sorted(record)}"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError("an SFT record has no assistant turn to learn from")
    ids: list[int] = []
    mask: list[bool] = []
    done = ""  # text rendered so far; each turn's new text is encoded on its own, so boundaries are exact
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            head = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
            _extend(tokenizer, ids, mask, done, head, False)
            done = head
        full = tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False)
        _extend(tokenizer, ids, mask, done, full, m["role"] == "assistant")
        done = full
    return ids, mask


def _extend(tokenizer, ids, mask, done: str, text: str, target: bool) -> None:
    if not text.startswith(done):
        raise ConfigError("the chat template does not render a conversation as a prefix of its continuation")
    new = tokenizer.encode(text[len(done):], add_bos=False) if len(text) > len(done) else []
    ids.extend(new)
    mask.extend([target] * len(new))


class Packer:
    """Batches of packed rows from a `Mixture` (see the module doc). Resumable: `state_dict()`."""

    def __init__(
        self,
        mixture: Mixture,
        encode: Callable[[Any], tuple[list[int], list[bool]]],
        seq_len: int,
        batch_size: int,
        *,
        split_docs: bool = True,
        pad_id: int = 0,
    ) -> None:
        if seq_len < 2 or batch_size < 1:
            raise ConfigError(f"seq_len must be >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
        self.mixture, self.encode = mixture, encode
        self.seq_len, self.batch_size = seq_len, batch_size
        self.split_docs, self.pad_id = split_docs, pad_id
        self.pending: tuple[list[int], list[bool]] | None = None  # the rest of a document not yet packed

    def state_dict(self) -> dict[str, Any]:
        return {"mixture": self.mixture.state_dict(), "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mixture.load_state_dict(state["mixture"])
        pending = state["pending"]
        self.pending = None if pending is None else (list(pending[0]), [bool(b) for b in pending[1]])

    def _next_example(self) -> tuple[list[int], list[bool]]:
        if self.pending is not None:
            example, self.pending = self.pending, None
            return example
        while True:
            _, doc = self.mixture.next_document()
            ids, mask = self.encode(doc)
            if not self.split_docs:
                ids, mask = ids[: self.seq_len], mask[: self.seq_len]
            if ids and any(mask):
                return ids, mask

    def _row(self) -> tuple[list[int], list[bool], list[int]]:
        T = self.seq_len
        tokens: list[int] = []
        mask: list[bool] = []
        lengths: list[int] = []
        while len(tokens) < T:
            ids, m = self._next_example()
            room = T - len(tokens)
            if len(ids) > room:
                if not self.split_docs and tokens:
                    self.pending = (ids, m)  # starts the next row; pad this one
                    tokens += [self.pad_id] * room
                    mask += [False] * room
                    lengths.append(room)
                    break
                self.pending = (ids[room:], m[room:])
                ids, m = ids[:room], m[:room]
            tokens += ids
            mask += m
            lengths.append(len(ids))
        return tokens, mask, lengths

    def next_batch(self) -> dict[str, Any]:
        """{"tokens", "targets", "positions": (B, T) int64, "cu_seqlens": (S+1,) int32, "max_seqlen": int}."""
        B, T = self.batch_size, self.seq_len
        tokens = torch.empty(B, T, dtype=torch.long)
        targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        positions = torch.empty(B, T, dtype=torch.long)
        cu = [0]
        for b in range(B):
            ids, mask, lengths = self._row()
            row = torch.tensor(ids)
            keep = torch.tensor(mask)
            tokens[b] = row
            start = 0
            for n in lengths:
                positions[b, start : start + n] = torch.arange(n)
                # position t predicts token t+1 of the same segment, where that token is a target
                tgt = row[start + 1 : start + n].clone()
                tgt[~keep[start + 1 : start + n]] = IGNORE_INDEX
                targets[b, start : start + n - 1] = tgt
                start += n
                cu.append(b * T + start)
        cu_seqlens = torch.tensor(cu, dtype=torch.int32)
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        return {"tokens": tokens, "targets": targets, "positions": positions, "cu_seqlens": cu_seqlens,
                "max_seqlen": max_seqlen}
