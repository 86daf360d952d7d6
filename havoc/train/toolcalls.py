"""Tool-use examples for teaching the model to write PRIME's calls, generated from the registry's schemas.

Each example is a request in ordinary wording and the one call that answers it, rendered through the very
text PRIME serves the model before a call (`havoc.prime.pipeline.call_context`: the system turn with the
tool's schema, the read step with or without its lead, the compute step, `<tool>`); the target is the call's
JSON and `</tool>`. Requests vary along three axes, and the development split is drawn along them, never by
row:
  - phrasing family: how the request is built (labels with colons, the test named last, the question
    implied, a story with distractor numbers, a table, terse notes, ...);
  - factor vocabulary: the names of groups and factors (machines, suppliers, temperature, ...);
  - number format: how values are written (decimals, negatives, thousands separators, ".5", units) and
    joined (commas, spaces, semicolons, "and").
A family, a vocabulary and a format each belong to one split; a train example uses train families,
vocabularies and formats only, a dev example dev ones only. The families are written apart from the
`understand` sets' wording (those are evaluation; a test checks that no 7-word run of theirs appears here).

Every example is verified before use (`verify`): its args validate against the registry's schema, the
llguidance grammar PRIME decodes under accepts the call's tokens, the call executes, every number in the
call is written in the request, and every number of the request is in the call or is a declared
distractor (alpha, a confidence level, a sample count, a year). Generation is seeded: the same seed gives
the same examples.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from havoc.errors import ConfigError
from havoc.prime.parse import json_number

SPLITS = ("train", "dev")


@dataclass
class Example:
    """One request and the call that answers it.

    Attributes:
        id: "family/operation/index".
        split: train or dev (by family, vocabulary and format).
        family, vocab, number_format: the three axes.
        prompt: the request.
        call: {"tool", "args"}.
        distractors: numbers in the request that belong to no argument.
        lead: render the read step's lead before the call.
        data_keys: the args that carry the request's data (the read step's facts).
    """

    id: str
    split: str
    family: str
    vocab: str
    number_format: str
    prompt: str
    call: dict
    distractors: list[float] = field(default_factory=list)
    lead: bool = False
    data_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ number formats
# value style x joint; each combination belongs to one split (see FORMAT_SPLIT)
VALUE_STYLES = ("plain", "trailing_zero", "thousands", "unicode_minus", "leading_dot", "units")
JOINTS = ("comma", "space", "semicolon", "and", "bracket", "slash", "compact", "compact_bracket")


def _split_of(name: str, dev_share: float = 0.3) -> str:
    """A stable split for a name (sha256, so the same on every machine and Python)."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "dev" if h < dev_share else "train"


FORMATS = [f"{v}+{j}" for v in VALUE_STYLES for j in JOINTS]
FORMAT_SPLIT = {f: _split_of("format:" + f) for f in FORMATS}


def write_number(v: float, style: str, decimals: int, unit: str = "") -> str:
    """`v` as the style writes it (the value read back is `v` itself)."""
    s = f"{abs(v):.{decimals}f}"
    if style == "trailing_zero" and decimals:
        s = f"{abs(v):.{decimals + 1}f}"
    if style == "thousands" and abs(v) >= 1000:
        whole, _, frac = s.partition(".")
        s = f"{int(whole):,}" + (f".{frac}" if frac else "")
    if style == "leading_dot" and s.startswith("0."):
        s = s[1:]
    sign = ("\u2212" if style == "unicode_minus" else "-") if v < 0 else ""
    out = sign + s
    return f"{out} {unit}" if style == "units" and unit else out


def write_list(values: list[float], fmt: str, decimals: int, unit: str = "") -> str:
    style, joint = fmt.split("+")
    parts = [write_number(v, style, decimals, unit) for v in values]
    if joint == "space" and style not in ("units", "thousands"):
        return " ".join(parts)
    if joint == "semicolon":
        return "; ".join(parts)
    if joint == "and":
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    if joint == "slash" and style not in ("units",):
        return " / ".join(parts)
    # commas without spaces, as people paste lists: "1,2,3" and "[1,2,3]" (never with thousands separators,
    # where "1,234,5" would be ambiguous, nor with units: those keep the space)
    comma = "," if joint in ("compact", "compact_bracket") and style not in ("units", "thousands") else ", "
    return f"[{comma.join(parts)}]" if joint in ("bracket", "compact_bracket") else comma.join(parts)


