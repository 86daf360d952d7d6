"""The "understanding" set of issue 15: statistics, DOE, SPC and arithmetic requests in ordinary wording.

The shipped smoke sets are phrased the way the prompt reader was written for (data in brackets, the test
named first). These requests are not: data in prose after labels, the test named last, the question
implied, units, thousands separators, distractor numbers (alpha, "95%", sample sizes, years), and
requests no tool answers. Every row's gold is a tool call (run by `expected`, so the figures are the
tools'), or `{"refuse": why}` where no tool fits and the right answer is to say so.

Rows are grouped by phrasing family; the families are split in two, never the rows:
  - "understand-dev": the families the reader was tuned on;
  - "understand-heldout": families kept aside and scored only to report (never tuned on).
`havoc eval understand-dev --reading` scores the reader alone (read the prompt, run the call it reads,
compare), without a model.
"""

from __future__ import annotations

from havoc.eval.sets import Task, TaskSet


def _t(kind: str, x: list, y: list | None = None, **extra) -> dict:
    args = {"operation": "t_test", "kind": kind, "x": x, **({"y": y} if y is not None else {}), **extra}
    return {"tool": "statistics", "args": args, "fields": ["statistic", "p_value"]}


def _anova(*groups: list) -> dict:
    return {"tool": "statistics", "args": {"operation": "anova", "groups": list(groups)}, "fields": ["f", "p_value"]}


def _describe(data: list, *fields: str) -> dict:
    return {"tool": "statistics", "args": {"operation": "describe", "data": data}, "fields": list(fields or ("mean", "sd"))}


def _ci(data: list, alpha: float = 0.05) -> dict:
    args = {"operation": "confidence_interval", "kind": "mean", "data": data}
    if alpha != 0.05:
        args["alpha"] = alpha
    return {"tool": "statistics", "args": args, "fields": ["lower", "upper"]}


def _regression(x: list, y: list) -> dict:
    return {"tool": "statistics", "args": {"operation": "regression", "y": y, "predictors": {"x": x}},
            "fields": ["coefficients[1].estimate", "r_squared"]}


def _correlation(x: list, y: list, method: str | None = None) -> dict:
    args = {"operation": "correlation", "x": x, "y": y, **({"method": method} if method else {})}
    return {"tool": "statistics", "args": args, "fields": ["r", "p_value"]}


def _chart(chart: str, data: list | None = None, subgroups: list | None = None, n: int | None = None) -> dict:
    args: dict = {"operation": "control_chart", "chart": chart}
    if data is not None:
        args["data"] = data
    if subgroups is not None:
        args["subgroups"] = subgroups
    if n is not None:
        args["n"] = n
    return {"tool": "dsl_executor", "args": args, "fields": ["charts[0].center", "charts[0].ucl"]}


def _capability(data: list | None = None, lsl: float | None = None, usl: float | None = None, **summary) -> dict:
    args: dict = {"operation": "capability", **({"data": data} if data is not None else {}), **summary}
    for k, v in (("lsl", lsl), ("usl", usl)):
        if v is not None:
            args[k] = v
    fields = ["cpk"] + (["cp"] if lsl is not None and usl is not None else [])
    return {"tool": "dsl_executor", "args": args, "fields": fields}


def _constants(n: int, *fields: str) -> dict:
    return {"tool": "dsl_executor", "args": {"operation": "constants", "n": n}, "fields": list(fields or ("A2", "D4"))}


def _design(operation: str, factors: list, **extra) -> dict:
    fs = [f if isinstance(f, dict) else {"name": f, "low": -1, "high": 1} for f in factors]
    return {"tool": "dsl_executor", "args": {"operation": operation, "factors": fs, "randomize": False, **extra},
            "fields": ["n_runs"]}


def _f(name: str, low: float, high: float) -> dict:
    return {"name": name, "low": low, "high": high}


def _power(test: str, field: str = "n", **args) -> dict:
    return {"tool": "statistics", "args": {"operation": "power", "test": test, **args}, "fields": [field]}


def _arith(expression: str) -> dict:
    return {"tool": "symbolic", "args": {"operation": "evaluate", "expression": expression}, "fields": ["numeric"]}


def _refuse(why: str) -> dict:
    return {"refuse": why}


M1 = [10.2, 10.4, 10.1, 10.3, 10.5, 10.2]
M2 = [10.6, 10.8, 10.5, 10.9, 10.7, 10.6]
HA = [512, 498, 505, 520, 515, 509]
HB = [530, 541, 528, 535, 539, 533]
BEFORE = [142, 138, 150, 145, 139, 148, 152]
AFTER = [135, 136, 141, 140, 137, 139, 144]
S1 = [14.2, 15.1, 13.8, 14.9, 15.3, 14.7]
S2 = [12.0, 13.5, 11.2, 16.8, 10.9, 15.4, 17.1]
SPC1 = [25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, 25.1, 25.0]

