"""PRIME's contexts on the engine: text grown, forked and decoded as requests of the `LLM`'s engine.

A `Context` is a token list PRIME grows (`extend`: lazily, nothing runs until the next generation) and the
engine request that holds its K/V (a held request, `havoc.engine.Engine.add_request(hold=True)`). Each
`generate` is one engine request forking that held request — copy-on-write blocks, so only the text added
since and the new tokens are computed — and holding its own result for the next step. `fork()` makes a
second context on the same held request: the advocate, attack and pragmatist branches read the shared
context once, and `generate_batch` runs them as three requests that the engine decodes in the same steps.

Generation goes through the engine's decode path (on a CPU fp32/bf16 model the C++ decoder), its
incremental detokenizer and stop matching, and — for tool calls — a `GrammarConstraint` as the request's
logits hook: llguidance (the structured-output engine behind vLLM's, SGLang's and llama.cpp's) decodes the
call under the tool's JSON schema, and the stretches the grammar forces (keys, `{"tool":"statistics",...`)
are appended without sampling and computed as one chunk. The engine runs in the LLM's own thread, so a
PRIME run shares batches with whatever else the LLM serves (the HTTP server's other requests).

`Engine.computed_tokens` counts the tokens that went through the model since this PRIME engine was made;
tests use it to show that a forked prompt is computed once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from havoc.engine import GrammarConstraint, Request, SamplingParams
from havoc.errors import GenerationError, PrimeError


@dataclass
class Generated:
    """What one `generate` call produced."""

    ids: list[int]
    text: str
    finish: str  # "stop" (stop string, end of sequence or schema complete), "length" (budget)
    forced: int = 0  # tokens the grammar forced (appended without sampling)


class Context:
    """A token list PRIME grows, and the held engine request whose K/V cover a prefix of it."""

    def __init__(self, engine: Engine, ids: list[int], held: Request | None = None) -> None:
        self.engine = engine
        self.ids = ids
        self.held = held
        self.alive = True
        if held is not None:
            engine._ref(held, +1)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, text_or_ids: str | Sequence[int]) -> list[int]:
        """Append text (or token ids); they are computed with the next generation from this context."""
        self.engine._check(self)
        ids = self.engine.encode(text_or_ids) if isinstance(text_or_ids, str) else [int(t) for t in text_or_ids]
        self.engine._room(len(self.ids) + len(ids))
        self.ids.extend(ids)
        return ids

    def fork(self) -> Context:
        """A child context sharing this one's computed blocks (copy-on-write); nothing is recomputed."""
        self.engine._check(self)
        return Context(self.engine, list(self.ids), self.held)

    def free(self) -> None:
        """Let go of the context's blocks (once no other context shares them)."""
        if self.alive:
            self.alive = False
            if self.held is not None:
                self.engine._ref(self.held, -1)
                self.held = None


