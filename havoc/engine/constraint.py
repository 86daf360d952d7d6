"""Per-request constraints on what a request may generate: grammar masks as the engine's logits hook.

A `Constraint` is asked, each time its request is about to get a token, for tokens it forces (a grammar's
fixed stretches, such as a schema's keys: appended without sampling and computed as one chunk), then masks
the logits, then is told the token chosen. The engine calls:

    forced()          -> list[int]   tokens that must come next (empty: sample)
    accept_forced(tokens)            those tokens appended
    mask(logits)                     set the logits of disallowed tokens to -inf, in place ((V,) fp32)
    accept(token_id)                 the token appended (sampled); raises ConstraintError if refused
    done()            -> bool        the constrained output is complete: the request stops ("stop")

and, to take part in speculative decoding (optional):

    validate_draft(draft) -> int     how many leading draft tokens the grammar allows
    mask_draft(rows, draft)          mask verification row i as the grammar stands after draft[:i]

Implementations:

- `GrammarConstraint`: a whole output under one llguidance grammar (a JSON schema, Lark, a regex):
  `response_format` of the server and PRIME's tool calls. llguidance (Microsoft's low-level guidance, the
  engine behind vLLM's, SGLang's and llama.cpp's structured outputs) parses bytes with an Earley parser
  and computes the mask of tokens that keep the output a valid prefix, over the model's own tokenizer.
- `ToolCallConstraint`: free text, where every `<tool>…</tool>` span the model opens is decoded under
  the union of the callable functions' schemas (a lazy grammar: llama.cpp's trigger words do the same).
  With `required=True` the output is one call and nothing else.

`LLGuidance.for_tokenizer(tok)` builds llguidance's tokenizer view once per tokenizer and caches compiled
grammars.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any, Protocol

import torch

from havoc.errors import GenerationError


class ConstraintError(GenerationError):
    """A constraint refused a token, or its grammar cannot be compiled."""


class Constraint(Protocol):
    def forced(self) -> list[int]: ...

    def mask(self, logits: torch.Tensor) -> None: ...

    def accept(self, token_id: int) -> None: ...

    def done(self) -> bool: ...


class LLGuidance:
    """llguidance's view of one tokenizer, and the grammars compiled for it (thread-safe)."""

    _instances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, tokenizer, vocab_size: int) -> None:
        import llguidance

        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.lltok = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size,
                                            eos_token=sorted(tokenizer.stop_ids))
        self._grammars: dict[str, str] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer, vocab_size: int | None = None) -> LLGuidance:
        vocab_size = vocab_size or tokenizer.vocab_size
        with cls._lock:
            inst = cls._instances.get(tokenizer)
            if inst is None or inst.vocab_size != vocab_size:
                inst = cls._instances[tokenizer] = cls(tokenizer, vocab_size)
            return inst

    def json_grammar(self, schema: Any, *, compact: bool = True) -> str:
        """The llguidance grammar of a JSON schema (cached). `compact`: no free whitespace between tokens
        (a small model would otherwise spend its budget on it)."""
        import llguidance

        key = "json:" + json.dumps(schema, sort_keys=True) + f":{compact}"
        with self._lock:
            grammar = self._grammars.get(key)
        if grammar is None:
            try:
                # `lenient` skips keywords the compiler does not implement (propertyNames, ...); a caller
                # that needs them enforced validates the result afterwards (the tool registry does).
                grammar = llguidance.LLMatcher.grammar_from_json_schema(
                    schema, defaults={"whitespace_flexible": not compact, "coerce_one_of": True, "lenient": True})
            except (ValueError, TypeError, RuntimeError) as e:
                raise ConstraintError(f"the JSON schema cannot be compiled: {e}") from None
            self._check(grammar, "the JSON schema")
            with self._lock:
                self._grammars[key] = grammar
        return grammar

    def _check(self, grammar: str, what: str) -> None:
        import llguidance

        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.lltok)
        if is_error:
            raise ConstraintError(f"{what} cannot be compiled for structured decoding: {messages[0] if messages else '?'}")

    def matcher(self, grammar: str):
        import llguidance

        m = llguidance.LLMatcher(self.lltok, grammar, log_level=0)
        if m.is_error():
            raise ConstraintError(f"structured decoding cannot start: {m.get_error()}")
        return m


def _apply_bitmask(matcher, logits: torch.Tensor, vocab_size: int) -> None:
    import llguidance.torch as lt

    bitmask = lt.allocate_token_bitmask(1, vocab_size)
    lt.fill_next_token_bitmask(matcher, bitmask, 0)
    # the bitmask's row covers ceil(V / 32) words; the logits may be shorter than the tokenizer's table
    lt.apply_token_bitmask_inplace(logits.view(1, -1), bitmask)