# ------------------------------------------------------------------------------------------ vocabularies
# name -> (group labels, units, factor names with plausible ranges)
VOCABS: dict[str, tuple[list[str], str, list[tuple[str, float, float]]]] = {
    "plant": (["Reactor 1", "Reactor 2", "Reactor 3", "Reactor 4"], "kg",
              [("temperature", 150, 210), ("pressure", 2, 8), ("catalyst", 0.5, 2.5), ("stir rate", 200, 600)]),
    "vendors": (["Vendor A", "Vendor B", "Vendor C", "Vendor D"], "mm",
                [("thickness", 1, 3), ("cure time", 20, 60), ("humidity", 30, 70), ("speed", 100, 300)]),
    "sites": (["Site north", "Site south", "Site east", "Site west"], "s",
              [("flow", 10, 40), ("voltage", 110, 240), ("dwell", 5, 15), ("gap", 0.2, 0.8)]),
    "lab": (["Method P", "Method Q", "Method R", "Method S"], "mg",
            [("pH", 4, 8), ("dose", 5, 25), ("incubation", 12, 48), ("agitation", 50, 150)]),
    "shifts": (["Day crew", "Night crew", "Weekend crew", "Relief crew"], "min",
               [("feed", 0.1, 0.4), ("depth", 1, 4), ("coolant", 2, 10), ("spindle", 800, 2400)]),
    "farm": (["Plot 1", "Plot 2", "Plot 3", "Plot 4"], "t",
             [("nitrogen", 40, 160), ("irrigation", 10, 30), ("seed density", 50, 90), ("mulch", 1, 5)]),
    "clinic": (["Cohort X", "Cohort Y", "Cohort Z", "Cohort W"], "ms",
               [("dosage", 10, 50), ("duration", 4, 12), ("frequency", 1, 3), ("volume", 100, 500)]),
    "oven": (["Oven left", "Oven right", "Oven top", "Oven bottom"], "g",
             [("bake temperature", 160, 220), ("bake time", 15, 45), ("fan speed", 1, 5), ("moisture", 8, 16)]),
}
VOCAB_SPLIT = {v: "dev" if v in ("clinic", "oven") else "train" for v in VOCABS}


# ------------------------------------------------------------------------------------------ data
@dataclass
class _Draw:
    rng: random.Random
    fmt: str
    vocab: str
    label_numbers: list[float] = field(default_factory=list)  # numbers inside labels ("Reactor 2"): distractors

    @property
    def style(self) -> str:
        return self.fmt.split("+")[0]

    def values(self, n: int, *, center: float | None = None, spread: float | None = None, decimals: int | None = None,
               positive: bool = False) -> tuple[list[float], int]:
        style, rng = self.style, self.rng
        if center is None:
            center = {"thousands": rng.choice([1250, 2400, 5600, 12000]), "unicode_minus": 0.0,
                      "leading_dot": rng.choice([0.3, 0.5, 0.7])}.get(style, rng.choice([4.5, 12, 25, 48, 75, 150]))
        if spread is None:
            spread = max(abs(center) * 0.06, 0.4 if style == "unicode_minus" else 0.05)
        if decimals is None:
            decimals = 0 if (style == "thousands" or abs(center) >= 100) and rng.random() < 0.7 else rng.choice([1, 1, 2])
        if style == "leading_dot":
            decimals = max(decimals, 2)
        out = []
        for _ in range(n):
            v = round(rng.gauss(center, spread), decimals)
            if positive or style in ("leading_dot",):
                v = abs(v) or 10 ** -decimals
            out.append(json_number(v))
        return out, decimals

    def write(self, values: list[float], decimals: int) -> str:
        return write_list(values, self.fmt, decimals, VOCABS[self.vocab][1])

    def labels(self, k: int) -> list[str]:
        out = VOCABS[self.vocab][0][:k]
        self.note(*out)
        return out

    def note(self, *labels: str) -> None:
        """Labels written in the request: their numbers belong to no argument."""
        from havoc.prime.parse import numbers_in

        for label in labels:
            self.label_numbers += numbers_in(label)

    def factors(self, k: int) -> list[tuple[str, float, float]]:
        return VOCABS[self.vocab][2][:k]


