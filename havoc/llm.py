"""The Python API for apps: load a model once, generate many times, stream text, chat.

    from havoc import LLM
    llm = LLM.load("smollm2", dtype="bfloat16")
    print(llm.generate("def fib(n):", max_new_tokens=48).text)
    for piece in llm.stream_chat([{"role": "user", "content": "Name three primes."}]):
        print(piece, end="", flush=True)

An `LLM` holds its model, its tokenizer and, where generation runs on the C++ CPU decoder, a paged KV
cache that outlives each call, so a prompt that starts like an earlier one (the next turn of a chat, a
shared system prompt) skips the part already computed — the prefix caching vLLM users expect. Two
instances never share state; `clear_cache()` releases the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from havoc import cpu_decode
from havoc.cache import PagedKVCache
from havoc.errors import GenerationError
from havoc.generation import (
    PAGED_BLOCK_SIZE,
    GenerationStats,
    SamplingParams,
    paged_blocks_needed,
    stream_ids,
    token_budgets,
)
from havoc.model import HavocModel

KEPT_CACHE_TOKENS = 2048  # smallest pool an LLM keeps across calls (SmolLM2 fp32: 94 MB of K/V)

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from a name such as "bf16" or "float32" (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise GenerationError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


@dataclass
class Completion:
    """The result for one prompt."""

    text: str  # generated text, without the stop string or stop token that ended it
    token_ids: list[int]  # generated ids, including a stop id that ended generation
    prompt_ids: list[int]
    finish_reason: str  # "stop" or "length"
    stats: GenerationStats  # of the whole batch this prompt ran in


class _TextState:
    """Incremental text of one prompt, with stop-string detection."""

    def __init__(self, tokenizer, stops: Sequence[str]) -> None:
        from havoc.tokenizer import StreamDecoder

        self.decoder = StreamDecoder(tokenizer, skip_special_tokens=True)
        self.stops = stops
        self.text = ""
        self.stopped = False

    def push(self, token_id: int) -> bool:
        """Add a token's text; True when a stop string has appeared (the text is cut before it)."""
        delta = self.decoder.push(token_id)
        if not delta:
            return False
        start = len(self.text)
        self.text += delta
        for s in self.stops:
            pos = self.text.find(s, max(0, start - len(s) + 1))
            if pos >= 0:
                self.text = self.text[:pos]
                self.stopped = True
                return True
        return False

    def finish(self) -> None:
        if not self.stopped:
            self.text += self.decoder.flush()
            for s in self.stops:  # the flushed tail may complete a stop string
                pos = self.text.find(s)
                if pos >= 0:
                    self.text = self.text[:pos]
                    self.stopped = True


