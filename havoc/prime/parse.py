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
# A named factor with its range: "Temp(100, 200)", "temperature (100-200°C)", "pressure (10 to 50 bar)",
# "speed from 50 to 150 RPM", "time between 1 and 5".
_RANGE_SEP = r"\s*(?:,|–|-|to|\.\.)\s*"
_FACTOR_RANGE_RE = re.compile(
    rf"\b([A-Za-z][A-Za-z0-9_]{{0,23}})\s*\(\s*({NUMBER}){_RANGE_SEP}({NUMBER})\s*[^()0-9,]{{0,12}}\)"
    rf"|\b([A-Za-z][A-Za-z0-9_]{{0,23}})\s+(?:from|between|ranging from)\s+({NUMBER})\s*(?:to|and|-)\s*({NUMBER})")
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
    found = [(m[0], m[1], m[2]) if m[0] else (m[3], m[4], m[5]) for m in _FACTOR_RANGE_RE.findall(prompt)]
    ranges = [(n, float(a), float(b)) for n, a, b in found if n.lower() not in {"center", "centre", "runs"}]
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


# ------------------------------------------------------------------------------------------ the toolbox
# Requests for the operations of issue 22 (proportions, variances, ranks, correlation, summary t-tests,
# power and sample size, EWMA/CUSUM, capability from a mean and sigma, gauge R&R, response surfaces, life
# data, sampling plans). Read before the older patterns, which would take "EWMA control chart" for an
# individuals chart or "correlation of [..] and [..]" for descriptive statistics.

_SEP = r"\s*(?:=|:|of|is|was|at)?\s*"


def _value(low: str, names: str, *, percent: bool = False) -> float | None:
    """The number written after one of `names` (a regex alternation), e.g. "sigma = 2", "power of 90%"."""
    m = re.search(rf"(?<![a-z])(?:{names}){_SEP}({NUMBER})(\s*%)?", low)
    if not m:
        return None
    v = float(m.group(1))
    if percent and (m.group(2) or v > 1):
        v /= 100
    return _num(v)


def _values(low: str, names: str) -> list[float]:
    return [_num(float(v)) for v in re.findall(rf"(?<![a-z])(?:{names}){_SEP}({NUMBER})", low)]


def _labels(prompt: str, names: str) -> list | None:
    m = re.search(rf"\b(?:{names})\s*[=:]?\s*\[([^\]]*)\]", prompt, re.IGNORECASE)
    if not m:
        return None
    out = []
    for item in re.split(r"\s*,\s*", m.group(1).strip()):
        item = item.strip().strip("'\"")
        if not item:
            continue
        try:
            out.append(_num(float(item)))
        except ValueError:
            out.append(item)
    return out


def _nums(values: list[float]) -> list:
    return [_num(v) for v in values]


SIGMA = r"sigma|σ|standard deviation|std\.? dev(?:iation)?|sd|s"
POWER_WORDS = ("sample size", "how many samples", "how many measurements", "how many units", "how many subjects",
               "how many runs", "how many replicates", "power")