class GrammarConstraint:
    """The whole output under one llguidance grammar (`LLGuidance.json_grammar(schema)` for a JSON schema).

    The output ends ("stop") when the grammar is complete; an end-of-sequence token is allowed only where
    the grammar accepts (llguidance's mask includes it only there).
    """

    def __init__(self, llg: LLGuidance, grammar: str) -> None:
        self.llg = llg
        self.matcher = llg.matcher(grammar)
        self.forced_count = 0

    @classmethod
    def json_schema(cls, tokenizer, schema: Any, vocab_size: int | None = None, *, compact: bool = True) -> GrammarConstraint:
        llg = LLGuidance.for_tokenizer(tokenizer, vocab_size)
        return cls(llg, llg.json_grammar(schema, compact=compact))

    def forced(self) -> list[int]:
        return list(self.matcher.compute_ff_tokens())

    def mask(self, logits: torch.Tensor) -> None:
        _apply_bitmask(self.matcher, logits, self.llg.vocab_size)

    def accept(self, token_id: int) -> None:
        if token_id in self.llg.tokenizer.stop_ids and self.matcher.is_accepting():
            return
        if not self.matcher.consume_token(token_id):
            raise ConstraintError(f"structured decoding refused token {token_id}: {self.matcher.get_error()}")

    def accept_forced(self, tokens: list[int]) -> None:
        if not self.matcher.consume_tokens(tokens):
            raise ConstraintError(f"structured decoding refused forced tokens: {self.matcher.get_error()}")
        self.forced_count += len(tokens)

    def done(self) -> bool:
        return self.matcher.is_stopped()

    def validate_draft(self, draft: list[int]) -> int:
        """How many leading tokens of a speculative draft the grammar accepts from here."""
        return self.matcher.validate_tokens(draft)

    def mask_draft(self, rows: torch.Tensor, draft: list[int]) -> None:
        """Mask each verification row as the grammar stands after the draft's tokens before it: row i gets
        the mask after draft[:i] (the matcher steps along the draft, then rolls back)."""
        consumed = 0
        try:
            for i in range(len(draft) + 1):
                _apply_bitmask(self.matcher, rows[i], self.llg.vocab_size)
                if i < len(draft):
                    if not self.matcher.consume_token(draft[i]):
                        break
                    consumed += 1
        finally:
            if consumed:
                self.matcher.rollback(consumed)


TOOL_OPEN, TOOL_CLOSE = "<tool>", "</tool>"
_TRIGGER_WINDOW = 8  # tokens of free text kept to find "<tool>" in (a token holds at least one character)


def tool_call_schema(functions: list[dict]) -> dict:
    """The JSON schema of one `{"tool": NAME, "args": {...}}` call to any of `functions` (OpenAI's
    `{"name", "parameters"}` dicts)."""
    options = []
    for f in functions:
        params = f.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object", "properties": {"tool": {"const": f["name"]}, "args": params},
                        "required": ["tool", "args"], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}


class ToolCallConstraint:
    """Free text in which every `<tool>` the model writes opens a call decoded under `schema` (one
    `{"tool": NAME, "args": {...}}` object), closed by a forced `</tool>`.

    With `required=True` the output is exactly one call: `<tool>` is forced at once and the request stops
    after `</tool>`. The trigger is matched on the decoded text, so a `<tool>` split over several tokens
    (or followed by the JSON's first bytes in the same token) opens the call too; those bytes are fed to
    the grammar.
    """

    def __init__(self, tokenizer, schema: dict, vocab_size: int | None = None, *, required: bool = False) -> None:
        self.llg = LLGuidance.for_tokenizer(tokenizer, vocab_size)
        self.grammar = self.llg.json_grammar(schema)
        self.tokenizer = tokenizer
        self.required = required
        self.matcher = None  # inside a call: the grammar's matcher
        self.text = ""  # the decoded window of free text the trigger is looked for in
        self._ids: list[int] = []  # free mode: the last ids (the window); in a call: the closing tag's ids
        self._pending: list[int] = []  # forced tokens to hand out
        self.calls = 0
        self._finished = False
        if required:
            self._pending = self._encode(TOOL_OPEN)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_bos=False)

    def forced(self) -> list[int]:
        if self._pending:
            return list(self._pending)
        if self.matcher is not None:
            ff = list(self.matcher.compute_ff_tokens())
            if ff:
                return ff
            if self.matcher.is_stopped():  # the object is complete: close the call
                return self._encode(TOOL_CLOSE)
        return []

    def mask(self, logits: torch.Tensor) -> None:
        if self.matcher is not None:
            _apply_bitmask(self.matcher, logits, self.llg.vocab_size)
            stops = list(self.tokenizer.stop_ids)
            if stops:  # a call is closed by </tool>, never by the end of the sequence
                logits[stops] = float("-inf")

    def accept(self, token_id: int) -> None:
        self.accept_forced([token_id], sampled=True)

    def accept_forced(self, tokens: list[int], sampled: bool = False) -> None:
        if self._pending and not sampled:
            n = len(self._pending)
            self._pending = []
            self._free(tokens[:n])
            tokens = tokens[n:]
        for t in tokens:
            if self.matcher is not None:
                if self.matcher.is_stopped():  # the forced </tool>
                    self._close(t)
                elif not self.matcher.consume_token(t):
                    raise ConstraintError(f"the tool call's grammar refused token {t}: {self.matcher.get_error()}")
            else:
                self._free([t])

    def _close(self, token_id: int) -> None:
        self._ids.append(token_id)
        if self.tokenizer.decode(self._ids).endswith(TOOL_CLOSE):
            self.matcher, self._ids, self.text = None, [], ""
            self.calls += 1
            if self.required:
                self._finished = True

    def _free(self, tokens: list[int]) -> None:
        # Only the last few tokens can hold the start of a trigger (6 characters): decode a short window,
        # not all the free text so far.
        self._ids = self._ids[-_TRIGGER_WINDOW:] + tokens
        self.text = self.tokenizer.decode(self._ids)
        at = self.text.find(TOOL_OPEN)
        if at < 0:
            return
        # the trigger is complete: whatever the same tokens wrote after it is the call's first bytes
        rest = self.text[at + len(TOOL_OPEN):]
        self.matcher = self.llg.matcher(self.grammar)
        self._ids, self.text = [], ""
        if rest and not self.matcher.consume_tokens(self._encode(rest)):
            raise ConstraintError(f"the tool call starts with {rest!r}, which its grammar refuses")

    def done(self) -> bool:
        return self._finished
