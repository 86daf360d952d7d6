"""Verification: tool arguments against the prompt, the answer's numbers against their sources.

Three checks, each reported with what failed:
  - json_valid: the model's tool call parsed as JSON and matched the tool's schema;
  - args_match_prompt: every data value in the arguments is one the prompt stated (and, where the prompt's
    reading gives the arguments, they are those);
  - answer_traceable: every number written in the answer equals, to the digits shown, a number of a tool
    result or of the prompt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from havoc.prime.parse import NUMBER_RE, numbers_in

# Arguments that are settings, not data: their values need not appear in the prompt.
SETTINGS = {"alpha", "top_k", "seed", "randomize", "replicates", "order", "degree", "intercept", "interaction",
            "ss_type", "subgroup_size", "max_order"}


def numeric_leaves(value: Any, path: str = "", *, skip: Iterable[str] = ()) -> list[tuple[str, float]]:
    """(path, number) for every number in a JSON value, numbers inside strings included."""
    skip = set(skip)
    out: list[tuple[str, float]] = []
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            out.append((path, float(value)))
    elif isinstance(value, str):
        out += [(path, v) for v in numbers_in(value)]
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                out += numeric_leaves(v, f"{path}.{k}" if path else k, skip=skip)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += numeric_leaves(v, f"{path}[{i}]", skip=skip)
    return out


def _decimals(token: str) -> int:
    mantissa = token.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def traces_to(shown: str, value: float) -> bool:
    """Whether a number written as `shown` is `value` to the digits shown (or `value` as a percentage).

    "0.3466" and "0.347" trace to 0.346593; "5772" to 5771.57; a short integer ("1", "42") only to itself.
    """
    a = float(shown)
    mantissa = shown.lower().lstrip("+-").split("e")[0]
    digits = mantissa.replace(".", "").lstrip("0") or "0"
    decimals = _decimals(shown)
    for v in (value, value * 100):
        if a == v:
            return True
        if decimals == 0 and "e" not in shown.lower() and len(digits) < 3:
            continue
        if math.isclose(float(f"{v:.{len(digits)}g}"), a, rel_tol=1e-9, abs_tol=1e-15):
            return True
        if decimals and abs(round(v, decimals) - a) < 1e-9 * max(1.0, abs(a)):
            return True
    return False


def untraced_numbers(text: str, sources: Iterable[float]) -> list[str]:
    """The numbers written in `text` that trace to none of `sources` (see `traces_to`)."""
    pool = list(sources)
    out = []
    for m in NUMBER_RE.finditer(text):
        shown = m.group(0)
        if shown[0] == "-" and m.start() > 0 and text[m.start() - 1].isalnum():
            shown = shown[1:]
        if shown.startswith("+"):
            shown = shown[1:]
        try:
            float(shown)
        except ValueError:
            continue
        if not any(traces_to(shown, v) for v in pool):
            out.append(shown)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str):  # "17 * 23+4" is "17*23+4"; "What is X?" is "what is x"
        return _plain(a) == _plain(b)
    return a == b


def _plain(text: str) -> str:
    return re.sub(r"\s+", "", text.lower()).rstrip(".?!")


def accepted_numbers(reference: dict | None, prompt_numbers: Iterable[float]) -> list[float]:
    """The numbers `check_args` accepts in a call's data: the prompt's and those of its reading."""
    return list(prompt_numbers) + [v for _, v in numeric_leaves(reference or {})]


def check_args(args: Any, reference: dict | None, data_keys: Iterable[str], prompt_numbers: list[float]) -> list[str]:
    """Problems with a tool call's arguments, judged against the prompt ([] when there are none).

    Args:
        args: the arguments the model wrote.
        reference: the arguments the prompt states (its reading), or None when it could not be read.
        data_keys: the argument keys that carry the prompt's data.
        prompt_numbers: every number in the prompt.
    """
    if not isinstance(args, dict):
        return ["the arguments are not a JSON object"]
    problems = []
    if reference is not None:
        for key in data_keys:
            if key in reference and not _same(args.get(key), reference[key]):
                shown = "missing" if key not in args else f"{str(args[key])[:80]}"
                problems.append(f"{key} is {shown}; the prompt gives {str(reference[key])[:80]}")
        # The choices the prompt makes (the kind of test, the chart, the design): a Welch t-test asked for and a
        # pooled one written is a wrong call however right its numbers are.
        for key, want in reference.items():
            if key in data_keys or not isinstance(want, str):
                continue
            got = args.get(key)
            if not isinstance(got, str) or got.strip().lower() != want.strip().lower():
                shown = "missing" if key not in args else repr(got)[:40]
                problems.append(f"{key} is {shown}; the prompt asks for {want!r}")
    allowed = accepted_numbers(reference, prompt_numbers)
    for path, v in numeric_leaves(args, skip=SETTINGS):
        if not any(_same(v, p) for p in allowed):
            problems.append(f"{path} = {v:g} is not a number the prompt states")
            break
    return problems