# (family, split, rows); a row is (prompt, check)
FAMILIES: list[tuple[str, str, list[tuple[str, dict]]]] = [
    ("labels-prose", "dev", [
        ("Machine 1: 10.2, 10.4, 10.1, 10.3, 10.5, 10.2. Machine 2: 10.6, 10.8, 10.5, 10.9, 10.7, 10.6. "
         "Is there a significant difference between the machines? Use a two-sample t-test.", _t("two_sample", M1, M2)),
        ("HT-A: 512, 498, 505, 520, 515, 509; HT-B: 530, 541, 528, 535, 539, 533. Do the two heat treatments give "
         "different hardness? t-test please.", _t("two_sample", HA, HB)),
        ("Line A: 4.1, 4.5, 3.9, 4.3 Line B: 5.2, 5.6, 5.1, 5.4 Line C: 6.3, 6.0, 6.6, 6.2. One-way ANOVA.",
         _anova([4.1, 4.5, 3.9, 4.3], [5.2, 5.6, 5.1, 5.4], [6.3, 6.0, 6.6, 6.2])),
        ("Weights (g): 14.2, 15.1, 13.8, 14.9, 15.3, 14.7. What are the mean and standard deviation?", _describe(S1)),
        ("Supplier X: 3.2, 3.5, 3.1, 3.4, 3.3 and Supplier Y: 3.6, 3.9, 3.7, 3.8, 4.0. Compare them with a t test.",
         _t("two_sample", [3.2, 3.5, 3.1, 3.4, 3.3], [3.6, 3.9, 3.7, 3.8, 4.0])),
        ("Shift 1 - 22, 25, 21, 24, 23; Shift 2 - 27, 26, 29, 28, 30; Shift 3 - 22, 24, 23, 25, 21. "
         "Run an ANOVA to see if shift matters.",
         _anova([22, 25, 21, 24, 23], [27, 26, 29, 28, 30], [22, 24, 23, 25, 21])),
        ("Readings: 25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, 25.1, 25.0. Make an individuals control chart.",
         _chart("imr", SPC1)),
        ("Control group: 88, 92, 85, 90, 87. Treatment group: 95, 97, 93, 99, 94. Two-sample t-test.",
         _t("two_sample", [88, 92, 85, 90, 87], [95, 97, 93, 99, 94])),
    ]),
    ("test-last", "dev", [
        ("Compare 10.2, 10.4, 10.1, 10.3, 10.5, 10.2 with 10.6, 10.8, 10.5, 10.9, 10.7, 10.6. Use a two-sample t-test.",
         _t("two_sample", M1, M2)),
        ("Before: 142, 138, 150, 145, 139, 148, 152. After: 135, 136, 141, 140, 137, 139, 144. Paired t-test please.",
         _t("paired", BEFORE, AFTER)),
        ("Group 1 is 5.1, 4.9, 5.3, 5.0 and group 2 is 5.6, 5.8, 5.5, 5.9, 5.7. Use Welch's t-test.",
         _t("welch", [5.1, 4.9, 5.3, 5.0], [5.6, 5.8, 5.5, 5.9, 5.7])),
        ("The sample 49.8, 50.3, 50.1, 49.6, 50.4, 50.2 should average 50. One-sample t-test.",
         _t("one_sample", [49.8, 50.3, 50.1, 49.6, 50.4, 50.2], mu=50)),
        ("Here are three groups: 11, 12, 13, 12 / 15, 16, 14, 15 / 11, 10, 12, 11. Analyse with one-way ANOVA.",
         _anova([11, 12, 13, 12], [15, 16, 14, 15], [11, 10, 12, 11])),
        ("x is 1, 2, 3, 4, 5, 6 and y is 2.3, 4.1, 6.2, 7.9, 10.2, 12.1. Fit a linear regression.",
         _regression([1, 2, 3, 4, 5, 6], [2.3, 4.1, 6.2, 7.9, 10.2, 12.1])),
        ("Data 7, 9, 8, 6, 10, 9, 8 — give me descriptive statistics.", _describe([7, 9, 8, 6, 10, 9, 8])),
        ("Defect counts per shift were 3, 5, 2, 6, 4, 3, 7, 4. Build a c chart.", _chart("c", [3, 5, 2, 6, 4, 3, 7, 4])),
    ]),
    ("implied-question", "dev", [
        ("Summarize this sample: 14.2, 15.1, 13.8, 14.9, 15.3, 14.7. What are the mean and standard deviation?",
         _describe(S1)),
        ("The process has LSL 9.5 and USL 10.5; measurements 10.1, 9.9, 10.2, 10.0, 10.3, 9.8, 10.1, 10.0. "
         "What are Cp and Cpk?", _capability([10.1, 9.9, 10.2, 10.0, 10.3, 9.8, 10.1, 10.0], 9.5, 10.5)),
        ("Build an individuals and moving range chart for 25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, 25.1, 25.0.",
         _chart("imr", SPC1)),
        ("SPC constants A2 and D4 for subgroups of 4?", _constants(4)),
        ("What's the average of 12, 15, 11, 18, 14, 17?", _describe([12, 15, 11, 18, 14, 17], "mean")),
        ("How spread out are these values: 3.3, 3.9, 3.1, 4.2, 3.6? I need the standard deviation.",
         _describe([3.3, 3.9, 3.1, 4.2, 3.6], "sd")),
        ("Did the new fixture reduce cycle time? Old: 48, 52, 50, 49, 51. New: 45, 46, 44, 47, 45. t-test.",
         _t("two_sample", [48, 52, 50, 49, 51], [45, 46, 44, 47, 45])),
        ("Is y related to x? x: 2, 4, 6, 8, 10, 12; y: 3.1, 4.8, 7.2, 8.9, 11.0, 13.2. Give the correlation.",
         _correlation([2, 4, 6, 8, 10, 12], [3.1, 4.8, 7.2, 8.9, 11.0, 13.2])),
    ]),
    ("instructions", "dev", [
        ("Calculate the mean and standard deviation of 4.2, 4.8, 5.1, 4.6, 4.9.", _describe([4.2, 4.8, 5.1, 4.6, 4.9])),
        ("Run a two-sample t-test comparing 20.1, 22.3, 19.8, 21.5 against 25.2, 24.8, 26.1, 23.9.",
         _t("two_sample", [20.1, 22.3, 19.8, 21.5], [25.2, 24.8, 26.1, 23.9])),
        ("Give me a 95% confidence interval for the mean of 12.1, 11.8, 12.4, 12.0, 12.3, 11.9.",
         _ci([12.1, 11.8, 12.4, 12.0, 12.3, 11.9])),
        ("Perform one-way ANOVA on 5, 6, 7 and 8, 9, 10 and 4, 5, 6.", _anova([5, 6, 7], [8, 9, 10], [4, 5, 6])),
        ("Compute the correlation between 1, 2, 3, 4, 5 and 2, 4, 5, 4, 5.", _correlation([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])),
        ("Create a full factorial design with factors temperature, pressure and time.",
         _design("full_factorial", ["temperature", "pressure", "time"])),
        ("Generate the control chart constants for n = 6.", _constants(6)),
        ("Evaluate 3.5 * (12 - 4.25).", _arith("3.5 * (12 - 4.25)")),
    ]),
    ("units", "dev", [
        ("Shaft diameters were 12.1 mm, 12.4 mm, 11.9 mm, 12.2 mm and 12.0 mm. What's the mean diameter and its sd?",
         _describe([12.1, 12.4, 11.9, 12.2, 12.0])),
        ("Oven A baked at 180°C gave 31 min, 33 min, 30 min, 32 min; oven B gave 36 min, 35 min, 38 min, 37 min. "
         "Two-sample t-test on the times.", _t("two_sample", [31, 33, 30, 32], [36, 35, 38, 37])),
        ("Fill weights 500.2 g, 499.8 g, 500.5 g, 500.1 g, 499.6 g, 500.3 g; spec 499 g to 501 g. Cp and Cpk?",
         _capability([500.2, 499.8, 500.5, 500.1, 499.6, 500.3], 499, 501)),
        ("Temperatures: 21.5 °C, 22.1 °C, 21.8 °C, 22.4 °C, 21.9 °C. Describe them.",
         _describe([21.5, 22.1, 21.8, 22.4, 21.9])),
        ("Pressure drop in kPa: 3.2, 3.4, 3.1, 3.6, 3.3, 3.5, 3.2, 3.4. Individuals chart please.",
         _chart("imr", [3.2, 3.4, 3.1, 3.6, 3.3, 3.5, 3.2, 3.4])),
        ("Resistances of 98.2 ohms, 101.5 ohms, 99.7 ohms, 100.4 ohms, 100.9 ohms: test whether the mean is 100 ohms "
         "with a one-sample t-test.", _t("one_sample", [98.2, 101.5, 99.7, 100.4, 100.9], mu=100)),
        ("Speeds 55 km/h, 61 km/h, 58 km/h, 63 km/h, 59 km/h, 60 km/h. Average speed?",
         _describe([55, 61, 58, 63, 59, 60], "mean")),
    ]),
    ("number-formats", "dev", [
        ("Monthly sales: 1,250, 1,310, 1,180, 1,420, 1,365. What is the mean?",
         _describe([1250, 1310, 1180, 1420, 1365], "mean")),
        ("Temperature deviations: -1.2, 0.4, -0.8, 1.1, -0.3, 0.6. Test whether the mean is 0 (one-sample t-test).",
         _t("one_sample", [-1.2, 0.4, -0.8, 1.1, -0.3, 0.6], mu=0)),
        ("Values .5, .7, .6, .8, .55 — mean and sd?", _describe([0.5, 0.7, 0.6, 0.8, 0.55])),
        ("Lot A 2,150 2,230 2,090 2,310 and lot B 2,480 2,520 2,450 2,600: two-sample t-test.",
         _t("two_sample", [2150, 2230, 2090, 2310], [2480, 2520, 2450, 2600])),
        ("Errors were −0.5, −0.2, 0.1, −0.4, −0.3. What's their average?", _describe([-0.5, -0.2, 0.1, -0.4, -0.3], "mean")),
        ("Data: 3 5 4 6 5 7 4 (space separated). Mean and standard deviation please.", _describe([3, 5, 4, 6, 5, 7, 4])),
        ("Series a = 0.25; 0.31; 0.28; 0.35 and b = 0.41; 0.39; 0.44; 0.46 — t-test between them.",
         _t("two_sample", [0.25, 0.31, 0.28, 0.35], [0.41, 0.39, 0.44, 0.46])),
        ("Compute 1,200 * 0.15 + 35.", _arith("1200 * 0.15 + 35")),
    ]),
    ("distractors", "dev", [
        ("At alpha = 0.05, is there a difference between 10.2, 10.4, 10.1, 10.3, 10.5, 10.2 and 10.6, 10.8, 10.5, "
         "10.9, 10.7, 10.6? Two-sample t-test.", _t("two_sample", M1, M2, alpha=0.05)),
        ("In 2023 we sampled 6 parts: 14.2, 15.1, 13.8, 14.9, 15.3, 14.7. What's the mean and sd?", _describe(S1)),
        ("We took 5 samples from each of 3 lines. Line 1: 20, 22, 21, 23, 22. Line 2: 25, 24, 26, 27, 25. "
         "Line 3: 21, 20, 22, 21, 23. ANOVA at the 5% level.",
         _anova([20, 22, 21, 23, 22], [25, 24, 26, 27, 25], [21, 20, 22, 21, 23])),
        ("Give a 95% confidence interval for the mean of these 6 readings: 7.1, 6.8, 7.3, 7.0, 6.9, 7.2.",
         _ci([7.1, 6.8, 7.3, 7.0, 6.9, 7.2])),
        ("Our 2 suppliers sent 5 lots each. Supplier 1: 3.2, 3.5, 3.1, 3.4, 3.3. Supplier 2: 3.6, 3.9, 3.7, 3.8, 4.0. "
         "Use a t-test with 95% confidence.", _t("two_sample", [3.2, 3.5, 3.1, 3.4, 3.3], [3.6, 3.9, 3.7, 3.8, 4.0])),
        ("With 90% confidence, give the interval for the mean of 12, 15, 11, 18, 14, 17.",
         _ci([12, 15, 11, 18, 14, 17], alpha=0.1)),
        ("Test at the 1% significance level whether 49.8, 50.3, 50.1, 49.6, 50.4, 50.2 has mean 50 (one-sample t-test).",
         _t("one_sample", [49.8, 50.3, 50.1, 49.6, 50.4, 50.2], mu=50, alpha=0.01)),
        ("Over 3 weeks in 2024 operators logged 12 readings: 25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, 25.1, "
         "25.0, 25.2, 24.8. Plot an I-MR chart.", _chart("imr", SPC1 + [25.2, 24.8])),
    ]),
    ("paired", "dev", [
        ("Blood pressure before the drug: 142, 138, 150, 145, 139, 148, 152; after: 135, 136, 141, 140, 137, 139, 144. "
         "Did it drop?", _t("paired", BEFORE, AFTER)),
        ("The same 5 operators measured with the old gauge 10.1, 10.3, 9.8, 10.0, 10.2 and the new gauge 10.2, 10.5, "
         "9.9, 10.1, 10.4. Is there a difference? Paired test.",
         _t("paired", [10.1, 10.3, 9.8, 10.0, 10.2], [10.2, 10.5, 9.9, 10.1, 10.4])),
        ("Pre-training scores 65, 70, 58, 72, 68, 61 and post-training scores 70, 75, 64, 74, 73, 66 for the same "
         "employees. Paired t-test.", _t("paired", [65, 70, 58, 72, 68, 61], [70, 75, 64, 74, 73, 66])),
        ("Each tyre was tested on both compounds. Compound A: 5.2, 4.8, 6.1, 5.5, 5.9. Compound B: 5.6, 5.1, 6.4, 5.6, "
         "6.3. Use a paired t-test.", _t("paired", [5.2, 4.8, 6.1, 5.5, 5.9], [5.6, 5.1, 6.4, 5.6, 6.3])),
        ("Before: 12.1, 11.8, 13.0, 12.6, 12.9 / After: 11.5, 11.9, 12.2, 12.0, 12.1. Paired comparison please.",
         _t("paired", [12.1, 11.8, 13.0, 12.6, 12.9], [11.5, 11.9, 12.2, 12.0, 12.1])),
        ("Left hand grip 40, 38, 45, 42, 39 and right hand grip 43, 41, 47, 44, 42 for the same people: matched-pairs "
         "t-test.", _t("paired", [40, 38, 45, 42, 39], [43, 41, 47, 44, 42])),
    ]),
    ("welch", "dev", [
        ("Sample 1: 14.2, 15.1, 13.8, 14.9, 15.3, 14.7; sample 2: 12.0, 13.5, 11.2, 16.8, 10.9, 15.4, 17.1. The "
         "variances look unequal, so compare the means without assuming equal variances.", _t("welch", S1, S2)),
        ("Welch test for A = 20.1, 22.3, 19.8, 21.5 and B = 25.2, 24.8, 26.1, 23.9, 25.5.",
         _t("welch", [20.1, 22.3, 19.8, 21.5], [25.2, 24.8, 26.1, 23.9, 25.5])),
        ("Group X 5.5, 5.7, 5.6, 5.4 vs group Y 4.1, 6.9, 3.8, 7.2, 5.0, 6.1. Unequal variance t-test.",
         _t("welch", [5.5, 5.7, 5.6, 5.4], [4.1, 6.9, 3.8, 7.2, 5.0, 6.1])),
        ("Compare the means of 88, 92, 85, 90, 87 and 95, 99, 80, 110, 94, 101 using Welch's method.",
         _t("welch", [88, 92, 85, 90, 87], [95, 99, 80, 110, 94, 101])),
        ("Two-sample t-test, unequal variances: old 31, 33, 30, 32 new 36, 29, 41, 33, 38.",
         _t("welch", [31, 33, 30, 32], [36, 29, 41, 33, 38])),
    ]),
    ("capability-sentence", "dev", [
        ("The spec limits are 9.5 to 10.5. Parts measured 10.1, 9.9, 10.2, 10.0, 10.3, 9.8, 10.1, 10.0. Cpk?",
         _capability([10.1, 9.9, 10.2, 10.0, 10.3, 9.8, 10.1, 10.0], 9.5, 10.5)),
        ("Lower spec limit is 24 and upper spec limit is 26. Data: 25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, "
         "25.1, 25.0. Compute Cp and Cpk.", _capability(SPC1, 24, 26)),
        ("Process mean 50.2, standard deviation 0.4, specification 49 to 51: what are Cp and Cpk?",
         _capability(None, 49, 51, mean=50.2, sigma=0.4)),
        ("Is the process capable? Specs 499–501 g; fills 500.2, 499.8, 500.5, 500.1, 499.6, 500.3.",
         _capability([500.2, 499.8, 500.5, 500.1, 499.6, 500.3], 499, 501)),
        ("Upper spec 12.5 only; measurements 11.8, 12.0, 11.7, 12.1, 11.9, 12.2. Cpk?",
         _capability([11.8, 12.0, 11.7, 12.1, 11.9, 12.2], None, 12.5)),
        ("With a tolerance of 20 ± 0.5 and readings 20.1, 19.9, 20.2, 20.0, 19.8, 20.1, 20.3, what is the capability "
         "(Cp, Cpk)?", _capability([20.1, 19.9, 20.2, 20.0, 19.8, 20.1, 20.3], 19.5, 20.5)),
        ("Mean is 16, sigma is 2, LSL is 8 and USL is 20. Give Cpk.", _capability(None, 8, 20, mean=16, sigma=2)),
    ]),
    ("charts-by-name", "dev", [
        ("Build an individuals and moving range chart: 3.2, 3.4, 3.1, 3.6, 3.3, 3.5, 3.2, 3.4.",
         _chart("imr", [3.2, 3.4, 3.1, 3.6, 3.3, 3.5, 3.2, 3.4])),
        ("X-bar and R chart for subgroups [5.1, 5.3, 5.2], [5.0, 5.4, 5.2], [5.3, 5.1, 5.2], [5.2, 5.5, 5.1].",
         _chart("xbar_r", subgroups=[[5.1, 5.3, 5.2], [5.0, 5.4, 5.2], [5.3, 5.1, 5.2], [5.2, 5.5, 5.1]])),
        ("Defects found on each of 8 boards: 2, 4, 1, 3, 5, 2, 3, 4. c-chart limits?", _chart("c", [2, 4, 1, 3, 5, 2, 3, 4])),
        ("Number defective in samples of 100: 4, 6, 3, 5, 7, 4, 2, 5. np chart.",
         _chart("np", [4, 6, 3, 5, 7, 4, 2, 5], n=100)),
        ("Defectives found in each lot of 200 inspected: 4, 7, 3, 6, 5, 8. Make a p chart.",
         _chart("p", [4, 7, 3, 6, 5, 8], n=200)),
        ("What are the control limits for the individual values 25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, 25.1, "
         "25.0?", _chart("imr", SPC1)),
        ("Xbar-R chart. Subgroup 1: 10, 12, 11. Subgroup 2: 11, 13, 12. Subgroup 3: 12, 11, 10. Subgroup 4: 10, 11, 12.",
         _chart("xbar_r", subgroups=[[10, 12, 11], [11, 13, 12], [12, 11, 10], [10, 11, 12]])),
        ("Is this process in control? 25.1, 24.8, 25.3, 25.0, 24.7, 25.2, 25.4, 24.9, 25.1, 25.0 (individuals chart).",
         _chart("imr", SPC1)),
    ]),
    ("spc-constants", "dev", [
        ("SPC constants A2 and D4 for subgroups of 4", _constants(4)),
        ("What is A2 when the subgroup size is 5?", _constants(5, "A2")),
        ("Give me d2 for n = 3.", _constants(3, "d2")),
        ("Control chart factors D3 and D4 for samples of size 7?", _constants(7, "D4")),
        ("I use subgroups of 6 parts; which A2, D3, D4 do I use for the X-bar R chart?", _constants(6, "A2", "D4")),
        ("Table constants for an x-bar chart with n=8: A2 and D4.", _constants(8)),
    ]),
    ("doe-named-factors", "dev", [
        ("Box-Behnken design with temperature from 150 to 200, pressure from 10 to 30 and time from 5 to 15, with 3 "
         "center points.", _design("box_behnken", [_f("temperature", 150, 200), _f("pressure", 10, 30),
                                                    _f("time", 5, 15)], center=3)),
        ("Set up a full factorial for Speed (100-200 rpm), Feed (0.1-0.3 mm) and Depth (1-2 mm).",
         _design("full_factorial", [_f("Speed", 100, 200), _f("Feed", 0.1, 0.3), _f("Depth", 1, 2)])),
        ("I need a central composite design for two factors, pH (5 to 7) and temperature (30 to 40).",
         _design("central_composite", [_f("pH", 5, 7), _f("temperature", 30, 40)])),
        ("Plackett-Burman screening of 11 factors in 12 runs.", _design("plackett_burman", list("ABCDEFGHIJK"), runs=12)),
        ("Design an experiment with four factors at two levels each, all combinations.",
         _design("full_factorial", list("ABCD"))),
        ("Make a Box-Behnken design for 4 factors.", _design("box_behnken", list("ABCD"))),
        ("Fractional factorial for 5 factors in 16 runs.", _design("fractional_factorial", list("ABCDE"), runs=16)),
        ("Full factorial with factors catalyst, temperature, stirring and 2 centre points.",
         _design("full_factorial", ["catalyst", "temperature", "stirring"], center=2)),
    ]),
    ("power", "dev", [
        ("How many samples per group do I need to detect a difference of 2 with standard deviation 3, 80% power and "
         "alpha 0.05?", _power("two_sample_t", effect=2, sd=3, power=0.8, alpha=0.05)),
        ("Sample size for a one-sample t-test: detect a shift of 0.5 with sigma 1 and power 0.9.",
         _power("one_sample_t", effect=0.5, sd=1, power=0.9)),
        ("What power do I get with n = 20 per group, difference 1, sd 2?",
         _power("two_sample_t", "power", n=20, effect=1, sd=2)),
        ("Paired design: how many pairs to detect a mean difference of 1.5 when the sd of the differences is 2, at 90% "
         "power?", _power("paired_t", effect=1.5, sd=2, power=0.9)),
        ("Required sample size to detect an effect of 5 units, sd 10, power 95%, two groups.",
         _power("two_sample_t", effect=5, sd=10, power=0.95)),
    ]),
    ("regression-correlation", "dev", [
        ("Regress yield on temperature: temperature 100, 110, 120, 130, 140; yield 62, 66, 71, 74, 80.",
         _regression([100, 110, 120, 130, 140], [62, 66, 71, 74, 80])),
        ("What's the slope of the line through x: 1, 2, 3, 4, 5 and y: 2.1, 3.9, 6.2, 7.8, 10.1?",
         _regression([1, 2, 3, 4, 5], [2.1, 3.9, 6.2, 7.8, 10.1])),
        ("Fit y = a + b x for x = 10, 20, 30, 40 and y = 15, 24, 37, 45.", _regression([10, 20, 30, 40], [15, 24, 37, 45])),
        ("Hours studied 2, 4, 5, 7, 9 and exam score 60, 68, 71, 80, 88. How strongly are they correlated?",
         _correlation([2, 4, 5, 7, 9], [60, 68, 71, 80, 88])),
        ("Spearman rank correlation of 3, 1, 4, 1.5, 5, 9 with 2, 6, 5, 3, 5.8, 9.7.",
         _correlation([3, 1, 4, 1.5, 5, 9], [2, 6, 5, 3, 5.8, 9.7], "spearman")),
        ("Pearson r between height 160, 165, 170, 175, 180 and weight 55, 60, 66, 70, 77?",
         _correlation([160, 165, 170, 175, 180], [55, 60, 66, 70, 77])),
        ("Least squares line: x 0, 1, 2, 3, 4, 5; y 1.0, 2.9, 5.1, 7.0, 8.8, 11.2.",
         _regression([0, 1, 2, 3, 4, 5], [1.0, 2.9, 5.1, 7.0, 8.8, 11.2])),
    ]),
    ("anova", "dev", [
        ("Do the three catalysts differ? Catalyst A: 72, 75, 71, 74; Catalyst B: 78, 80, 77, 79; Catalyst C: 73, 72, "
         "75, 74.", _anova([72, 75, 71, 74], [78, 80, 77, 79], [73, 72, 75, 74])),
        ("Compare four suppliers with analysis of variance. S1: 5.1, 5.3, 5.0. S2: 5.5, 5.6, 5.4. S3: 5.0, 4.9, 5.2. "
         "S4: 5.8, 5.7, 5.9.", _anova([5.1, 5.3, 5.0], [5.5, 5.6, 5.4], [5.0, 4.9, 5.2], [5.8, 5.7, 5.9])),
        ("Groups of unequal size: 10, 12, 11, 13 | 15, 14, 16 | 9, 10, 11, 10, 12. One-way ANOVA.",
         _anova([10, 12, 11, 13], [15, 14, 16], [9, 10, 11, 10, 12])),
        ("Is mean strength the same for the three mixes? Mix 1 = 30.1, 31.2, 29.8; Mix 2 = 33.5, 34.0, 32.9; "
         "Mix 3 = 30.5, 30.9, 31.4.", _anova([30.1, 31.2, 29.8], [33.5, 34.0, 32.9], [30.5, 30.9, 31.4])),
        ("ANOVA please: operator Ann 4.2, 4.4, 4.1; operator Bob 4.6, 4.8, 4.7; operator Cy 4.3, 4.2, 4.5.",
         _anova([4.2, 4.4, 4.1], [4.6, 4.8, 4.7], [4.3, 4.2, 4.5])),
    ]),
    ("arithmetic", "dev", [
        ("What is 15% of 240?", _arith("0.15*240")),
        ("Compute 48 / 6 + 3 * 7.", _arith("48 / 6 + 3 * 7")),
        ("How much is 125 times 8?", _arith("125*8")),
        ("What's 2 to the power 12?", _arith("2^12")),
        ("Calculate (3.2 + 4.8) * 2.5 - 1.", _arith("(3.2 + 4.8) * 2.5 - 1")),
        ("What is the square root of 144?", _arith("sqrt(144)")),
        ("17 squared minus 19?", _arith("17^2-19")),
        ("What is 1000 divided by 8?", _arith("1000/8")),
    ]),
    ("no-tool", "dev", [
        ("Forecast next quarter's sales from 120, 135, 150, 160 using an ARIMA model.", _refuse("no forecasting tool")),
        ("What is the probability of getting exactly 3 heads in 5 coin flips?", _refuse("no probability tool")),
        ("Fit a neural network to predict yield from 10 input variables.", _refuse("no machine-learning tool")),
        ("Estimate the number of piano tuners in Chicago.", _refuse("a Fermi estimate: no tool computes it")),
        ("Compute the Gini coefficient of incomes 20, 35, 50, 80, 150.", _refuse("no inequality tool")),
        ("What will the stock price of ACME be next week if it was 101, 103, 102 this week?", _refuse("no forecasting")),
        ("Run a survival log-rank test comparing two cohorts of 40 and 45 patients.", _refuse("no log-rank test")),
    ]),
    # ---------------------------------------------------------------- held-out families: never tuned on
    ("conversational", "heldout", [
        ("Hi! My manager gave me cycle times from two cells. Cell north had 41, 44, 39, 42, 43 and cell south had "
         "47, 45, 49, 46, 48. Could you check with a t-test whether they really differ?",
         _t("two_sample", [41, 44, 39, 42, 43], [47, 45, 49, 46, 48])),
        ("So we weighed some bags this morning, they came out at 25.3, 24.9, 25.1, 25.4, 24.8 and 25.0 kg. Can you "
         "tell me the average and the standard deviation?", _describe([25.3, 24.9, 25.1, 25.4, 24.8, 25.0])),
        ("Quick one: our spec is 4.0 to 6.0 and I measured 5.1, 4.8, 5.3, 5.0, 4.9, 5.2, 5.4, 4.7. Are we capable? I "
         "need Cp and Cpk.", _capability([5.1, 4.8, 5.3, 5.0, 4.9, 5.2, 5.4, 4.7], 4.0, 6.0)),
        ("I'm trying to see whether three training methods matter. Method one scores 71, 74, 69, 72; method two "
         "78, 81, 77, 80; method three 70, 72, 71, 73. An ANOVA would be great.",
         _anova([71, 74, 69, 72], [78, 81, 77, 80], [70, 72, 71, 73])),
        ("We timed the same six technicians before and after the new procedure: before 34, 31, 38, 35, 33, 36 and "
         "after 30, 29, 35, 31, 30, 33. Did it help? A paired t-test is what I'm after.",
         _t("paired", [34, 31, 38, 35, 33, 36], [30, 29, 35, 31, 30, 33])),
        ("Could you set up a Box-Behnken experiment for me? The factors are speed from 1000 to 2000, feed from 0.1 "
         "to 0.3 and coolant from 2 to 6, plus 3 center points.",
         _design("box_behnken", [_f("speed", 1000, 2000), _f("feed", 0.1, 0.3), _f("coolant", 2, 6)], center=3)),
        ("My kid asked me what 36 times 24 is and I blanked.", _arith("36*24")),
        ("Hey, can you tell me who will win the next football world cup?", _refuse("no tool predicts sport")),
    ]),
    ("tabular", "heldout", [
        ("Operator | readings\nA | 2.31, 2.35, 2.29, 2.33\nB | 2.41, 2.44, 2.40, 2.43\nTwo-sample t-test between the "
         "operators.", _t("two_sample", [2.31, 2.35, 2.29, 2.33], [2.41, 2.44, 2.40, 2.43])),
        ("Plant 1\t8.2\t8.5\t8.1\t8.4\nPlant 2\t9.0\t9.2\t8.8\t9.1\nPlant 3\t8.3\t8.6\t8.2\t8.5\nOne-way ANOVA on the "
         "plants.", _anova([8.2, 8.5, 8.1, 8.4], [9.0, 9.2, 8.8, 9.1], [8.3, 8.6, 8.2, 8.5])),
        ("x: 5 10 15 20 25\ny: 12 19 31 38 52\nregression of y on x", _regression([5, 10, 15, 20, 25], [12, 19, 31, 38, 52])),
        ("Day 1: 7\nDay 2: 9\nDay 3: 6\nDay 4: 8\nDay 5: 10\nDay 6: 7\nThese are defect counts; c chart please.",
         _chart("c", [7, 9, 6, 8, 10, 7])),
        ("before = 88, 91, 85, 90\nafter = 84, 88, 83, 86\n(paired t test)", _t("paired", [88, 91, 85, 90], [84, 88, 83, 86])),
        ("sample:\n12.5\n12.7\n12.4\n12.9\n12.6\nmean and sd?", _describe([12.5, 12.7, 12.4, 12.9, 12.6])),
        ("Subgroups (n=4):\n1) 20.1 20.4 19.9 20.2\n2) 20.3 20.0 20.5 20.1\n3) 19.8 20.2 20.0 20.3\nX-bar R chart",
         _chart("xbar_r", subgroups=[[20.1, 20.4, 19.9, 20.2], [20.3, 20.0, 20.5, 20.1], [19.8, 20.2, 20.0, 20.3]])),
        ("LSL 30 | USL 36\nvalues 33.1 32.8 33.5 32.9 33.2 33.0 33.4\nCpk", _capability(
            [33.1, 32.8, 33.5, 32.9, 33.2, 33.0, 33.4], 30, 36)),
    ]),
    ("question-first", "heldout", [
        ("Is the mean fill volume different from 500 ml? One-sample t-test on 498, 502, 497, 499, 501, 496, 498.",
         _t("one_sample", [498, 502, 497, 499, 501, 496, 498], mu=500)),
        ("Which supplier is better, if any? Welch t-test. Supplier P: 61, 64, 60, 63. Supplier Q: 70, 58, 75, 66, 61.",
         _t("welch", [61, 64, 60, 63], [70, 58, 75, 66, 61])),
        ("What are the limits of an individuals chart for these fill heights: 9.8, 10.1, 10.0, 9.9, 10.2, 10.0, 9.7, "
         "10.1?", _chart("imr", [9.8, 10.1, 10.0, 9.9, 10.2, 10.0, 9.7, 10.1])),
        ("How many runs does a central composite design for three factors need? Factors: A, B, C.",
         _design("central_composite", ["A", "B", "C"])),
        ("What's the correlation? Temperature 15, 18, 21, 24, 27 vs sales 120, 135, 160, 172, 190.",
         _correlation([15, 18, 21, 24, 27], [120, 135, 160, 172, 190])),
        ("Which A2 and D4 should I use? My subgroups have 3 parts.", _constants(3)),
        ("How many subjects per group for a two-sample t-test to detect a difference of 4 with sd 5 at 90% power?",
         _power("two_sample_t", effect=4, sd=5, power=0.9)),
        ("Can you estimate the median house price in Paris in 2030?", _refuse("no tool forecasts prices")),
    ]),
    ("terse", "heldout", [
        ("ttest 2 sample: 3.1 3.4 3.2 3.5 vs 3.9 4.1 3.8 4.2", _t("two_sample", [3.1, 3.4, 3.2, 3.5], [3.9, 4.1, 3.8, 4.2])),
        ("cpk? lsl 9 usl 11 data 10.1 10.3 9.9 10.2 10.0 10.4 9.8", _capability(
            [10.1, 10.3, 9.9, 10.2, 10.0, 10.4, 9.8], 9, 11)),
        ("anova g1 5 6 5 7 g2 8 9 8 9 g3 6 6 7 5", _anova([5, 6, 5, 7], [8, 9, 8, 9], [6, 6, 7, 5])),
        ("sd of 4, 8, 6, 5, 7?", _describe([4, 8, 6, 5, 7], "sd")),
        ("A2 n=5", _constants(5, "A2")),
        ("imr chart 14 15 13 16 15 14 17 15", _chart("imr", [14, 15, 13, 16, 15, 14, 17, 15])),
        ("2^3 full factorial, factors: time, temp, conc", _design("full_factorial", ["time", "temp", "conc"])),
        ("(45+55)*1.08", _arith("(45+55)*1.08")),
    ]),
    ("engineering-spc-doe", "heldout", [
        ("We ran 8 boards through AOI and counted solder defects of 6, 3, 8, 5, 4, 7, 5, 6 on each. Set up the c chart "
         "and give me the center line and limits.", _chart("c", [6, 3, 8, 5, 4, 7, 5, 6])),
        ("Bore diameters in 4 subgroups of 3: (50.02, 50.05, 49.98), (50.01, 49.97, 50.04), (50.03, 50.00, 49.99), "
         "(49.96, 50.02, 50.01). Build an X-bar and R chart.",
         _chart("xbar_r", subgroups=[[50.02, 50.05, 49.98], [50.01, 49.97, 50.04], [50.03, 50.00, 49.99],
                                     [49.96, 50.02, 50.01]])),
        ("For a screening study of 7 factors in 8 runs, what Plackett-Burman design fits?",
         _design("plackett_burman", list("ABCDEFG"), runs=8)),
        ("The torque spec is 12 to 18 Nm; our process runs at a mean of 15.6 Nm with a standard deviation of 0.9 Nm. "
         "Compute Cp and Cpk.", _capability(None, 12, 18, mean=15.6, sigma=0.9)),
        ("Plan a full factorial experiment on injection pressure (800 to 1200 bar) and mold temperature (40 to 60 C) "
         "with 4 center points.", _design("full_factorial", [_f("pressure", 800, 1200), _f("temperature", 40, 60)],
                                          center=4)),
        ("Our moving range chart needs the individuals too: coating thickness 2.1, 2.3, 2.2, 2.5, 2.4, 2.2, 2.6, 2.3 "
         "microns. Give the I-MR limits.", _chart("imr", [2.1, 2.3, 2.2, 2.5, 2.4, 2.2, 2.6, 2.3])),
    ]),
    # written after the reader was tuned, and scored once before any change
    ("exam-style", "heldout", [
        ("A sample of 8 bolts had lengths 50.1, 49.8, 50.3, 50.0, 49.9, 50.2, 50.4, 49.7 mm. Test if the mean length "
         "differs from 50 mm at α = 0.05.", _t("one_sample", [50.1, 49.8, 50.3, 50.0, 49.9, 50.2, 50.4, 49.7], mu=50,
                                                 alpha=0.05)),
        ("Two machines fill bottles. Machine A: 502, 498, 501, 499, 500. Machine B: 505, 507, 503, 506, 504. Is there "
         "a significant difference in mean fill? (assume equal variances)",
         _t("two_sample", [502, 498, 501, 499, 500], [505, 507, 503, 506, 504])),
        ("Calculate a 99% confidence interval for the mean: 23, 25, 21, 24, 26, 22.", _ci([23, 25, 21, 24, 26, 22], 0.01)),
        ("The following are tensile strengths (MPa) for three alloys. Alloy 1: 410, 415, 408; Alloy 2: 420, 425, 423; "
         "Alloy 3: 412, 409, 414. Perform a one-way ANOVA.", _anova([410, 415, 408], [420, 425, 423], [412, 409, 414])),
        ("Find the mean, median and standard deviation of the following dataset: 5, 7, 3, 9, 11, 6.",
         _describe([5, 7, 3, 9, 11, 6], "mean", "median", "sd")),
        ("A paired study measured reaction times (ms) under caffeine and placebo for 6 subjects: caffeine 245, 232, 260, "
         "251, 238, 244; placebo 262, 250, 271, 266, 249, 258. Test for a difference.",
         _t("paired", [245, 232, 260, 251, 238, 244], [262, 250, 271, 266, 249, 258])),
        ("Determine Cp and Cpk given USL=10.5, LSL=9.5, mean=10.1 and std dev=0.12.",
         _capability(None, 9.5, 10.5, mean=10.1, sigma=0.12)),
        ("Data were collected on the diameter of 10 pistons: 74.01, 74.00, 74.02, 73.99, 74.01, 74.03, 73.98, 74.00, "
         "74.02, 74.01. The specification is 74.00 ± 0.05 mm. Compute the process capability indices.",
         _capability([74.01, 74.00, 74.02, 73.99, 74.01, 74.03, 73.98, 74.00, 74.02, 74.01], 73.95, 74.05)),
    ]),
    ("mixed-format", "heldout", [
        ("Run a simple linear regression where x = 1,2,3,4,5,6 and y = 3,5,7,10,11,13.",
         _regression([1, 2, 3, 4, 5, 6], [3, 5, 7, 10, 11, 13])),
        ("Construct an X-bar and R chart from five subgroups of size 3: 12, 13, 11; 14, 12, 13; 13, 13, 12; 12, 11, 13; "
         "14, 13, 12.", _chart("xbar_r", subgroups=[[12, 13, 11], [14, 12, 13], [13, 13, 12], [12, 11, 13], [14, 13, 12]])),
        ("Find A2, D3 and D4 for a subgroup size of five.", _constants(5)),
        ("Box–Behnken design, three factors (A, B, C), 5 centre points: how many runs?",
         _design("box_behnken", ["A", "B", "C"], center=5)),
        ("What's 7.5% of 1,240?", _arith("7.5/100*1240")),
        ("Welch's t-test on the following two samples. Sample 1: 23.4, 25.1, 22.8, 24.9. Sample 2: 27.5, 30.2, 26.8, "
         "31.0, 28.4.", _t("welch", [23.4, 25.1, 22.8, 24.9], [27.5, 30.2, 26.8, 31.0, 28.4])),
        ("Give me an I-MR chart analysis for: 98, 102, 100, 97, 103, 101, 99, 104.",
         _chart("imr", [98, 102, 100, 97, 103, 101, 99, 104])),
        ("Correlation coefficient between advertising spend ($k) 10, 15, 20, 25, 30 and sales ($k) 120, 150, 185, 210, "
         "240?", _correlation([10, 15, 20, 25, 30], [120, 150, 185, 210, 240])),
    ]),
    ("paraphrase-ops", "heldout", [
        ("How many runs are in a full factorial design with 6 factors at 2 levels?", _design("full_factorial", list("ABCDEF"))),
        ("Evaluate the expression 45 * 3 - 12 / 4.", _arith("45 * 3 - 12 / 4")),
        ("Check whether these three shifts differ in output using analysis of variance: morning 52, 55, 53, 54; "
         "afternoon 50, 49, 51, 52; night 47, 45, 48, 46.", _anova([52, 55, 53, 54], [50, 49, 51, 52], [47, 45, 48, 46])),
        ("Is there a linear relationship between dose (1, 2, 4, 8, 16 mg) and response (3.1, 4.0, 6.2, 9.8, 17.5)? Fit "
         "a regression line.", _regression([1, 2, 4, 8, 16], [3.1, 4.0, 6.2, 9.8, 17.5])),
        ("What is the standard deviation of the sample 2.5, 3.5, 2.0, 4.0, 3.0?", _describe([2.5, 3.5, 2.0, 4.0, 3.0], "sd")),
        ("The number of scratches per panel was 4, 2, 5, 3, 6, 2, 4, 3, 5, 4. Set up an appropriate attribute control "
         "chart (c chart).", _chart("c", [4, 2, 5, 3, 6, 2, 4, 3, 5, 4])),
        ("Calculate the power of a two-sample t-test with 15 subjects per group to detect a difference of 3 when the "
         "standard deviation is 4.", _power("two_sample_t", "power", n=15, effect=3, sd=4)),
        ("Design a 3-factor central composite experiment for time, temperature and pressure.",
         _design("central_composite", ["time", "temperature", "pressure"])),
    ]),
    ("refusal-2", "heldout", [
        ("What's the weather going to be tomorrow in Boston?", _refuse("no tool knows the weather")),
        ("Compute the eigenvalues of the matrix [[2, 1], [1, 2]].", _refuse("no linear-algebra tool")),
        ("Fit an exponential smoothing model to 12, 14, 13, 15, 16 and give the smoothed values.",
         _refuse("no smoothing tool")),
        ("Perform a principal component analysis on my 12-variable dataset.", _refuse("no PCA tool")),
        ("What's the net present value of 1000 per year for 5 years at 7%?", _refuse("no finance tool")),
    ]),
    # a third batch, written after the second was fixed and scored once, untouched afterwards
    ("fresh-stats", "heldout", [
        ("Here's my data for two independent samples. A: 7.2 7.9 8.1 7.5 7.7 and B: 8.4 8.8 8.2 9.0 8.6. Can you run a t "
         "test to see if the means are equal?", _t("two_sample", [7.2, 7.9, 8.1, 7.5, 7.7], [8.4, 8.8, 8.2, 9.0, 8.6])),
        ("I measured the thickness of 12 coated panels (µm): 41, 44, 39, 42, 45, 40, 43, 41, 44, 42, 40, 43. Is the "
         "average thickness significantly greater than 40 µm?",
         _t("one_sample", [41, 44, 39, 42, 45, 40, 43, 41, 44, 42, 40, 43], mu=40, alternative="greater")),
        ("Compute the sample variance of 3.1, 2.8, 3.6, 3.3, 2.9.", _describe([3.1, 2.8, 3.6, 3.3, 2.9], "variance")),
        ("Three fertilizers were tested. Yields for F1: 20.1, 21.4, 19.8, 20.6; F2: 22.3, 23.0, 22.8, 21.9; F3: 19.5, "
         "20.2, 19.9, 20.4. Are the mean yields the same?",
         _anova([20.1, 21.4, 19.8, 20.6], [22.3, 23.0, 22.8, 21.9], [19.5, 20.2, 19.9, 20.4])),
        ("Using least squares, estimate the relationship between temperature (x) 20, 25, 30, 35, 40 and viscosity (y) "
         "8.1, 7.2, 6.4, 5.5, 4.9.", _regression([20, 25, 30, 35, 40], [8.1, 7.2, 6.4, 5.5, 4.9])),
        ("What's the Pearson correlation for these pairs: (1, 2.1), (2, 3.9), (3, 6.2), (4, 8.1), (5, 9.8)?",
         _correlation([1, 2, 3, 4, 5], [2.1, 3.9, 6.2, 8.1, 9.8])),
        ("95% CI for mean of 101, 99, 104, 98, 102, 100?", _ci([101, 99, 104, 98, 102, 100])),
        ("Do these two methods give different results on the same 5 specimens? Method 1: 14.1, 15.3, 13.9, 14.8, 15.0. "
         "Method 2: 14.5, 15.6, 14.2, 15.3, 15.1.",
         _t("paired", [14.1, 15.3, 13.9, 14.8, 15.0], [14.5, 15.6, 14.2, 15.3, 15.1])),
        ("Is machine B faster? Times for A: 12.3, 11.8, 12.9, 12.4 and for B: 11.1, 10.9, 11.5, 11.2, 10.8. One-sided "
         "t-test, unequal variances.", _t("welch", [12.3, 11.8, 12.9, 12.4], [11.1, 10.9, 11.5, 11.2, 10.8],
                                         alternative="greater")),
    ]),
    ("fresh-spc", "heldout", [
        ("Create a control chart for the following individual measurements and tell me if anything is out of control: "
         "0.52, 0.49, 0.51, 0.55, 0.48, 0.50, 0.53, 0.47, 0.51, 0.50",
         _chart("imr", [0.52, 0.49, 0.51, 0.55, 0.48, 0.50, 0.53, 0.47, 0.51, 0.50])),
        ("The count of nonconformities per inspection unit over 10 units was 5, 7, 3, 6, 8, 4, 5, 6, 7, 5. What are the "
         "c-chart limits?", _chart("c", [5, 7, 3, 6, 8, 4, 5, 6, 7, 5])),
        ("Our specification for shaft diameter is 25.00 +/- 0.10 mm. The process mean is 25.03 mm and sigma is 0.025 mm. "
         "Calculate Cpk.", _capability(None, 24.9, 25.1, mean=25.03, sigma=0.025)),
        ("For an X-bar chart with subgroups of size 4, what is the value of A2?", _constants(4, "A2")),
        ("Give the d2 and D4 constants for n = 2.", _constants(2, "d2", "D4")),
        ("Subgroup data (3 per subgroup): [9.8, 10.1, 10.0], [10.2, 9.9, 10.1], [10.0, 10.3, 9.7], [9.9, 10.0, 10.2], "
         "[10.1, 9.8, 10.0]. Calculate X-bar and R chart limits.",
         _chart("xbar_r", subgroups=[[9.8, 10.1, 10.0], [10.2, 9.9, 10.1], [10.0, 10.3, 9.7], [9.9, 10.0, 10.2],
                                     [10.1, 9.8, 10.0]])),
        ("np chart for the number of defective items in samples of 50: 3, 1, 4, 2, 5, 2, 3, 1.",
         _chart("np", [3, 1, 4, 2, 5, 2, 3, 1], n=50)),
        ("What are Pp and Ppk if the LSL is 4.5, the USL is 5.5 and the measurements are 5.02, 4.97, 5.10, 4.88, 5.05, "
         "4.95, 5.12, 4.93?", {**_capability([5.02, 4.97, 5.10, 4.88, 5.05, 4.95, 5.12, 4.93], 4.5, 5.5),
                               "fields": ["pp", "ppk"]}),
    ]),
    ("fresh-doe", "heldout", [
        ("Design a two-level full factorial experiment for the factors temperature (60-80 °C), time (10-20 min), and "
         "catalyst concentration (1-3%).", _design("full_factorial", [_f("temperature", 60, 80), _f("time", 10, 20),
                                                                      _f("concentration", 1, 3)])),
        ("I want to screen 15 factors with as few runs as possible. Generate a Plackett-Burman design with 16 runs.",
         _design("plackett_burman", list("ABCDEFGHIJKLMNO"), runs=16)),
        ("Build a central composite design (rotatable) for pressure 1–3 bar and flow 10–30 L/min.",
         _design("central_composite", [_f("pressure", 1, 3), _f("flow", 10, 30)])),
        ("Give me a half-fraction of a 2^4 design.", _design("fractional_factorial", list("ABCD"), runs=8)),
        ("How many experimental runs does a Box-Behnken design with 5 factors and 6 center points need?",
         _design("box_behnken", list("ABCDE"), center=6)),
    ]),
    ("fresh-arith", "heldout", [
        ("What is 3.75 multiplied by 16?", _arith("3.75*16")),
        ("Compute 2 + 3 * (7 - 4) / 2.", _arith("2 + 3 * (7 - 4) / 2")),
        ("What's 12.5% of 880?", _arith("12.5/100*880")),
        ("Calculate 7 cubed.", _arith("7^3")),
    ]),
    ("fresh-refuse", "heldout", [
        ("Can you predict the yield of my next batch based on the last five batches?", _refuse("no forecasting tool")),
        ("Compute a Bayesian posterior for p with a Beta(2,2) prior after 7 successes in 10 trials.",
         _refuse("no Bayesian tool")),
        ("Simulate 1000 Monte Carlo draws of the tolerance stack-up for 3 parts.", _refuse("no simulation tool")),
    ]),
    # a fourth batch, written after the third was fixed and scored once, untouched afterwards
    ("fresh2-stats", "heldout", [
        ("Ten bottles were weighed (g): 498.2, 501.1, 499.5, 500.8, 497.9, 502.3, 500.0, 499.1, 501.7, 498.8. What is "
         "the standard deviation?", _describe([498.2, 501.1, 499.5, 500.8, 497.9, 502.3, 500.0, 499.1, 501.7, 498.8],
                                              "sd")),
        ("Our two suppliers' resistor values: supplier one 99.8, 100.4, 100.1, 99.6, 100.2; supplier two 101.0, 100.7, "
         "101.3, 100.9, 101.2. Student's t-test.",
         _t("two_sample", [99.8, 100.4, 100.1, 99.6, 100.2], [101.0, 100.7, 101.3, 100.9, 101.2])),
        ("Compare yields of four reactor settings using ANOVA: low 61 63 60, mid 66 68 67, high 70 71 69, max 65 64 66",
         _anova([61, 63, 60], [66, 68, 67], [70, 71, 69], [65, 64, 66])),
        ("Correlate x = [2, 4, 6, 8, 10] with y = [1.9, 4.2, 5.8, 8.1, 9.9] using Spearman.",
         _correlation([2, 4, 6, 8, 10], [1.9, 4.2, 5.8, 8.1, 9.9], "spearman")),
        ("Just fit the regression: y 3.2 4.1 5.3 6.2 7.4 against x 1 2 3 4 5.",
         _regression([1, 2, 3, 4, 5], [3.2, 4.1, 5.3, 6.2, 7.4])),
        ("What is the 95% confidence interval of the mean for 8.2, 8.5, 7.9, 8.4, 8.1?", _ci([8.2, 8.5, 7.9, 8.4, 8.1])),
        ("Paired data (before, after): (20, 18), (22, 21), (19, 17), (24, 22), (21, 20). Paired t-test.",
         _t("paired", [20, 22, 19, 24, 21], [18, 21, 17, 22, 20])),
        ("How large a sample do I need per group to detect a 10% difference in mean (sd 15%, power 80%)?",
         _power("two_sample_t", effect=10, sd=15, power=0.8)),
        ("Compute the skewness of 2, 4, 4, 5, 7, 9, 15.", _describe([2, 4, 4, 5, 7, 9, 15], "skewness")),
        ("Standard deviation of 5 numbers: 10, 12, 23, 23, 16", _describe([10, 12, 23, 23, 16], "sd")),
        ("Is there a significant difference between the two line speeds? Line A (m/min): 12.1, 12.4, 12.2, 12.5; "
         "Line B (m/min): 12.9, 13.1, 12.8, 13.0, 13.2",
         _t("two_sample", [12.1, 12.4, 12.2, 12.5], [12.9, 13.1, 12.8, 13.0, 13.2])),
    ]),
    ("fresh2-spc-doe-arith", "heldout", [
        ("Individuals chart, please: 47.2, 48.1, 46.9, 47.5, 48.3, 47.0, 46.8, 47.7, 48.0",
         _chart("imr", [47.2, 48.1, 46.9, 47.5, 48.3, 47.0, 46.8, 47.7, 48.0])),
        ("Calculate process capability. LSL: 2.95, USL: 3.05. Sample: 3.01, 2.99, 3.02, 3.00, 2.98, 3.01, 3.03, 2.99.",
         _capability([3.01, 2.99, 3.02, 3.00, 2.98, 3.01, 3.03, 2.99], 2.95, 3.05)),
        ("A2 constant for subgroup size 10?", _constants(10, "A2")),
        ("Give me a fractional factorial design for 6 factors in 16 runs.",
         _design("fractional_factorial", list("ABCDEF"), runs=16)),
        ("Full factorial: 3 factors, 2 replicates. How many runs?", _design("full_factorial", list("ABC"), replicates=2)),
        ("What's 1,024 divided by 32?", _arith("1024/32")),
        ("What is sqrt(2) * 10?", _arith("sqrt(2) * 10")),
    ]),
    ("fresh2-refuse", "heldout", [
        ("Estimate tomorrow's defect rate from today's 3, 5, 4, 6 defects.", _refuse("no forecasting tool")),
        ("Calculate the Weibull hazard function at t = 100 for beta 2 and eta 500.", _refuse("no hazard-function tool")),
    ]),
]


def _tasks(split: str | None) -> list[Task]:
    out = []
    for family, fsplit, rows in FAMILIES:
        if split is not None and fsplit != split:
            continue
        for i, (prompt, check) in enumerate(rows, 1):
            out.append(Task(f"{family}/{i:02d}", prompt, check))
    return out


def family_of(task_id: str) -> str:
    """A task's phrasing family (the id's part before the slash)."""
    return task_id.split("/", 1)[0]


SPLITS = {family: split for family, split, _ in FAMILIES}


def understand_sets() -> list[TaskSet]:
    """The set whole and its two splits (by family)."""
    return [TaskSet("understand", "issue 15: ordinary wording, every family", _tasks(None)),
            TaskSet("understand-dev", "issue 15: the families the reader was tuned on", _tasks("dev")),
            TaskSet("understand-heldout", "issue 15: families kept aside (report only)", _tasks("heldout"))]
