"""PRIME's decoding engine: contexts as sequences of a paged KV cache, grown by text, forked, decoded.

One `Engine` holds a model, its tokenizer and a `PagedKVCache`. A `Context` is one sequence in that cache:
`extend(text)` computes only the new tokens (a chunked prefill on top of what is cached), `fork()` makes
a child that shares every block so far (copy-on-write), and the engine decodes one context
(`generate`, optionally under a JSON schema) or several forks in one batched forward per step
(`generate_batch`). So the advocate, attack and pragmatist branches of PRIME read the shared context once.

Structured decoding uses llguidance (Microsoft's low-level guidance: a Rust Earley parser with a
JSON-schema compiler, the engine behind vLLM's, SGLang's and llama.cpp's guided decoding) over the model's
own `tokenizers` pipeline: per step it computes the mask of tokens that keep the output a valid prefix of
the schema's language, and forced stretches (keys, `{"tool":"statistics",...`) are appended as one chunk
without sampling.

`Engine.computed_tokens` counts every token that went through the model; tests use it to show that a
forked prompt is computed once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from havoc.cache import PagedKVCache
from havoc.errors import OutOfBlocksError, PrimeError
from havoc.generation import SamplingParams, sample_next

DEFAULT_BLOCKS = 256  # 4096 tokens of KV in 16-token blocks: a PRIME run with its forks uses well under it


@dataclass
class Generated:
    """What one `generate` call produced."""

    ids: list[int]
    text: str
    finish: str  # "stop" (stop string, end of sequence or schema complete), "length" (budget)
    forced: int = 0  # tokens the grammar forced (appended without sampling)


class Context:
    """One sequence of the engine's paged cache: its tokens and the logits of its next token."""

    def __init__(self, engine: Engine, seq_id: int, ids: list[int], logits: torch.Tensor | None) -> None:
        self.engine = engine
        self.seq_id = seq_id
        self.ids = ids
        self.logits = logits  # (V,) logits after the last token
        self.alive = True

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, text_or_ids: str | Sequence[int]) -> list[int]:
        """Append text (or token ids) and compute their K/V in one forward; returns the ids appended."""
        ids = self.engine.encode(text_or_ids) if isinstance(text_or_ids, str) else [int(t) for t in text_or_ids]
        if ids:
            self.engine._forward([self], [ids])
        return ids

    def fork(self) -> Context:
        """A child context sharing every block of this one (copy-on-write); nothing is recomputed."""
        self.engine._check(self)
        child = self.engine.cache.new_seq_id()
        self.engine.cache.fork(self.seq_id, child)
        return Context(self.engine, child, list(self.ids), self.logits)

    def free(self) -> None:
        """Give the context's blocks back to the pool."""
        if self.alive:
            self.engine.cache.free(self.seq_id)
            self.alive = False


