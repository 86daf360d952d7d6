"""Render a chat template (Jinja2, as shipped in a model's metadata) the way transformers does.

Templates come with downloaded models, so they are untrusted code: they run in Jinja's immutable sandbox
and see only plain JSON-like data. The environment matches transformers' `apply_chat_template` (trim_blocks,
lstrip_blocks, the loopcontrols extension, `raise_exception`, a `tojson` that keeps non-ASCII text, and
`strftime_now`), so a template renders to the same string in both.
"""

from __future__ import annotations

import functools
import json
import numbers
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from havoc.errors import TokenizerError


class _TemplateRaised(Exception):
    """What `raise_exception(msg)` inside a template raises; turned into a TokenizerError by `render`."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False):
    # Jinja's own tojson escapes HTML characters (<, >, &) and would change what the model sees.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def compile_template(source: str):
    """Compile a chat template once (cached by its text).

    Args:
        source: the Jinja2 template text.

    Returns:
        A `jinja2.Template` bound to a sandboxed environment.

    Raises:
        TokenizerError: the template does not parse.
    """
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TokenizerError(f"the chat template does not parse (line {e.lineno}: {e.message})") from None


def _plain(value: Any) -> Any:
    """A deep copy made of JSON types only: the sandbox sees no caller objects with methods of their own."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    # Subclasses and look-alikes (enums, numpy scalars) are cut back to the builtin type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TokenizerError(
        f"chat messages may hold only JSON-like data (dict, list, str, numbers, None); got {type(value).__name__}"
    )


def render(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool,
    special_tokens: Mapping[str, str | None],
    **kwargs: Any,
) -> str:
    """Render `messages` with the chat template `source`.

    Args:
        source: the template text.
        messages: the conversation: a list of mappings, each with a "role" (and usually "content").
        add_generation_prompt: append the header that opens the assistant's turn.
        special_tokens: `bos_token`, `eos_token`, `unk_token`, `pad_token` strings (None when absent), visible
            to the template as variables, as transformers passes them.
        **kwargs: further template variables (`tools`, `documents`, custom flags).

    Returns:
        The rendered prompt text.

    Raises:
        TokenizerError: malformed messages, or the template rejected them (`raise_exception`) or failed.
    """
    import jinja2

    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TokenizerError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise TokenizerError(f"message {i} must be a dict with a 'role' key, got {m!r:.80}")
    template = compile_template(source)
    variables = {"tools": None, "documents": None, **special_tokens, **kwargs}
    try:
        return template.render(
            messages=_plain(list(messages)), add_generation_prompt=add_generation_prompt, **_plain(variables)
        )
    except _TemplateRaised as e:
        raise TokenizerError(f"the chat template rejected the conversation: {e}") from None
    except jinja2.TemplateError as e:  # undefined filters, sandbox violations, ...
        raise TokenizerError(f"the chat template failed to render ({type(e).__name__}: {e})") from None
