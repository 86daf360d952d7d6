"""What a prompt states: its numbers, its data lists, and the tool call the task asks for.

PRIME uses this reading of the prompt three ways: the router sizes the task from it; verification checks
the model's tool arguments against it (every data value the model passes must be one the prompt gave);
and recovery takes a wrong or empty argument from it, flagged as such. It never computes a result: the
figures of an answer come from the tools.

The reading is by rules (regular expressions over the wording of statistics, DOE, SPC and arithmetic
requests), so it is predictable and testable; a prompt it cannot read yields `TaskSpec(tool=None)` and the
model's own call is all there is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
NUMBER_RE = re.compile(rf"(?<![A-Za-z_\d.]){NUMBER}")
_LIST_RE = re.compile(rf"[\[(]\s*({NUMBER}(?:\s*[,;]\s*{NUMBER})+)\s*[\])]")
_NAMED_LIST_RE = re.compile(rf"\b([A-Za-z][A-Za-z0-9_]{{0,23}})\s*[=:]\s*[\[(]\s*({NUMBER}(?:\s*[,;]\s*{NUMBER})+)\s*[\])]")
_FACTOR_RANGE_RE = re.compile(rf"\b([A-Za-z][A-Za-z0-9_]{{0,23}})\s*\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)")
_WORD_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
                 "eleven": 11}
_ARITH_RE = re.compile(rf"\(*\s*{NUMBER}(?:[\s()]*(?:\*\*|[-+*/^×÷])[\s()]*{NUMBER})+(?:\s*\))*")


def numbers_in(text: str) -> list[float]:
    """Every number written in `text`, in order (digits only: "two" is not read as 2).

    Hyphenated words such as "t-test" or "2-sided" do not produce negative numbers.
    """
    out = []
    for m in NUMBER_RE.finditer(text):
        s = m.group(0)
        start = m.start()
        if s[0] == "-" and start > 0 and text[start - 1].isalnum():
            s = s[1:]
        try:
            out.append(float(s))
        except ValueError:
            continue
    return out


def _floats(body: str) -> list[float]:
    return [float(x) for x in re.split(r"\s*[,;]\s*", body.strip())]


def _num(v: float) -> int | float:
    """A float that is a whole number as int (so `[1, 2]` stays `[1, 2]` in JSON)."""
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else v


@dataclass
class TaskSpec:
    """The task a prompt asks for, as far as the rules can read it.

    Attributes:
        task_type: arithmetic, definition, statistics, doe, spc or general.
        tool: the tool that answers it (None: no tool; the model answers alone).
        args: the tool arguments the prompt states (the reference for verification and recovery).
        data_keys: the argument paths that carry the prompt's data (checked value by value).
        matched: the words that decided the reading (for the router's reasons).
        lists: the number lists written in the prompt, in order.
        numbers: every number in the prompt.
    """

    task_type: str
    tool: str | None = None
    args: dict = field(default_factory=dict)
    data_keys: tuple[str, ...] = ()
    matched: list[str] = field(default_factory=list)
    lists: list[list[float]] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)

    @property
    def operation(self) -> str | None:
        return self.args.get("operation")


def _has(text: str, *words: str) -> str | None:
    for w in words:
        if re.search(rf"(?<![a-z]){w}", text):
            return w.replace("\\", "")
    return None


def _factor_names(prompt: str, low: str) -> list[dict]:
    ranges = [(n, float(a), float(b)) for n, a, b in _FACTOR_RANGE_RE.findall(prompt)
              if n.lower() not in {"center", "centre", "runs"}]
    if ranges:
        return [{"name": n, "low": _num(a), "high": _num(b)} for n, a, b in ranges]
    m = re.search(r"factors?\s*(?:named|called|:)?\s*((?:[A-Za-z][A-Za-z0-9_]*\s*(?:,|and)\s*)+[A-Za-z][A-Za-z0-9_]*)", prompt)
    if m:
        names = [n for n in re.split(r"\s*(?:,|\band\b)\s*", m.group(1)) if n]
        if len(names) >= 2:
            return [{"name": n, "low": -1, "high": 1} for n in names]
    m = re.search(r"(\d+|" + "|".join(_WORD_NUMBERS) + r")[\s-]+factors?", low)
    k = None
    if m:
        k = int(m.group(1)) if m.group(1).isdigit() else _WORD_NUMBERS[m.group(1)]
    else:
        m = re.search(r"\b2\s*\^\s*(\d+)", low)
        if m:
            k = int(m.group(1))
    if k is None or not 1 <= k <= 23:
        return []
    return [{"name": chr(ord("A") + i), "low": -1, "high": 1} for i in range(k)]


def _int_after(low: str, words: str) -> int | None:
    m = re.search(rf"(\d+)\s*(?:{words})", low) or re.search(rf"(?:{words})\s*(?:of|=|:)?\s*(\d+)", low)
    return int(m.group(1)) if m else None


def read_task(prompt: str) -> TaskSpec:
    """Read the task a prompt asks for.

    Args:
        prompt: the user's request.

    Returns:
        A `TaskSpec`; `tool` is None when no rule matched a tool task.
    """
    low = prompt.lower()
    lists = [_floats(body) for body in _LIST_RE.findall(prompt)]
    named = {name: _floats(body) for name, body in _NAMED_LIST_RE.findall(prompt)}
    spec = TaskSpec("general", lists=lists, numbers=numbers_in(prompt))

    def done(task_type: str, tool: str, args: dict, data_keys: tuple[str, ...], *matched: str) -> TaskSpec:
        spec.task_type, spec.tool, spec.args, spec.data_keys = task_type, tool, args, data_keys
        spec.matched = [m for m in matched if m]
        return spec

    # --- SPC -------------------------------------------------------------------------------------------
    if (w := _has(low, "control chart", "i-mr", "imr", "individuals chart", "x-bar", "xbar", r"c chart", r"p chart",
                  r"u chart", r"np chart")):
        chart = "imr"
        for key, names in (("xbar_r", ("x-bar", "xbar")), ("c", ("c chart", "c-chart")), ("p", ("p chart", "p-chart")),
                           ("u", ("u chart", "u-chart")), ("np", ("np chart", "np-chart"))):
            if any(n in low for n in names):
                chart = key
        if chart == "xbar_r" and len(lists) >= 2:
            return done("spc", "dsl_executor", {"operation": "control_chart", "chart": "xbar_r",
                                                "subgroups": [[_num(v) for v in l] for l in lists]}, ("subgroups",), w)
        if lists:
            args = {"operation": "control_chart", "chart": chart, "data": [_num(v) for v in lists[0]]}
            n = _int_after(low, r"units|sample size|inspected")
            if chart in ("p", "np") and n:
                args["n"] = n
            return done("spc", "dsl_executor", args, ("data",), w)
    if (w := _has(low, "capability", r"\bcpk", r"\bcp\b")) and lists:
        lsl = re.search(rf"lsl\s*(?:=|:|of)?\s*({NUMBER})", low)
        usl = re.search(rf"usl\s*(?:=|:|of)?\s*({NUMBER})", low)
        args = {"operation": "capability", "data": [_num(v) for v in lists[0]]}
        if lsl:
            args["lsl"] = _num(float(lsl.group(1)))
        if usl:
            args["usl"] = _num(float(usl.group(1)))
        return done("spc", "dsl_executor", args, ("data", "lsl", "usl"), w)
    if (w := _has(low, "control chart constant", "chart constants", r"\ba2\b", r"\bd2\b")):
        n = _int_after(low, r"subgroup size|sample size|n\s*=")
        if n:
            return done("spc", "dsl_executor", {"operation": "constants", "n": n}, ("n",), w)

    # --- DOE -------------------------------------------------------------------------------------------
    designs = (("box_behnken", ("box-behnken", "box behnken")), ("central_composite", ("central composite", "ccd")),
               ("plackett_burman", ("plackett-burman", "plackett burman")),
               ("fractional_factorial", ("fractional factorial",)), ("full_factorial", ("full factorial", "factorial design", "2^")))
    for operation, names in designs:
        hit = next((n for n in names if n in low), None)
        if hit == "2^" and "design" not in low:  # "2^10 - 24" is arithmetic, "a 2^3 design" is not
            hit = None
        if hit:
            factors = _factor_names(prompt, low)
            if not factors:
                break
            args = {"operation": operation, "factors": factors, "randomize": False}
            center = _int_after(low, r"cent(?:er|re) points?|cent(?:er|re) runs?") 
            if center is not None and operation != "plackett_burman":
                args["center"] = center
            runs = _int_after(low, r"runs")
            if operation == "plackett_burman" and runs in (8, 12, 16, 20, 24):
                args["runs"] = runs
            if operation == "fractional_factorial" and runs:
                args["runs"] = runs
            return done("doe", "dsl_executor", args, ("factors", "center", "runs"), hit)

    # --- statistics ------------------------------------------------------------------------------------
    if (w := _has(low, "t-test", "t test", "ttest", "student", "welch", "paired")) and lists:
        kind = "two_sample"
        if "paired" in low:
            kind = "paired"
        elif "welch" in low or "unequal variance" in low:
            kind = "welch"
        if len(lists) == 1:
            mu = re.search(rf"(?:mu|mean|μ)\s*(?:=|of|is|equals)\s*({NUMBER})", low)
            args = {"operation": "t_test", "kind": "one_sample", "x": [_num(v) for v in lists[0]]}
            if mu:
                args["mu"] = _num(float(mu.group(1)))
            return done("statistics", "statistics", args, ("x", "mu"), w)
        return done("statistics", "statistics", {"operation": "t_test", "kind": kind, "x": [_num(v) for v in lists[0]],
                                                 "y": [_num(v) for v in lists[1]]}, ("x", "y"), w)
    if (w := _has(low, "anova", "analysis of variance")) and len(lists) >= 2:
        return done("statistics", "statistics", {"operation": "anova", "groups": [[_num(v) for v in l] for l in lists]},
                    ("groups",), w)
    if (w := _has(low, "regression", "regress", "fit a line", "least squares", "linear fit")) and len(lists) >= 2:
        xs = named.get("x") or named.get("X") or lists[0]
        ys = named.get("y") or named.get("Y") or lists[1]
        return done("statistics", "statistics", {"operation": "regression", "y": [_num(v) for v in ys],
                                                 "predictors": {"x": [_num(v) for v in xs]}}, ("y", "predictors"), w)
    if (w := _has(low, "confidence interval")) and lists:
        return done("statistics", "statistics", {"operation": "confidence_interval", "kind": "mean",
                                                 "data": [_num(v) for v in lists[0]]}, ("data",), w)
    if (w := _has(low, "mean", "average", "standard deviation", "median", "variance", "describe", "summar")) and lists:
        return done("statistics", "statistics", {"operation": "describe", "data": [_num(v) for v in lists[0]]}, ("data",), w)

    # --- arithmetic ------------------------------------------------------------------------------------
    m = re.search(r"solve\s*:?\s*([^?]*=[^?]*)", prompt, re.IGNORECASE)
    if m and re.search(r"[a-z]", m.group(1)):
        return done("arithmetic", "symbolic", {"operation": "solve", "equation": m.group(1).strip().rstrip(".")},
                    ("equation",), "solve")
    m = re.search(r"derivative of\s+(.+?)(?:\s+with respect to\s+([a-z]))?\s*[?.]?$", prompt, re.IGNORECASE)
    if m:
        args = {"operation": "derivative", "expression": m.group(1).strip()}
        if m.group(2):
            args["variable"] = m.group(2)
        return done("arithmetic", "symbolic", args, ("expression",), "derivative")
    expr = max((e.group(0).strip() for e in _ARITH_RE.finditer(prompt)), key=len, default="")
    while expr.count("(") > expr.count(")") and expr.startswith("("):
        expr = expr[1:].strip()
    while expr.count(")") > expr.count("(") and expr.endswith(")"):
        expr = expr[:-1].strip()
    if expr and re.search(r"\d", expr) and expr.count("(") == expr.count(")"):
        expression = expr.replace("×", "*").replace("÷", "/").replace("**", "^")
        return done("arithmetic", "symbolic", {"operation": "evaluate", "expression": expression}, ("expression",),
                    "arithmetic expression")

    # --- definitions -----------------------------------------------------------------------------------
    m = re.match(r"\s*(?:what\s+(?:is|are|does)|define|explain|describe|what's)\s+(.+?)[?.!]*\s*$", low)
    if m:
        # the query is the question itself: a model's paraphrase would be retrieval on unchecked text
        return done("definition", "rag_helper", {"query": prompt.strip(), "top_k": 1}, ("query",), m.group(0).split()[0])
    return spec

