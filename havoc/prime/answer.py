"""The answer's wording, built from tool results: every figure in it is a tool's, never the model's.

`summarize(tool, operation, result)` gives the line fed back into the model's context after a call and
the final answer's figures; `fmt` writes numbers to four significant digits (what verification traces).
"""

from __future__ import annotations

from typing import Any


NO_TOOL = "No tool fits this request"
# Cosine score below which a retrieved passage is not about the question. MiniLM: the shipped definitions
# score 0.66-0.76 and "What's the weather tomorrow?" 0.085, "What is the capital of France?" 0.18. The hashing
# embedder scores both kinds near 0.3, so it has no floor.
RELEVANCE_FLOOR = {"all-MiniLM-L6-v2": 0.3}


def refusal(why: str) -> str:
    """What PRIME answers when no tool fits (or the prompt's data cannot be read): no figures of its own."""
    return f"{NO_TOOL}: {why}. PRIME gives no figures it cannot compute with a tool."


def withheld() -> str:
    """The answer in place of a model's reply whose figures trace to no tool and not to the prompt."""
    return ("No answer: the model's reply (shown above, unverified) gives figures that no tool computed and the "
            "prompt does not state, so it is not presented as the answer.")


def is_refusal(answer: str) -> bool:
    """Whether an answer is PRIME saying no tool fits (or that no tool result could be had)."""
    return answer.startswith((NO_TOOL, "No answer"))


def fmt(v: Any) -> str:
    """A number to 4 significant digits (-1.0 -> "-1", 0.346593 -> "0.3466", -6.5004 -> "-6.500"); other values as str."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    # "#" keeps trailing zeros: -6.500353 is "-6.500" (four digits shown, four traced), not "-6.5"
    s = f"{v:#.4g}"
    return s[:-1] if s.endswith(".") else s


def summarize(tool: str, operation: str | None, result: dict, args: dict | None = None) -> str:
    """One or two sentences with the result's key figures and the tool's own interpretation.

    Args:
        tool, operation: the call's tool and operation.
        result: the tool's result.
        args: the call's arguments (an evaluated expression is shown as written).
    """
    r = result
    interp = r.get("interpretation", "")
    if tool == "statistics" and operation == "t_test":
        head = f"{r.get('test', 't-test')}: t = {fmt(r['statistic'])}, df = {fmt(r['df'])}, p = {fmt(r['p_value'])}"
    elif tool == "statistics" and operation in ("anova", "tukey_hsd") and "f" in r:
        within = next((row for row in r.get("table", []) if row.get("source") == "within"), {})
        between = next((row for row in r.get("table", []) if row.get("source") == "between"), {})
        head = (f"one-way ANOVA: F({fmt(between.get('df'))}, {fmt(within.get('df'))}) = {fmt(r['f'])}, "
                f"p = {fmt(r['p_value'])}")
    elif tool == "statistics" and operation == "regression":
        terms = ", ".join(f"{c['name']} {fmt(c['estimate'])}" for c in r.get("coefficients", []))
        head = f"OLS fit: coefficients {terms}; R² = {fmt(r['r_squared'])}"
    elif tool == "statistics" and operation == "describe":
        head = (f"n = {fmt(r['n'])}, mean = {fmt(r['mean'])}, sd = {fmt(r['sd'])}, variance = {fmt(r['variance'])}, "
                f"median = {fmt(r['median'])}, min = {fmt(r['min'])}, max = {fmt(r['max'])}")
    elif tool == "dsl_executor" and "n_runs" in r:
        names = ", ".join(f["name"] for f in r.get("factors", []))
        head = f"{r['design'].replace('_', ' ')} design: {fmt(r['n_runs'])} runs for factors {names}"
    elif tool == "dsl_executor" and operation == "capability" and "cpk" in r:
        # the tool's own line rounds to 3 digits and drops zeros ("Cp = 1.1"); the answer shows 4
        head = ", ".join(f"{name} = {fmt(r[key])}" for name, key in (("Cp", "cp"), ("Cpk", "cpk"), ("Pp", "pp"),
                                                                      ("Ppk", "ppk")) if r.get(key) is not None)
    elif tool == "dsl_executor" and "charts" in r:
        head = "; ".join(f"{c['chart']} chart: center {fmt(c['center'])}, UCL {fmt(c['ucl'])}, LCL {fmt(c['lcl'])}"
                         for c in r["charts"])
    elif tool == "symbolic":
        if r.get("operation") == "evaluate":
            return f"{(args or {}).get('expression', r.get('expression'))} = {r.get('result')}."
        head = ""
    elif tool == "rag_helper":
        floor = RELEVANCE_FLOOR.get(r.get("embedder"), 0.0)
        hits = [h for h in r.get("results", []) if h.get("score", 1.0) >= floor]
        if not hits:
            return f"{NO_TOOL}: the knowledge corpus has no passage on it."
        top = hits[0]
        return f"{top['text']} (source: {top['source']}, \"{top['heading']}\")"
    else:
        head = ""
    if head and interp:
        return f"{head}. {interp}."
    return f"{head or interp}."
