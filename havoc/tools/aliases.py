"""The specification's tool names and argument names, mapped onto havoc's tools — stated here and nowhere else.

The HAVOC-7B + PRIME specification writes calls such as

    {"tool": "python_math", "args": {"operation": "t_test", "group1": [...], "group2": [...]}}

havoc's registry answers them by translating the call before validating it under havoc's own schema; the
schemas the model is shown stay havoc's (`statistics`, `symbolic`, ...), so a model is never taught two
names for one thing, while a model trained on the spec's format, or a user pasting its examples, gets the
computation.

| spec tool | spec operation | havoc tool and operation | argument names |
|---|---|---|---|
| python_math | t_test (group1, group2) | statistics t_test, kind two_sample (Student; `equal_var: false` → welch, `paired: true` → paired) | group1 → x, group2 → y |
| python_math | t_test (group1 / data, mu) | statistics t_test, kind one_sample | group1 or data → x |
| python_math | anova, tukey_hsd; rank_test / variance_test with 3+ groups or a many-group kind | statistics, same operation | group1, group2, ... → groups |
| python_math | describe, normality, confidence_interval | statistics, same operation | group1 → data |
| python_math | any other statistics operation | statistics, same operation | group1 → x, group2 → y |
| python_math | derivative, integral, simplify, solve, evaluate | symbolic, same operation | expr → expression |
| dsl_executor, rag_helper | as written | the same tools (their names and arguments already match) | — |

The spec's figures for its t-test example (t = -2.236, p = 0.048) are wrong: Student's t for
[1, 2, 3, 4, 5] vs [2, 3, 4, 5, 6] is -1 with 8 degrees of freedom, p = 0.3466 (docs/spec.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from havoc.errors import ToolError

SYMBOLIC_OPERATIONS = ("derivative", "integral", "simplify", "solve", "evaluate")
_GROUPS = ("group1", "group2", "group3", "group4", "group5", "group6", "group7", "group8")


def translate(tool: str, args: Mapping[str, Any]) -> tuple[str, dict]:
    """(havoc tool, havoc arguments) for a call under a spec tool name; other calls pass unchanged.

    Raises:
        ToolError: a spec call that names no operation havoc has.
    """
    if tool != "python_math":
        return tool, dict(args)
    args = dict(args)
    op = args.get("operation")
    if not isinstance(op, str):
        raise ToolError("python_math needs args.operation (e.g. t_test, anova, regression, derivative)")
    if op in SYMBOLIC_OPERATIONS:
        if "expr" in args and "expression" not in args:
            args["expression"] = args.pop("expr")
        return "symbolic", args
    groups = [args.pop(g) for g in _GROUPS if g in args]
    if op == "t_test":
        equal_var = args.pop("equal_var", True)
        paired = args.pop("paired", False)
        if "data" in args and not groups:
            groups = [args.pop("data")]
        if len(groups) == 1:
            args.setdefault("kind", "one_sample")
            args["x"] = groups[0]
        elif len(groups) == 2:
            args.setdefault("kind", "paired" if paired else ("two_sample" if equal_var else "welch"))
            args["x"], args["y"] = groups
        elif groups:
            raise ToolError(f"python_math t_test takes one or two groups, got {len(groups)}")
        return "statistics", args
    if not groups:
        return "statistics", args
    if op in ("anova", "tukey_hsd") or (op in ("rank_test", "variance_test")
                                        and (len(groups) > 2 or args.get("kind") in _MANY_GROUP_KINDS)):
        args["groups"] = groups
    elif op in ("describe", "normality", "confidence_interval"):
        args["data"] = groups[0]
    else:
        args["x"] = groups[0]
        if len(groups) > 1:
            args["y"] = groups[1]
    return "statistics", args


_MANY_GROUP_KINDS = {"kruskal_wallis", "bartlett", "levene", "brown_forsythe"}


def spec_tool_names() -> list[str]:
    """The spec's tool names that are not havoc's own."""
    return ["python_math"]


def covered_tools(name: str) -> tuple[str, ...]:
    """havoc's tools a tool name stands for: itself for havoc's own, the targets of a spec name."""
    if name == "python_math":
        return ("statistics", "symbolic")
    if name in ("statistics", "symbolic", "dsl_executor", "rag_helper"):
        return (name,)
    return ()