# ------------------------------------------------------------------------------------------ families
# A family renders (data sentences, the ask, a distractor sentence) into a request. Its `ask` picks one of the
# operation's phrasings; "implied" families use the question alone, never the test's name.
FAMILIES: dict[str, Callable[[random.Random, list[str], str, str], str]] = {
    "colon-labels": lambda r, data, ask, d: " ".join(data) + (f" {d}" if d else "") + f" {ask}",
    "ask-first": lambda r, data, ask, d: f"{ask} " + " ".join(data) + (f" {d}" if d else ""),
    "story": lambda r, data, ask, d: (f"{d} " if d else "") + "Here is what we recorded. " + " ".join(data) + f" {ask}",
    "table": lambda r, data, ask, d: "\n".join(data) + (f"\n{d}" if d else "") + f"\n{ask}",
    "terse": lambda r, data, ask, d: " | ".join(data) + f" -> {ask}" + (f" ({d})" if d else ""),
    "polite": lambda r, data, ask, d: f"Hello, could you help? {ask} " + " ".join(data) + (f" {d}" if d else "")
    + " Thanks!",
    "memo": lambda r, data, ask, d: "Memo to the analyst. " + " ".join(data) + f" Request: {ask}" + (f" {d}" if d else ""),
}
FAMILY_SPLIT = {"colon-labels": "train", "ask-first": "train", "story": "train", "terse": "train",
                "table": "dev", "polite": "dev", "memo": "dev"}


def _labelled(family: str, label: str, text: str) -> str:
    if family == "table":
        return f"{label} | {text}"
    if family == "terse":
        return f"{label} {text}"
    return f"{label}: {text}."


def _distractor(rng: random.Random, n_values: int) -> tuple[str, list[float]]:
    """A sentence whose numbers belong to no argument, and those numbers."""
    year = rng.choice([2019, 2021, 2022, 2023, 2024, 2025])
    kind = rng.choice(["year", "count", "level", "none", "none"])
    if kind == "year":
        return f"The data are from {year}.", [year]
    if kind == "count":
        return f"Each value is the mean of {n_values + 2} parts.", [n_values + 2]
    if kind == "level":
        return "Report at 95% confidence (the default level).", [95]  # another level would change alpha
    return "", []


# ------------------------------------------------------------------------------------------ operations
# Each builder returns (call args, data sentences, asks, data_keys, extra prompt numbers that are not
# distractors but settings the call carries) from a draw; asks are the operation's phrasings, split by index.
def _two(draw: _Draw, family: str, kind: str, paired: bool = False):
    r = draw.rng
    n1 = r.randint(3, 16)
    n2 = n1 if paired else r.randint(3, 16)
    x, dec = draw.values(n1)
    y, _ = draw.values(n2, center=(sum(x) / len(x)) * r.choice([0.97, 1.0, 1.04]) + (0.3 if draw.style == "unicode_minus" else 0),
                        decimals=dec)
    la, lb = (["Before", "After"] if paired and r.random() < 0.5 else draw.labels(2))
    data = [_labelled(family, la, draw.write(x, dec)), _labelled(family, lb, draw.write(y, dec))]
    asks = {"two_sample": ["Apply a pooled Student t-test.", "Do the means differ? Student's t-test with pooled variance.",
                           "Test for a difference in means assuming equal variances.", "Is the gap real? Pooled two-sample t."],
            "welch": ["The spreads differ a lot, so do not pool the variances when comparing the means.",
                      "Run Welch's test.", "Compare means with a t-test that allows unequal variances.",
                      "Welch two-sample comparison, please."],
            "paired": ["These are the same units measured twice: did they change?", "Apply a paired-sample t-test.",
                       "Matched pairs - test the mean difference.", "Each row is one unit before and after; test it."]}[kind]
    return {"operation": "t_test", "kind": kind, "x": x, "y": y}, data, asks, ("x", "y")


def _one_sample(draw: _Draw, family: str):
    r = draw.rng
    x, dec = draw.values(r.randint(4, 20))
    mu = json_number(round(sum(x) / len(x) + r.choice([-1, 1]) * abs(x[0]) * 0.02, dec))
    target = write_number(mu, draw.style if draw.style != "units" else "plain", dec)
    data = [_labelled(family, draw.labels(1)[0], draw.write(x, dec))]
    asks = [f"Does the mean differ from a target of {target}? One-sample t.", f"Test against a nominal value of {target}.",
            f"Is the average consistent with {target}? Use a single-sample t-test.",
            f"Compare the sample mean to {target}."]
    return {"operation": "t_test", "kind": "one_sample", "x": x, "mu": mu}, data, asks, ("x",)


