"""Token generation over a `HavocModel`: greedy and sampled decoding of a batch of prompts.

This module works on token ids; `havoc.llm.LLM` adds text (tokenizer, stop strings, chat template,
streaming text). Two ways to hold a batch:

- static (`cache="static"`): the prompts are left-padded into one contiguous KV cache (so each step is
  one forward of shape (B, 1)); rows that finish leave the batch once at least half of it has finished,
  which bounds the copying to the cache's size.
- paged (`cache="paged"` or a `PagedKVCache`): every prompt is its own sequence in one shared pool of
  blocks. Prompts are prefilled skipping the part the prefix cache already holds: those with as many
  tokens left to compute as one (B, T) forward, prompts of different lengths as one packed row
  (`PagedKVCache.prepare_packed`); then every running sequence decodes in one step, with no padding — on
  a CPU fp32/bf16 model one call into the C++ decoder (`havoc.cpu_decode`), elsewhere the model's forward. A finished sequence is freed at once and its
  blocks admit waiting prompts (continuous batching), so a pool smaller than the whole batch still works.

The default, `cache="auto"`, takes the paged path where the C++ decoder runs (a CPU model in fp32 or bf16,
HAVOC_OPS auto or fast: about 2x the static path's decode speed there, bench/RESULTS.md) and the static
one elsewhere.

Sampling follows the order users of transformers and vLLM expect: repetition penalty on the raw logits,
then temperature, top-k, top-p, and a draw from the resulting distribution with a seeded generator.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from havoc import cpu_decode
from havoc.cache import PagedKVCache
from havoc.errors import GenerationError, OutOfBlocksError
from havoc.model import HavocModel

PAGED_BLOCK_SIZE = 16  # block size of the pool `cache="paged"` makes
PREFILL_TOKENS_PER_FORWARD = 4096  # most prompt tokens the paged path prefills in one forward


@dataclass
class SamplingParams:
    """How to pick tokens and when to stop.

    Args:
        max_new_tokens: upper bound on generated tokens per prompt (the context may stop it earlier).
        temperature: 0 for greedy decoding; otherwise the softmax temperature.
        top_k: keep the k most likely tokens (0: all).
        top_p: keep the smallest set of tokens whose probability reaches top_p (1.0: all).
        repetition_penalty: >1 discourages tokens already in the prompt or the output (CTRL / transformers
            rule: positive logits are divided by it, negative ones multiplied).
        seed: seed of the sampling generator; the same seed gives the same output.
        stop: strings that end generation (used by `havoc.llm.LLM`; not part of the output text).
        stop_token_ids: ids that end generation, in addition to the tokenizer's end-of-sequence ids.
        ignore_eos: keep generating through end-of-sequence ids (benchmarks).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise GenerationError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise GenerationError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if (
            not isinstance(self.repetition_penalty, (int, float))
            or not math.isfinite(self.repetition_penalty)
            or self.repetition_penalty <= 0
        ):
            raise GenerationError(f"repetition_penalty must be a positive number, got {self.repetition_penalty!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise GenerationError(f"seed must be an integer or None, got {self.seed!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise GenerationError(f"stop strings must be non-empty strings, got {s!r}")
        self.stop_token_ids = tuple(self.stop_token_ids)
        for t in self.stop_token_ids:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise GenerationError(f"stop_token_ids must be non-negative integers, got {t!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


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


def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if len(prompts) == 0:
        raise GenerationError("no prompts given")
    out = []
    for i, p in enumerate(prompts):
        ids = [int(t) for t in p]
        if not ids:
            raise GenerationError(f"prompt {i} is empty: give at least one token")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise GenerationError(f"prompt {i} has token ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")
        out.append(ids)
    return out


def _penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    # logits: (B, V) fp32, already divided by the temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the first always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick one token per row of `logits` ((B, V)); returns (B,) int64."""
    logits = logits.float()
    if params.repetition_penalty != 1.0 and seen is not None:
        logits = _penalize(logits, seen, params.repetition_penalty)
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = _filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
    """The paged path of `stream_ids` (see the module docstring)."""
    if isinstance(cache, str):
        if cache != "paged":
            raise GenerationError(f"cache must be 'auto', 'static', 'paged' or a PagedKVCache, got {cache!r}")
        cache = PagedKVCache.for_model(model, paged_blocks_needed(prompts, budgets), PAGED_BLOCK_SIZE)
    elif not isinstance(cache, PagedKVCache):
        raise GenerationError(f"cache must be 'auto', 'static', 'paged' or a PagedKVCache, got {type(cache).__name__}")
    device = cache.device
    V = model.config.vocab_size
    # The decode steps: one call into the C++ decoder per step where it applies (CPU, fp32/bf16), else the
    # model's forward. Greedy without a penalty needs only each row's argmax, which the decoder's LM head
    # computes without writing the logits; then logits_of holds 0-d token ids after the first step.
    decoder = cpu_decode.for_model(model, cpu_weights) if cache.dtype == model.tok_embeddings.weight.dtype else None
    if decoder is None and cpu_weights != "auto":
        raise GenerationError(f"cpu_weights={cpu_weights!r}: the cache's dtype {cache.dtype} is not the model's")
    argmax_only = decoder is not None and params.greedy and params.repetition_penalty == 1.0
    generator = None
    if not params.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
    seen: dict[int, torch.Tensor] = {}  # prompt index -> (V,) bool, for the repetition penalty
    stats.prompt_tokens = sum(len(p) for p in prompts)
    t_start = time.perf_counter()

    waiting = deque(range(len(prompts)))
    running: list[int] = []  # prompt indices, in batch-row order
    seq: dict[int, int] = {}  # prompt index -> sequence id
    logits_of: dict[int, torch.Tensor] = {}  # prompt index -> (V,) logits of its next token
    produced = [0] * len(prompts)
    admitted: list[int] = []  # added to the cache, not prefilled yet

    def final_blocks(i: int) -> int:
        return cache.blocks_for(len(prompts[i]) + budgets[i])

    def admit() -> None:
        # A prompt starts once the pool holds all it may ever need on top of what the running sequences
        # may still take, so no step runs out of blocks mid-generation (no preemption needed).
        while waiting:
            i = waiting[0]
            reserve = sum(final_blocks(j) - cache.blocks_for(cache.length(seq[j])) for j in running)
            if cache.free_blocks() - reserve < final_blocks(i):
                if not running:
                    raise OutOfBlocksError(
                        f"prompt {i} needs {final_blocks(i)} blocks of {cache.block_size} tokens; the paged "
                        f"cache has {cache.free_blocks()} free"
                    )
                return
            waiting.popleft()
            seq[i] = sid = cache.new_seq_id()
            cache.add(sid, prompts[i], namespace)
            if params.repetition_penalty != 1.0:
                seen[i] = torch.zeros(V, dtype=torch.bool, device=device)
                seen[i][torch.tensor(prompts[i], device=device)] = True
            admitted.append(i)
            running.append(i)

    def prefill() -> None:
        # The prompts just admitted, in forwards of up to PREFILL_TOKENS_PER_FORWARD tokens: a (B, T) batch
        # when all have as many tokens left to compute (after prefix hits), else one packed row
        # (`prepare_packed`: no padding, each prompt attends over its own K/V). A prompt whose prefix hit
        # is on blocks another admitted prompt has yet to compute waits for that forward.
        todo = list(admitted)
        admitted.clear()
        while todo:
            now = [i for i in todo if cache.ready(seq[i])]
            if not now:
                raise RuntimeError(f"prompts {todo} wait on prefix blocks that no admitted prompt computes")
            counts = {i: cache.pending(seq[i]) for i in now}
            packed = len(set(counts.values())) > 1
            chunk: list[int] = []
            total = 0
            for n, i in enumerate(now):
                chunk.append(i)
                total += counts[i]
                if n + 1 == len(now) or total + counts[now[n + 1]] > PREFILL_TOKENS_PER_FORWARD:
                    t0 = time.perf_counter()
                    ids = [seq[j] for j in chunk]
                    if packed and len(chunk) > 1:
                        fed, ends = cache.prepare_packed(ids)
                        out = model(fed, cache=cache, logits_at=ends)[0]
                    else:
                        out = model(cache.prepare(ids), cache=cache, logits_to_keep=1)[:, -1]
                    stats.prefill_seconds += time.perf_counter() - t0
                    for j, row in zip(chunk, out):
                        logits_of[j] = row
                    chunk, total = [], 0
            todo = [i for i in todo if i not in now]

    try:
        admit()
        prefill()
        while running:
            rows = list(running)
            if argmax_only:  # 0-d ids from the decoder; (V,) logits of a prompt just prefilled
                chosen = [int(logits_of[i] if logits_of[i].dim() == 0 else logits_of[i].float().argmax()) for i in rows]
            else:
                logits = torch.stack([logits_of[i] for i in rows])  # (R, V)
                seen_rows = torch.stack([seen[i] for i in rows]) if seen else None
                chosen = sample_next(logits, params, seen_rows, generator).tolist()
            events, keep = [], []
            for i, tok in zip(rows, chosen):
                produced[i] += 1
                reason = _finish_reason(i, tok, produced[i], budgets[i], stops, should_stop)
                events.append(StepEvent(i, tok, reason))
                if reason is None:
                    keep.append((i, tok))
                    if seen:
                        seen[i][tok] = True
                else:  # finished: its blocks go back to the pool now
                    cache.free(seq.pop(i))
                    running.remove(i)
                    del logits_of[i]
            stats.generated_tokens += len(events)
            stats.steps += 1
            yield events
            admit()
            prefill()
            if keep:
                ids, toks = [seq[i] for i, _ in keep], [tok for _, tok in keep]
                if decoder is not None:
                    out = decoder.step(cache, ids, toks, greedy=argmax_only)  # (R,) ids or (R, V) fp32 logits
                else:
                    out = model(cache.prepare(ids, toks), cache=cache, logits_to_keep=1)[:, -1]
                for (i, _), row in zip(keep, out):
                    logits_of[i] = row
    finally:  # a consumer that stops early must not leave its sequences in a shared cache
        for sid in seq.values():
            cache.free(sid)
        stats.decode_seconds = time.perf_counter() - t_start - stats.prefill_seconds
        stats.extra["paged"] = cache.stats()


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
