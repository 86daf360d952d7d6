"""Token generation over a `HavocModel`: greedy and sampled decoding of a batch of prompts.

This module works on token ids; `havoc.llm.LLM` adds text (tokenizer, stop strings, chat template,
streaming text). Two ways to hold a batch:

- paged (`cache="paged"` or a `PagedKVCache`): the prompts are requests of one `havoc.engine.Engine`
  driven in the caller's thread: each its own sequence in a shared pool of blocks, prompts prefilled in
  chunks skipping what the prefix cache holds, every running sequence decoded in the same step with no
  padding — on a CPU fp32/bf16 model one call into the C++ decoder per step (`havoc.cpu_decode`),
  elsewhere the model's forward. Finished sequences free their blocks at once and waiting prompts join
  between steps (continuous batching), so a pool smaller than the whole batch still works (the newest
  request is preempted and recomputed when it runs out).
- static (`cache="static"`): the prompts are left-padded into one contiguous KV cache (so each step is
  one forward of shape (B, 1)); rows that finish leave the batch once at least half of it has finished,
  which bounds the copying to the cache's size. The plain-PyTorch baseline, and the path on GPUs.

The default, `cache="auto"`, takes the paged path where the C++ decoder runs (a CPU model in fp32 or bf16,
HAVOC_OPS auto or fast: about 2x the static path's decode speed there, bench/RESULTS.md) and the static
one elsewhere. Sampling, penalties and stop matching are `havoc.engine.sampling`'s, on both paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from havoc import cpu_decode
from havoc.cache import PagedKVCache
from havoc.engine.engine import MAX_BATCH_TOKENS, Engine
from havoc.engine.sampling import SamplingParams, _penalize, sample_next  # noqa: F401  (public here too)
from havoc.errors import GenerationError, OutOfBlocksError
from havoc.model import HavocModel

PAGED_BLOCK_SIZE = 16  # block size of the pool `cache="paged"` makes


@dataclass
class StepEvent:
    """One token produced for one prompt of the batch."""

    index: int  # which prompt
    token_id: int
    finish_reason: str | None = None  # "stop" (stop id or string), "length" (budget or context), or None


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    steps: int = 0
    extra: dict = field(default_factory=dict)


def check_token_ids(prompt: Sequence[int], vocab_size: int, what: str = "the prompt") -> list[int]:
    """`prompt` as a list of Python ints, each an integer id inside the vocabulary, or a GenerationError.

    Nothing is coerced: a float is not truncated and an id past 2^31 does not wrap in the C++ code's
    int32 (2^32 + 5 would have become 5), and an id past the vocabulary is named here rather than as
    "IndexError: index out of range in self" from the embedding.
    """
    import numpy as np

    ids = []
    for t in prompt:
        if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point() and t.dtype != torch.bool:
            t = t.item()
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise GenerationError(f"{what} must be token ids (integers), found {type(t).__name__} {str(t)[:20]}")
        ids.append(int(t))
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise GenerationError(f"{what} has token ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")
    return ids


def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if len(prompts) == 0:
        raise GenerationError("no prompts given")
    out = []
    for i, p in enumerate(prompts):
        ids = check_token_ids(p, vocab_size, f"prompt {i}")
        if not ids:
            raise GenerationError(f"prompt {i} is empty: give at least one token")
        out.append(ids)
    return out


def token_budgets(prompts: Sequence[Sequence[int]], params: SamplingParams, max_seq_len: int) -> list[int]:
    """New tokens each prompt may get: max_new_tokens, cut by what the context leaves (0 if nothing)."""
    return [min(params.max_new_tokens, max(max_seq_len - len(p), 0)) for p in prompts]


def paged_blocks_needed(prompts: Sequence[Sequence[int]], budgets: Sequence[int]) -> int:
    """Blocks of PAGED_BLOCK_SIZE tokens that holding every prompt with its whole budget at once takes."""
    return sum(-(-(len(p) + b) // PAGED_BLOCK_SIZE) for p, b in zip(prompts, budgets))


def _finish_reason(
    index: int, tok: int, produced: int, budget: int, stops: set[int],
    should_stop: Callable[[int, int], bool] | None,
) -> str | None:
    """Why prompt `index` ends after token `tok` (its `produced`-th): "stop", "length", or None to go on."""
    if tok in stops or (should_stop is not None and should_stop(index, tok)):
        return "stop"
    return "length" if produced >= budget else None


@torch.inference_mode()
def stream_ids(
    model: HavocModel,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    stop_ids: Sequence[int] = (),
    should_stop: Callable[[int, int], bool] | None = None,
    stats: GenerationStats | None = None,
    cache: str | PagedKVCache = "auto",
    namespace: str = "",
    cpu_weights: str = "auto",
) -> Iterator[list[StepEvent]]:
    """Generate for a batch of prompts, yielding the tokens of each step as they are decided.

    Args:
        model: the decoder.
        prompts: token-id lists, any lengths (each at least one token and shorter than the context).
        params: sampling and stopping parameters.
        stop_ids: end-of-sequence ids (the tokenizer's); ignored when `params.ignore_eos`.
        should_stop: called as should_stop(index, token_id) after each token; True ends that prompt
            (used for stop strings).
        stats: filled with token counts and timings if given.
        cache: "auto" (paged where the CPU decoder runs, else static; see the module docstring),
            "static" (a left-padded contiguous cache), "paged" (a paged pool sized for the whole batch),
            or a `PagedKVCache` to generate in: its blocks bound how many prompts run at once, and its
            prefix cache outlives the call (a later prompt with the same prefix skips it).
        namespace: prefix-cache namespace of the paged path (prompts share cached blocks only within one).
        cpu_weights: weights of the paged path's CPU decode steps (`havoc.cpu_decode`): "auto" (the
            model's own fp32/bf16 weights) or "int8" (weight-only int8 with per-group scales, made once per
            model; the prefill still runs on the model's weights). The CPU decoder runs whenever the model
            is a CPU fp32/bf16 model and HAVOC_OPS is auto or fast; elsewhere the model's forward does.

    Yields:
        Per step, one `StepEvent` per prompt still generating (in the paged path, prompts admitted later
        start in later steps).
    """
    config = model.config
    prompts = _check_prompts(prompts, config.vocab_size)
    lengths = [len(p) for p in prompts]
    for i, n in enumerate(lengths):
        if n >= config.max_seq_len:
            raise GenerationError(
                f"prompt {i} has {n} tokens but the model's context is {config.max_seq_len}: "
                "it leaves no room to generate"
            )
    budgets = token_budgets(prompts, params, config.max_seq_len)  # all >= 1: every prompt fits (checked above)
    stops = set(params.stop_token_ids) | (set() if params.ignore_eos else set(stop_ids))
    stats = stats if stats is not None else GenerationStats()
    if isinstance(cache, str) and cache == "auto":
        cache = "paged" if cpu_weights != "auto" or cpu_decode.applies(model) else "static"
    if not (isinstance(cache, str) and cache == "static"):
        yield from _stream_paged(model, prompts, params, budgets, stops, should_stop, stats, cache, namespace, cpu_weights)
        return
    if cpu_weights != "auto":
        raise GenerationError(f"cpu_weights={cpu_weights!r} needs the paged path (cache='paged')")
    if params.presence_penalty or params.frequency_penalty or params.logprobs is not None:
        raise GenerationError("presence/frequency penalties and logprobs need the paged path (cache='paged')")
    device = model.tok_embeddings.weight.device
    B, T = len(prompts), max(lengths)

    pad = config.pad_id if config.pad_id is not None else 0
    tokens = torch.full((B, T), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, T - len(p) :] = torch.tensor(p)
    tokens = tokens.to(device)
    mask = None
    if min(lengths) != T:
        mask = (torch.arange(T)[None, :] >= (T - torch.tensor(lengths))[:, None]).to(device)  # (B, T)

    cache = model.new_cache(B, max_len=T + max(budgets))
    generator = None
    if not params.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
    seen = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(B, config.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, tokens, True)
        if mask is not None:  # padding is not part of any prompt
            seen[:, pad] = False
            for i, p in enumerate(prompts):
                if pad in p:
                    seen[i, pad] = True

    stats.prompt_tokens = sum(lengths)
    rows = list(range(B))  # rows[r] = prompt index of cache row r
    produced = [0] * B
    done = [False] * B  # finished prompts may stay in the batch (uncompacted) until it halves
    t0 = time.perf_counter()
    logits = model(tokens, cache=cache, attention_mask=mask, logits_to_keep=1)[:, -1]  # (B, V)
    stats.prefill_seconds = time.perf_counter() - t0
    t_decode = time.perf_counter()

    try:  # the timing holds even when the consumer stops iterating early
        while True:
            next_tokens = sample_next(logits, params, seen, generator)  # (B',)
            chosen = next_tokens.tolist()
            events, keep = [], []
            for r, (index, tok) in enumerate(zip(rows, chosen)):
                if done[index]:
                    continue
                produced[index] += 1
                reason = _finish_reason(index, tok, produced[index], budgets[index], stops, should_stop)
                events.append(StepEvent(index, tok, reason))
                if reason is None:
                    keep.append(r)
                else:
                    done[index] = True
            stats.generated_tokens += len(events)
            stats.steps += 1
            yield events
            if not keep:
                break
            if len(keep) <= len(rows) // 2:  # compact: finished rows stop costing compute
                sel = torch.tensor(keep, device=device)
                cache.select_rows(sel)
                next_tokens = next_tokens.index_select(0, sel)
                if seen is not None:
                    seen = seen.index_select(0, sel)
                rows = [rows[r] for r in keep]
            if seen is not None:
                seen.scatter_(1, next_tokens[:, None], True)
            logits = model(next_tokens[:, None], cache=cache, logits_to_keep=1)[:, -1]
    finally:
        stats.decode_seconds = time.perf_counter() - t_decode


def _stream_paged(
    model: HavocModel,
    prompts: list[list[int]],
    params: SamplingParams,
    budgets: list[int],
    stops: set[int],
    should_stop: Callable[[int, int], bool] | None,
    stats: GenerationStats,
    cache: str | PagedKVCache,
    namespace: str,
    cpu_weights: str,
) -> Iterator[list[StepEvent]]:
    """The paged path of `stream_ids`: the prompts as requests of an `Engine` stepped here."""
    if isinstance(cache, str):
        if cache != "paged":
            raise GenerationError(f"cache must be 'auto', 'static', 'paged' or a PagedKVCache, got {cache!r}")
        cache = PagedKVCache.for_model(model, paged_blocks_needed(prompts, budgets), PAGED_BLOCK_SIZE)
    elif not isinstance(cache, PagedKVCache):
        raise GenerationError(f"cache must be 'auto', 'static', 'paged' or a PagedKVCache, got {type(cache).__name__}")
    engine = Engine(model, None, cache=cache, cpu_weights=cpu_weights, stop_ids=sorted(stops),
                    max_running=max(len(prompts), 1), max_batch_tokens=max(MAX_BATCH_TOKENS, len(prompts)))
    one = SamplingParams(**{**params.__dict__, "stop": (), "stop_token_ids": (), "ignore_eos": False})
    reqs = []
    for i, (p, b) in enumerate(zip(prompts, budgets)):
        if cache.blocks_for(len(p) + b) > cache.num_blocks:
            raise OutOfBlocksError(
                f"prompt {i} needs {cache.blocks_for(len(p) + b)} blocks of {cache.block_size} tokens with its "
                f"{b} new tokens; the paged cache has {cache.num_blocks}"
            )
    index = {}
    for i, (p, b) in enumerate(zip(prompts, budgets)):
        r = engine.add_request(p, SamplingParams(**{**one.__dict__, "max_new_tokens": b}), namespace=namespace)
        index[r.id] = i
        reqs.append(r)
    stats.prompt_tokens = sum(len(p) for p in prompts)
    t_start = time.perf_counter()
    t_first = None
    try:
        while engine.has_unfinished():
            events = []
            for out in engine.step():
                i = index[out.request.id]
                if out.finish_reason == "error":
                    raise GenerationError(f"prompt {i} failed: {out.request.error}")
                for tok in out.token_ids:
                    reason = out.finish_reason
                    if reason is None and should_stop is not None and should_stop(i, tok):
                        engine.abort(out.request)
                        reason = "stop"
                    events.append(StepEvent(i, tok, reason))
            if events:
                if t_first is None:
                    t_first = time.perf_counter()
                    stats.prefill_seconds = t_first - t_start
                stats.generated_tokens += len(events)
                stats.steps += 1
                yield events
    finally:  # a consumer that stops early must not leave its sequences in a shared cache
        for r in reqs:
            if not r.finished:
                engine.abort(r)
        engine.step()  # collect the aborts
        stats.decode_seconds = time.perf_counter() - (t_first if t_first is not None else t_start)
        stats.extra["paged"] = cache.stats()
        stats.extra["engine"] = engine.stats


def generate_ids(
    model: HavocModel,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams | None = None,
    *,
    stop_ids: Sequence[int] = (),
    stats: GenerationStats | None = None,
    cache: str | PagedKVCache = "auto",
    namespace: str = "",
    cpu_weights: str = "auto",
) -> list[list[int]]:
    """Generated token ids for each prompt (the stop id that ended a prompt included).

    `cache`, `namespace` and `cpu_weights` are as for `stream_ids`.
    """
    params = params or SamplingParams()
    out: list[list[int]] = [[] for _ in prompts]
    for events in stream_ids(
        model, prompts, params, stop_ids=stop_ids, stats=stats, cache=cache, namespace=namespace, cpu_weights=cpu_weights
    ):
        for e in events:
            out[e.index].append(e.token_id)
    return out
