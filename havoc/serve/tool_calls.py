"""Function calling in OpenAI's shape over havoc's call format.

The model calls a function by writing `<tool>{"tool": NAME, "args": {...}}</tool>` — PRIME's format, which
the spec defines — decoded under the functions' JSON schemas (`havoc.engine.ToolCallConstraint`) whenever
a call is being written. `render_tools` tells the model which functions it has; `ToolCallParser` turns the
text into content and `tool_calls`.

One parser serves both the streamed and the whole answer: the whole answer is the parser fed everything at
once. Its output does not depend on how the text is cut into pieces (the tests feed it split at every
boundary), which is what keeps a stream's deltas and the non-streamed message the same — where vLLM's and
SGLang's tool-calling bugs mostly come from. A call's `arguments` are the exact text of the `args` value;
a call cut off by the token budget keeps the arguments written so far (finish_reason "length"), as OpenAI's
API does.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

TOOL_OPEN, TOOL_CLOSE = "<tool>", "</tool>"
_HEADER = re.compile(r'\s*\{\s*"tool"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"args"\s*:\s*')


def render_tools(tools: list[dict]) -> str:
    """The system-prompt text that lists the callable functions and the call format."""
    lines = ["You can call functions. To call one, write exactly "
             '<tool>{"tool": NAME, "args": {ARGUMENTS}}</tool> and nothing else in the call. Functions:']
    for t in tools:
        f = t["function"]
        params = json.dumps(f.get("parameters") or {"type": "object", "properties": {}}, separators=(",", ":"))
        desc = f" — {f['description']}" if f.get("description") else ""
        lines.append(f"- {f['name']}{desc}. Arguments: {params}")
    return "\n".join(lines)


def call_text(name: str, arguments: str) -> str:
    """How an earlier call of the conversation is written back into the model's context."""
    args = arguments.strip() or "{}"
    return f'{TOOL_OPEN}{{"tool":{json.dumps(name)},"args":{args}}}{TOOL_CLOSE}'


@dataclass
class ParsedCall:
    index: int
    id: str
    name: str
    arguments: str = ""
    complete: bool = False


@dataclass
class Event:
    """One piece of parser output: content text, the start of a call (its name), or argument text."""

    kind: str  # "content" | "call" | "args"
    text: str = ""
    call: ParsedCall | None = None


@dataclass
class ToolCallParser:
    """Incremental parser of model text into content and tool calls.

    Args:
        names: the functions the model may call; a header naming another function is left as content.
    """

    names: set[str]
    calls: list[ParsedCall] = field(default_factory=list)
    content: str = ""
    _buf: str = ""
    _state: str = "content"  # content | header | args | trailer
    _depth: int = 0
    _in_string: bool = False
    _escape: bool = False
    _started: bool = False

    def feed(self, text: str) -> list[Event]:
        """Parse more text; returns what is now known for certain."""
        self._buf += text
        out: list[Event] = []
        while True:
            progressed = getattr(self, "_" + self._state)(out)
            if not progressed:
                return out

    def finish(self) -> list[Event]:
        """The text is complete: whatever is held back is content, or the rest of an unclosed call."""
        out = self.feed("")
        if self._state == "content" or self._state == "header":
            if self._buf:
                out.append(self._emit_content(self._buf if self._state == "content" else TOOL_OPEN + self._buf))
        elif self._state == "args" and self._buf:  # cut off inside the arguments: keep what was written
            out.append(self._emit_args(self._buf))
        self._buf = ""
        return out

    # -------------------------------------------------------------------------------------------- states
    def _content(self, out: list[Event]) -> bool:
        at = self._buf.find(TOOL_OPEN)
        if at >= 0:
            if at:
                out.append(self._emit_content(self._buf[:at]))
            self._buf = self._buf[at + len(TOOL_OPEN):]
            self._state = "header"
            return True
        keep = _partial_suffix(self._buf, TOOL_OPEN)  # a "<to" that may become "<tool>"
        if len(self._buf) > keep:
            out.append(self._emit_content(self._buf[: len(self._buf) - keep]))
            self._buf = self._buf[len(self._buf) - keep:]
        return False

    def _header(self, out: list[Event]) -> bool:
        m = _HEADER.match(self._buf)
        if m is None or m.end() == len(self._buf):  # (at the end: more white space may follow)
            if m is None and not _could_be_header(self._buf):  # not a call after all: the tag was content
                out.append(self._emit_content(TOOL_OPEN))
                self._state = "content"
                return True
            return False
        try:
            name = json.loads(f'"{m.group(1)}"')
        except ValueError:
            name = m.group(1)
        if self.names and name not in self.names:
            out.append(self._emit_content(TOOL_OPEN))
            self._state = "content"
            return True
        call = ParsedCall(len(self.calls), f"call_{uuid.uuid4().hex[:24]}", name)
        self.calls.append(call)
        out.append(Event("call", call=call))
        self._buf = self._buf[m.end():]
        self._state, self._depth, self._in_string, self._escape, self._started = "args", 0, False, False, False
        return True

    def _args(self, out: list[Event]) -> bool:
        """Scan the args value: emit it as it comes, up to where its JSON value closes."""
        end = None
        for i, ch in enumerate(self._buf):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
                self._started = True
            elif ch in "{[":
                self._depth += 1
                self._started = True
            elif ch in "}]":
                self._depth -= 1
            elif not ch.isspace():
                self._started = True
            if self._started and self._depth <= 0 and not self._in_string and ch in "}]\"":
                end = i + 1
                break
        if end is None:
            if self._buf:
                out.append(self._emit_args(self._buf))
                self._buf = ""
            return False
        out.append(self._emit_args(self._buf[:end]))
        self.calls[-1].complete = True
        self._buf = self._buf[end:]
        self._state = "trailer"
        return True

    def _trailer(self, out: list[Event]) -> bool:
        at = self._buf.find(TOOL_CLOSE)
        if at < 0:
            return False
        self._buf = self._buf[at + len(TOOL_CLOSE):]
        self._state = "content"
        return True

    # -------------------------------------------------------------------------------------------- output
    def _emit_content(self, text: str) -> Event:
        self.content += text
        return Event("content", text)

    def _emit_args(self, text: str) -> Event:
        call = self.calls[-1]
        call.arguments += text
        return Event("args", text, call)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def _could_be_header(text: str) -> bool:
    """Whether `text` may still grow into a call header `{"tool":"NAME","args":`."""
    probe = '{"tool":"'
    t = text.lstrip()
    if len(t) <= len(probe):
        return probe.startswith(t.replace(" ", "")) or t == ""
    return bool(re.match(r'\s*\{\s*"tool"\s*:\s*"', text)) and len(text) < 4096