def _anova(draw: _Draw, family: str):
    r = draw.rng
    k = r.randint(3, 4)
    groups, dec = [], None
    for i in range(k):
        g, dec = draw.values(r.randint(3, 8), decimals=dec)
        groups.append(g)
    data = [_labelled(family, lab, draw.write(g, dec)) for lab, g in zip(draw.labels(k), groups)]
    asks = ["Analysis of variance across the groups, please.", "Do the group means differ? One-way ANOVA.",
            "Test all groups at once with a one-factor ANOVA.", "Is there any difference among them (F test)?"]
    return {"operation": "anova", "groups": groups}, data, asks, ("groups",)


def _describe(draw: _Draw, family: str):
    x, dec = draw.values(draw.rng.randint(3, 40))
    data = [_labelled(family, draw.labels(1)[0], draw.write(x, dec))]
    asks = ["Give the summary statistics.", "What is the typical value and how much do they vary?",
            "Average and spread, please.", "Describe this sample numerically."]
    return {"operation": "describe", "data": x}, data, asks, ("data",)


def _interval(draw: _Draw, family: str):
    x, dec = draw.values(draw.rng.randint(4, 25))
    data = [_labelled(family, draw.labels(1)[0], draw.write(x, dec))]
    asks = ["Give an interval estimate for the true mean.", "Where does the population mean lie (confidence interval)?",
            "Interval for the mean, please.", "Estimate the mean with its confidence bounds."]
    return {"operation": "confidence_interval", "kind": "mean", "data": x}, data, asks, ("data",)


def _xy(draw: _Draw, family: str, operation: str):
    r = draw.rng
    n = r.randint(4, 14)
    x = [json_number(v) for v in sorted(r.sample(range(1, 60), n))]
    y, dec = draw.values(n)
    y = [json_number(round(a + 0.3 * b, dec)) for a, b in zip(y, x)]
    names = [f[0] for f in draw.factors(2)]
    data = [_labelled(family, f"{names[0]} (x)", ", ".join(str(v) for v in x)), _labelled(family, "response (y)", draw.write(y, dec))]
    if operation == "regression":
        asks = ["Fit a straight line of y on x.", "How does y change per unit of x? Linear fit.",
                "Ordinary least squares of the response on x.", "Give the regression line."]
        return {"operation": "regression", "y": y, "predictors": {"x": x}}, data, asks, ("y", "predictors")
    asks = ["How strongly do x and y move together?", "Pearson correlation of the two columns.",
            "Is there an association between x and y?", "Correlation coefficient, please."]
    return {"operation": "correlation", "x": x, "y": y}, data, asks, ("x", "y")


def _chart(draw: _Draw, family: str):
    r = draw.rng
    chart = r.choice(["imr", "imr", "c", "np", "p", "xbar_r"])
    if chart == "xbar_r":
        size = r.randint(3, 5)
        dec = None
        subgroups = []
        for _ in range(r.randint(4, 8)):
            g, dec = draw.values(size, decimals=dec)
            subgroups.append(g)
        draw.note(*(f"Sample {i + 1}" for i in range(len(subgroups))))
        data = [_labelled(family, f"Sample {i + 1}", draw.write(g, dec)) for i, g in enumerate(subgroups)]
        asks = ["Set up X-bar and range charts.", "Average and range control charts for these subgroups.",
                "Xbar/R limits please.", "Chart the subgroup means and ranges."]
        return {"operation": "control_chart", "chart": "xbar_r", "subgroups": subgroups}, data, asks, ("subgroups",)
    if chart == "imr":
        x, dec = draw.values(r.randint(8, 40))
        data = [_labelled(family, "Hourly readings", draw.write(x, dec))]
        asks = ["Individuals and moving-range chart.", "Plot single readings with their moving ranges (I-MR).",
                "Is the process stable? Use an X-mR chart.", "I-MR control limits please."]
        return {"operation": "control_chart", "chart": "imr", "data": x}, data, asks, ("data",)
    counts = [r.randint(0, 9) for _ in range(r.randint(8, 25))]
    if chart == "c":
        data = [_labelled(family, "Flaws per unit", ", ".join(map(str, counts)))]
        asks = ["Count chart (c) limits.", "Nonconformities per unit: which chart limits?", "Make a c control chart.",
                "Chart these defect counts (c chart)."]
        return {"operation": "control_chart", "chart": "c", "data": counts}, data, asks, ("data",)
    n = r.choice([50, 80, 120, 150, 250])
    data = [_labelled(family, f"Rejects per lot of {n}", ", ".join(map(str, counts)))]
    asks = ({"np": ["Number-defective (np) chart.", "np chart limits please.", "Chart the rejects as an np chart.",
                    "Build the np control chart."],
             "p": ["Fraction-defective (p) chart.", "p chart limits please.", "Chart the reject proportion (p chart).",
                   "Build the p control chart."]})[chart]
    return {"operation": "control_chart", "chart": chart, "data": counts, "n": n}, data, asks, ("data",)


