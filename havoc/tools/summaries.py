"""Each built-in tool's answer line: the one or two sentences PRIME feeds back after a call and builds its
answer from. They live with the tools (`ToolSpec.summarize`) so that a tool's figures are worded where the
tool is, not by matching tool names elsewhere; a tool without one is summarised by its `interpretation`.

Figures are written to four significant digits with their trailing zeros (`figure`): verification traces
every number of an answer to a tool result at the digits shown, and an evaluation wants three or more.
"""

from __future__ import annotations

from typing import Any

NO_TOOL = "No tool fits this request"
# Cosine score below which a retrieved passage is not about the question. MiniLM: the shipped definitions
# score 0.66-0.76, "What's the weather tomorrow?" 0.085 and "What is the capital of France?" 0.18. The hashing
# embedder scores both kinds near 0.3, so it has no floor.
RELEVANCE_FLOOR = {"all-MiniLM-L6-v2": 0.3}


def figure(v: Any) -> str:
    """A number to 4 significant digits (-1.0 -> "-1", 0.346593 -> "0.3466", -6.5004 -> "-6.500"); other values
    as str."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    # "#" keeps trailing zeros: -6.500353 is "-6.500" (four digits shown, four traced), not "-6.5"
    s = f"{v:#.4g}"
    return s[:-1] if s.endswith(".") else s


def _with_interpretation(head: str, r: dict) -> str:
    interp = r.get("interpretation", "")
    if head and interp:
        return f"{head}. {interp}."
    return f"{head or interp}."


def statistics(operation: str | None, r: dict, args: dict | None = None) -> str:
    f = figure
    head = ""
    if operation == "t_test":
        head = f"{r.get('test', 't-test')}: t = {f(r['statistic'])}, df = {f(r['df'])}, p = {f(r['p_value'])}"
    elif operation in ("anova", "tukey_hsd") and "f" in r:
        within = next((row for row in r.get("table", []) if row.get("source") == "within"), {})
        between = next((row for row in r.get("table", []) if row.get("source") == "between"), {})
        head = f"one-way ANOVA: F({f(between.get('df'))}, {f(within.get('df'))}) = {f(r['f'])}, p = {f(r['p_value'])}"
    elif operation == "regression":
        terms = ", ".join(f"{c['name']} {f(c['estimate'])}" for c in r.get("coefficients", []))
        head = f"OLS fit: coefficients {terms}; R² = {f(r['r_squared'])}"
    elif operation == "describe":
        head = (f"n = {f(r['n'])}, mean = {f(r['mean'])}, sd = {f(r['sd'])}, variance = {f(r['variance'])}, "
                f"median = {f(r['median'])}, min = {f(r['min'])}, max = {f(r['max'])}")
        if r.get("skewness") is not None:
            head += f", skewness = {f(r['skewness'])}"
    return _with_interpretation(head, r)


def dsl_executor(operation: str | None, r: dict, args: dict | None = None) -> str:
    f = figure
    head = ""
    if "n_runs" in r:
        names = ", ".join(x["name"] for x in r.get("factors", []))
        head = f"{r['design'].replace('_', ' ')} design: {f(r['n_runs'])} runs for factors {names}"
    elif operation == "capability" and "cpk" in r:
        # the tool's own line rounds to 3 digits and drops zeros ("Cp = 1.1"); the answer shows 4
        head = ", ".join(f"{name} = {f(r[key])}" for name, key in (("Cp", "cp"), ("Cpk", "cpk"), ("Pp", "pp"),
                                                                    ("Ppk", "ppk")) if r.get(key) is not None)
    elif "charts" in r:
        head = "; ".join(f"{c['chart']} chart: center {f(c['center'])}, UCL {f(c['ucl'])}, LCL {f(c['lcl'])}"
                         for c in r["charts"])
    return _with_interpretation(head, r)


def symbolic(operation: str | None, r: dict, args: dict | None = None) -> str:
    if r.get("operation") == "evaluate":
        shown = f"{(args or {}).get('expression', r.get('expression'))} = {r.get('result')}"
        numeric = r.get("numeric")
        if isinstance(numeric, (int, float)) and str(r.get("result")) != figure(numeric):
            shown += f" ≈ {figure(numeric)}"  # "10*sqrt(2)" and "2/3" are exact; the answer gives the number too
        return f"{shown}."
    return _with_interpretation("", r)


def rag_helper(operation: str | None, r: dict, args: dict | None = None) -> str:
    floor = RELEVANCE_FLOOR.get(r.get("embedder"), 0.0)
    hits = [h for h in r.get("results", []) if h.get("score", 1.0) >= floor]
    if not hits:
        return f"{NO_TOOL}: the knowledge corpus has no passage on it."
    top = hits[0]
    return f"{top['text']} (source: {top['source']}, \"{top['heading']}\")"


def interpretation(operation: str | None, r: dict, args: dict | None = None) -> str:
    """The summary of a tool that words none of its own: its result's interpretation."""
    return _with_interpretation("", r)