def _read_power(low: str) -> dict | None:
    if not (w := _has(low, *POWER_WORDS)):
        return None
    if w == "power" and not re.search(r"detect|effect|difference|shift|sample|power of|power =|% power|power to", low):
        return None
    if _has(low, "proportion", "defective rate", "percent defective", "fraction defective", "rate"):
        p0 = _value(low, r"p0|p_0|null proportion|hypothesi[sz]ed proportion", percent=True)
        p1 = _value(low, r"p1|p_1", percent=True)
        p2 = _value(low, r"p2|p_2", percent=True)
        m = re.search(rf"from\s+({NUMBER})\s*(%?)\s+to\s+({NUMBER})\s*(%?)", low)
        if m and p1 is None:
            a, b = float(m.group(1)), float(m.group(3))
            a, b = (a / 100 if m.group(2) or a > 1 else a), (b / 100 if m.group(4) or b > 1 else b)
            if p0 is None and not _has(low, "two proportions", "two groups", "two-sample", "two sample"):
                p0, p1 = _num(a), _num(b)
            else:
                p1, p2 = _num(a), _num(b)
        args: dict = {"operation": "power", "test": "two_proportions" if p2 is not None else "one_proportion"}
        for k, v in (("p0", p0), ("p1", p1), ("p2", p2)):
            if v is not None:
                args[k] = v
    else:
        test = "one_sample_t"
        if _has(low, "anova", "analysis of variance") or re.search(r"\d+\s+groups", low):
            test = "anova"
        elif _has(low, "factorial"):
            test = "factorial"
        elif _has(low, "paired"):
            test = "paired_t"
        elif _has(low, "two-sample", "two sample", "two groups", "two means", "compare two", "per group", "two treatments"):
            test = "two_sample_t"
        args = {"operation": "power", "test": test}
        effect = _value(low, r"difference|delta|δ|shift|effect(?: size)?|change")
        if effect is not None:
            args["effect"] = effect
        sd = _value(low, SIGMA)
        if sd is not None:
            args["sd"] = sd
        if test == "anova":
            g = re.search(r"(\d+)\s+groups", low)
            if g:
                args["groups"] = int(g.group(1))
        if test == "factorial":
            k = re.search(r"(\d+)[\s-]+factors?", low) or re.search(r"\b2\s*\^\s*(\d+)", low)
            if k:
                args["factors"] = int(k.group(1))
    power = _value(low, r"power", percent=True)
    if power is None:
        m = re.search(rf"({NUMBER})\s*%\s*power", low)
        power = _num(float(m.group(1)) / 100) if m else None
    if power is not None and 0 < power < 1:
        args["power"] = power
    alpha = _value(low, r"alpha|α|significance level|significance", percent=True)
    if alpha is not None and 0 < alpha < 1:
        args["alpha"] = alpha
    asked = re.search(r"(?:what|which|find|determine|required|needed|minimum)\b[^.?]*sample size|how many", low)
    m = re.search(r"(?:\bn\s*=\s*|sample size (?:of|is|=)\s*)(\d+)|(\d+)\s+(?:samples|subjects|units|measurements|"
                  r"observations|replicates|runs|parts)\b", low)
    if m and not asked:
        args["n"] = int(m.group(1) or m.group(2))
    if sum(k in args for k in ("n", "effect", "power", "p1", "p2")) < 1:
        return None
    return args


