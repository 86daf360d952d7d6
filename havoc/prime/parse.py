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

from havoc.prime.prose import Numbers, Series, read_numbers

NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
NUMBER_RE = re.compile(rf"(?<![A-Za-z_\d.]){NUMBER}")
# A named factor with its range: "Temp(100, 200)", "temperature (100-200°C)", "pressure (10 to 50 bar)",
# "speed from 50 to 150 RPM", "time between 1 and 5".
_RANGE_SEP = r"\s*(?:,|–|-|to|\.\.)\s*"
_FACTOR_RANGE_RE = re.compile(
    rf"\b([A-Za-z][A-Za-z0-9_]{{0,23}})\s*\(\s*({NUMBER}){_RANGE_SEP}({NUMBER})\s*[^()0-9,]{{0,12}}\)"
    rf"|\b([A-Za-z][A-Za-z0-9_]{{0,23}})\s+(?:from|between|ranging from)\s+({NUMBER})\s*(?:to|and|-)\s*({NUMBER})"
    rf"|\b([A-Za-z][A-Za-z0-9_]{{1,23}})\s+({NUMBER})\s*(?:-|–|to)\s*({NUMBER})\b")
_WORD_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
                 "eleven": 11}


def numbers_in(text: str) -> list[float]:
    """Every number written in `text`, in order (digits only: "two" is not read as 2).

    Hyphenated words such as "t-test" or "2-sided" do not produce negative numbers. The minus sign U+2212
    (what word processors write) counts as one: "−0.4" is -0.4, never 0.4.
    """
    text = text.replace("\u2212", "-")
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