def _capability(draw: _Draw, family: str):
    r = draw.rng
    x, dec = draw.values(r.randint(6, 30))
    mean = sum(x) / len(x)
    half = max(abs(mean) * 0.15, 1.0)
    lsl, usl = json_number(round(mean - half, dec)), json_number(round(mean + half, dec))
    w = lambda v: write_number(v, "plain", dec)  # noqa: E731
    data = [_labelled(family, draw.labels(1)[0], draw.write(x, dec)), f"Tolerance from {w(lsl)} to {w(usl)}."]
    asks = ["How capable is the process?", "Capability indices, please.", "Are we within spec comfortably (Cp, Cpk)?",
            "Report process capability."]
    return {"operation": "capability", "data": x, "lsl": lsl, "usl": usl}, data, asks, ("data",)


def _constants(draw: _Draw, family: str):
    n = draw.rng.randint(2, 15)
    data = [f"Subgroup size {n}."]
    asks = ["Which control chart constants apply?", "Look up the X-bar and range chart factors.",
            "Table factors for these subgroups?", "The SPC constants for that size, please."]
    return {"operation": "constants", "n": n}, data, asks, ()


def _design(draw: _Draw, family: str):
    r = draw.rng
    op = r.choice(["full_factorial", "box_behnken", "central_composite", "fractional_factorial", "plackett_burman"])
    k = {"box_behnken": r.randint(3, 4), "central_composite": r.randint(2, 4), "plackett_burman": r.randint(5, 7),
         "fractional_factorial": r.randint(4, 5)}.get(op, r.randint(2, 4))
    named = draw.factors(4)
    with_ranges = k <= len(named) and r.random() < 0.7
    if with_ranges:
        factors = [{"name": nm, "low": json_number(lo), "high": json_number(hi)} for nm, lo, hi in named[:k]]
        data = [", ".join(f"{f['name']} {write_number(f['low'], 'plain', 1 if not float(f['low']).is_integer() else 0)} to "
                          f"{write_number(f['high'], 'plain', 1 if not float(f['high']).is_integer() else 0)}"
                          for f in factors) + "."]
    else:
        factors = [{"name": chr(65 + i), "low": -1, "high": 1} for i in range(k)]
        data = [f"{k} factors, labelled {', '.join(f['name'] for f in factors)}, each coded from -1 to +1."]
        draw.label_numbers.append(k)  # the count is the list's length, not an argument
    args: dict = {"operation": op, "factors": factors}
    if op == "fractional_factorial":
        args["runs"] = 8 if k == 4 else 16
        data.append(f"Budget: {args['runs']} runs.")
    if op == "plackett_burman":
        args["runs"] = 8 if k <= 7 else 12
        data.append(f"Budget: {args['runs']} runs.")
    if op in ("box_behnken", "central_composite", "full_factorial") and r.random() < 0.5:
        args["center"] = r.randint(1, 5)
        data.append(f"Add {args['center']} centre runs.")
    name = {"full_factorial": "two-level full factorial", "box_behnken": "Box-Behnken", "central_composite":
            "central composite (CCD)", "fractional_factorial": "two-level fractional factorial",
            "plackett_burman": "Plackett-Burman screening"}[op]
    asks = [f"Lay out a {name} experiment.", f"I need a {name} design.", f"Generate the {name} run sheet.",
            f"Plan a {name} study."]
    return args, data, asks, ("factors",)


