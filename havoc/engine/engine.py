"""The engine: requests in, tokens out, over one paged KV pool — the piece every caller drives.

    engine = Engine(model, tokenizer)
    a = engine.add_request(prompt_ids, SamplingParams(max_new_tokens=32))
    b = engine.add_request(other_ids, SamplingParams(temperature=0.8, seed=1))
    while engine.has_unfinished():
        for out in engine.step():          # RequestOutput: new tokens and text of one request
            print(out.request.id, out.text, out.finish_reason)

A request's life (the state vLLM's V1 scheduler keeps, `num_computed` of `ids`):

- `ids` are its prompt and the tokens generated so far; the KV cache holds `ids[:num_computed]`. A step
  gives a request the next tokens of `ids` to compute — a chunk of its prompt, or its last sampled token —
  and, once `num_computed` reaches the end, samples the next token from the logits of the last one.
  Decode and prefill are the same operation on different counts, so one step mixes them freely.
- Each step has a budget of `max_batch_tokens` tokens. Running requests come first, oldest first (a decode
  costs 1); what is left goes to waiting requests, in arrival order. A long prompt is thus prefilled in
  chunks interleaved with the decode steps of the others, and never freezes their streams.
- A request is admitted when the pool holds its next chunk and still keeps `watermark` of the blocks free
  (for the running ones to grow into). Its prompt's leading whole blocks come from the prefix cache when
  another request computed them (a shared system prompt is computed once); a prefix still being computed
  in this very step is waited for, not recomputed.
- When a running request needs a block and none is free, the newest running request is preempted: its
  blocks are freed (full ones stay in the prefix cache) and it returns to the front of the queue with all
  its ids, to be recomputed — no request is ever lost. Held contexts (below) are dropped from the pool
  before any running request is.
- Finished and aborted requests free their blocks at once. `hold=True` keeps a finished request's
  sequence (all of `ids` but the last token) so that other requests fork it: `add_request(..., parent=h)`
  shares its blocks copy-on-write and continues from its context — PRIME's branches and the server's `n`.

Per request: its own sampling parameters and seeded generator (`havoc.engine.sampling`), stop ids and stop
strings through the incremental detokenizer, a token budget, a constraint (grammar masks, forced tokens)
and a logits hook.

Batch invariance: on the C++ decoder (a CPU model in fp32/bf16, the default there), every step — prompt
chunks and decode rows alike — is one `havoc.cpu_decode` call over token rows whose numerics do not depend
on the other rows (csrc/cpu_decode.h). A request's logits are then the same bits whatever else runs, however
its prompt was chunked and after a preemption, so a greedy request under load produces the tokens it
produces alone. `batch_invariant=False` prefills with the model's forward (torch's GEMMs, faster in bf16 on
CPUs with AMX) and gives that up. Elsewhere (CUDA, HAVOC_OPS=reference, fp16) steps run the model's forward
over the paged cache, which is not batch invariant.

Not thread-safe: one thread drives it (`havoc.engine.loop.EngineLoop` for many callers).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count

import numpy as np
import torch

from havoc import cpu_decode
from havoc.cache import PagedKVCache
from havoc.engine.sampling import Sampler, SamplingParams, TextStream, TokenLogprob
from havoc.engine.speculation import ALPHA_DECAY, PRIOR_ALPHA, Acceptance, StepCost, lookup, plan_drafts
from havoc.errors import ConfigError, GenerationError, OutOfBlocksError

BLOCK_SIZE = 16
# NOTE: the token budget of a step bounds how long one prompt chunk holds up the decode rows beside it.
# Measured (bench/RESULTS.md, "Serving": SmolLM2 fp32, 2 cores, a 1536-token prompt beside a stream): 256 gave
# the best prefill rate of 64-1024 (388 tok/s; 1024 fell to 271) with a longest step of 0.91 s; 128 halves
# that pause for 12% less prefill rate. An app that values smooth streams over prompt intake can lower it.
MAX_BATCH_TOKENS = 256
MAX_RUNNING = 64
WATERMARK = 0.01
MAX_DRAFT = 8  # speculative decoding: most tokens proposed per request per step (how many pay: speculation.py)
_DEFER = object()  # _admit: wait one step for a prefix being computed


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


LogitsHook = Callable[[list[int], torch.Tensor], torch.Tensor | None]


@dataclass(eq=False)
class Request:
    """One request's state. Returned by `Engine.add_request` as its handle.

    Attributes:
        id: the engine's id for it.
        prompt_ids: the prompt (for a fork: the parent's context, then its own tokens).
        ids: prompt_ids and the tokens generated so far.
        num_computed: leading ids whose K/V are in the pool.
        output_ids / text: what it generated (text: cut at a stop string; None without a tokenizer).
        finish_reason: "stop", "length", "abort", "error" or None while it runs.
        stop_reason: the stop id or stop string that ended it.
        num_cached_tokens: prompt tokens served from the prefix cache or a parent at its first admission.
        adapter_from: the first position computed by the engine's adapted model (None: the base model's
            throughout).
    """

    id: int
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    sampler: Sampler
    text_stream: TextStream | None
    stop_ids: frozenset[int]
    namespace: str
    hold: bool = False
    prefill_only: bool = False
    parent: Request | None = None
    constraint: object | None = None
    logits_hook: LogitsHook | None = None
    ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    seq_id: int | None = None
    status: Status = Status.WAITING
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None
    num_cached_tokens: int = 0
    admitted: bool = False
    preemptions: int = 0
    forced_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    arrival_time: float = 0.0
    first_token_time: float | None = None
    finished_time: float | None = None
    token_times: list[float] = field(default_factory=list, repr=False)
    sink: Callable | None = field(default=None, repr=False)  # set by EngineLoop: where its outputs go
    children_waiting: int = 0  # forks added but not admitted yet (a held parent stays until they are)
    release_pending: bool = False
    speculative: bool = False  # draft tokens by prompt lookup (see Engine._draft)
    draft: list[int] = field(default_factory=list, repr=False)  # proposed in this step, verified after it
    spec_match: int = 0  # length of the match this step's draft came from
    spec_record: Acceptance = field(default_factory=lambda: Acceptance(ALPHA_DECAY), repr=False)
    adapter_from: int | None = None
    adapted_kv: bool = False  # a fork holding the adapted model's K/V in its parent's namespace (freed: evict)

    @property
    def output_ids(self) -> list[int]:
        return self.ids[len(self.prompt_ids):]

    @property
    def num_output(self) -> int:
        return len(self.ids) - len(self.prompt_ids)

    @property
    def text(self) -> str | None:
        return None if self.text_stream is None else self.text_stream.text

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def target(self) -> int:
        """How many of `ids` the pool must hold before the next token can be picked (a prefill-only request
        keeps its last prompt token for the forks to compute)."""
        return len(self.ids) - 1 if self.prefill_only else len(self.ids)

    def context_ids(self) -> list[int]:
        """The ids a fork of this request continues from: all of them, less a final stop id."""
        if self.finish_reason == "stop" and isinstance(self.stop_reason, int) and self.ids[-1] == self.stop_reason:
            return self.ids[:-1]
        return list(self.ids)


@dataclass
class RequestOutput:
    """What one step did for one request."""

    request: Request
    token_ids: list[int]  # appended this step (several when a constraint forced them)
    text: str  # new text, less any tail that could still grow into a stop string
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class EngineStats:
    """Counters since the engine was made (the server's /metrics read them)."""

    steps: int = 0
    computed_tokens: int = 0  # tokens that went through the model
    adapted_tokens: int = 0  # of those, through the adapted model (requests' adapter_from on)
    prompt_tokens: int = 0  # of admitted requests (first admission)
    cached_prompt_tokens: int = 0  # of those, served by the prefix cache or a parent
    generated_tokens: int = 0
    preemptions: int = 0
    drafted_tokens: int = 0  # speculative decoding: tokens proposed, and of those accepted
    accepted_tokens: int = 0
    forward_seconds: float = 0.0
    finished: dict = field(default_factory=dict)  # finish_reason -> count


class Engine:
    """A scheduler and a model runner over one paged KV pool (see the module docstring).

    Args:
        model: a `HavocModel` (eval mode).
        tokenizer: its tokenizer; needed for stop strings, text and end-of-sequence ids (None: ids only).
        cache: a `PagedKVCache` to run in (its prefix cache is shared with whoever else uses it), or None
            to make one of `kv_cache_tokens` tokens.
        kv_cache_tokens: tokens the pool holds (default: the model's context, at most 8192, at least one
            full context of `max_batch_tokens`).
        block_size: tokens per block of a pool made here.
        max_batch_tokens: tokens a step computes at most (prompt chunks and decode rows together).
        max_running: requests running at once at most.
        watermark: fraction of the pool admission keeps free for running requests.
        cpu_weights: the C++ decoder's weights: "auto" (the model's) or "int8".
        batch_invariant: prompt chunks through the C++ decoder too, so results do not depend on the batch
            (default where the C++ decoder runs); False prefills with the model's forward.
        stop_ids: end-of-sequence ids (default: the tokenizer's).
        prefix_caching: False gives every request its own prefix-cache namespace (no sharing).
        speculative: decode with prompt-lookup drafts verified in the same step (greedy output unchanged,
            sampling keeps its distribution); per request `SamplingParams(speculative=False)` turns it off.
        max_draft: tokens a draft proposes at most.
        adapted: the same model with an adapter merged into its weights (`havoc.train.lora`, span "call"):
            a request made with `adapter_from=p` has its positions from p on computed by it, and the
            positions before p, whose K/V it attends over, by `model`. The two share the pool; a step runs
            each one's rows through its own runner (the C++ decoder of its own weights on CPU).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        cache: PagedKVCache | None = None,
        kv_cache_tokens: int | None = None,
        block_size: int = BLOCK_SIZE,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_running: int = MAX_RUNNING,
        watermark: float = WATERMARK,
        cpu_weights: str = "auto",
        batch_invariant: bool | None = None,
        stop_ids: Sequence[int] | None = None,
        prefix_caching: bool = True,
        speculative: bool = True,
        max_draft: int = MAX_DRAFT,
        adapted=None,
    ) -> None:
        for name, v in (("max_batch_tokens", max_batch_tokens), ("max_running", max_running)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not 0 <= watermark < 1:
            raise ConfigError(f"watermark must be in [0, 1), got {watermark!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        if cache is None:
            tokens = kv_cache_tokens if kv_cache_tokens is not None else max(min(self.config.max_seq_len, 8192), max_batch_tokens)
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise ConfigError(f"kv_cache_tokens must be a positive integer, got {kv_cache_tokens!r}")
            cache = PagedKVCache.for_model(model, -(-tokens // block_size), block_size)
        elif not isinstance(cache, PagedKVCache):
            raise ConfigError(f"cache must be a PagedKVCache, got {type(cache).__name__}")
        self.cache = cache
        self.block_size = cache.block_size
        self.max_batch_tokens = max_batch_tokens
        self.max_running = max_running
        self.watermark_blocks = int(watermark * cache.num_blocks)
        # The longest sequence the pool can hold alone bounds a request like the model's context does.
        self.max_len = min(self.config.max_seq_len, cache.num_blocks * cache.block_size)
        self.stop_ids = frozenset(stop_ids if stop_ids is not None else (tokenizer.stop_ids if tokenizer else ()))
        self.prefix_caching = prefix_caching
        self.speculative = speculative
        self.max_draft = max_draft
        self.step_cost = StepCost()  # seconds per step against its token rows, fitted as steps run
        self.acceptance = Acceptance(prior=PRIOR_ALPHA, weight=8.0)  # every request's drafts, per match length
        self.runner = _make_runner(model, cache, cpu_weights, batch_invariant)
        self.adapted = None if adapted is None else adapted.eval()
        self.adapted_runner = None
        if adapted is not None:
            if adapted.config != model.config:
                raise ConfigError("adapted must be the same model (the same config) with an adapter merged")
            self.adapted_runner = _make_runner(adapted, cache, cpu_weights, batch_invariant)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.held: dict[int, Request] = {}  # request id -> finished request keeping its sequence
        self.stats = EngineStats()
        self._ids = count()
        self._outputs: list[RequestOutput] = []  # produced outside a step (aborts, instant finishes)

    # ------------------------------------------------------------------------------------------ requests
    def add_request(self, prompt_ids: Sequence[int], params: SamplingParams | None = None, **kwargs) -> Request:
        """Queue a request; it joins the running batch at the next step that has room for it. Arguments as
        `make_request`; returns the request's handle.

        Raises:
            GenerationError: as `make_request`, or a parent that is not a held, finished request of this
                engine.
        """
        req = self.make_request(prompt_ids, params, **kwargs)
        self.enqueue(req)
        if req.finish_reason == "error":
            raise GenerationError(req.error)
        return req

    def enqueue(self, req: Request) -> None:
        """Queue a request made by `make_request` (in the thread that steps the engine). A parent that is no
        longer held ends the request at once with finish_reason "error"."""
        p = req.parent
        if p is not None and (p.id not in self.held or not p.hold):
            req.parent = None
            req.error = "parent must be a finished request of this engine added with hold=True and not released"
            self._finish(req, "error")
            self._outputs.append(RequestOutput(req, [], "", "error"))
            return
        if p is not None:
            p.children_waiting += 1
        self.waiting.append(req)

    def make_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        parent: Request | None = None,
        hold: bool = False,
        prefill_only: bool = False,
        constraint=None,
        logits_hook: LogitsHook | None = None,
        namespace: str = "",
        stop_ids: Sequence[int] | None = None,
        adapter_from: int | None = None,
    ) -> Request:
        """A request checked and ready to `enqueue`. Touches no engine state, so any thread may make one (the
        engine loop makes it in the caller's thread: bad input raises there, before anything is queued).

        Args:
            prompt_ids: its prompt (with a parent: the tokens to append to the parent's context; may be
                empty).
            params: sampling and stopping (default: greedy, 128 tokens).
            parent: a held request (`hold=True`, finished) to continue from: this request forks its
                sequence copy-on-write and its prompt is `parent.context_ids() + prompt_ids`.
            hold: keep the sequence when finished, for forks (free it with `release`).
            prefill_only: compute the prompt and generate nothing (with hold: a context to fork).
            constraint: a `havoc.engine.constraint.Constraint` (grammar masks, forced tokens).
            logits_hook: called as hook(ids, logits) before sampling; may edit the (V,) fp32 logits in place
                or return new ones.
            namespace: prefix-cache namespace (requests share cached blocks only within one).
            stop_ids: end-of-sequence ids instead of the engine's.
            adapter_from: compute positions from this one on (prompt and generated tokens) with the
                engine's adapted model; at most the prompt's length and, with a parent, not before the
                parent's computed tokens. Without a parent the request gets a prefix-cache namespace of
                its own per adapter_from (`namespace` + "\x00adapted@" + adapter_from), where equal
                prefixes are equal computations. A fork's adapted blocks are cached under its parent's
                namespace while it (or a fork of it) lives, and all unused cached blocks are evicted when it
                is freed, so no prompt is served them after that.

        Returns:
            The request (not queued yet).

        Raises:
            GenerationError: an empty prompt, ids outside the vocabulary, a prompt that leaves no room to
                generate, or a parent that is not a finished request added with hold=True.
        """
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise GenerationError(f"params must be SamplingParams, got {type(params).__name__}")
        own = _check_ids(prompt_ids, self.config.vocab_size)
        if parent is not None:
            if not isinstance(parent, Request) or not parent.hold or not parent.finished:
                raise GenerationError("parent must be a finished request of this engine added with hold=True and not released")
            prompt = parent.context_ids() + own
        else:
            prompt = own
        if not prompt:
            raise GenerationError("the prompt is empty: give at least one token")
        if len(prompt) >= self.max_len and not prefill_only:
            raise GenerationError(
                f"the prompt has {len(prompt)} tokens but the model's context is {self.config.max_seq_len}"
                + (f" and the KV pool holds {self.max_len}" if self.max_len < self.config.max_seq_len else "")
                + ": it leaves no room to generate"
            )
        if len(prompt) > self.max_len:
            raise GenerationError(f"the prompt has {len(prompt)} tokens; at most {self.max_len} fit")
        if adapter_from is not None:
            if self.adapted is None:
                raise GenerationError("adapter_from needs an engine made with an adapted model (adapted=...)")
            if isinstance(adapter_from, bool) or not isinstance(adapter_from, int) or not 0 <= adapter_from <= len(prompt):
                raise GenerationError(f"adapter_from must be an integer in [0, {len(prompt)}] (the prompt's length), "
                                      f"got {adapter_from!r}")
            if parent is not None and adapter_from < parent.num_computed:
                raise GenerationError(f"adapter_from is {adapter_from} but the parent's first {parent.num_computed} "
                                      "tokens are computed already (by the base model)")
        stops = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else
                                                    (frozenset(stop_ids) if stop_ids is not None else self.stop_ids))
        text = None
        if self.tokenizer is not None:
            text = TextStream(self.tokenizer, params.stop, skip_special_tokens=params.skip_special_tokens)
        elif params.stop:
            raise GenerationError("stop strings need a tokenizer: give the engine one")
        req = Request(
            id=next(self._ids), prompt_ids=prompt, params=params,
            max_tokens=0 if prefill_only else min(params.max_new_tokens, self.max_len - len(prompt)),
            sampler=Sampler(params, self.config.vocab_size, prompt), text_stream=text, stop_ids=stops,
            namespace=(namespace if self.prefix_caching else f"\x00req{id(params)}:{time.monotonic_ns()}")
            + ("" if adapter_from is None or parent is not None else f"\x00adapted@{adapter_from}"),
            hold=hold, prefill_only=prefill_only, parent=parent, constraint=constraint, logits_hook=logits_hook,
            ids=list(prompt), arrival_time=time.perf_counter(), adapter_from=adapter_from,
            adapted_kv=parent is not None and (adapter_from is not None or parent.adapted_kv),
        )
        if params.logprobs is not None:
            req.logprobs = []
        # Drafts are verified row by row; a hook sees whole contexts, and a constraint must check drafts.
        req.speculative = (self.speculative if params.speculative is None else params.speculative) and \
            logits_hook is None and (constraint is None or hasattr(constraint, "validate_draft")) and not prefill_only
        return req

    def abort(self, req: Request) -> None:
        """Stop a request now: it leaves the batch, its blocks go back (held ones too), and the next step
        reports it finished with reason "abort". Finished requests are left as they are."""
        if req.status is Status.FINISHED:
            if req.id in self.held:
                self.release(req)
            return
        if req.status is Status.WAITING:
            try:
                self.waiting.remove(req)
            except ValueError:
                pass
        else:
            self.running.remove(req)
        self._finish(req, "abort")
        self._outputs.append(RequestOutput(req, [], self._take_text(req), "abort"))

    def release(self, req: Request) -> None:
        """Free a held request's sequence (forks already admitted keep their copies); idempotent."""
        if req.id not in self.held:
            return
        if req.children_waiting:  # a fork still to be admitted needs it
            req.release_pending = True
            return
        del self.held[req.id]
        self._free(req)
        req.hold = False

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self._outputs)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # ------------------------------------------------------------------------------------------ a step
    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward over every scheduled token, pick the next tokens; returns what
        happened to each request that progressed or finished."""
        outputs, self._outputs = self._outputs, []
        scheduled = self._schedule(outputs)
        if not scheduled:
            return outputs
        reqs = [r for r, _ in scheduled]
        want = [r for r, n in scheduled if r.num_computed + n - len(r.draft) == r.target and not r.prefill_only]
        decode_only = all(n - len(r.draft) == 1 and r.target == len(r.ids) for r, n in scheduled)
        t0 = time.perf_counter()
        try:
            results = {}
            # chunks never straddle adapter_from (_schedule), so each request's rows go to one model
            adapted = {r.id for r in reqs if r.adapter_from is not None and r.num_computed >= r.adapter_from}
            for runner, model, on in ((self.runner, self.model, False), (self.adapted_runner, self.adapted, True)):
                group = [r for r in reqs if (r.id in adapted) is on]
                if group:
                    wanted = [r for r in want if (r.id in adapted) is on]
                    results.update(runner.run(self.cache, [r.seq_id for r in group],
                                              [r for r in wanted if self._needs_logits(r)],
                                              [r for r in wanted if not self._needs_logits(r)], model,
                                              {r.seq_id: len(r.prompt_ids) for r in group}))
        except Exception as e:  # a failed forward fails its requests, never the engine
            self.cache._fwd = None
            for r in reqs:
                self.running.remove(r)
                r.error = f"{type(e).__name__}: {e}"
                self._finish(r, "error")
                outputs.append(RequestOutput(r, [], self._take_text(r), "error"))
            return outputs
        for r, n in scheduled:
            r.num_computed += n
        seconds = time.perf_counter() - t0
        self.stats.forward_seconds += seconds
        if decode_only:
            self.step_cost.observe(sum(n for _, n in scheduled), seconds)
        self.stats.steps += 1
        self.stats.computed_tokens += sum(n for _, n in scheduled)
        self.stats.adapted_tokens += sum(n for r, n in scheduled if r.id in adapted)
        now = time.perf_counter()
        for r in reqs:
            if r.prefill_only and r.num_computed == r.target:
                self.running.remove(r)
                self._finish(r, "length")
                outputs.append(RequestOutput(r, [], "", "length"))
                continue
            if r not in results:
                continue  # a prompt chunk: nothing to pick yet
            out = self._advance(r, results[r], now)
            if out is not None:
                outputs.append(out)
        return outputs

    def _needs_logits(self, r: Request) -> bool:
        return r.sampler.needs_logits or r.constraint is not None or r.logits_hook is not None

    def _schedule(self, outputs: list[RequestOutput]) -> list[tuple[Request, int]]:
        """This step's (request, tokens to compute) in row order, with their tokens planned in the pool."""
        budget = self.max_batch_tokens
        scheduled: list[tuple[Request, int]] = []
        drafts = self._drafts(budget)  # what decoding requests propose after their last token, to verify now
        i = 0
        while i < len(self.running) and budget > 0:
            r = self.running[i]
            n = min(r.target - r.num_computed, budget)
            if r.adapter_from is not None and r.num_computed < r.adapter_from:
                n = min(n, r.adapter_from - r.num_computed)  # base rows up to it, the adapted ones next step
            draft = drafts.get(r.id, [])[: budget - 1] if n == 1 else []
            while True:
                try:
                    self.cache.append(r.seq_id, r.ids[r.num_computed : r.num_computed + n] + draft)
                    break
                except OutOfBlocksError:
                    if draft:
                        draft = []  # without the draft first
                    elif not self._drop_held():
                        victim = self.running[-1]  # the newest; not scheduled yet (they are taken oldest first)
                        self._preempt(victim)
                        if victim is r:
                            r = None
                            break
            if r is None:
                break
            r.draft = draft
            scheduled.append((r, n + len(r.draft)))
            budget -= n + len(r.draft)
            i += 1
        # Waiting requests in arrival order; one that lacks room stops admission (first come, first served),
        # one whose prefix another request computes in this step is passed over until the next.
        deferred: list[Request] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            r = self.waiting[0]
            n = self._admit(r, budget, outputs)
            if n is None:
                break
            self.waiting.popleft()
            if n is _DEFER:
                deferred.append(r)
                continue
            if n == 0:
                continue  # finished at admission (nothing to compute)
            self.running.append(r)
            scheduled.append((r, n))
            budget -= n
        self.waiting.extendleft(reversed(deferred))
        return scheduled

    def _admit(self, r: Request, budget: int, outputs: list[RequestOutput]) -> int | object | None:
        """Give a waiting request its sequence and first chunk: the tokens scheduled, None when there is no
        room for it, _DEFER when its prefix is being computed in this step."""
        cache, bs = self.cache, self.block_size
        parent = r.parent if r.parent is not None and r.parent.seq_id is not None else None
        if parent is not None:
            start = parent.num_computed  # the parent's sequence holds ids[:start], a prefix of r.ids
        else:
            blocks = cache.manager.lookup(np.asarray(r.ids[: r.target], dtype=np.int32), r.namespace)
            hits = min(len(blocks), max(r.target - 1, 0) // bs)
            if hits and not cache._ready[blocks[:hits]].all():
                return _DEFER  # its prefix is being computed in this step: reuse it next step
            start = hits * bs
        n = min(r.target - start, budget)
        if r.adapter_from is not None and start < r.adapter_from:
            n = min(n, r.adapter_from - start)
        # new blocks, and the copy of a fork's shared partial last block
        need = cache.blocks_for(start + n) - start // bs + (1 if parent is not None and start % bs else 0)
        # Keep the watermark free for the running requests to grow into (with none running, any room will do).
        while n > 0 and cache.free_blocks() - need < (self.watermark_blocks if self.running else 0):
            if not self._drop_held():
                if self.running:
                    return None
                break
        if n > 0 or parent is not None:
            sid = cache.new_seq_id()
            try:
                if parent is not None:
                    cache.fork(parent.seq_id, sid)
                    r.seq_id = sid
                    cache.append(sid, r.ids[start : start + n])
                else:
                    start = cache.add(sid, r.ids[: start + n], r.namespace)
                    r.seq_id = sid
            except OutOfBlocksError:
                if r.seq_id is not None:
                    cache.free(r.seq_id)
                    r.seq_id = None
                return None
        r.num_computed = start
        r.status = Status.RUNNING
        if not r.admitted:
            r.admitted = True
            r.num_cached_tokens = start
            self.stats.prompt_tokens += len(r.prompt_ids)
            self.stats.cached_prompt_tokens += start
        if r.parent is not None:
            p, r.parent = r.parent, None
            p.children_waiting -= 1
            if p.release_pending and not p.children_waiting:
                self.release(p)
        if n == 0:  # a prefill-only fork with nothing new: done already
            self._finish(r, "length")
            outputs.append(RequestOutput(r, [], "", "length"))
        return n

    def _preempt(self, r: Request) -> None:
        """Free a running request's blocks and queue it first, to be recomputed (full blocks it computed
        stay in the prefix cache until their space is needed)."""
        self.running.remove(r)
        self._free(r)
        r.num_computed = 0
        r.status = Status.WAITING
        r.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(r)

    def _drop_held(self) -> bool:
        """Free the oldest held sequence no waiting fork needs (its request stays held: a later fork
        recomputes its context through the prefix cache). False if there is none."""
        for r in self.held.values():
            if r.seq_id is not None and not r.children_waiting:
                self._free(r)
                return True
        return False

    def _free(self, r: Request) -> None:
        if r.seq_id is not None:
            self.cache.free(r.seq_id)
            r.seq_id = None
            r.num_computed = 0
            if r.adapted_kv:  # its full blocks of adapted K/V are cached under the base model's keys: out
                self.clear_prefix_cache()

    def _finish(self, r: Request, reason: str) -> None:
        r.status = Status.FINISHED
        r.finish_reason = reason
        r.finished_time = time.perf_counter()
        if r.text_stream is not None:
            r.text_stream.finish()
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
        if r.hold and reason in ("stop", "length"):
            self.held[r.id] = r
            if r.seq_id is not None and self.cache.pending(r.seq_id):
                raise AssertionError("a held sequence has tokens not computed")  # every step computes what it plans
        else:
            self._free(r)
        if r.parent is not None:  # finished before its admission (aborted)
            p, r.parent = r.parent, None
            p.children_waiting -= 1
            if p.release_pending and not p.children_waiting:
                self.release(p)

    @staticmethod
    def _take_text(r: Request) -> str:
        return r.text_stream.take() if r.text_stream is not None else ""

    def _advance(self, r: Request, result, now: float) -> RequestOutput | None:
        """Pick the next token(s) of a request whose ids are all computed. `result` holds, for each of the
        request's last 1 + len(draft) rows, its argmax id or its logits."""
        c = r.constraint
        kept: list[int] = []
        logprobs: list[TokenLogprob] = []
        reason = None
        draft, r.draft = r.draft, []
        try:
            forced = c.forced() if c is not None and not draft else []
            if forced:
                forced = forced[: r.max_tokens - r.num_output]
                c.accept_forced(forced)
                r.forced_tokens += len(forced)
                for i, tok in enumerate(forced):
                    kept.append(tok)
                    reason = self._commit(r, tok, now, last=i == len(forced) - 1)
                    if reason is not None:
                        break
            else:
                if draft and c is not None:
                    c.mask_draft(result, draft)  # row i's mask as the grammar stands after draft[:i]
                for i in range(len(draft) + 1):
                    tok = self._pick(r, result[i], logprobs, masked=bool(draft))
                    if c is not None:
                        c.accept(tok)
                    kept.append(tok)
                    reason = self._commit(r, tok, now, last=True)
                    if reason is not None or i == len(draft) or tok != draft[i]:
                        break
        except Exception as e:  # a constraint or hook that fails ends its own request only
            self.running.remove(r)
            r.error = f"{type(e).__name__}: {e}"
            self._finish(r, "error")
            return RequestOutput(r, [], self._take_text(r), "error")
        if draft:  # roll back the K/V of rejected draft tokens: the pool keeps what `ids` still holds
            accepted = next((i for i, (a, b) in enumerate(zip(kept, draft)) if a != b), min(len(kept), len(draft)))
            self._adapt(r, len(draft), accepted)
            keep = min(r.num_computed - len(draft) + accepted, len(r.ids) - 1)
            if keep < r.num_computed and r.seq_id is not None:
                self.cache.truncate(r.seq_id, keep)
                r.num_computed = keep
        if r.first_token_time is None:
            r.first_token_time = now
        self.stats.generated_tokens += len(kept)
        if r.logprobs is not None:
            r.logprobs.extend(logprobs)
        if reason is not None:
            self.running.remove(r)
            self._finish(r, reason)
        return RequestOutput(r, kept, self._take_text(r), reason, logprobs or None)

    def _pick(self, r: Request, result, logprobs: list, masked: bool) -> int:
        """The token at the request's next position from one row: the decoder's argmax, or picked by the
        request's sampler from the logits (masked by the constraint unless `masked`, edited by the hook).
        The same rule with or without a draft: a drafted token stands exactly when it is this token."""
        if isinstance(result, int):
            return result
        logits = result
        raw = logits.clone() if r.logprobs is not None else logits
        if r.constraint is not None and not masked:
            r.constraint.mask(logits)
        if r.logits_hook is not None:
            edited = r.logits_hook(r.ids, logits)
            logits = logits if edited is None else edited
        tok = r.sampler.sample(logits, len(r.ids))
        if r.logprobs is not None:
            logprobs.append(r.sampler.logprob(raw, tok))
        return tok

    def _commit(self, r: Request, tok: int, now: float, *, last: bool) -> str | None:
        """Append a token to a request; why it ends there, or None. `last`: the constraint has seen it."""
        r.ids.append(tok)
        r.sampler.observe(tok)
        r.token_times.append(now)
        if tok in r.stop_ids:
            r.stop_reason = tok
            return "stop"
        if r.text_stream is not None and r.text_stream.push(tok):
            r.stop_reason = r.text_stream.stopped
            return "stop"
        if r.num_output >= r.max_tokens:
            return "length"
        if r.constraint is not None and last and r.constraint.done():
            return "stop"
        return None

    # ------------------------------------------------------------------------------------------ speculation
    def _drafts(self, budget: int) -> dict[int, list[int]]:
        """Drafts for this step's decoding requests, by request id: each one's prompt-lookup proposal, cut
        to the length that pays at this batch (`plan_drafts`; the rule is in havoc.engine.speculation)."""
        rows = tokens = 0
        proposals: list[tuple[Request, int, list[int]]] = []
        for r in self.running:
            left = r.target - r.num_computed
            rows += left
            if left != 1 or r.target != len(r.ids) or r.prefill_only:
                continue  # a prompt chunk, or a request waiting on its prefix: no token this step
            tokens += 1
            if r.speculative:
                n, draft = self._lookup(r)
                if draft:
                    proposals.append((r, n, draft))
        if not proposals:
            return {}
        cands = [(r.spec_record.rate(n, self.acceptance), len(d)) for r, n, d in proposals]
        lengths = plan_drafts(cands, min(rows, budget), tokens, self.step_cost.line())
        for (r, n, _), k in zip(proposals, lengths):
            r.spec_match = n
        return {r.id: d[:k] for (r, _, d), k in zip(proposals, lengths) if k}

    def _lookup(self, r: Request) -> tuple[int, list[int]]:
        """A decoding request's prompt-lookup proposal and the length of its match, as long as it may be
        (tokens left, the grammar)."""
        k = min(self.max_draft, r.max_tokens - r.num_output - 1)
        if k <= 0 or len(r.ids) < 2:
            return 0, []
        if r.constraint is not None and r.constraint.forced():
            return 0, []  # the grammar writes the next tokens itself
        n, draft = lookup(r.ids, k)
        if draft and r.constraint is not None:
            draft = draft[: r.constraint.validate_draft(draft)]  # only what the grammar allows
        return n, draft

    def _adapt(self, r: Request, drafted: int, accepted: int) -> None:
        """Count a verified draft: the engine's totals, its and the request's acceptance per match length."""
        self.stats.drafted_tokens += drafted
        self.stats.accepted_tokens += accepted
        self.acceptance.record(r.spec_match, drafted, accepted)
        r.spec_record.record(r.spec_match, drafted, accepted)

    # ------------------------------------------------------------------------------------------ upkeep
    def clear_prefix_cache(self) -> int:
        """Evict every cached block no sequence uses; returns how many."""
        return self.cache.manager.evict(self.cache.manager.stats()["evictable"])

    def kv_usage(self) -> dict[str, float]:
        """Blocks in use, held by the prefix cache, free; the prefix cache's hit rate so far."""
        st = self.cache.stats()
        q = st["prefix_query_tokens"]
        return {"blocks_total": st["num_blocks"], "blocks_used": st["used"], "blocks_cached": st["evictable"],
                "blocks_free": st["free"], "usage": st["used"] / max(st["num_blocks"], 1),
                "prefix_hit_rate": st["prefix_hit_tokens"] / q if q else 0.0,
                "prefix_query_tokens": q, "prefix_hit_tokens": st["prefix_hit_tokens"]}


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    if isinstance(ids, (str, bytes)):
        raise GenerationError("prompt ids must be a sequence of integers, not text: encode it first")
    out = []
    for t in ids:
        whole = isinstance(t, (int, np.integer)) or (isinstance(t, torch.Tensor) and t.dim() == 0
                                                     and not t.dtype.is_floating_point and not t.dtype.is_complex)
        if isinstance(t, bool) or not whole or (isinstance(t, torch.Tensor) and t.dtype == torch.bool):
            raise GenerationError(f"token ids must be integers, got {t!r}"[:200])
        v = int(t)
        if not 0 <= v < vocab_size:
            raise GenerationError(f"token id {v} is outside the vocabulary [0, {vocab_size})")
        out.append(v)
    return out


# ---------------------------------------------------------------------------------------------- runners
class _DecoderRunner:
    """Every step through the C++ decoder: prompt chunks and decode rows in one call (batch invariant).
    With `invariant=False` prompt chunks go through the model's forward (torch's GEMMs) instead, and only
    the decode rows (a token, with its draft if any, after a computed context) through the decoder.

    `run` returns, for each wanted request, its last 1 + len(draft) rows: argmax ids (a list) for
    `argmax_reqs`, (rows, vocab) fp32 logits for `logit_reqs`."""

    def __init__(self, decoder, cache: PagedKVCache, invariant: bool) -> None:
        self.decoder = decoder
        self.bound = decoder.bind(cache)
        self.invariant = invariant
        self.vocab_size = decoder.vocab_size

    def run(self, cache, seq_ids, logit_reqs, argmax_reqs, model, prompt_lens) -> dict:
        """`prompt_lens`: each sequence's prompt length; its rows before it attend as a prefill."""
        if self.invariant:
            return self._rows(cache, seq_ids, logit_reqs, argmax_reqs, prompt_lens)
        drafts = {r.seq_id: len(r.draft) for r in logit_reqs + argmax_reqs}
        chunk = {s for s in seq_ids if cache.pending(s) > 1 + drafts.get(s, 0) or cache.length(s) == 1}
        out: dict = {}
        if chunk:
            wanted = [r for r in logit_reqs + argmax_reqs if r.seq_id in chunk]
            out.update(_forward(model, cache, [s for s in seq_ids if s in chunk], wanted))
            for r in argmax_reqs:
                if r in out:
                    out[r] = out[r].argmax(-1).tolist()
        rows = [s for s in seq_ids if s not in chunk]
        if rows:
            out.update(self._rows(cache, rows, [r for r in logit_reqs if r.seq_id not in chunk],
                                  [r for r in argmax_reqs if r.seq_id not in chunk], prompt_lens))
        return out

    def _rows(self, cache, seq_ids, logit_reqs, argmax_reqs, prompt_lens) -> dict:
        row_of = {sid: i for i, sid in enumerate(seq_ids)}
        plan = cache.prepare_rows(seq_ids)
        # Prompt tokens attend as a prefill (the C++ flash kernel), generated ones and drafts row by row:
        # what a row is decides, never how this step groups it (csrc/cpu_decode.h, prompt_runs).
        runs, first = [], 0
        for i, sid in enumerate(seq_ids):
            last = int(plan.last[i])
            end = min(last + 1, first + prompt_lens.get(sid, 0) - int(plan.positions[first]))
            if end > first:
                runs.append((first, end - first))
            first = last + 1

        def rows(reqs):  # each request's last 1 + len(draft) rows
            return np.array([j for r in reqs for j in range(plan.last[row_of[r.seq_id]] - len(r.draft),
                                                           plan.last[row_of[r.seq_id]] + 1)], dtype=np.int64)

        lrows, arows = rows(logit_reqs), rows(argmax_reqs)
        logits = torch.empty(len(lrows), self.vocab_size, dtype=torch.float32)
        nxt = np.empty(len(arows), dtype=np.int64)
        try:
            self.bound.step(plan.tokens, plan.positions, plan.slots, plan.tables, plan.lengths,
                            logits=logits.numpy() if len(lrows) else None, next_tokens=nxt if len(arows) else None,
                            logit_rows=lrows, argmax_rows=arows,
                            prompt_runs=np.array(runs, dtype=np.int64) if runs else None)
        except BaseException:
            cache._fwd = None
            raise
        cache.end()
        return _split_rows(logit_reqs, logits) | _split_rows(argmax_reqs, nxt.tolist())


def _split_rows(reqs, rows) -> dict:
    """Each request's slice of the output rows (1 + len(draft) each, in order)."""
    out, at = {}, 0
    for r in reqs:
        m = 1 + len(r.draft)
        out[r] = rows[at : at + m]
        at += m
    return out


class _ForwardRunner:
    """Steps through the model's forward over the paged cache (CUDA, the reference ops, fp16)."""

    def run(self, cache, seq_ids, logit_reqs, argmax_reqs, model, prompt_lens) -> dict:
        out = _forward(model, cache, seq_ids, logit_reqs + argmax_reqs)
        for r in argmax_reqs:
            out[r] = out[r].argmax(-1).tolist()
        return out


@torch.inference_mode()
def _forward(model, cache: PagedKVCache, seq_ids: list[int], wanted: list[Request]) -> dict:
    """One forward of the model over the waiting tokens of `seq_ids`; fp32 logits (rows, V) of the wanted
    requests' last 1 + len(draft) tokens."""
    row = {s: i for i, s in enumerate(seq_ids)}
    if len({cache.pending(s) for s in seq_ids}) == 1 and not any(r.draft for r in wanted):
        logits = model(cache.prepare(seq_ids), cache=cache, logits_to_keep=1)[:, -1]  # (B, V)
        return {r: logits[row[r.seq_id]][None].float() for r in wanted}
    tokens, last = cache.prepare_packed(seq_ids)
    at = [j for r in wanted for j in range(int(last[row[r.seq_id]]) - len(r.draft), int(last[row[r.seq_id]]) + 1)]
    logits = model(tokens, cache=cache, logits_at=torch.tensor(at, dtype=torch.long, device=last.device))[0]
    return _split_rows(wanted, logits.float())


def _make_runner(model, cache: PagedKVCache, cpu_weights: str, batch_invariant: bool | None):
    decoder = None
    if cache.dtype == model.tok_embeddings.weight.dtype:
        decoder = cpu_decode.for_model(model, cpu_weights)
    elif cpu_weights != "auto":
        raise ConfigError(f"cpu_weights={cpu_weights!r}: the cache's dtype {cache.dtype} is not the model's")
    if decoder is None:
        if batch_invariant:
            raise ConfigError("batch_invariant=True needs the C++ decoder (a CPU model in fp32/bf16, HAVOC_OPS auto or fast)")
        return _ForwardRunner()
    return _DecoderRunner(decoder, cache, True if batch_invariant is None else batch_invariant)


__all__ = ["Engine", "EngineStats", "Request", "RequestOutput", "Status"]
