"""The tool registry the model calls, and extraction of `<tool>{...}</tool>` spans from generated text.

A call is `{"tool": NAME, "args": {...}}`; its answer is `{"success": true, "result": ...}` or
`{"success": false, "error": "..."}`. Arguments come from a model, so they are untrusted: they must be
plain JSON (no NaN or Infinity, no number beyond 1e100 in magnitude, bounded depth and size) and match
the tool's JSON schema exactly (unknown keys, wrong types and absurd sizes are refused with a message
naming the argument). Every schema bounds every integer it accepts (`register` refuses one that does
not), so no argument reaches a tool as 10^4000 or 1e308. Nothing a tool does raises into the caller, and each call has a time limit
that stops the work, not only the wait: a tool runs in a forked child, memory-capped, that computes the
result *and serializes it* and is killed at the limit (`havoc.tools._isolate`); tools marked
`isolated` fork per operation on their own (symbolic maths); tools marked `in_process` (retrieval, whose
caches live in this process) run in a worker thread the caller stops waiting for, bounded by their
schemas. A result whose interpretation states a figure that is not a number (NaN, infinity) is refused
rather than returned: an undefined question gets an error, never a confident answer.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havoc.errors import ToolError
from havoc.tools._common import jsonable
from havoc.tools.aliases import spec_tool_names, translate

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 3600.0
MAX_ARG_BYTES = 2_000_000
MAX_RESULT_BYTES = 8_000_000
MAX_DEPTH = 16
# Every number in a call's arguments, whatever its schema says: beyond 1e100 no measurement exists, and
# squares and products of such values still fit a float64 (1e308 overflowed into OverflowError and inf).
MAX_MAGNITUDE = 1e100
MAX_CALL_CHARS = 2_000_000


@dataclass
class ToolContext:
    """What a tool may use besides its arguments: where plots go."""

    plot_dir: Path
    plot_path: Path | None = None  # a caller-chosen file (CLI --plot); None = a fresh name in plot_dir

    def plot_target(self, stem: str, fmt: str) -> Path:
        """The file a plot should be written to."""
        if self.plot_path is not None:
            return self.plot_path
        self.plot_dir.mkdir(parents=True, exist_ok=True)
        return self.plot_dir / f"{stem}-{uuid.uuid4().hex[:8]}.{fmt}"


@dataclass
class ToolSpec:
    """One registered tool.

    Attributes:
        name: what the model calls it.
        description: one paragraph for the model's prompt.
        fn: fn(args: dict, ctx: ToolContext) -> dict.
        schema: JSON schema of args; with `discriminator`, a dict {value: schema} per operation.
        discriminator: the args key that selects the schema (e.g. "operation").
        timeout: seconds, or None for the registry's default.
        isolated: the tool forks a killable child per operation itself (it enforces the limit).
        in_process: run in a thread of this process (the limit stops the wait, not the work): for tools
            whose caches must outlive a call and whose cost the schema bounds.
        preload: run once in this process before the first forked call (imports the tool's modules, so
            each child does not import them again).
        examples: example calls {"tool", "args"} shown by `describe` (never part of the schema a model sees).
        summarize: summarize(operation, result, args) -> the one or two sentences an answer built from this
            tool's result shows (None: the result's "interpretation").
    """

    name: str
    description: str
    fn: Callable[[dict, ToolContext], Any]
    schema: dict
    discriminator: str | None = None
    default_variant: Callable[[dict], str | None] | None = None
    timeout: float | None = None
    isolated: bool = False
    in_process: bool = False
    preload: Callable[[], None] | None = None
    examples: list[dict] = field(default_factory=list)
    summarize: Callable[[str | None, dict, dict | None], str] | None = None
    _validators: dict = field(default_factory=dict, repr=False)

    def parameters(self) -> dict:
        """The JSON schema a model sees (one branch per operation for discriminated tools)."""
        if self.discriminator is None:
            return self.schema
        return {"oneOf": list(self.schema.values())}


def _check_plain_json(value: Any, path: str = "args", depth: int = 0) -> None:
    """Refuse anything JSON cannot say: NaN, Infinity, non-string keys, odd types, deep nesting."""
    if depth > MAX_DEPTH:
        raise ToolError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError(f"{path}: NaN and Infinity are not JSON numbers")
        if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # compares big ints exactly, without float()
            raise ToolError(f"{path}: numbers must be in [-1e100, 1e100], got an integer of {int(value.bit_length() * 0.30103) + 1} digits"
                            if isinstance(value, int) else f"{path}: numbers must be in [-1e100, 1e100], got {value:.6g}")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ToolError(f"{path}: object keys must be strings")
            _check_plain_json(v, f"{path}.{k}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain_json(v, f"{path}[{i}]", depth + 1)
        return
    raise ToolError(f"{path}: {type(value).__name__} is not a JSON value")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def loads_strict(text: str) -> Any:
    """json.loads that refuses NaN, Infinity, duplicate keys (Python's own accepts all three) and nesting
    too deep for the parser, all as ValueError (never RecursionError)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def unbounded_numbers(schema: Any, path: str = "") -> list[str]:
    """Where a JSON schema accepts an integer without both a lower and an upper bound.

    `enum` and `const` bound themselves. Used by `register`: integers size loops and allocations (a
    count of 10^99 is within the registry's magnitude bound for all numbers, and must be refused by
    name, not met as an OverflowError or a hang).
    """
    out: list[str] = []
    if isinstance(schema, dict):
        types = schema.get("type")
        types = types if isinstance(types, list) else [types]
        if "integer" in types and "enum" not in schema and "const" not in schema:
            low = "minimum" in schema or "exclusiveMinimum" in schema
            high = "maximum" in schema or "exclusiveMaximum" in schema
            if not (low and high):
                out.append(path or "(root)")
        for k, v in schema.items():
            if k in ("enum", "const", "default", "examples"):
                continue
            out += unbounded_numbers(v, f"{path}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            out += unbounded_numbers(v, f"{path}/{i}")
    return out


def check_timeout(timeout: Any, what: str = "timeout") -> float:
    """A time limit as a float in (0, MAX_TIMEOUT], or a ToolError naming `what` and the range."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout <= MAX_TIMEOUT):
        shown = repr(timeout) if isinstance(timeout, (int, float)) else type(timeout).__name__
        raise ToolError(f"{what} must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {shown:.40}")
    return float(timeout)


def _error_path(err) -> str:
    out = "args"
    for p in err.absolute_path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _schema_message(err) -> str:
    """One short line naming the argument and what is allowed; never the offending value itself, which
    may be kilobytes long (jsonschema's own messages repr the whole instance)."""
    v, sch, where = err.validator, err.schema, _error_path(err)
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(sch.get("properties", {})))
        shown = ", ".join(repr(k[:40]) for k in extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return f"{where}: unknown key{'s' if len(extra) > 1 else ''} {shown}"
    if v == "required":
        return f"{where}: {err.message}"
    if v in ("maxItems", "maxLength", "maxProperties"):
        unit = {"Items": "items", "Length": "characters", "Properties": "keys"}[v[3:]]
        return f"{where}: too large ({len(err.instance)} {unit}; at most {err.validator_value} allowed)"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        lo = sch.get("minimum", sch.get("exclusiveMinimum"))
        hi = sch.get("maximum", sch.get("exclusiveMaximum"))
        left = "[" if "minimum" in sch else "("
        right = "]" if "maximum" in sch else ")"
        rng = f"{left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{right}"
        return f"{where}: must be in {rng}, got {float(err.instance):.6g}"
    if v == "type":
        want = sch.get("type")
        want = ", ".join(map(repr, want)) if isinstance(want, list) else repr(want)
        return f"{where}: is not of type {want} (got {_json_type(err.instance)})"
    if v in ("enum", "const"):
        allowed = sch.get("enum", [sch.get("const")])
        shown = ", ".join(map(repr, allowed[:12])) + (" ..." if len(allowed) > 12 else "")
        return f"{where}: must be one of {shown}"
    if v == "oneOf":
        return f"{where}: does not match any accepted form"
    return f"{where}: {err.message[:200]}"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, (list, tuple)) else "object"


class ToolRegistry:
    """Named tools with JSON-schema-validated arguments; `execute` never raises.

    Args:
        timeout: default seconds per call.
        plot_dir: where plots requested by a model are written (default: a per-process temp folder).
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, plot_dir: str | os.PathLike | None = None):
        self.timeout = check_timeout(timeout, "the registry's timeout")
        self.plot_dir = Path(plot_dir) if plot_dir else Path(tempfile.gettempdir()) / f"havoc-plots-{os.getpid()}"
        self._tools: dict[str, ToolSpec] = {}

    # ------------------------------------------------------------------------------------ registration
    def register(self, spec: ToolSpec) -> None:
        """Add a tool; its schema(s) are checked to be valid JSON Schema now, not at the first call."""
        from jsonschema import Draft202012Validator

        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", spec.name):
            raise ValueError(f"tool name {spec.name!r} must be lower_snake_case")
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} is already registered")
        schemas = spec.schema if spec.discriminator else {None: spec.schema}
        for key, schema in schemas.items():
            Draft202012Validator.check_schema(schema)
            loose = unbounded_numbers(schema)
            if loose:
                raise ValueError(f"tool {spec.name!r}{f' {key}' if key else ''}: integers without a minimum and a "
                                 f"maximum at {', '.join(loose[:5])}")
            spec._validators[key] = Draft202012Validator(schema)
        self._tools[spec.name] = spec

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def arguments_schema(self, name: str, variant: str | None = None) -> dict:
        """The JSON schema of a tool's arguments; for a discriminated tool, that of one `variant` (operation).

        Raises:
            ToolError: an unknown tool or variant.
        """
        spec = self._tools.get(name)
        if spec is None:
            raise ToolError(f"unknown tool {name!r}; known tools: {', '.join(self.names())}")
        if spec.discriminator is None:
            return spec.schema
        if variant not in spec.schema:
            raise ToolError(f"tool {name!r} has no {spec.discriminator} {variant!r}; choose one of {', '.join(sorted(spec.schema))}")
        return spec.schema[variant]

    def summarize(self, name: str, operation: str | None, result: dict, args: dict | None = None) -> str:
        """The answer line of a result of tool `name` (its `ToolSpec.summarize`, else its interpretation)."""
        from havoc.tools.summaries import interpretation

        spec = self._tools.get(name)
        return ((spec.summarize if spec is not None and spec.summarize else None) or interpretation)(operation, result, args)

    def describe(self) -> list[dict]:
        """[{"name", "description", "parameters", "examples"}] for every tool (`havoc tool --list`)."""
        return [{"name": s.name, "description": s.description, "parameters": s.parameters(),
                 **({"examples": s.examples} if s.examples else {})}
                for s in sorted(self._tools.values(), key=lambda s: s.name)]

    # --------------------------------------------------------------------------------------- execution
    def execute(self, name: Any, args: Any = None, *, timeout: float | None = None,
                plot_path: str | os.PathLike | None = None) -> dict:
        """Run one tool call.

        Args:
            name: the tool's name.
            args: its arguments (a dict, or a JSON object as text).
            timeout: seconds for this call (default: the tool's, else the registry's).
            plot_path: write a requested plot exactly here (trusted callers: the CLI's --plot).

        Returns:
            {"success": True, "result": {...}} or {"success": False, "error": "one line"}.
        """
        try:
            alias = isinstance(name, str) and name not in self._tools and name in spec_tool_names()
            if not alias and (not isinstance(name, str) or name not in self._tools):
                known = ", ".join(self.names())
                return _fail(f"unknown tool {name!r:.80}; known tools: {known}")
            if args is None:
                args = {}
            if isinstance(args, (str, bytes)):
                if len(args) > MAX_ARG_BYTES:
                    return _fail(f"arguments are larger than {MAX_ARG_BYTES} bytes")
                try:
                    args = loads_strict(args)
                except (ValueError, RecursionError) as e:
                    return _fail(f"arguments are not valid JSON: {e}")
            if not isinstance(args, Mapping):
                return _fail("args must be a JSON object")
            if alias:  # the spec's name for a havoc tool (havoc/tools/aliases.py)
                spec_name, (name, args) = name, translate(name, args)
                if name not in self._tools:
                    return _fail(f"{spec_name} maps onto tool {name!r}, which this registry does not have")
            spec = self._tools[name]
            _check_plain_json(args)
            if len(json.dumps(args)) > MAX_ARG_BYTES:
                return _fail(f"arguments are larger than {MAX_ARG_BYTES} bytes")
            args = dict(args)
            validator = self._validator(spec, args)
            errors = sorted(validator.iter_errors(args), key=lambda e: (len(e.absolute_path), str(e.validator)))
            if errors:
                return _fail(_schema_message(errors[0]))
            limit = check_timeout(timeout if timeout is not None else (spec.timeout or self.timeout))
            ctx = ToolContext(self.plot_dir, Path(plot_path) if plot_path else None)
            return {"success": True, "result": self._run(spec, args, ctx, limit)}
        except ToolError as e:
            return _fail(str(e))
        except RecursionError:
            return _fail("the input is nested too deeply")
        except MemoryError:
            return _fail("the call ran out of memory")
        except Exception as e:  # noqa: BLE001 - the contract is that nothing escapes
            return _fail(f"internal error in tool {name!r}: {type(e).__name__}: {e}")

    def execute_call(self, call: Any, **kwargs: Any) -> dict:
        """Run `{"tool": NAME, "args": {...}}` (a dict or its JSON text); see `execute`."""
        try:
            if isinstance(call, (str, bytes)):
                call = loads_strict(call)
        except (ValueError, RecursionError) as e:
            return _fail(f"the call is not valid JSON: {e}")
        if not isinstance(call, Mapping) or "tool" not in call:
            return _fail('a call is a JSON object {"tool": NAME, "args": {...}}')
        extra = set(call) - {"tool", "args"}
        if extra:
            return _fail(f"unknown key{'s' if len(extra) > 1 else ''} in the call: {', '.join(sorted(map(repr, extra)))}")
        return self.execute(call["tool"], call.get("args", {}), **kwargs)

    def run_text(self, text: str, **kwargs: Any) -> list[dict]:
        """Execute every `<tool>` span in generated text, in order.

        Returns:
            [{"call": {"tool", "args"} or None, "span": [start, end], "response": envelope}].
        """
        out = []
        for call in extract_tool_calls(text):
            if call.error:
                out.append({"call": None, "span": [call.start, call.end], "response": _fail(call.error)})
            else:
                out.append({"call": {"tool": call.tool, "args": call.args}, "span": [call.start, call.end],
                            "response": self.execute(call.tool, call.args, **kwargs)})
        return out

    def _validator(self, spec: ToolSpec, args: dict):
        if spec.discriminator is None:
            return spec._validators[None]
        key = args.get(spec.discriminator)
        if key is None and spec.default_variant is not None:
            key = spec.default_variant(args)
        if not isinstance(key, str) or key not in spec._validators:
            options = ", ".join(sorted(spec._validators))
            raise ToolError(f"args.{spec.discriminator} must be one of: {options}")
        return spec._validators[key]

    def _run(self, spec: ToolSpec, args: dict, ctx: ToolContext, limit: float) -> Any:
        """The tool's checked, JSON-ready result, computed (and serialized) within `limit` seconds."""
        from havoc.tools import _isolate

        if spec.isolated:  # the tool forks and kills per operation on its own
            return _finish(spec.fn({**args, "_timeout": limit}, ctx))
        if not spec.in_process and _isolate.fork_available():
            if spec.preload is not None:
                spec.preload()
                spec.preload = None
            # The work and the serialization of its result both happen in the child, so both stop at
            # the limit; the parent only parses the text that comes back.
            text = _isolate.run_isolated(_serialized, {"fn": spec.fn, "args": args, "ctx": ctx}, limit,
                                         what=f"tool {spec.name!r}")
            return json.loads(text)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = _finish(spec.fn(args, ctx))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
                box["error"] = e

        # A daemon thread: if it overruns, the caller gets its answer at the limit and the thread may
        # finish in the background; only tools whose schemas bound their cost run this way.
        t = threading.Thread(target=work, name=f"havoc-tool-{spec.name}", daemon=True)
        t.start()
        t.join(limit)
        if t.is_alive():
            raise ToolError(f"tool {spec.name!r} did not finish within {limit:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]


_NONFINITE_WORD = re.compile(r"(?<![A-Za-z])-?(nan|inf)(?![A-Za-z])")


def _nonfinite(value: Any, path: str = "result") -> str | None:
    """The path of the first NaN or infinity in a raw result, or None."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _nonfinite(v, f"{path}.{k}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _nonfinite(v, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, (float, int)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return path
    elif hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays
        return _nonfinite(value.tolist(), path)
    return None


def _interpretations(value: Any):
    """Every `interpretation` string in a result (where a tool words its conclusion), at any depth."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k == "interpretation" and isinstance(v, str):
                yield v
            else:
                yield from _interpretations(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _interpretations(v)


def _finish(result: Any) -> Any:
    """A tool's raw result made JSON-ready and checked: not too large, and never a conclusion drawn from a
    figure that is not a number. A NaN or infinity may travel as null when the result says in words why
    it is undefined; a result whose interpretation *shows* one ("chi² = nan", "sd inf") drew a conclusion
    from it, and is refused. (Only interpretations are read: a retrieved passage may say "inf" of a set.)"""
    if any(_NONFINITE_WORD.search(t) for t in _interpretations(result)):
        bad = _nonfinite(result)
        what = f"{bad.removeprefix('result.')} is" if bad else "a figure it states is"
        raise ToolError(f"the answer is undefined for this input: {what} not a finite number (the data are "
                        "degenerate, or too large in magnitude to compute with)")
    result = jsonable(result)
    size = len(json.dumps(result, allow_nan=False))
    if size > MAX_RESULT_BYTES:
        raise ToolError(f"the result is too large to return ({size} bytes, at most {MAX_RESULT_BYTES}); ask for less")
    return result


def _serialized(fn: Callable[[dict, ToolContext], Any], args: dict, ctx: ToolContext) -> str:
    """In the forked child: the tool's finished result as JSON text (what travels back to the parent)."""
    return json.dumps(_finish(fn(args, ctx)), allow_nan=False)


MAX_ERROR_CHARS = 500


def _fail(message: str) -> dict:
    line = " ".join(str(message)[: 4 * MAX_ERROR_CHARS].split())  # one line, whatever the exception said
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return {"success": False, "error": line}


# ------------------------------------------------------------------------------------------ extraction

_OPEN = re.compile(r"<\s*tool\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*tool\s*>", re.IGNORECASE)


@dataclass
class ToolCall:
    """One `<tool>...</tool>` span: the parsed call, or why it could not be parsed."""

    start: int
    end: int
    tool: str | None = None
    args: dict | None = None
    error: str | None = None
    complete: bool = True


def extract_tool_calls(text: str) -> list[ToolCall]:
    """Find `<tool>{"tool": NAME, "args": {...}}</tool>` spans in generated text.

    Tolerant of whitespace (inside the tags and around the JSON); strict about the JSON: exactly one
    object, no trailing text, no NaN, no duplicate keys, only the keys "tool" and "args". A span that
    cannot be used comes back with `error` set rather than being skipped, so the model can be told. An
    unclosed `<tool>` at the end is reported with complete=False (generation may still be running).

    Args:
        text: generated text.

    Returns:
        ToolCall per span, in order.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    # Every tag is found once, in one pass each, and the spans are read off the two sorted lists: a text of
    # n nested `<tool>` tags costs O(n), not the O(n^2) of searching again from each tag.
    opens = list(_OPEN.finditer(text))
    closes = [m for m in _CLOSE.finditer(text)]
    calls = []
    i = j = 0
    while i < len(opens):
        m = opens[i]
        while j < len(closes) and closes[j].start() < m.end():
            j += 1
        if j == len(closes):
            calls.append(ToolCall(m.start(), len(text), error="unclosed <tool> tag", complete=False))
            break
        close = closes[j]
        if i + 1 < len(opens) and opens[i + 1].start() < close.start():
            calls.append(ToolCall(m.start(), opens[i + 1].start(), error="<tool> opened again before </tool>"))
            i += 1
            continue
        body = text[m.end():close.start()].strip()
        calls.append(_parse_call(body, m.start(), close.end()))
        while i < len(opens) and opens[i].start() < close.end():
            i += 1
    return calls


def _parse_call(body: str, start: int, end: int) -> ToolCall:
    if not body:
        return ToolCall(start, end, error="empty <tool> span")
    if len(body) > MAX_CALL_CHARS:
        return ToolCall(start, end, error=f"tool call longer than {MAX_CALL_CHARS} characters")
    try:
        obj = loads_strict(body)
    except (ValueError, RecursionError) as e:
        return ToolCall(start, end, error=f"tool call is not valid JSON: {e}")
    if not isinstance(obj, dict):
        return ToolCall(start, end, error='a tool call is a JSON object {"tool": NAME, "args": {...}}')
    extra = set(obj) - {"tool", "args"}
    if extra:
        return ToolCall(start, end, error=f"unknown key{'s' if len(extra) > 1 else ''} in the tool call: "
                                          f"{', '.join(sorted(map(repr, extra)))}")
    name = obj.get("tool")
    if not isinstance(name, str) or not name:
        return ToolCall(start, end, error='the tool call needs "tool": a tool name')
    args = obj.get("args", {})
    if not isinstance(args, dict):
        return ToolCall(start, end, tool=name, error='"args" must be a JSON object')
    return ToolCall(start, end, tool=name, args=args)