def _read_toolbox(prompt: str, low: str, lists: list[list[float]], named: dict) -> tuple | None:
    """(task_type, tool, args, data_keys, matched word) for the toolbox operations, or None."""
    # --- SPC: EWMA and CUSUM ---------------------------------------------------------------------------
    if (w := _has(low, "ewma", "exponentially weighted")) and lists:
        args: dict = {"operation": "ewma_chart", "data": _nums(lists[0])}
        for key, names in (("lambda", r"lambda|λ|weight(?:ing factor)?|smoothing constant"), ("L", r"L|k"),
                           ("target", r"target(?: value| mean)?|ewma0|ewma_0|centre line|center line|mean"),
                           ("sigma", SIGMA)):
            v = _value(low, names) if key != "L" else \
                (float(m.group(1)) if (m := re.search(rf"\b(?:L|k)\s*=\s*({NUMBER})", prompt)) else None)
            if v is not None:
                args[key] = v
        return "spc", "dsl_executor", args, ("data", "lambda", "target", "sigma", "L"), w
    if (w := _has(low, "cusum", "cumulative sum")) and lists:
        args = {"operation": "cusum_chart", "data": _nums(lists[0])}
        for key, names in (("target", r"target(?: value| mean)?|mu0|μ0|in-control mean|mean"), ("sigma", SIGMA),
                           ("k", r"k|reference value"), ("h", r"h|decision interval")):
            v = _value(low, names)
            if v is not None:
                args[key] = v
        return "spc", "dsl_executor", args, ("data", "target", "sigma", "k", "h"), w
    # --- capability from a stated mean and sigma ---------------------------------------------------------
    if (w := _has(low, "capability", r"\bcpk", r"\bcp\b", r"\bppk")) and not lists:
        mean = _value(low, r"mean|average|μ|mu")
        sigma = _value(low, r"sigma|σ|standard deviation|sd")
        lsl, usl = _value(low, r"lsl|lower spec(?:ification)?(?: limit)?"), _value(low, r"usl|upper spec(?:ification)?(?: limit)?")
        if mean is not None and sigma is not None and (lsl is not None or usl is not None):
            args = {"operation": "capability", "mean": mean, "sigma": sigma}
            for k, v in (("lsl", lsl), ("usl", usl)):
                if v is not None:
                    args[k] = v
            return "spc", "dsl_executor", args, ("mean", "sigma", "lsl", "usl"), w
    # --- power and sample size ---------------------------------------------------------------------------
    if not lists and (args := _read_power(low)) is not None:
        keys = tuple(k for k in args if k not in ("operation", "test"))
        return "statistics", "statistics", args, keys, next(x for x in POWER_WORDS if x in low)
    # --- gauge R&R -----------------------------------------------------------------------------------------
    if (w := _has(low, "gauge r&r", "gage r&r", "gauge rr", "gage rr", "gauge study", "gage study",
                  "measurement system", "repeatability and reproducibility")):
        parts, ops = _labels(prompt, r"parts?"), _labels(prompt, r"operators?|appraisers?")
        y = named.get("measurements") or named.get("values") or named.get("y") or named.get("data")
        if parts and ops and y:
            args = {"operation": "gauge_rr", "measurements": _nums(y), "parts": parts, "operators": ops}
            tol = _value(low, r"tolerance")
            if tol is not None:
                args["tolerance"] = tol
            return "spc", "dsl_executor", args, ("measurements", "parts", "operators", "tolerance"), w
    # --- response surfaces ---------------------------------------------------------------------------------
    if (w := _has(low, "response surface", "stationary point", "second-order model", "second order model", r"\brsm\b")) \
            and lists:
        factors = _factor_names(prompt, low)
        if factors:
            args = {"operation": "response_surface", "factors": factors, "response": _nums(max(lists, key=len))}
            kind = "box_behnken" if _has(low, "box-behnken", "box behnken") else "central_composite"
            design: dict = {"kind": kind}
            center = _int_after(low, r"cent(?:er|re) points?|cent(?:er|re) runs?")
            if center is not None:
                design["center"] = center
            args["design"] = design
            if _has(low, "minimi"):
                args["goal"] = "minimize"
            return "doe", "dsl_executor", args, ("factors", "response"), w
    # --- acceptance sampling --------------------------------------------------------------------------------
    if (w := _has(low, "sampling plan", "acceptance sampling", "operating characteristic", "oc curve", r"\baoq",
                  "acceptance number")):
        n = _value(low, r"n|sample size|sample of") or _int_after(low, r"items? sampled|units? sampled")
        c = _value(low, r"c|acceptance number|accept(?:ance)? number") or \
            (int(m.group(1)) if (m := re.search(r"(?:at most|no more than|up to)\s+(\d+)\s+defect", low)) else None)
        if n is not None and c is not None:
            args = {"operation": "sampling_plan", "n": int(n), "c": int(c)}
            lot = _value(low, r"lot size|lots? of|big n")
            if lot is not None:
                args["lot_size"] = int(lot)
            if lists:
                args["p"] = _nums(lists[0])
            return "spc", "dsl_executor", args, ("n", "c", "lot_size", "p"), w
    # --- life data ------------------------------------------------------------------------------------------
    if (w := _has(low, "weibull", "lognormal", "life data", "reliability", r"\bb10", "failure times", "time to failure",
                  "times to failure", "lifetimes")) and lists:
        times = _nums(lists[0])
        args = {"operation": "life_data", "times": times}
        cens = re.findall(rf"(\d+)\s+(?:\w+\s+){{0,5}}?(?:censored|survived|did not fail|were removed|still running|"
                          rf"suspended|without failing|without failure|unfailed)\D{{0,40}}?(?:at|after)\s+({NUMBER})", low)
        if cens:
            args["times"] = times + [_num(float(t)) for _, t in cens]
            args["censored"] = [False] * len(times) + [True] * len(cens)
            args["counts"] = [1] * len(times) + [int(c) for c, _ in cens]
        if _has(low, "lognormal", "log-normal"):
            args["distribution"] = "lognormal"
        return "statistics", "statistics", args, ("times", "censored", "counts"), w
    # --- correlation ------------------------------------------------------------------------------------------
    if (w := _has(low, "correlation", "correlate", "pearson", "spearman", "kendall")) and len(lists) >= 2:
        xs = named.get("x") or named.get("X") or lists[0]
        ys = named.get("y") or named.get("Y") or lists[1]
        args = {"operation": "correlation", "x": _nums(xs), "y": _nums(ys)}
        method = "spearman" if "spearman" in low else "kendall" if "kendall" in low else None
        if method:
            args["method"] = method
        return "statistics", "statistics", args, ("x", "y"), w
    # --- rank tests -------------------------------------------------------------------------------------------
    if (w := _has(low, "mann-whitney", "mann whitney", "rank-sum", "rank sum", "wilcoxon", "signed-rank", "signed rank",
                  "kruskal", "sign test", "nonparametric", "non-parametric")) and lists:
        if _has(low, "kruskal") or (len(lists) >= 3 and not _has(low, "wilcoxon", "sign test", "mann")):
            return "statistics", "statistics", {"operation": "rank_test", "kind": "kruskal",
                                                "groups": [_nums(x) for x in lists]}, ("groups",), w
        if _has(low, "signed", "sign test", "paired") or (_has(low, "wilcoxon") and not _has(low, "rank-sum", "rank sum")):
            kind = "sign" if _has(low, "sign test") else "wilcoxon"
            args = {"operation": "rank_test", "kind": kind, "x": _nums(lists[0])}
            if len(lists) >= 2:
                args["y"] = _nums(lists[1])
            else:
                mu = _value(low, r"median|mu|μ|hypothesi[sz]ed (?:median|value)|against")
                if mu is not None:
                    args["mu"] = mu
            return "statistics", "statistics", args, ("x", "y", "mu"), w
        if len(lists) >= 2:
            return "statistics", "statistics", {"operation": "rank_test", "kind": "mann_whitney",
                                                "x": _nums(lists[0]), "y": _nums(lists[1])}, ("x", "y"), w
    # --- variances ---------------------------------------------------------------------------------------------
    if (w := _has(low, "f-test", "f test", "bartlett", "levene", "brown-forsythe", "equal variances", "equality of variances",
                  "variances differ", "variances are equal", "compare variances", "compare the variances",
                  "homogeneity of variance", "variance test", "test of variance", "test the variance",
                  "standard deviations differ", "chi-square test for the variance", "chi-square test of the variance")):
        kind = "bartlett" if "bartlett" in low else "brown_forsythe" if "brown" in low else \
            "levene" if "levene" in low else None
        if lists and (len(lists) >= 3 or kind):
            return "statistics", "statistics", {"operation": "variance_test", "kind": kind or "levene",
                                                "groups": [_nums(x) for x in lists]}, ("groups",), w
        if len(lists) == 2:
            return "statistics", "statistics", {"operation": "variance_test", "kind": "f", "x": _nums(lists[0]),
                                                "y": _nums(lists[1])}, ("x", "y"), w
        sigma0 = _value(low, r"sigma0|σ0|sigma_0|hypothesi[sz]ed (?:standard deviation|sigma|sd)|against")
        if len(lists) == 1 and sigma0 is not None:
            return "statistics", "statistics", {"operation": "variance_test", "kind": "one_sample",
                                                "x": _nums(lists[0]), "sigma0": sigma0}, ("x", "sigma0"), w
        sds, ns = _values(low, r"s1|s2|sd1|sd2|sd|standard deviation"), _values(low, r"n1|n2|n")
        if not lists and len(sds) == 2 and len(ns) == 2:
            return "statistics", "statistics", {"operation": "variance_test", "kind": "f", "sd_x": sds[0], "n_x": int(ns[0]),
                                                "sd_y": sds[1], "n_y": int(ns[1])}, ("sd_x", "n_x", "sd_y", "n_y"), w
    # --- proportions -----------------------------------------------------------------------------------------
    if (w := _has(low, "proportion", "fisher", "defective rate", "fraction defective", "percent defective",
                  "binomial test", "success rate", "defect rate")):
        pairs = [(int(a), int(b)) for a, b in re.findall(
            r"(\d+)\s*(?:out of|of|/|defectives? (?:in|out of|among)|successes (?:in|out of)|in)\s*(\d+)", low)
            if int(a) <= int(b)]
        if "fisher" in low and len(lists) == 2 and all(len(x) == 2 for x in lists):
            (a, b), (c, d) = lists
            pairs = [(int(a), int(a + b)), (int(c), int(c + d))]
        exact = _has(low, "exact", "fisher", "binomial test")
        if len(pairs) >= 2:
            (x, n), (y, m) = pairs[:2]
            args = {"operation": "proportion_test", "successes": x, "trials": n, "successes_y": y, "trials_y": m}
            if exact:
                args["method"] = "exact"
            return "statistics", "statistics", args, ("successes", "trials", "successes_y", "trials_y"), w
        if len(pairs) == 1:
            x, n = pairs[0]
            args = {"operation": "proportion_test", "successes": x, "trials": n}
            p0 = _value(low, r"p0|p_0|hypothesi[sz]ed (?:proportion|rate|value)|claimed (?:proportion|rate)|"
                             r"(?:proportion|rate) (?:is|equals|of)|against|exceeds|below|than", percent=True)
            if p0 is not None and 0 < p0 < 1:
                args["p0"] = p0
            if exact:
                args["method"] = "exact"
            if re.search(r"less than|below|fewer|lower than|under", low):
                args["alternative"] = "less"
            elif re.search(r"greater than|more than|exceeds|above|higher than|over", low):
                args["alternative"] = "greater"
            return "statistics", "statistics", args, ("successes", "trials", "p0"), w
    # --- t-tests from summary statistics -------------------------------------------------------------------
    if (w := _has(low, "t-test", "t test", "ttest", "compare the means", "compare means", "means differ")) and not lists:
        means = _values(low, r"mean|average")
        sds = _values(low, r"sd|standard deviation|std\.? dev(?:iation)?|s")
        ns = [v for v in _values(low, r"n|sample size|size") if float(v).is_integer()]
        if means and len(means) == len(sds) == len(ns) and len(means) in (1, 2):
            kind = "paired" if "paired" in low else "one_sample" if len(means) == 1 else \
                "two_sample" if _has(low, "pooled", "equal variance", "student") else "welch"
            args = {"operation": "t_test", "kind": kind, "mean_x": means[0], "sd_x": sds[0], "n_x": int(ns[0])}
            if len(means) == 2:
                args.update(mean_y=means[1], sd_y=sds[1], n_y=int(ns[1]))
            mu = _value(low, r"mu|μ|hypothesi[sz]ed mean|differs? from|against|equal to")
            if kind == "one_sample" and mu is not None:
                args["mu"] = mu
            keys = tuple(k for k in args if k not in ("operation", "kind"))
            return "statistics", "statistics", args, keys, w
    return None


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

    found = _read_toolbox(prompt, low, lists, named)
    if found is not None:
        task_type, tool, args, keys, word = found
        return done(task_type, tool, args, keys, word)

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