class Engine:
    """PRIME's view of an `LLM`: contexts as held requests of its engine.

    Args:
        llm: the `havoc.LLM` whose engine runs the requests.
    """

    def __init__(self, llm) -> None:
        self.llm = llm
        self.tokenizer = llm.tokenizer
        self.vocab_size = llm.model.config.vocab_size
        self.max_len = llm.model.config.max_seq_len
        self._refs: dict[int, int] = {}  # held request id -> contexts using it
        self._lock = threading.Lock()
        self._computed0 = self._engine_computed()

    @classmethod
    def from_llm(cls, llm) -> Engine:
        return cls(llm)

    def _engine_computed(self) -> int:
        st = self.llm.engine.stats  # speculative draft tokens that were rejected do not count
        return st.computed_tokens - (st.drafted_tokens - st.accepted_tokens)

    @property
    def has_adapter(self) -> bool:
        """Whether the LLM carries a call-scoped adapter (`generate(..., adapter=True)` uses it)."""
        return getattr(self.llm, "adapted", None) is not None

    @property
    def computed_tokens(self) -> int:
        """Tokens the model computed since this engine was made (every request of the LLM's engine)."""
        return self._engine_computed() - self._computed0

    # ------------------------------------------------------------------------------------------ contexts
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_bos=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def start(self, text_or_ids: str | Sequence[int]) -> Context:
        """A new context holding `text_or_ids` (computed with its first generation, from the prefix cache
        where another request computed the same start)."""
        ids = self.encode(text_or_ids) if isinstance(text_or_ids, str) else [int(t) for t in text_or_ids]
        if not ids:
            raise PrimeError("a context needs at least one token")
        self._room(len(ids))
        return Context(self, ids)

    def _check(self, ctx: Context) -> None:
        if not ctx.alive:
            raise PrimeError("the context was freed")

    def _room(self, n_tokens: int) -> None:
        if n_tokens >= self.max_len:
            raise PrimeError(f"the context would hold {n_tokens} tokens; the model takes {self.max_len}")

    def _ref(self, held: Request, delta: int) -> None:
        with self._lock:
            n = self._refs.get(held.id, 0) + delta
            if n > 0:
                self._refs[held.id] = n
                return
            self._refs.pop(held.id, None)
        self.llm.loop.call(lambda eng: eng.release(held))

    # ------------------------------------------------------------------------------------------ decoding
    def _submit(self, ctx: Context, params: SamplingParams, constraint=None, prefill_only: bool = False,
                adapter_from: int | None = None):
        self._check(ctx)
        held = ctx.held
        base = held.context_ids() if held is not None else []
        if held is not None and ctx.ids[: len(base)] != base:  # cannot happen through this API; be safe
            held, base = None, []
        try:
            return self.llm.loop.submit(ctx.ids[len(base):], params, parent=held, hold=True, constraint=constraint,
                                        prefill_only=prefill_only, adapter_from=adapter_from)
        except GenerationError as e:
            raise PrimeError(f"PRIME's request was refused: {e}") from None

    def _adopt(self, ctx: Context, req: Request) -> Generated:
        """The finished request becomes the context's state."""
        if req.finish_reason in ("error", "abort"):
            raise PrimeError(f"generation failed: {req.error or req.finish_reason}")
        new = req.context_ids()[len(ctx.ids):]
        ctx.ids.extend(new)
        old, ctx.held = ctx.held, req
        self._ref(req, +1)
        if old is not None:
            self._ref(old, -1)
        return Generated(new, req.text or "", req.finish_reason, req.forced_tokens)

    def prefill(self, ctx: Context) -> None:
        """Compute the context's tokens now (one request, nothing generated), so that forks made next share
        its blocks instead of each computing the text added since its last generation."""
        if ctx.held is not None and len(ctx.held.context_ids()) >= len(ctx.ids) - 1:
            return  # at most the last token is left: each fork computes it anyway
        stream = self._submit(ctx, SamplingParams(max_new_tokens=1), prefill_only=True)
        req = stream.result()
        if req.finish_reason in ("error", "abort"):
            raise PrimeError(f"prefill failed: {req.error or req.finish_reason}")
        old, ctx.held = ctx.held, req
        self._ref(req, +1)
        if old is not None:
            self._ref(old, -1)

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
        adapter: bool = False,
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
            adapter: decode with the LLM's call-scoped adapter (`LLM.adapted`, when one is loaded) from the
                context's last token on; the context before it stays the base model's.

        Returns:
            The ids and text generated, and why it stopped.
        """
        if max_tokens <= 0:
            return Generated([], "", "length")
        constraint = None
        if schema is not None:
            try:
                constraint = GrammarConstraint.json_schema(self.tokenizer, schema, self.vocab_size)
            except GenerationError as e:
                raise PrimeError(f"the tool schema cannot be compiled for structured decoding: {e}") from None
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, seed=seed, stop=tuple(stop),
                                repetition_penalty=1.0 if schema is not None else repetition_penalty,
                                skip_special_tokens=False)
        adapter_from = len(ctx.ids) - 1 if adapter and self.has_adapter else None
        stream = self._submit(ctx, params, constraint, adapter_from=adapter_from)
        for out in stream:
            if on_text is not None and out.text:
                on_text(out.text)
        return self._adopt(ctx, stream.request)

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
        """Decode several contexts together: one request each, decoded by the engine in the same steps.
        Context i samples with seed + i (each request has its own generator: the same seed would make
        forks of one context draw the same tokens)."""
        if max_tokens <= 0:
            return [Generated([], "", "length") for _ in contexts]
        streams = [self._submit(c, SamplingParams(max_new_tokens=max_tokens, temperature=temperature, seed=seed + i,
                                                  stop=tuple(stop), repetition_penalty=repetition_penalty,
                                                  skip_special_tokens=False))
                   for i, c in enumerate(contexts)]
        return [self._adopt(c, s.result()) for c, s in zip(contexts, streams)]