def _power(draw: _Draw, family: str):
    r = draw.rng
    test = r.choice(["two_sample_t", "one_sample_t", "paired_t"])
    effect, sd = r.choice([0.5, 1, 1.5, 2, 3, 4]), r.choice([1, 1.2, 2, 2.5, 3, 5])
    power = r.choice([0.8, 0.85, 0.9, 0.95])
    what = {"two_sample_t": "two independent groups", "one_sample_t": "one sample against a target",
            "paired_t": "paired measurements"}[test]
    effect, sd = json_number(effect), json_number(sd)
    data = [f"Study with {what}: smallest difference worth finding {effect}, standard deviation {sd}, "
            f"desired power {round(power * 100)}%."]
    asks = ["How many observations do we need?", "What sample size gives that power?", "Required n per group?",
            "Size the study."]
    # keys in the schema's order: llguidance gave up ("ParserTooComplex") on "power" written after "sd"
    return {"operation": "power", "test": test, "effect": effect, "power": power, "sd": sd}, data, asks, ()


def _arith(draw: _Draw, family: str):
    r = draw.rng
    a, b, c = r.randint(2, 90), r.choice([3, 4, 6, 7.5, 12, 25]), r.randint(2, 9)
    # compact expressions: "12*7.5-4" (a spaced "- 4" would read as the number -4)
    expr, text = r.choice([(f"{a}*{b}+{c}", f"{a} times {b}, plus {c}"), (f"({a}+{c})/{b}", f"{a} plus {c}, all over {b}"),
                           (f"{a}^{c % 4 + 2}", f"{a} raised to the {c % 4 + 2}"), (f"{a}*{b}-{c}", f"{a} multiplied by {b} minus {c}")])
    data = [f"Expression: {text}."]
    asks = ["Work it out.", "Compute the value exactly.", "What does it come to?", "Evaluate, please."]
    return {"operation": "evaluate", "expression": expr}, data, asks, ()


OPERATIONS: dict[str, tuple[str, Callable]] = {
    "t_test/two_sample": ("statistics", lambda d, f: _two(d, f, "two_sample")),
    "t_test/welch": ("statistics", lambda d, f: _two(d, f, "welch")),
    "t_test/paired": ("statistics", lambda d, f: _two(d, f, "paired", paired=True)),
    "t_test/one_sample": ("statistics", _one_sample),
    "anova": ("statistics", _anova),
    "describe": ("statistics", _describe),
    "confidence_interval": ("statistics", _interval),
    "regression": ("statistics", lambda d, f: _xy(d, f, "regression")),
    "correlation": ("statistics", lambda d, f: _xy(d, f, "correlation")),
    "control_chart": ("dsl_executor", _chart),
    "capability": ("dsl_executor", _capability),
    "constants": ("dsl_executor", _constants),
    "design": ("dsl_executor", _design),
    "power": ("statistics", _power),
    "evaluate": ("symbolic", _arith),
}
RETRIEVAL = ["What does {t} mean?", "Explain {t} briefly.", "Define {t}.", "What is {t} used for?"]
RETRIEVAL_TERMS = ["a control limit", "process capability", "a Box-Behnken design", "the p-value", "a moving range",
                   "a fractional factorial design", "Welch's t-test", "a confidence interval", "an np chart",
                   "the F statistic"]


def _pick(rng: random.Random, pool: dict[str, str], split: str) -> str:
    return rng.choice(sorted(k for k, s in pool.items() if s == split))


