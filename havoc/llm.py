"""The Python API for apps: load a model once, generate many times, stream text, chat.

    from havoc import LLM
    llm = LLM.load("smollm2", dtype="bfloat16")
    print(llm.generate("def fib(n):", max_new_tokens=48).text)
    for piece in llm.stream_chat([{"role": "user", "content": "Name three primes."}]):
        print(piece, end="", flush=True)

An `LLM` holds its model, its tokenizer and an engine (`havoc.engine.Engine`, in its own thread) whose paged
KV pool outlives each call: a prompt that starts like an earlier one (the next turn of a chat, a shared
system prompt) skips the part already computed — the prefix caching vLLM users expect — and calls made
at the same time from several threads share its batches (continuous batching). Two instances never share
state; `clear_cache()` drops the kept K/V.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from havoc.engine import Engine, EngineLoop, RequestStream
from havoc.errors import GenerationError
from havoc.generation import GenerationStats, SamplingParams
from havoc.model import HavocModel

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


class LLM:
    """A loaded model, its tokenizer and the engine that serves it (its KV pool kept across calls)."""

    def __init__(
        self,
        model: HavocModel,
        tokenizer,
        *,
        prefix_cache: bool = True,
        kv_cache_tokens: int | None = None,
        max_batch_tokens: int | None = None,
        max_running: int | None = None,
        cpu_weights: str = "auto",
        speculative: bool = True,
    ) -> None:
        """Args:
        model, tokenizer: what `LLM.load` returns.
        prefix_cache: share computed blocks between requests and calls (False: every request computes
            its whole prompt).
        kv_cache_tokens: tokens the KV pool holds (default: the model's context, at most 8192).
        max_batch_tokens, max_running: the engine's step budget and concurrency (`havoc.engine.Engine`).
        cpu_weights: "auto" or "int8" (weight-only int8 on the C++ decoder).
        speculative: prompt-lookup speculative decoding (the same output, fewer steps where text repeats).
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prefix_cache = prefix_cache
        self._engine_kwargs = {k: v for k, v in dict(
            kv_cache_tokens=kv_cache_tokens, max_batch_tokens=max_batch_tokens, max_running=max_running,
            cpu_weights=cpu_weights, prefix_caching=prefix_cache, speculative=speculative).items() if v is not None}
        self._loop: EngineLoop | None = None
        self._weights = None  # (data_ptr, version) of every parameter when the engine was made
        self.adapter: dict | None = None  # the LoRA adapter loaded (LLM.load's `adapter`)
        self.adapted = None  # a call-scoped adapter's model: the same one with it merged (Engine's `adapted`)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        name_or_path: str | Path = "smollm2",
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
        adapter: str | Path | None = "auto",
        **kwargs: Any,
    ) -> LLM:
        """Load a known model by name (pulled on first use), a .gguf file, or a havoc checkpoint folder.

        Args:
            name_or_path: e.g. "smollm2", "model.gguf", "checkpoints/run1".
            dtype: "float32" (default for GGUF imports), "bfloat16", "float16" or a torch dtype.
            device: where the weights live.
            adapter: a LoRA adapter folder (PEFT's format); "auto": the adapter the package ships for a
                known model name, if one ships; None: no adapter. An adapter of span "all" is merged into the
                weights; one of span "call" (`havoc.train.lora`) is merged into a copy, `adapted`, which the
                engine runs on the positions a request asks for (PRIME's tool calls), the model staying
                as it is everywhere else. Either way every decode path (the C++ decoder included) runs it.
            **kwargs: engine settings, as for the constructor.
        """
        from havoc import hub

        model, tokenizer = hub.load(name_or_path, dtype=parse_dtype(dtype), device=device)
        info, adapted = None, None
        if adapter is not None:
            from havoc.train.lora import adapted_copy, load_adapter, read_adapter, shipped_adapter

            folder = shipped_adapter(str(name_or_path)) if adapter == "auto" else Path(adapter)
            if folder is not None:
                if read_adapter(folder)[0].span == "call":
                    adapted, cfg = adapted_copy(model, folder)
                else:
                    cfg = load_adapter(model, folder, merge=True)
                info = {"path": str(folder), "r": cfg.r, "alpha": cfg.alpha, "targets": sorted(cfg.targets),
                        "span": cfg.span, "merged": True, "shipped": adapter == "auto"}
        llm = cls(model, tokenizer, **kwargs)
        llm.adapter, llm.adapted = info, adapted
        return llm

    @property
    def config(self):
        return self.model.config

    def save_pretrained(self, path: str | Path) -> None:
        """Write model and tokenizer into the folder `path` (loadable with `LLM.load(path)`).

        Turns an imported GGUF into havoc's format: safetensors weights, config and tokenizer JSON.
        """
        self.model.save_pretrained(path)
        self.tokenizer.save(path)

    # ------------------------------------------------------------------------------------------ the engine
    def _snapshot(self) -> list[tuple[int, int]]:
        models = [self.model] + ([self.adapted] if self.adapted is not None else [])
        return [(p.data_ptr(), p._version) for m in models for p in m.parameters()]

    @property
    def loop(self) -> EngineLoop:
        """The engine's thread (made on first use; remade, with an empty pool, when the weights changed
        since: K/V computed with other weights are never served)."""
        with self._lock:
            weights = self._snapshot()
            if self._loop is not None and weights != self._weights and not self._busy():
                self._loop.close()
                self._loop = None
            if self._loop is None:
                try:
                    engine = Engine(self.model, self.tokenizer, adapted=self.adapted, **self._engine_kwargs)
                except ValueError as e:
                    raise GenerationError(str(e)) from None
                self._loop = EngineLoop(engine)
                self._weights = weights
            return self._loop

    @property
    def engine(self) -> Engine:
        """The engine (driven by `loop`'s thread: read it, do not step it)."""
        return self.loop.engine

    def _busy(self) -> bool:
        return self._loop is not None and bool(self._loop.call(lambda e: e.has_unfinished() or bool(e.held)))

    def clear_cache(self) -> None:
        """Drop the K/V kept across calls. With no generation running the pool itself goes (its memory is
        returned; the next call makes a new one); otherwise its cached blocks are evicted now and the
        running requests keep theirs."""
        with self._lock:
            if self._loop is None:
                return
            if self._busy():
                self._loop.call(lambda e: e.clear_prefix_cache())
            else:
                self._loop.close()
                self._loop = None

    def close(self) -> None:
        """Stop the engine's thread and free the pool (a later call starts them again)."""
        with self._lock:
            if self._loop is not None:
                self._loop.close()
                self._loop = None

    # ------------------------------------------------------------------------------------------ requests
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
        from havoc.generation import check_token_ids

        ids = check_token_ids(prompt, self.config.vocab_size)
        if not ids:
            raise GenerationError("the prompt is empty: give at least one token")
        return ids

    def submit(self, prompt: str | Sequence[int], params: SamplingParams | None = None, **kwargs: Any) -> RequestStream:
        """Queue one prompt on the engine and return its stream of `RequestOutput`s (for apps that run
        several requests at once; keyword arguments as `havoc.engine.Engine.add_request`)."""
        ids = self.encode_prompt(prompt)
        if len(ids) >= self.config.max_seq_len:
            raise GenerationError(
                f"the prompt has {len(ids)} tokens but the model's context is {self.config.max_seq_len}: "
                "it leaves no room to generate"
            )
        return self.loop.submit(ids, params or SamplingParams(), **kwargs)

    def generate(
        self, prompt: str | Sequence[int] | Sequence[str], params: SamplingParams | None = None, **kwargs: Any
    ) -> Completion | list[Completion]:
        """Complete one prompt (returns a `Completion`) or a batch (a list of prompts; returns a list).

        A prompt is text or a list of token ids. Keyword arguments are those of `SamplingParams`
        (max_new_tokens, temperature, top_k, top_p, repetition_penalty, presence_penalty,
        frequency_penalty, seed, stop, stop_token_ids, ignore_eos, logprobs).
        """
        params = self._params(params, kwargs)
        single = isinstance(prompt, str) or (len(prompt) > 0 and not isinstance(prompt[0], (str, list, tuple)))
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise GenerationError("no prompts given")
        t0 = time.perf_counter()
        streams = []
        try:
            for p in prompts:
                streams.append(self.submit(p, params))
            reqs = [s.result() for s in streams]
        finally:
            for s in streams:
                s.close()
        for i, r in enumerate(reqs):
            if r.finish_reason == "error":
                raise GenerationError(f"prompt {i} failed: {r.error}")
        stats = self._stats(reqs, t0)
        out = [Completion(r.text, r.output_ids, r.prompt_ids, r.finish_reason, stats) for r in reqs]
        return out[0] if single else out

    def _stats(self, reqs, t0: float) -> GenerationStats:
        end = max(r.finished_time or time.perf_counter() for r in reqs)
        firsts = [r.first_token_time for r in reqs if r.first_token_time is not None]
        first = min(firsts) if firsts else end
        stats = GenerationStats(
            prompt_tokens=sum(len(r.prompt_ids) for r in reqs), generated_tokens=sum(r.num_output for r in reqs),
            prefill_seconds=first - t0, decode_seconds=end - first, steps=max((r.num_output for r in reqs), default=0),
        )
        stats.extra["cached_tokens"] = sum(r.num_cached_tokens for r in reqs)
        if self._loop is not None:
            stats.extra["paged"] = self._loop.engine.cache.stats()
        return stats

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
        `stats`, if given, is filled with token counts and timings. Stopping the iteration early aborts
        the request.
        """
        params = self._params(params, kwargs)
        t0 = time.perf_counter()
        stream = self.submit(prompt, params)
        try:
            for out in stream:
                if out.finish_reason == "error":
                    raise GenerationError(f"generation failed: {stream.request.error}")
                if out.text:
                    yield out.text
        finally:
            stream.close()
            if stats is not None and stream.request is not None:
                got = self._stats([stream.request], t0)
                stats.__dict__.update(got.__dict__)

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