class Engine:
    """A model, its tokenizer and a paged KV cache for PRIME's contexts.

    Args:
        model: a `HavocModel`.
        tokenizer: its `havoc.tokenizer.Tokenizer`.
        num_blocks: blocks of the paged cache (block_size tokens each).
        block_size: tokens per block.
    """

    def __init__(self, model, tokenizer, *, num_blocks: int = DEFAULT_BLOCKS, block_size: int = 16) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cache = PagedKVCache.for_model(model, num_blocks, block_size)
        self.computed_tokens = 0
        self.vocab_size = model.config.vocab_size
        self.stop_ids = set(tokenizer.stop_ids)
        self._lltok = None
        self._grammars: dict[str, str] = {}

    @classmethod
    def from_llm(cls, llm, **kwargs) -> Engine:
        return cls(llm.model, llm.tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------ contexts
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_bos=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def start(self, text_or_ids: str | Sequence[int]) -> Context:
        """A new context holding `text_or_ids`, prefilled."""
        ids = self.encode(text_or_ids) if isinstance(text_or_ids, str) else [int(t) for t in text_or_ids]
        if not ids:
            raise PrimeError("a context needs at least one token")
        self._room(len(ids))
        sid = self.cache.new_seq_id()
        skip = self.cache.add(sid, ids)
        ctx = Context(self, sid, ids, None)
        with torch.inference_mode():
            out = self.model(self.cache.prepare([sid]), cache=self.cache, logits_to_keep=1)  # (1, 1, V)
        self.computed_tokens += len(ids) - skip
        ctx.logits = out[0, -1]
        return ctx

    def _check(self, ctx: Context) -> None:
        if not ctx.alive:
            raise PrimeError(f"context {ctx.seq_id} was freed")

    def _room(self, n_tokens: int) -> None:
        if n_tokens > self.model.config.max_seq_len:
            raise PrimeError(f"the context would hold {n_tokens} tokens; the model takes {self.model.config.max_seq_len}")

    def _forward(self, contexts: Sequence[Context], chunks: Sequence[Sequence[int]]) -> None:
        """Append one chunk per context (all the same length) in one forward."""
        for c in contexts:
            self._check(c)
            self._room(len(c.ids) + len(chunks[0]))
        tokens = np.asarray(chunks, dtype=np.int64)
        try:
            with torch.inference_mode():
                x = self.cache.prepare([c.seq_id for c in contexts], tokens)
                out = self.model(x, cache=self.cache, logits_to_keep=1)[:, -1]  # (B, V)
        except OutOfBlocksError as e:
            raise PrimeError(f"PRIME's KV cache is full ({self.cache.num_blocks} blocks): {e}") from None
        self.computed_tokens += tokens.size
        for c, chunk, row in zip(contexts, chunks, out):
            c.ids.extend(int(t) for t in chunk)
            c.logits = row

    # ------------------------------------------------------------------------------------------ decoding
    def generate(
        self,
        ctx: Context,
        max_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        schema: dict | None = None,
        repetition_penalty: float = 1.0,
        on_text: Callable[[str], None] | None = None,
    ) -> Generated:
        """Decode from `ctx`, appending what is generated to it.

        Args:
            ctx: the context to continue.
            max_tokens: at most this many new tokens (>= 0; 0 returns at once).
            temperature: 0 greedy, else sampled with `seed`.
            stop: strings that end the text (the text stops before the stop string; the tokens that made
                it stay in the context).
            schema: a JSON schema; the output is then a JSON value valid under it (or a prefix of one, when
                `max_tokens` runs out first: finish is "length").
            repetition_penalty: >1 discourages tokens already in the context (free text only).
            on_text: called with each new piece of text as it is decided.

        Returns:
            The ids and text generated, and why it stopped.
        """
        params = SamplingParams(max_new_tokens=max(1, max_tokens), temperature=temperature, seed=seed,
                                repetition_penalty=repetition_penalty)
        gen = torch.Generator(device=self.cache.device).manual_seed(seed)
        matcher = self._matcher(schema) if schema is not None else None
        out: list[int] = []
        text, forced, finish = "", 0, "length"
        seen = None
        while len(out) < max_tokens:
            if matcher is not None:
                ff = matcher.compute_ff_tokens()[: max_tokens - len(out)]
                if ff:
                    if not matcher.consume_tokens(ff):
                        raise PrimeError(f"structured decoding failed: {matcher.get_error()}")
                    self._forward([ctx], [ff])
                    out += ff
                    forced += len(ff)
                    piece = self.decode(out)[len(text):]
                    text += piece
                    if on_text and piece:
                        on_text(piece)
                    continue
                if matcher.is_stopped():
                    finish = "stop"
                    break
            logits = ctx.logits[None, :].float()  # (1, V)
            if matcher is not None:
                allowed = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
                allowed = torch.from_numpy(allowed[: self.vocab_size].astype(bool)).to(logits.device)
                logits = logits.masked_fill(~allowed[None, :], float("-inf"))
            elif repetition_penalty != 1.0:
                seen = torch.zeros(1, self.vocab_size, dtype=torch.bool, device=logits.device)
                seen[0, torch.tensor(ctx.ids, device=logits.device)] = True
            tok = int(sample_next(logits, params, seen, gen)[0])
            if tok in self.stop_ids and (matcher is None or matcher.is_accepting()):
                finish = "stop"
                break
            if matcher is not None and not matcher.consume_token(tok):
                raise PrimeError(f"structured decoding failed: {matcher.get_error()}")
            self._forward([ctx], [[tok]])
            out.append(tok)
            piece = self.decode(out)[len(text):]
            if "\ufffd" in piece[-1:]:  # an incomplete UTF-8 character: wait for its other bytes
                continue
            text += piece
            hit = min((p for p in (text.find(s) for s in stop) if p >= 0), default=-1)
            if hit >= 0:
                piece = piece[: max(0, len(piece) - (len(text) - hit))]
                text = text[:hit]
                if on_text and piece:
                    on_text(piece)
                finish = "stop"
                break
            if on_text and piece:
                on_text(piece)
        return Generated(out, text, finish, forced)

    def generate_batch(
        self,
        contexts: Sequence[Context],
        max_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        repetition_penalty: float = 1.0,
    ) -> list[Generated]:
        """Decode several contexts together, one batched forward per step (free text, no schema)."""
        params = SamplingParams(max_new_tokens=max(1, max_tokens), temperature=temperature, seed=seed,
                                repetition_penalty=repetition_penalty)
        gen = torch.Generator(device=self.cache.device).manual_seed(seed)
        outs: list[list[int]] = [[] for _ in contexts]
        texts = [""] * len(contexts)
        finish = ["length"] * len(contexts)
        running = list(range(len(contexts)))
        while running and max_tokens > 0:
            logits = torch.stack([contexts[i].logits.float() for i in running])  # (R, V)
            seen = None
            if repetition_penalty != 1.0:
                seen = torch.zeros(len(running), self.vocab_size, dtype=torch.bool, device=logits.device)
                for r, i in enumerate(running):
                    seen[r, torch.tensor(contexts[i].ids, device=logits.device)] = True
            chosen = sample_next(logits, params, seen, gen).tolist()
            step, keep = [], []
            for i, tok in zip(running, chosen):
                if tok in self.stop_ids:
                    finish[i] = "stop"
                    continue
                outs[i].append(tok)
                text = self.decode(outs[i])
                hit = min((p for p in (text.find(s) for s in stop) if p >= 0), default=-1)
                if hit >= 0:
                    texts[i], finish[i] = text[:hit], "stop"
                else:
                    texts[i] = text
                step.append(tok)
                keep.append(i)
            if keep:
                self._forward([contexts[i] for i in keep], [[t] for t in step])
            running = [i for i in keep if finish[i] == "length" and len(outs[i]) < max_tokens]
        return [Generated(o, t, f) for o, t, f in zip(outs, texts, finish)]

    # ------------------------------------------------------------------------------------------ grammar
    def _matcher(self, schema: dict):
        import llguidance

        if self._lltok is None:
            self._lltok = llguidance.LLTokenizer(self.tokenizer.backend.to_str(), n_vocab=self.vocab_size,
                                                 eos_token=sorted(self.stop_ids))
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            # Compact JSON (no free whitespace: a small model would spend its budget on it); `lenient`
            # skips keywords the compiler does not implement (propertyNames): the registry's jsonschema
            # check after decoding still enforces them.
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                schema, defaults={"whitespace_flexible": False, "coerce_one_of": True, "lenient": True})
            is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._lltok)
            if is_error:
                raise PrimeError(f"the tool schema cannot be compiled for structured decoding: {messages[0]}")
            self._grammars[key] = grammar
        matcher = llguidance.LLMatcher(self._lltok, grammar, log_level=0)
        if matcher.is_error():
            raise PrimeError(f"structured decoding cannot start: {matcher.get_error()}")
        return matcher