def generate(n: int, *, seed: int = 0, split: str = "train", lead_share: float = 0.3) -> Iterator[Example]:
    """`n` unverified examples of one split, seeded (the same seed and split give the same examples)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"{seed}:{split}")
    ops = sorted(OPERATIONS) + ["retrieval"]
    for i in range(n):
        op = ops[i % len(ops)]
        family, vocab, fmt = _pick(rng, FAMILY_SPLIT, split), _pick(rng, VOCAB_SPLIT, split), _pick(rng, FORMAT_SPLIT, split)
        ask_index = rng.randrange(2) * 2 + (split == "dev")  # asks 0, 2 train; 1, 3 dev
        if op == "retrieval":
            prompt = RETRIEVAL[ask_index].format(t=rng.choice(RETRIEVAL_TERMS))
            yield Example(f"{family}/retrieval/{i}", split, family, vocab, fmt, prompt,
                          {"tool": "rag_helper", "args": {"query": prompt, "top_k": 1}}, data_keys=("query",))
            continue
        tool, build = OPERATIONS[op]
        draw = _Draw(rng, fmt, vocab)
        args, data, asks, keys = build(draw, family)
        words, numbers = _distractor(rng, len(data)) if op not in ("evaluate", "constants", "power") else ("", [])
        prompt = FAMILIES[family](rng, data, asks[ask_index], words)
        yield Example(f"{family}/{op}/{i}", split, family, vocab, fmt, prompt, {"tool": tool, "args": args},
                      numbers + draw.label_numbers, lead=rng.random() < lead_share, data_keys=keys)


# ------------------------------------------------------------------------------------------ verification
def _prompt_values(prompt: str) -> list[float]:
    from havoc.eval.calls import _prompt_numbers

    return _prompt_numbers(prompt)


def _call_values(args: dict) -> list[float]:
    from havoc.prime.verify import SETTINGS, numeric_leaves

    return [v for _, v in numeric_leaves(args, skip=SETTINGS)]


def _in(v: float, pool: list[float]) -> bool:
    return any(math.isclose(v, p, rel_tol=1e-9, abs_tol=1e-12) or math.isclose(v * 100, p, rel_tol=1e-9)
               or math.isclose(v, p * 100, rel_tol=1e-9) for p in pool)


def task_of(example: Example):
    """The `TaskSpec` PRIME would hold for the example when its reading is right (the gold call)."""
    from havoc.prime.parse import TaskSpec

    args = example.call["args"]
    kind = {"statistics": "statistics", "dsl_executor": "doe" if "factors" in args else "spc",
            "symbolic": "arithmetic", "rag_helper": "definition"}[example.call["tool"]]
    return TaskSpec(kind, example.call["tool"], dict(args), tuple(example.data_keys))


def to_record(example: Example, tokenizer, registry) -> dict:
    """The trainer's record (`havoc.data.packing.encode_sft`): the context in the pieces a run encodes (no
    loss) and the call's compact JSON with `</tool>` (the loss), plus the schema it is decoded under."""
    from havoc.prime.parse import read_task
    from havoc.prime.pipeline import CALL_CLOSE, call_context, decode_schema

    tool, args = example.call["tool"], example.call["args"]
    schema = registry.arguments_schema(tool, args.get("operation"))
    task = task_of(example)
    # the prompt's lists as PRIME reads them: what a call's arrays may copy and its single values may not take
    reading = read_task(example.prompt)
    pieces = call_context(tokenizer, example.prompt, task, schema, lead=example.lead)
    lists = [v for v in args.values() if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)]
    return {"id": example.id, "split": example.split, "context_pieces": pieces,
            "completion": json.dumps(example.call, separators=(",", ":")) + CALL_CLOSE,
            "decode_schema": decode_schema(tool, schema, lists, task.args, reading.numbers, data=reading.lists)}


def verify(example: Example, tokenizer, registry) -> list[str]:
    """Why the example may not be used ([] when it may): schema, grammar, execution, numbers both ways."""
    from jsonschema import Draft202012Validator

    from havoc.engine import GrammarConstraint
    from havoc.prime.pipeline import CALL_CLOSE

    problems = []
    tool, args = example.call["tool"], example.call["args"]
    try:
        schema = registry.arguments_schema(tool, args.get("operation"))
    except Exception as e:  # an unknown tool or operation
        return [f"no schema: {e}"]
    errors = sorted(Draft202012Validator(schema).iter_errors(args), key=str)
    if errors:
        problems.append(f"schema: {errors[0].message}")
    record = to_record(example, tokenizer, registry)
    call_ids = tokenizer.encode(record["completion"][: -len(CALL_CLOSE)], add_bos=False)
    grammar = GrammarConstraint.json_schema(tokenizer, record["decode_schema"])
    try:
        for t in call_ids:
            grammar.accept(t)
        if not grammar.matcher.is_accepting():
            problems.append("grammar: the call is not complete under the decoding grammar")
    except Exception as e:  # the grammar refused a token
        problems.append(f"grammar: {e}")
    out = registry.execute(tool, args)
    if not out["success"]:
        problems.append(f"execute: {out['error']}")
    prompt_values = _prompt_values(example.prompt)
    call_values = _call_values(args)
    missing = [v for v in call_values if not _in(v, prompt_values)]
    if missing:
        problems.append(f"numbers in the call but not in the request: {missing[:5]}")
    # the other way, only the prose reader (thousands separators, U+2212): the plain scan reads "1,251" as 1
    # and 251 and "−0.4" as 0.4, numbers nobody wrote
    from havoc.prime.prose import read_numbers

    written = read_numbers(example.prompt).values()
    unused = [v for v in written if not _in(v, call_values + list(example.distractors))]
    if unused and tool != "rag_helper":
        problems.append(f"numbers in the request used by no argument: {unused[:5]}")
    return problems