class LLM:
    """A loaded model, its tokenizer and (on the CPU decoder) the paged KV cache kept across calls."""

    def __init__(self, model: HavocModel, tokenizer, *, prefix_cache: bool = True) -> None:
        """Args:
        model, tokenizer: what `LLM.load` returns.
        prefix_cache: keep one paged KV cache across calls where the C++ CPU decoder runs (a CPU model in
            fp32/bf16): KEPT_CACHE_TOKENS tokens or the largest call so far, doubled when a call needs
            more (a regrown pool starts empty); False makes every call start from an empty cache.
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prefix_cache = prefix_cache
        self._paged: PagedKVCache | None = None
        self._paged_for = None  # the CPU decoder the pool's K/V were computed with (weights and dtype)
        self._paged_lock = threading.Lock()  # held by the one generation using the pool
        self._clear_pending = False  # clear_cache() was called while the pool was in use

    @classmethod
    def load(
        cls,
        name_or_path: str | Path = "smollm2",
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> LLM:
        """Load a known model by name (pulled on first use), a .gguf file, or a havoc checkpoint folder.

        Args:
            name_or_path: e.g. "smollm2", "model.gguf", "checkpoints/run1".
            dtype: "float32" (default for GGUF imports), "bfloat16", "float16" or a torch dtype.
            device: where the weights live.
        """
        from havoc import hub

        model, tokenizer = hub.load(name_or_path, dtype=parse_dtype(dtype), device=device)
        return cls(model, tokenizer)

    @property
    def config(self):
        return self.model.config

    def save_pretrained(self, path: str | Path) -> None:
        """Write model and tokenizer into the folder `path` (loadable with `LLM.load(path)`).

        Turns an imported GGUF into havoc's format: safetensors weights, config and tokenizer JSON.
        """
        self.model.save_pretrained(path)
        self.tokenizer.save(path)

    def _params(self, params: SamplingParams | None, kwargs: dict[str, Any]) -> SamplingParams:
        if params is not None and kwargs:
            raise GenerationError(f"pass either params or keyword arguments, not both: {sorted(kwargs)}")
        if params is not None:
            return params
        try:
            return SamplingParams(**kwargs)
        except TypeError as e:
            raise GenerationError(str(e)) from None

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise GenerationError("the prompt is empty")
            ids = self.tokenizer.encode(prompt)
            if not ids:
                raise GenerationError(f"the prompt {prompt!r} encodes to no tokens")
            return ids
        return [int(t) for t in prompt]

    def clear_cache(self) -> None:
        """Drop the KV cache kept across calls (its memory goes back; the next call starts empty). Called
        while a generation is using it (inside a stream loop, from another thread), the pool goes when
        that generation ends."""
        if self._paged_lock.acquire(blocking=False):
            try:
                self._paged = self._paged_for = None
            finally:
                self._paged_lock.release()
        else:
            self._clear_pending = True

    def _pool(self, prompts: list[list[int]], params: SamplingParams) -> PagedKVCache | None:
        """The pool kept across calls, grown to hold this call (None: no prefix cache here). The caller
        holds `_paged_lock`."""
        if not self.prefix_cache or not cpu_decode.applies(self.model):
            return None
        decoder = cpu_decode.for_model(self.model)  # rebuilt when the weights changed: stale K/V go with it
        ctx = self.model.config.max_seq_len
        need = paged_blocks_needed(prompts, token_budgets(prompts, params, ctx))
        if self._paged is None or self._paged_for is not decoder or self._paged.num_blocks < need:
            # At least KEPT_CACHE_TOKENS (a chat grows turn by turn; a new pool starts empty), doubling.
            old = self._paged.num_blocks if self._paged is not None and self._paged_for is decoder else 0
            floor = -(-min(KEPT_CACHE_TOKENS, ctx) // PAGED_BLOCK_SIZE)
            self._paged = None  # release the old pool before allocating the new one
            self._paged = PagedKVCache.for_model(self.model, max(need, 2 * old, floor), PAGED_BLOCK_SIZE)
            self._paged_for = decoder
        return self._paged

    def _run(
        self, prompts: list[list[int]], params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[tuple[list, list[_TextState], GenerationStats]]:
        states = [_TextState(self.tokenizer, params.stop) for _ in prompts]
        stats = stats if stats is not None else GenerationStats()

        def should_stop(index: int, token_id: int) -> bool:
            return states[index].push(token_id)

        # One generation at a time uses the kept pool; another one meanwhile (a second stream iterated
        # alongside, another thread) gets a cache of its own.
        owns = self._paged_lock.acquire(blocking=False)
        try:
            pool = self._pool(prompts, params) if owns else None
            cache = "auto" if pool is None else pool  # (an empty PagedKVCache is falsy: it has a __len__)
            for events in stream_ids(
                self.model, prompts, params, stop_ids=self.tokenizer.stop_ids, should_stop=should_stop, stats=stats,
                cache=cache,
            ):
                for e in events:
                    if e.finish_reason is not None:
                        states[e.index].finish()
                yield events, states, stats
        finally:
            if owns:
                if self._clear_pending:
                    self._paged = self._paged_for = None
                    self._clear_pending = False
                self._paged_lock.release()

    def generate(
        self, prompt: str | Sequence[int] | Sequence[str], params: SamplingParams | None = None, **kwargs: Any
    ) -> Completion | list[Completion]:
        """Complete one prompt (returns a `Completion`) or a batch (a list of prompts; returns a list).

        A prompt is text or a list of token ids. Keyword arguments are those of `SamplingParams`
        (max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop, stop_token_ids,
        ignore_eos).
        """
        params = self._params(params, kwargs)
        single = isinstance(prompt, str) or (len(prompt) > 0 and not isinstance(prompt[0], (str, list, tuple)))
        prompts = [self.encode_prompt(prompt)] if single else [self.encode_prompt(p) for p in prompt]
        ids: list[list[int]] = [[] for _ in prompts]
        reasons: list[str] = ["length"] * len(prompts)
        states, stats = [], GenerationStats()
        for events, states, stats in self._run(prompts, params):
            for e in events:
                ids[e.index].append(e.token_id)
                if e.finish_reason is not None:
                    reasons[e.index] = e.finish_reason
        out = [Completion(st.text, t, p, r, stats) for st, t, p, r in zip(states, ids, prompts, reasons)]
        return out[0] if single else out

    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        stats: GenerationStats | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        """Yield the generated text of one prompt piece by piece, as the tokens are decided.

        Text that could be the beginning of a stop string is held back until it is known not to be.
        `stats`, if given, is filled with token counts and timings.
        """
        params = self._params(params, kwargs)
        hold = max((len(s) for s in params.stop), default=1) - 1
        emitted = 0
        for events, states, _ in self._run([self.encode_prompt(prompt)], params, stats):
            state = states[0]
            finished = any(e.finish_reason is not None for e in events)
            upto = len(state.text) if finished else max(emitted, len(state.text) - hold)
            if upto > emitted:
                yield state.text[emitted:upto]
                emitted = upto

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of `messages` rendered with the model's chat template, ready for the reply."""
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        return self.tokenizer.encode(text, add_bos=False)

    def chat(self, messages: Sequence[dict[str, str]], params: SamplingParams | None = None, **kwargs: Any) -> Completion:
        """The assistant's reply to a conversation ([{"role": ..., "content": ...}, ...])."""
        return self.generate(self.chat_prompt(messages), params, **kwargs)

    def stream_chat(
        self,
        messages: Sequence[dict[str, str]],
        params: SamplingParams | None = None,
        *,
        stats: GenerationStats | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        """`chat`, streamed."""
        return self.stream(self.chat_prompt(messages), params, stats=stats, **kwargs)