def json_number(v: float) -> int | float:
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
        refusal: why no tool answers a request that asks for figures (None: a tool fits, or the request
            asks for no figures and the model may answer it alone).
    """

    task_type: str
    tool: str | None = None
    args: dict = field(default_factory=dict)
    data_keys: tuple[str, ...] = ()
    matched: list[str] = field(default_factory=list)
    lists: list[list[float]] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)
    refusal: str | None = None

    @property
    def operation(self) -> str | None:
        return self.args.get("operation")


def _has(text: str, *words: str) -> str | None:
    for w in words:
        if re.search(rf"(?<![a-z]){w}", text):
            return w.replace("\\", "")
    return None


_NOT_FACTOR = {"center", "centre", "runs", "factors", "between", "from", "with", "and", "for", "in", "of", "design",
               "points", "levels", "the", "at", "is", "are", "a", "an", "coded", "each", "ranging", "range", "varied"}


def _factor_names(prompt: str, low: str) -> list[dict]:
    found = []
    for m in _FACTOR_RANGE_RE.finditer(prompt):
        k = 1 if m.group(1) else 4 if m.group(4) else 7
        name = m.group(k)
        # "thickness 1 to 3, cure time 20 to 60": after a comma, the word before the name is part of it
        if k == 7 and (w := re.search(r",\s*(?:and\s+)?([a-z]{2,})\s+$", prompt[:m.start(k)])) and \
                w.group(1) not in _NOT_FACTOR:
            name = f"{w.group(1)} {name}"
        found.append((name, m.group(k + 1), m.group(k + 2)))
    ranges = [(n, float(a), float(b)) for n, a, b in found
              if n.lower() not in _NOT_FACTOR and float(a) != float(b)]
    if ranges:
        return [{"name": n, "low": json_number(a), "high": json_number(b)} for n, a, b in ranges]
    # "factors named Temp, Pressure and Speed", "5 factors, labelled A, B, C, D, E, each coded from -1 to +1"
    m = re.search(r"\bfactors?\b,?\s*(?:labell?ed|named|called|:)?\s*((?:[A-Za-z][A-Za-z0-9_]*\s*(?:,|and)\s*)+"
                  r"[A-Za-z][A-Za-z0-9_]*)", prompt)
    if m:
        names = [n for n in re.split(r"\s*(?:,|\band\b)\s*", m.group(1)) if n and n not in _NOT_FACTOR]  # "A", not "each"
        r = re.search(rf"each (?:\w+ )?(?:from|between)\s+({NUMBER})\s*(?:to|and|-)\s*({NUMBER})", prompt[m.end():])
        lo, hi = (float(r.group(1)), float(r.group(2))) if r else (-1.0, 1.0)
        if len(names) >= 2 and lo != hi:
            return [{"name": n, "low": json_number(lo), "high": json_number(hi)} for n in names]
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
    return json_number(v)


def _values(low: str, names: str) -> list[float]:
    return [json_number(float(v)) for v in re.findall(rf"(?<![a-z])(?:{names}){_SEP}({NUMBER})", low)]


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
            out.append(json_number(float(item)))
        except ValueError:
            out.append(item)
    return out


def _nums(values: list[float]) -> list:
    return [json_number(v) for v in values]


SIGMA = r"sigma|σ|standard deviation|std\.? dev(?:iation)?|sd|s"
POWER_WORDS = ("sample size", "how many samples", "how many measurements", "how many units", "how many subjects",
               "how many runs", "how many replicates", "power")


def _read_power(low: str) -> dict | None:
    if not (w := _has(low, *POWER_WORDS)):
        return None
    if w == "power" and (not re.search(r"detect|effect|difference|shift|sample|power of|power =|% power|power to", low)
                         or re.search(r"\bto the power of \d|raised to", low)):
        return None  # "3 raised to the power of 4" is arithmetic
    if _has(low, "proportion", "defective rate", "percent defective", "fraction defective", "rate"):
        p0 = _value(low, r"p0|p_0|null proportion|hypothesi[sz]ed proportion", percent=True)
        p1 = _value(low, r"p1|p_1", percent=True)
        p2 = _value(low, r"p2|p_2", percent=True)
        m = re.search(rf"from\s+({NUMBER})\s*(%?)\s+to\s+({NUMBER})\s*(%?)", low)
        if m and p1 is None:
            a, b = float(m.group(1)), float(m.group(3))
            a, b = (a / 100 if m.group(2) or a > 1 else a), (b / 100 if m.group(4) or b > 1 else b)
            if p0 is None and not _has(low, "two proportions", "two groups", "two-sample", "two sample"):
                p0, p1 = json_number(a), json_number(b)
            else:
                p1, p2 = json_number(a), json_number(b)
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
        elif _has(low, "one sample", "one-sample", "single sample", "single-sample", "against a target"):
            test = "one_sample_t"
        elif _has(low, "two-sample", "two sample", "two groups", "two independent", "two means", "compare two", "per group",
                  "two treatments"):
            test = "two_sample_t"
        args = {"operation": "power", "test": test}
        effect = _value(low, r"difference(?: worth (?:finding|detecting))?|delta|δ|shift|effect(?: size)?|change")
        if effect is None and (m := re.search(rf"({NUMBER})\s*%?\s*(?:difference|shift|change|effect)", low)):
            effect = json_number(float(m.group(1)))  # "a 10% difference", "a 2-unit shift"
        if effect is not None:
            args["effect"] = effect
        sd = _value(low, SIGMA)
        if sd is None and (m := re.search(rf"(?:sd|standard deviation|sigma) of the \w+ (?:is|=|of)\s*({NUMBER})", low)):
            sd = json_number(float(m.group(1)))
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
        power = json_number(float(m.group(1)) / 100) if m else None
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
            args["times"] = times + [json_number(float(t)) for _, t in cens]
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
                  "standard deviations differ", "chi-square test for the variance", "chi-square test of the variance")) \
            and not re.search(r"welch|t[- ]?test|(?:compare|comparing) the means|assum|difference in mean", low) \
            and not (w in ("f-test", "f test") and len(lists) >= 3 and "varian" not in low):
        # (an F test across three or more groups, with no word of variances, is the ANOVA's)
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


# ------------------------------------------------------------------------------------ the core operations
# Which operation a request asks for is scored, not matched: each operation has cue phrases with weights
# (the test's name weighs most, words that only suggest it less), and an operation is chosen only when the
# prompt's data has the shape it needs (two lists for a two-sample test, three or more for ANOVA, none for
# SPC constants). Issue 15: the first-match rules sent "Machine 1: 10.2, 10.4, ... Use a two-sample t-test."
# and "What are Cp and Cpk?" to the model alone, because their data was not in brackets or their test was
# named last; the cues below do not care where in the prompt they are.
CUES: dict[str, tuple[tuple[str, float], ...]] = {
    "t_test": ((r"t[- ]?tests?\b|\bttest|student'?s?\b|welch|\bt[- ]statistic", 4.0),
               (r"paired|matched[- ]pairs?|one[- ]sample|two[- ]sample|compare (?:the )?means|mean difference", 2.0),
               (r"\btest (?:if|whether|that|for a)|hypothes|significan|differs? from|different from|consistent with|"
                r"single[- ]sample|measured twice|did (?:they|it|the \w+) change|pool(?:ed|ing)? (?:the )?varian|"
                r"do not pool|don'?t pool|test (?:it |this |them )?against|against a (?:nominal|target|reference)|"
                r"nominal value|compare the (?:sample )?mean (?:to|with|against)|before and after", 2.5),
               (r"differ|difference|compare|comparison|better|reduce|improve|help|drop|versus|\bvs\b|higher|lower|"
                r"same mean", 1.0)),
    "anova": ((r"\banova\b|analysis of variance", 5.0), (r"one[- ]way|\bf[- ]test\b", 2.0),
              (r"differ|difference|compare|matter|same for|the same|effect of", 1.0)),
    "regression": ((r"regress|regression|least[- ]squares|(?:fit|draw)\b[^.?]{0,20}\bline|slope|intercept|trend ?line|"
                    r"best[- ]fit|y\s*=\s*a\s*\+\s*b\s*x|linear (?:fit|model)|predict", 4.0),),
    "correlation": ((r"correlat|pearson|spearman|kendall|move together|go together|co-?vary", 5.0),
                    (r"related|relationship|associat|\br\b", 1.5)),
    "confidence_interval": ((r"confidence interval|\bci\b|interval (?:for|of|estimate)|margin of error|"
                             r"confidence (?:bounds?|limits?)", 5.0),),
    "describe": ((r"\bmean\b|average|standard deviation|\bsd\b|\bstd\b|median|variance|spread|summar|descriptive|"
                  r"describe|statistics|skew|kurtosis|quartile|\biqr\b|percentile|typical value|"
                  r"how (?:much|widely) (?:do |does )?(?:they|it|the \w+) vary|variability", 1.5),),
    "control_chart": ((r"control chart|control limits|\bucl\b|\blcl\b|\bin control\b|out of control|centre line|"
                       r"center line|\blimits\b|\bchart", 3.0),
                      (r"individuals?\b|\bi-?mr\b|moving range|x-?bar|x̄|\b[cpu][- ]?charts?\b|\bnp[- ]?charts?\b", 3.0)),
    "capability": ((r"\bc[pm]k?\b|\bppk?\b|capab", 6.0), (r"\blsl\b|\busl\b|spec|tolerance", 1.0)),
    "constants": ((r"\ba[23]\b|\bd[234]\b|\bb[3-6]\b|\bc4\b|\be2\b", 4.0),
                  (r"constants?|factors? for|chart factors|(?:control[- ]chart|x-?bar|range|spc) (?:\w+ ){0,3}factors", 2.0)),
}
_ALPHA_RE = re.compile(rf"(?:alpha|α|significance(?: level)?)\s*(?:=|:|of|is|at)?\s*({NUMBER})\s*(%)?|(?:at|with) (?:the |a )?({NUMBER})\s*%\s*(?:significance|level)|({NUMBER})\s*%\s*(?:significance|level of significance)")
_CONFIDENCE_RE = re.compile(rf"({NUMBER})\s*%\s*(?:confidence|ci\b|interval)|confidence(?: level)?\s*(?:of|=|:)?\s*({NUMBER})\s*%")
_PAIRED_RE = re.compile(r"paired|matched|same (?:\d+ )?(?:subjects|people|patients|parts|units|operators|employees|"
                        r"technicians|specimens|samples|items|workers|students|machines)|measured twice|each \w+ (?:was )?(?:tested|measured)"
                        r" (?:on|with|under|by) both|\bbefore\b.*\bafter\b|\bpre[- ].*\bpost[- ]|\bpre\b.*\bpost\b")
_WELCH_RE = re.compile(r"welch|unequal[- ]variances?|variances? (?:\w+ ){0,2}(?:unequal|different|not equal|differ)|"
                       r"without assuming equal|not assum\w* equal|don'?t assume equal|(?:do not|don'?t|not) pool|"
                       r"spreads? (?:\w+ ){0,2}differ|unequal spreads?")
_THOUSANDS = r"[-+]?\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?"  # "2,394" in a sentence is one number
_MU_RE = re.compile(rf"(?:mean|average|mu|μ)\s*(?:is|of|=|equals|should be|is supposed to be|of exactly)?\s*({_THOUSANDS}|{NUMBER})|"
                    rf"(?:against|different from|differs? from|equal to|equals|hypothesi[sz]ed (?:mean|value)(?: of| is| =)?|"
                    rf"target(?: of| is| =)?|nominal(?: value)?(?: of| is| =)?|consistent with|mean (?:to|with)|should average|above|below|exceeds?|"
                    rf"than)\s*({_THOUSANDS}|{NUMBER})")
_COUNT_NOUN_RE = re.compile(r"\s*(?:parts|samples|readings|measurements|units|items|observations|values|runs|"
                            r"replicates|specimens|pieces)\b")
_N_RE = re.compile(r"(?:subgroups?|samples?|lots?|groups?|batches)\s+(?:of size|of|have|with|sizes?(?: of| is| =)?|contain)\s*"
                   r"(\d+)|\bn\s*=\s*(\d+)|(?:subgroup|sample) size (?:is |of |= )?(\d+)|(\d+)\s+(?:units|items|parts|pieces)"
                   r" (?:inspected|sampled|each)|each (?:lot|sample|subgroup) of (\d+)|\((?:n\s*=\s*)(\d+)\)")


def _alpha(low: str) -> float | None:
    m = _ALPHA_RE.search(low)
    if m:
        v = float(next(g for g in (m.group(1), m.group(3), m.group(4)) if g))
        if m.group(2) or m.group(3) or m.group(4) or v >= 1:
            v /= 100
        return json_number(v) if 0 < v < 1 else None
    m = _CONFIDENCE_RE.search(low)
    if m:
        v = 1 - float(m.group(1) or m.group(2)) / 100
        return json_number(round(v, 10)) if 0 < v < 1 else None
    return None


_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
                 "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "twenty-five": 25}


def _digits(low: str) -> str:
    """Number words as digits ("subgroups of five" -> "subgroups of 5"), for the readers of counts only: the
    cues keep their words ("two-sample", "one-way")."""
    return re.sub(r"\b(" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b(?![- ](?:sample|way|sided|tailed))",
                  lambda m: str(_NUMBER_WORDS[m.group(1)]), low)


def _subgroup_n(low: str) -> int | None:
    m = _N_RE.search(_digits(low))
    return int(next(g for g in m.groups() if g)) if m else None


_LIMIT = rf"({NUMBER})\s*(?:[a-zA-Z°µ]{{1,4}}\.?)?"


def _spec_limits(low: str) -> tuple[float | None, float | None]:
    """(LSL, USL) as a prompt writes them: "LSL 9.5", "lower spec limit is 24", "spec limits are 9.5 to 10.5",
    "specs 499–501 g", "20 ± 0.5", "upper spec 12.5 only"."""
    low = low.replace("–", "-").replace("—", "-")
    lsl = _value(low, r"lsl|lower spec(?:ification)?(?: limit)?|lower limit|lower tolerance")
    usl = _value(low, r"usl|upper spec(?:ification)?(?: limit)?|upper limit|upper tolerance")
    if lsl is None and usl is None:
        m = re.search(rf"(?:spec(?:ification)?s?|limits|tolerance|tolerances)\s*(?:limits?)?\s*(?:are|is|of|:|=|at)?\s*"
                      rf"(?:from |between )?{_LIMIT}\s*(?:to|-|and|/)\s*{_LIMIT}", low)
        if m:
            lsl, usl = json_number(float(m.group(1))), json_number(float(m.group(2)))
        else:
            m = re.search(rf"({NUMBER})\s*(?:±|\+/-|\+-)\s*({NUMBER})", low)
            if m:
                c, t = float(m.group(1)), float(m.group(2))
                lsl, usl = json_number(round(c - t, 10)), json_number(round(c + t, 10))
    if lsl is not None and usl is not None and lsl > usl:
        lsl, usl = usl, lsl
    return lsl, usl


def _scores(low: str) -> dict[str, tuple[float, str]]:
    """Per operation with any cue in the prompt: (the cues' summed weight, the strongest cue as written)."""
    out = {}
    for op, cues in CUES.items():
        hits = [(w, m.group(0)) for pattern, w in cues if (m := re.search(pattern, low))]
        if hits:
            out[op] = (sum(w for w, _ in hits), max(hits)[1])
    return out


def _named_chart(letter: str) -> str:
    """"p chart", "p-chart", "p control chart", "(p) chart"."""
    return rf"\b{letter}[- ]?(?:control[- ])?chart|\({letter}\) chart"


def _chart_kind(low: str) -> str | None:
    for kind, pattern in (("xbar_r", r"x-?\s?bar|x̄|subgroup means"), ("np", _named_chart("np") + r"|number[- ]defective"),
                          ("c", _named_chart("c")), ("u", _named_chart("u")),
                          ("p", _named_chart("p") + r"|fraction[- ]defective|proportion defective|reject proportion"),
                          ("imr", r"individual|\bi-?mr\b|\bx-?mr\b|moving range|\bi[- ]chart")):
        if re.search(pattern, low):
            return kind
    return None


def _read_core(prompt: str, low: str, nums: Numbers) -> tuple | None:
    """(task_type, tool, args, data_keys, matched) for the core statistics and SPC operations, or None."""
    series = [s.values for s in nums.series]
    data = [_nums(v) for v in series]
    scores = _scores(low)
    by_label = {s.label.split()[-1]: _nums(s.values) for s in nums.series if s.label}
    for op in sorted(scores, key=lambda k: -scores[k][0]):
        word = scores[op][1]
        if op == "capability":
            lsl, usl = _spec_limits(low)
            if lsl is None and usl is None:
                continue
            limits = {k: v for k, v in (("lsl", lsl), ("usl", usl)) if v is not None}
            spec_values = {float(v) for v in limits.values()}
            cand = [d for d in data if len(d) >= 4 and not {float(x) for x in d} <= spec_values]
            if cand:
                return "spc", "dsl_executor", {"operation": "capability", "data": max(cand, key=len), **limits}, \
                    ("data", "lsl", "usl"), word
            mean = _value(low, r"mean|average|μ|mu|runs at a mean of|centred at|centered at")
            sigma = _value(low, SIGMA)
            if mean is not None and sigma is not None:
                return "spc", "dsl_executor", {"operation": "capability", "mean": mean, "sigma": sigma, **limits}, \
                    ("mean", "sigma", "lsl", "usl"), word
        elif op == "constants":
            n = _subgroup_n(low)
            if n is not None and 2 <= n <= 25 and not data:
                return "spc", "dsl_executor", {"operation": "constants", "n": n}, ("n",), word
        elif op == "control_chart":
            kind = _chart_kind(low)
            if not data:
                continue
            equal = len(data) >= 2 and len({len(d) for d in data}) == 1 and 2 <= len(data[0]) <= 25
            if kind == "xbar_r" or (kind is None and equal and re.search(r"subgroup", low)):
                if equal:
                    return "spc", "dsl_executor", {"operation": "control_chart", "chart": "xbar_r", "subgroups": data}, \
                        ("subgroups",), word
                n = _subgroup_n(low)
                if n and len(data[0]) % n == 0 and len(data[0]) // n >= 2:
                    groups = [data[0][i:i + n] for i in range(0, len(data[0]), n)]
                    return "spc", "dsl_executor", {"operation": "control_chart", "chart": "xbar_r", "subgroups": groups}, \
                        ("subgroups",), word
                continue
            if kind is None:
                kind = "c" if re.search(r"defects?\b|counts?\b|flaws|errors per", low) and \
                    all(float(v).is_integer() for v in data[0]) else "imr"
            args = {"operation": "control_chart", "chart": kind, "data": max(data, key=len)}
            if kind in ("p", "np"):
                n = _subgroup_n(low)
                if n is None:
                    m = re.search(r"(?:of|from|in)\s+(\d+)\b", low)
                    n = int(m.group(1)) if m else None
                if n is None:
                    continue
                args["n"] = n
            return "spc", "dsl_executor", args, ("data",), word
        elif op in ("regression", "correlation"):
            if len(data) < 2 or len(data[0]) != len(data[1]):
                continue
            x, y = by_label.get("x"), by_label.get("y")
            m = re.search(r"regress(?:ion of)?\s+(\w+)\s+(?:on|against|versus|vs\.?)\s+(\w+)", low)
            if (x is None or y is None) and m and m.group(1) in by_label and m.group(2) in by_label:
                y, x = by_label[m.group(1)], by_label[m.group(2)]
            if x is None or y is None or len(x) != len(y):
                x, y = data[0], data[1]
            if op == "regression":
                return "statistics", "statistics", {"operation": "regression", "y": y, "predictors": {"x": x}}, \
                    ("y", "predictors"), word
            args = {"operation": "correlation", "x": x, "y": y}
            method = "spearman" if "spearman" in low else "kendall" if "kendall" in low else None
            if method:
                args["method"] = method
            return "statistics", "statistics", args, ("x", "y"), word
        elif op in ("t_test", "anova"):
            if len(data) >= 3 or (op == "anova" and len(data) == 2):
                args = {"operation": "anova", "groups": data}
                if (a := _alpha(low)) is not None:
                    args["alpha"] = a
                return "statistics", "statistics", args, ("groups",), word
            if len(data) == 2:
                kind = "two_sample"
                if _PAIRED_RE.search(low) and len(data[0]) == len(data[1]):
                    kind = "paired"
                elif _WELCH_RE.search(low):
                    kind = "welch"
                args = {"operation": "t_test", "kind": kind, "x": data[0], "y": data[1]}
            elif len(data) == 1 and op == "t_test":
                spans = [(x.start, x.end) for x in nums.series]
                # not "each value is the mean of 3 parts": a count, not a hypothesised mean
                mu = next((float((m.group(1) or m.group(2)).replace(",", "")) for m in _MU_RE.finditer(low)
                           if not any(a <= m.start(m.lastindex) < b for a, b in spans)
                           and not _COUNT_NOUN_RE.match(low, m.end())), None)
                if mu is None:
                    continue
                args = {"operation": "t_test", "kind": "one_sample", "x": data[0], "mu": json_number(mu)}
                if re.search(rf"(?:greater|more|larger|higher|bigger) than\s*{NUMBER}|exceeds?\s*{NUMBER}|above\s*{NUMBER}", low):
                    args["alternative"] = "greater"
                elif re.search(rf"(?:less|lower|smaller|fewer) than\s*{NUMBER}|below\s*{NUMBER}|under\s*{NUMBER}", low):
                    args["alternative"] = "less"
            else:
                continue
            if (a := _alpha(low)) is not None:
                args["alpha"] = a
            return "statistics", "statistics", args, tuple(k for k in ("x", "y", "mu") if k in args), word
        elif op in ("confidence_interval", "describe"):
            if len(data) != 1:
                continue
            if op == "confidence_interval":
                args = {"operation": "confidence_interval", "kind": "mean", "data": data[0]}
            else:
                args = {"operation": "describe", "data": data[0]}
            if (a := _alpha(low)) is not None:
                args["alpha"] = a
            return "statistics", "statistics", args, ("data",), word
    return None


# Requests no tool answers: PRIME says so instead of letting the model write figures.
UNSUPPORTED = ((r"\bforecast|\barima\b|predict\w*\b[^.?]{0,40}\b(?:next|future|tomorrow)\b|tomorrow|weather|"
                r"in 20[3-9]\d|exponential smoothing", "forecasting is not something any of PRIME's tools does"),
               (r"neural network|machine learning|random forest|deep learning|classifier|principal component|\bpca\b|"
                r"cluster analysis|clustering|k-means", "PRIME has no machine-learning or multivariate tool"),
               (r"log[- ]rank|survival curve|kaplan", "PRIME has no survival-analysis tool (life_data fits Weibull and "
                                                      "lognormal only)"),
               (r"\bgini\b|inequality index", "PRIME has no inequality-index tool"),
               # not "matrix" alone: a design matrix is DOE
               (r"eigen|determinant|inverse of (?:the |a |this )?matrix|matrix (?:inverse|product|multiplication)|"
                r"(?:of|for) (?:the|this) matrix", "PRIME has no linear-algebra tool"),
               (r"present value|\bnpv\b|\birr\b|compound interest|interest rate|mortgage|annuity",
                "PRIME has no finance tool"),
               (r"probability of (?:getting|rolling|drawing|exactly|at least)|\bcoins?\b|\bdice\b|deck of cards",
                "PRIME has no probability-distribution tool for this"),
               (r"who will win|stock price|lottery", "no tool can know this"),
               # not "simulated" (data can be) or "prior" (prior to the change): the requests themselves
               (r"\bsimulate\b|simulation of|monte carlo|bootstrap", "PRIME has no simulation or resampling tool"),
               (r"bayes|posterior|prior distribution", "PRIME has no Bayesian tool"))
_QUANT_RE = re.compile(r"\b(?:compute|calculate|estimate|how many|how much|what is the (?:value|number)|test|analy[sz]e|"
                       r"analysis|fit|model|predict|probability|perform|run|value|rate|percent\w*|average|total)\b")

_WORD_OPS = ((r"\bsquare root of\s+", "sqrt "), (r"\bdivided by\b", "/"), (r"\bmultiplied by\b", "*"), (r"\btimes\b", "*"),
             (r"\bplus\b", "+"), (r"\bminus\b", "-"), (r"\bsquared\b", "^2"), (r"\bcubed\b", "^3"),
             (r"\braised to(?: the)?(?: power(?: of)?)?\s+", "^"),
             (r"\bto the power(?: of)?\s+", "^"), (r"\bover\b", "/"))


def _arithmetic(prompt: str) -> str | None:
    """The arithmetic expression a prompt asks for ("17*23+4", "15% of 240", "125 times 8", "square root of 144")."""
    text = prompt.replace("×", "*").replace("÷", "/").replace("−", "-")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(rf"({NUMBER})\s*%\s*of\s*({NUMBER})", r"(\1/100)*\2", text)
    text = re.sub(r",\s*(?=(?:plus|minus|times|multiplied by|divided by|all over)\b)", " ", text)  # "55 times 3, plus 2"
    text = re.sub(rf"({NUMBER}(?:\s*(?:plus|minus|times|multiplied by|divided by|[-+*/^])\s*{NUMBER})+)\s+all over\s+",
                  r"(\1) over ", text)  # "69 plus 9, all over 25" is (69+9)/25
    for pattern, rep in _WORD_OPS:
        text = re.sub(pattern, rep, text, flags=re.IGNORECASE)
    text = re.sub(rf"sqrt\s*({NUMBER})", r"sqrt(\1)", text)
    best = ""
    for m in re.finditer(rf"(?:sqrt)?[\s(]*{NUMBER}\)?(?:[\s()]*(?:\*\*|[-+*/^])[\s()]*(?:sqrt)?\(?\s*{NUMBER}\)*)*", text):
        e = m.group(0).strip()
        while e.count("(") > e.count(")") and e.startswith("("):
            e = e[1:].strip()
        while e.count(")") > e.count("(") and e.endswith(")"):
            e = e[:-1].strip()
        if len(e) > len(best) and e.count("(") == e.count(")") and (re.search(r"\d\s*(?:\*\*|[-+*/^])\s*[\d(s.]", e)
                                                                  or e.startswith("sqrt")):
            best = e
    return best.replace("**", "^").rstrip(".").strip() or None  # "50 * 4 - 5." ends a sentence


def read_task(prompt: str) -> TaskSpec:
    """Read the task a prompt asks for.

    Args:
        prompt: the user's request.

    Returns:
        A `TaskSpec`; `tool` is None when no tool fits, and then `refusal` says why where the request asks
        for figures (PRIME answers with that instead of the model's own numbers).
    """
    low = re.sub(r"[–—‐\u2212]", "-", prompt.lower())
    nums = read_numbers(prompt)
    if len(nums.series) >= 3 and all(len(s.values) == 2 and s.bracketed for s in nums.series) and \
            re.search(CUES["regression"][0][0] + "|" + CUES["correlation"][0][0] + r"|\bpairs?\b|paired", low):
        # pairs written as (x, y), (x, y), ...: the x values and the y values
        pairs = nums.series
        nums.series = [Series([p.values[i] for p in pairs], name, pairs[0].start, pairs[-1].end, True,
                              [p.items[i] for p in pairs]) for i, name in ((0, "x"), (1, "y"))]
    lists = [s.values for s in nums.series]
    named: dict[str, list[float]] = {}
    for s in nums.series:
        if s.label:
            named.setdefault(s.label.split()[-1], s.values)
    spec = TaskSpec("general", lists=lists, numbers=nums.values())

    def done(task_type: str, tool: str, args: dict, data_keys: tuple[str, ...], *matched: str) -> TaskSpec:
        spec.task_type, spec.tool, spec.args, spec.data_keys = task_type, tool, args, data_keys
        spec.matched = [m for m in matched if m]
        return spec

    for pattern, why in UNSUPPORTED:
        if re.search(pattern, low):
            spec.task_type, spec.refusal = "unsupported", why
            spec.matched = [re.search(pattern, low).group(0)]
            return spec
    found = _read_toolbox(prompt, low, lists, named)
    if found is None:
        found = _read_core(prompt, low, nums)
    if found is not None:
        task_type, tool, args, keys, word = found
        return done(task_type, tool, args, keys, word)

    # --- DOE -------------------------------------------------------------------------------------------
    designs = (("box_behnken", ("box-behnken", "box behnken", "bbd")),
               ("central_composite", ("central composite", "ccd", "central-composite")),
               ("plackett_burman", ("plackett-burman", "plackett burman", "screening")),
               ("fractional_factorial", ("fractional factorial", "half fraction", "half-fraction", "fractional")),
               ("full_factorial", ("full factorial", "factorial", "2^", "all combinations", "two levels", "2 levels",
                                   "two-level", "2-level")))
    for operation, names in designs:
        hit = next((n for n in names if re.search(rf"(?<![a-z]){re.escape(n)}", low)), None)
        if hit == "2^" and not re.search(r"design|factorial|experiment|factors?\b", low):
            hit = None  # "2^10 - 24" is arithmetic, "a 2^3 design" is not
        if hit:
            factors = _factor_names(prompt, low)
            if not factors:
                break
            args = {"operation": operation, "factors": factors, "randomize": False}
            center = _int_after(low, r"cent(?:er|re) points?|cent(?:er|re) runs?")
            if center is not None and operation != "plackett_burman":
                args["center"] = center
            runs = _int_after(low, r"runs")
            replicates = _int_after(_digits(low), r"replicates?|replications?")
            if replicates and operation != "plackett_burman" and replicates > 1:
                args["replicates"] = replicates
            if operation == "plackett_burman" and runs in (8, 12, 16, 20, 24):
                args["runs"] = runs
            if operation == "fractional_factorial" and runs:
                args["runs"] = runs
            return done("doe", "dsl_executor", args, ("factors", "center", "runs"), hit)

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
    if not lists and (expression := _arithmetic(prompt)):
        return done("arithmetic", "symbolic", {"operation": "evaluate", "expression": expression}, ("expression",),
                    "arithmetic expression")

    # --- definitions -----------------------------------------------------------------------------------
    m = re.match(r"\s*(?:what\s+(?:is|are|does)|define|explain|describe|what's)\s+(.+?)[?.!]*\s*$", low)
    if m and not nums.numbers:
        # the query is the question itself: a model's paraphrase would be retrieval on unchecked text
        return done("definition", "rag_helper", {"query": prompt.strip(), "top_k": 1}, ("query",), m.group(0).split()[0])

    # --- nothing fits ----------------------------------------------------------------------------------
    if lists or _QUANT_RE.search(low):
        spec.task_type = "unsupported"
        spec.refusal = ("the request has figures to compute, but PRIME could not tell which of its tools (statistics, "
                        "DOE, SPC, arithmetic) it asks for, or could not read all the inputs that tool needs")
    return spec
