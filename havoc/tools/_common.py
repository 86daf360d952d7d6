"""Helpers every tool shares: input checks that raise `ToolError`, JSON-safe results, wording at alpha."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from havoc.errors import ToolError

# Sizes a caller (a model, often) may ask for. Generous for real work, far below what would take a
# 2-core machine minutes: they are checked again by the registry's JSON schemas.
MAX_VALUES = 200_000
MAX_GROUPS = 1_000


def as_vector(values: Any, name: str, *, min_len: int = 1, max_len: int = MAX_VALUES) -> np.ndarray:
    """A 1-D float64 array of finite numbers, or a `ToolError` naming `name`.

    Args:
        values: a sequence of numbers (bools are refused: `True` is not a measurement).
        name: the argument's name, for the message.
        min_len: fewest values accepted.
        max_len: most values accepted.

    Returns:
        The values as a contiguous float64 array.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ToolError(f"{name} must be a list of numbers")
    if len(values) < min_len:
        raise ToolError(f"{name} needs at least {min_len} value{'s' if min_len != 1 else ''}, got {len(values)}")
    if len(values) > max_len:
        raise ToolError(f"{name} has {len(values)} values; at most {max_len} are accepted")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ToolError(f"{name} must contain only numbers, found {v!r:.40}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ToolError(f"{name} must be a flat list of numbers")
    if not np.all(np.isfinite(arr)):
        raise ToolError(f"{name} contains a non-finite value (NaN or infinity)")
    return np.ascontiguousarray(arr)


def wilson_interval(k: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of k successes in n >= 1 trials at normal quantile z, clipped to [0, 1]."""
    est = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(est * (1 - est) + z * z / (4 * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def check_alpha(alpha: Any) -> float:
    """The significance level as a float in (0, 1), or a `ToolError`."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 < float(alpha) < 1.0):
        raise ToolError(f"alpha must be a number between 0 and 1 (exclusive), got {alpha!r}")
    return float(alpha)


def check_alternative(alternative: str) -> str:
    """One of 'two-sided', 'less', 'greater', or a `ToolError`."""
    if alternative not in ("two-sided", "less", "greater"):
        raise ToolError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}")
    return alternative


def fmt(x: float | None, digits: int = 4) -> str:
    """A number for a sentence: `digits` significant figures, p-values below 1e-4 in e-notation. A whole
    number prints as one; otherwise the zeros the rounding leaves are kept, so that r = 0.99995 reads
    "1.000", not "1" (a perfect correlation), and every figure shows the digits it was rounded to."""
    if x is None:
        return "undefined"
    if x == 0:
        return "0"
    if abs(x) < 1e-4 or abs(x) >= 1e6:
        return f"{x:.{digits - 1}e}"
    if float(x).is_integer():
        return str(int(x))
    s = f"{x:#.{digits}g}"
    return s[:-1] if s.endswith(".") else s


def fmt_p(p: float) -> str:
    """A p-value as people write it: 'p = 0.0312', 'p < 1e-16'."""
    if p < 1e-16:
        return "p < 1e-16"
    return f"p = {fmt(p, 3)}"


def jsonable(obj: Any) -> Any:
    """`obj` with numpy types turned into Python ones and non-finite floats into None.

    Strict JSON has no NaN or Infinity, so a figure that is undefined (an F with zero error) travels as
    null and the result says why in words.
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot turn {type(obj).__name__} into JSON")


def names_unique(names: Iterable[str], what: str) -> list[str]:
    """`names` as a list, or a `ToolError` when one repeats."""
    out = list(names)
    seen: set[str] = set()
    for n in out:
        if n in seen:
            raise ToolError(f"{what} name {n!r} appears twice")
        seen.add(n)
    return out
