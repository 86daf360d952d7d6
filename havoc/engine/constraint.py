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
from decimal import Decimal
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
        (a small model would otherwise spend its budget on it). Arrays marked with `COPY` (see
        `copy_lark`) are decoded as runs of their sequences; such a schema must be compact."""
        import llguidance

        key = "json:" + json.dumps(schema, sort_keys=True) + f":{compact}"
        with self._lock:
            grammar = self._grammars.get(key)
        if grammar is None:
            try:
                if _has_copy(schema):
                    if not compact:
                        raise ConstraintError("a schema with copied arrays is decoded compact only")
                    grammar = llguidance.LLMatcher.grammar_from_lark(copy_lark(schema))
                else:
                    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
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


# `lenient` skips keywords the compiler does not implement (propertyNames, ...); a caller that needs them
# enforced validates the result afterwards (the tool registry does).
_JSON_OPTIONS = {"whitespace_flexible": False, "coerce_one_of": True, "lenient": True}

# The mark of an array decoded as a copy: {COPY: [sequence, ...], "minItems": m} is any run of m or more
# consecutive values of one of the sequences, in their order; with COPY_FROM_START true, a run from a
# sequence's first value (a prefix) (`copy_lark`).
COPY = "x-havoc-copy"
COPY_FROM_START = "x-havoc-copy-from-start"
# With COPY_FROM_START: per sequence, the lengths at which the copy may close (any length when absent).
COPY_ENDS = "x-havoc-copy-ends"
# With COPY_FROM_START and COPY_ONCE true: an array of such copies (groups, subgroups) takes the sequences
# in their order, each at most once, while there are at most MAX_DISTINCT of them.
COPY_ONCE = "x-havoc-copy-once"
MAX_DISTINCT = 16


def _has_copy(node: Any) -> bool:
    if isinstance(node, dict):
        return COPY in node or any(_has_copy(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_copy(v) for v in node)
    return False


def copy_lark(schema: dict) -> str:
    """A compact JSON schema whose arrays marked `COPY` are copies, as an llguidance Lark grammar.

    A marked array is any run of consecutive values of one of its sequences, at least its `minItems` long
    (with `COPY_FROM_START`, one starting at a sequence's first value): once the first value is chosen,
    each next one is the sequence's next value or the array closes (with `COPY_ENDS`, closes only at the
    lengths it lists for the sequence, and at its end; with `COPY_ONCE`, an array of such copies takes
    the sequences in their order, each at most once, and sibling properties so marked, such as x and y,
    take different sequences). That
    is the shape of a tool call's data list, which copies a list of the prompt in order; one rule per value
    (`s3_7: "10.4" ("," s3_8)?`), so the grammar grows with the prompt, not with its square.

    Everything without a mark inside is embedded as llguidance's own JSON schema (`%json`); objects, arrays
    and alternatives that hold a mark are written out: properties in the schema's order (llguidance's JSON
    order), the required ones mandatory; arrays with their minItems and maxItems (up to 64; beyond, no
    bound); free keys (`additionalProperties`) as strings of up to 64 characters. Whitespace is not
    allowed anywhere (compact).
    """
    rules: list[str] = []
    seqs: dict[tuple[tuple, tuple | None], str] = {}

    def lit(text: str) -> str:
        return json.dumps(text)

    def number(v: float) -> str:
        # as llguidance writes a number of an enum: whole numbers without ".0", no exponent (1e-05 is
        # "0.00001"), so a copied list reads as the pinned numbers elsewhere in the call do
        if float(v).is_integer() and abs(v) < 2**53:
            return lit(str(int(v)))
        return lit(format(Decimal(repr(float(v))), "f"))

    def new(body: str) -> str:
        name = f"r{len(rules)}"
        rules.append(f"{name}: {body}")
        return name

    def run_rules(seq: tuple, ends: tuple | None) -> str:
        """The rules s{k}_i (a run from value i to a later end: any, or one of `ends`, lengths from the
        sequence's start) of one sequence; returns its prefix."""
        if (seq, ends) not in seqs:
            prefix = seqs[seq, ends] = f"s{len(seqs)}"
            for i, v in enumerate(seq):
                nxt = f'"," {prefix}_{i + 1}' if i + 1 < len(seq) else ""
                tail = f" {nxt}" if nxt and ends is not None and i + 1 not in ends else f" ({nxt})?" if nxt else ""
                rules.append(f"{prefix}_{i}: {number(v)}{tail}")
        return seqs[seq, ends]

    def copy_starts(node: dict) -> list[str]:
        """Per sequence that has a run of minItems values, its ways to start a copy (one body each)."""
        return [body for _, body in copy_options(node)]

    def copy_options(node: dict) -> list[tuple[tuple, str]]:
        """(sequence, its ways to start a copy) per sequence that has a run of minItems values."""
        m = max(1, int(node.get("minItems", 1)))
        out = []
        all_ends = node.get(COPY_ENDS) if node.get(COPY_FROM_START) else None
        for j, seq in enumerate(node[COPY]):
            seq = tuple(seq)
            if len(seq) < m:
                continue
            ends = None if all_ends is None else tuple(sorted({len(seq), *all_ends[j]}))
            prefix = run_rules(seq, ends)
            starts = []
            for i in range(1 if node.get(COPY_FROM_START) else len(seq) - m + 1):
                head = "".join(f'{number(seq[k])} "," ' for k in range(i, i + m - 1))
                starts.append(f"{head}{prefix}_{i + m - 1}")
            out.append((seq, " | ".join(starts)))
        if not out:
            raise ConstraintError(f"a copied array has no run of {m} values to copy")
        return out

    def copy(node: dict) -> str:
        return new(f'"[" ({" | ".join(copy_starts(node))}) "]"')

    def distinct(items: dict, lo: int, hi: int | None) -> str | None:
        """An array of copies from a list's start that takes the sequences in their order, each at most once
        (groups and subgroups: a list given twice, or out of the prompt's order, is never what the check
        accepts), lo to hi of them; None where they are more than MAX_DISTINCT."""
        options = copy_starts(items)
        k = len(options)
        if k > MAX_DISTINCT:
            return None
        hi = k if hi is None else min(hi, k)
        if hi < max(lo, 1):  # fewer lists than the array needs: the plain repeat (and its error) stands
            return None
        names: dict[tuple[int, int], str] = {}

        def after(last: int, count: int) -> str:
            """What may follow once `count` copies were made, the last from sequence `last` ("": nothing)."""
            if (last, count) not in names:
                alts = [f'"," "[" ({options[i]}) "]" {after(i, count + 1)}'.rstrip()
                        for i in range(last + 1, k) if k - i >= lo - count] if count < hi else []
                if not alts:
                    names[last, count] = ""
                else:
                    body = " | ".join(alts)
                    names[last, count] = new(body if count < lo else f"({body})?")
            return names[last, count]

        # a first copy (and each next) only from where enough sequences are left to reach lo
        firsts = [f'"[" ({options[i]}) "]" {after(i, 1)}'.rstrip() for i in range(k) if k - i >= lo]
        body = f'"[" ({" | ".join(firsts)}) "]"'
        return new(body if lo >= 1 else f'{body} | "[" "]"')

    def conv(node: Any) -> str:
        if not _has_copy(node):
            return new(f"%json {json.dumps({**node, 'x-guidance': _JSON_OPTIONS})}")
        if COPY in node:
            return copy(node)
        for key in ("anyOf", "oneOf"):
            if key in node:
                return new(" | ".join(conv(sub) for sub in node[key]))
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            items, lo, hi = node["items"], int(node.get("minItems", 0)), node.get("maxItems")
            if COPY in items and items.get(COPY_FROM_START) and items.get(COPY_ONCE):
                rule = distinct(items, lo, hi)
                if rule is not None:
                    return rule
            return new(repeat(conv(items), lo, hi))
        if node.get("type") == "object" and node.get("properties"):
            return obj(node)
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            key = conv({"type": "string", "maxLength": 64})
            pair = new(f'{key} ":" {conv(node["additionalProperties"])}')
            body = f'"{{" {pair} ("," {pair})* "}}"'
            return new(body if node.get("minProperties", 0) >= 1 else f'{body} | "{{}}"')
        raise ConstraintError(f"a copied array sits where it cannot be compiled: {json.dumps(node)[:120]}")

    def repeat(item: str, lo: int, hi: int | None) -> str:
        """An array of `item`s, lo to hi of them (hi None or large: no bound)."""
        lo = max(lo, 0)
        if hi is not None and hi < max(lo, 1):
            return '"[" "]"' if hi == 0 else f'"[" {item} "]"'
        head = ' "," '.join([item] * max(lo, 1))
        if hi is None or hi > 64:
            tail = f' ("," {item})*'
        else:
            tail = ""
            for _ in range(hi - max(lo, 1)):
                tail = f' ("," {item}{tail})?'
        body = f'"[" {head}{tail} "]"'
        return body if lo >= 1 else f'{body} | "[" "]"'

    def obj(node: dict) -> str:
        names = list(node["properties"])
        required = set(node.get("required", ()))
        props = [node["properties"][n] for n in names]
        # sibling data lists (x and y) copied once each: each takes a list none before it took
        once = [isinstance(p, dict) and COPY in p and bool(p.get(COPY_FROM_START)) and bool(p.get(COPY_ONCE))
                for p in props]
        values = [None if once[m] else conv(p) for m, p in enumerate(props)]
        options = [copy_options(p) if once[m] else [] for m, p in enumerate(props)]
        after: dict[tuple[int, frozenset], str | None] = {}

        def rest(j: int, first: bool, used: frozenset) -> tuple[list[str], bool]:
            """The ways on from property j, the lists in `used` taken: (alternatives, may the object close)."""
            alts = []
            for m in range(j, len(names)):
                comma = "" if first else '"," '
                key = lit(json.dumps(names[m]) + ":")
                if once[m]:
                    for seq, body in options[m]:
                        if seq not in used:
                            tail = follow(m + 1, used | {seq})
                            alts.append(f'{comma}{key} "[" ({body}) "]"' + (f" {tail}" if tail else ""))
                else:
                    tail = follow(m + 1, used)
                    alts.append(f"{comma}{key} {values[m]}" + (f" {tail}" if tail else ""))
                if names[m] in required:
                    return alts, False
            return alts, True

        def follow(j: int, used: frozenset) -> str | None:
            if (j, used) not in after:
                alts, may_close = rest(j, False, used)
                if not alts:
                    after[j, used] = None
                else:
                    body = " | ".join(f"({a})" for a in alts)
                    after[j, used] = new(f"({body})?" if may_close else body)
            return after[j, used]

        alts, may_close = rest(0, True, frozenset())
        inner = " | ".join(f"({a})" for a in alts)
        if may_close:
            inner = f"({inner})?" if alts else ""
        return new(f'"{{" {inner} "}}"' if inner else '"{" "}"')

    top = conv(schema)
    return "\n".join([f"start: {top}", *rules])


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