def build(n: int, tokenizer, registry=None, *, seed: int = 0, split: str = "train", lead_share: float = 0.3,
          max_tries: int = 4) -> tuple[list[Example], list[tuple[Example, list[str]]]]:
    """`n` verified examples (and the rejected ones with their problems), drawing up to `max_tries * n`."""
    from havoc.tools import default_registry

    registry = registry or default_registry()
    kept, rejected = [], []
    for ex in generate(max_tries * n, seed=seed, split=split, lead_share=lead_share):
        problems = verify(ex, tokenizer, registry)
        if problems:
            rejected.append((ex, problems))
        else:
            kept.append(ex)
        if len(kept) == n:
            break
    return kept, rejected


def write_jsonl(path, n: int, tokenizer, registry=None, *, seed: int = 0, split: str = "train",
                lead_share: float = 0.3) -> dict:
    """Build `n` verified examples of a split and write their records to `path` (JSONL, atomically).

    Returns:
        {"path", "examples", "rejected", "reasons": {first words of a problem: count}}.

    Raises:
        ConfigError: fewer than `n` examples passed verification.
    """
    from collections import Counter

    from havoc.io.atomic import atomic_write_text
    from havoc.tools import default_registry

    registry = registry or default_registry()
    kept, rejected = build(n, tokenizer, registry, seed=seed, split=split, lead_share=lead_share)
    if len(kept) < n:
        raise ConfigError(f"only {len(kept)} of {n} {split} tool-call examples passed verification; first "
                          f"problems: {[p for _, p in rejected[:3]]}")
    lines = []
    for ex in kept:
        rec = to_record(ex, tokenizer, registry)
        rec.pop("decode_schema")
        lines.append(json.dumps({**rec, "prompt": ex.prompt, "family": ex.family}, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")
    reasons = Counter(p[0].split(":")[0] for _, p in rejected)
    return {"path": str(path), "examples": len(kept), "rejected": len(rejected), "reasons": dict(reasons)}


# The figures a dev task checks, per operation (as the understand sets check them).
FIELDS = {"t_test": ["statistic", "p_value"], "anova": ["f", "p_value"], "describe": ["mean", "sd"],
          "confidence_interval": ["lower", "upper"], "regression": ["coefficients[1].estimate", "r_squared"],
          "correlation": ["r", "p_value"], "control_chart": ["charts[0].center", "charts[0].ucl"],
          "capability": ["cpk", "cp"], "constants": ["A2", "D4"], "power": ["n"], "evaluate": ["numeric"],
          "full_factorial": ["n_runs"], "box_behnken": ["n_runs"], "central_composite": ["n_runs"],
          "fractional_factorial": ["n_runs"], "plackett_burman": ["n_runs"]}


def task_set(n: int, tokenizer, registry=None, *, seed: int = 0, split: str = "dev"):
    """A `TaskSet` of `n` verified examples of a split, for `havoc eval --calls` (retrieval left out: its
    answer is words, not figures)."""
    from havoc.eval.sets import Task, TaskSet

    tasks = []
    for ex in build(4 * n, tokenizer, registry, seed=seed, split=split)[0]:
        op = ex.call["args"].get("operation")
        if op in FIELDS:
            tasks.append(Task(ex.id, ex.prompt, {"tool": ex.call["tool"], "args": ex.call["args"], "fields": FIELDS[op]}))
        if len(tasks) == n:
            break
    return TaskSet(f"toolcalls-{split}", f"{len(tasks)} generated tool-call requests ({split} families, "
                   "vocabularies and number formats)", tasks)
