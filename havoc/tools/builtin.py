"""The tools havoc ships: `statistics`, `symbolic`, `dsl_executor` and `rag_helper`, with their schemas.

Every schema is closed (additionalProperties: false) and bounded (maxItems, maxLength), so a model's
call either means exactly one thing or is refused with the argument named.
"""

from __future__ import annotations

from typing import Any

from havoc.errors import ToolError
from havoc.tools import summaries
from havoc.tools.registry import ToolContext, ToolRegistry, ToolSpec

MAX_VALUES = 200_000
MAX_PLOT_POINTS = 10_000

# ----------------------------------------------------------------------------------- schema helpers
# Numbers are bounded in magnitude by the registry for every tool (|x| <= 1e100, `MAX_MAGNITUDE`), not
# here: llguidance cannot compile a float range that wide into the grammar PRIME decodes tool calls
# under. Integers, which size loops and allocations, carry their own bounds (the registry checks).
NUM = {"type": "number"}
NONNEG = {"type": "number", "minimum": 0}
ALPHA = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.05}
SEED = {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1}
PLOT = {"enum": ["png", "svg"], "description": "render a picture; the result carries its path"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64}


def nums(min_items: int = 1, max_items: int = MAX_VALUES) -> dict:
    return {"type": "array", "items": NUM, "minItems": min_items, "maxItems": max_items}


def obj(properties: dict, required: list[str] = (), **extra: Any) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False,
            **extra}


# Example calls per operation, for `havoc tool --list` (ToolSpec.examples). They stay out of the schemas:
# PRIME puts an operation's schema into the model's prompt, and a small model copies an example's numbers.
EXAMPLES: dict[str, list[dict]] = {}


def op(name: str, properties: dict, required: list[str] = (), description: str = "",
       examples: list[dict] | None = None) -> dict:
    """One operation's closed schema; its `examples` are kept aside in EXAMPLES."""
    if examples:
        EXAMPLES[name] = examples
    return obj({"operation": {"const": name}, **properties}, ["operation", *required], description=description)


GROUPS = {"oneOf": [
    {"type": "object", "additionalProperties": nums(), "minProperties": 2, "maxProperties": 1000,
     "propertyNames": {"maxLength": 64}},
    {"type": "array", "items": nums(), "minItems": 2, "maxItems": 1000},
]}
LABELS = {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 3, "maxItems": MAX_VALUES}
FACTOR = obj({"name": NAME, "low": NUM, "high": NUM,
              "levels": {"type": "array", "items": {"type": ["number", "string"]}, "minItems": 2, "maxItems": 50}},
             ["name"])
FACTORS = {"type": "array", "items": FACTOR, "minItems": 1, "maxItems": 23}
RANDOM = {"randomize": {"type": "boolean", "default": True}, "seed": SEED}
CENTER = {"type": "integer", "minimum": 0, "maximum": 100}
ALTERNATIVE = {"enum": ["two-sided", "less", "greater"]}
COUNT = {"type": "integer", "minimum": 0, "maximum": 10 ** 9}
SIZE = {"type": "integer", "minimum": 1, "maximum": 10 ** 9}
POS = {"type": "number", "exclusiveMinimum": 0}
PROB = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
N2 = {"type": "integer", "minimum": 2, "maximum": 10 ** 9}
CONSTANTS = {"enum": ["exact", "table"], "description": "SPC constants: computed exactly, or the printed table (d2 = 1.128 ...)"}
LABEL_LIST = {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 8, "maxItems": 100_000}

# ----------------------------------------------------------------------------------------- statistics
STATISTICS = {
    "describe": op("describe", {"data": nums(), "alpha": ALPHA}, ["data"], "descriptive statistics"),
    "confidence_interval": op("confidence_interval", {
        "kind": {"enum": ["mean", "variance", "sd", "proportion"]}, "data": nums(2), "alpha": ALPHA,
        "successes": COUNT, "trials": SIZE,
        "method": {"enum": ["wilson", "clopper-pearson"]}}, ["kind"]),
    "t_test": op("t_test", {
        "kind": {"enum": ["one_sample", "two_sample", "welch", "paired"]}, "x": nums(2), "y": nums(2),
        "mean_x": NUM, "sd_x": NONNEG, "n_x": N2,
        "mean_y": NUM, "sd_y": NONNEG, "n_y": N2,
        "mu": NUM, "alternative": ALTERNATIVE, "alpha": ALPHA},
        ["kind"], "two_sample = Student (pooled), welch = unequal variances; data x (y), or summary statistics "
        "mean_x, sd_x, n_x (mean_y, sd_y, n_y); for paired summaries, x describes the differences",
        [{"operation": "t_test", "kind": "welch", "mean_x": 20.14458, "sd_x": 6.4147, "n_x": 249,
          "mean_y": 30.48101, "sd_y": 6.10771, "n_y": 79}]),
    "anova": op("anova", {"groups": GROUPS, "alpha": ALPHA}, ["groups"], "one-way ANOVA"),
    "anova_two_way": op("anova_two_way", {
        "y": nums(3), "a": LABELS, "b": LABELS, "interaction": {"type": "boolean"},
        "ss_type": {"enum": [1, 2, 3]}, "alpha": ALPHA, "a_name": NAME, "b_name": NAME}, ["y", "a", "b"]),
    "tukey_hsd": op("tukey_hsd", {"groups": GROUPS, "alpha": ALPHA}, ["groups"]),
    "regression": op("regression", {
        "y": nums(2), "predictors": {"type": "object", "additionalProperties": nums(), "minProperties": 1,
                                     "maxProperties": 50, "propertyNames": {"maxLength": 64}},
        "intercept": {"type": "boolean"}, "degree": {"type": "integer", "minimum": 1, "maximum": 15},
        "alpha": ALPHA, "plot": PLOT}, ["y", "predictors"], "OLS; degree fits a polynomial in one predictor"),
    "chi_square": op("chi_square", {
        "observed": {"oneOf": [nums(2, 10_000), {"type": "array", "items": nums(2, 1000), "minItems": 2, "maxItems": 1000}]},
        "expected": nums(2, 10_000), "yates": {"type": "boolean"}, "alpha": ALPHA}, ["observed"],
        "flat counts = goodness of fit; rows = test of independence"),
    "normality": op("normality", {"data": nums(3), "alpha": ALPHA}, ["data"]),
    "proportion_test": op("proportion_test", {
        "successes": COUNT, "trials": SIZE, "successes_y": COUNT, "trials_y": SIZE, "p0": PROB,
        "method": {"enum": ["z", "exact"]}, "correction": {"type": "boolean"}, "alternative": ALTERNATIVE,
        "alpha": ALPHA}, ["successes", "trials"],
        "one proportion against p0, or two (successes_y, trials_y); z (optionally continuity-corrected) or exact "
        "(binomial; Fisher's for two)",
        [{"operation": "proportion_test", "successes": 4, "trials": 200, "p0": 0.05, "alternative": "less"},
         {"operation": "proportion_test", "successes": 3, "trials": 4, "successes_y": 1, "trials_y": 4,
          "method": "exact"}]),
    "variance_test": op("variance_test", {
        "kind": {"enum": ["one_sample", "f", "bartlett", "levene", "brown_forsythe"]}, "x": nums(2), "y": nums(2),
        "groups": GROUPS, "sd_x": NONNEG, "n_x": N2, "sd_y": NONNEG,
        "n_y": N2, "sigma0": POS, "alternative": ALTERNATIVE, "alpha": ALPHA}, ["kind"],
        "chi-square for one sd (sigma0), F for two, Bartlett / Levene / Brown-Forsythe for groups; x, y or sd and n",
        [{"operation": "variance_test", "kind": "f", "sd_x": 65.54909, "n_x": 240, "sd_y": 61.85425, "n_y": 240}]),
    "rank_test": op("rank_test", {
        "kind": {"enum": ["mann_whitney", "wilcoxon", "kruskal", "sign"]}, "x": nums(1), "y": nums(1), "groups": GROUPS,
        "mu": NUM, "alternative": ALTERNATIVE, "method": {"enum": ["auto", "exact", "asymptotic"]}, "alpha": ALPHA},
        ["kind"], "Mann-Whitney (x vs y), Wilcoxon signed-rank and sign (x - y paired, or x against mu), "
        "Kruskal-Wallis (groups)",
        [{"operation": "rank_test", "kind": "mann_whitney", "x": [19, 22, 16, 29, 24], "y": [20, 11, 17, 12]}]),
    "correlation": op("correlation", {
        "x": nums(3), "y": nums(3), "method": {"enum": ["pearson", "spearman", "kendall"]}, "alternative": ALTERNATIVE,
        "alpha": ALPHA}, ["x", "y"], "correlation with its test and a Fisher-z interval",
        [{"operation": "correlation", "x": [44.4, 45.9, 41.9, 53.3, 44.7], "y": [2.6, 3.1, 2.5, 5.0, 3.6]}]),
    "power": op("power", {
        "test": {"enum": ["one_sample_t", "paired_t", "two_sample_t", "one_proportion", "two_proportions", "anova",
                          "factorial"]},
        "n": {"type": "number", "exclusiveMinimum": 0, "maximum": 10 ** 7}, "effect": NUM, "power": PROB, "alpha": PROB,
        "sd": POS, "p0": PROB, "p1": PROB, "p2": PROB, "groups": {"type": "integer", "minimum": 2, "maximum": 1000},
        "between_var": POS, "factors": {"type": "integer", "minimum": 2, "maximum": 15},
        "corner_points": {"type": "integer", "minimum": 4, "maximum": 32768}, "center_points": CENTER,
        "terms": {"type": "integer", "minimum": 1, "maximum": 32767}, "alternative": ALTERNATIVE,
        "strict": {"type": "boolean"}}, ["test"],
        "power and sample size: give all but one of n, effect (p1/p2 for proportions), power; that one is solved "
        "for (alpha too, when it is left out with the other three given)",
        [{"operation": "power", "test": "two_sample_t", "effect": 1, "sd": 1, "power": 0.9},
         {"operation": "power", "test": "two_proportions", "p1": 0.5, "p2": 0.75, "n": 50}]),
    "life_data": op("life_data", {
        "times": {"type": "array", "items": POS, "minItems": 2, "maxItems": 100_000},
        "censored": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 100_000},
        "counts": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 10 ** 9}, "minItems": 2, "maxItems": 100_000},
        "distribution": {"enum": ["weibull", "lognormal"]}, "confidence": PROB,
        "percentiles": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                        "minItems": 1, "maxItems": 50}}, ["times"],
        "Weibull or lognormal maximum likelihood with right-censoring (censored = true: still running); B10 life "
        "and Fisher-matrix bounds",
        [{"operation": "life_data", "times": [54, 187, 216, 240, 244, 335, 361, 373, 375, 386, 500],
          "censored": [False] * 10 + [True], "counts": [1] * 10 + [10]}]),
}


def _statistics(args: dict, ctx: ToolContext) -> dict:
    from havoc.tools import stats

    a = dict(args)
    operation = a.pop("operation")
    plot = a.pop("plot", None)
    if operation == "t_test":
        kind = a.pop("kind")
        summary = [k for k in ("mean_x", "sd_x", "n_x", "mean_y", "sd_y", "n_y") if k in a]
        if summary:
            return _t_test_summary(kind, a, summary)
        if "x" not in a:
            raise ToolError("a t-test needs data x (and y), or summary statistics mean_x, sd_x, n_x")
        if kind == "one_sample":
            if "y" in a:
                raise ToolError("a one-sample t-test takes x (and mu), not y")
            return stats.t_test_one_sample(a["x"], a.get("mu", 0.0), a.get("alternative", "two-sided"), a.get("alpha", 0.05))
        if "y" not in a:
            raise ToolError(f"a {kind} t-test needs y")
        if "mu" in a:
            raise ToolError("mu applies to one-sample tests only")
        if kind == "paired":
            return stats.t_test_paired(a["x"], a["y"], a.get("alternative", "two-sided"), a.get("alpha", 0.05))
        return stats.t_test_two_sample(a["x"], a["y"], kind == "two_sample", a.get("alternative", "two-sided"),
                                       a.get("alpha", 0.05))
    if operation in ("proportion_test", "variance_test", "rank_test", "correlation"):
        from havoc.tools import compare

        return getattr(compare, operation)(**a)
    if operation == "power":
        from havoc.tools.power import power_sample_size

        return power_sample_size(**a)
    if operation == "life_data":
        from havoc.tools.reliability import life_data

        return life_data(**a)
    if operation == "anova":
        return stats.anova_oneway(**a)
    if operation == "anova_two_way":
        return stats.anova_twoway(**a)
    if operation == "regression":
        res = stats.regression(**a, _keep_fit=plot is not None)
        if plot:
            from havoc.tools import plots

            fitted, resid = res.pop("_fitted"), res.pop("_residuals")
            if len(resid) > MAX_PLOT_POINTS:
                raise ToolError(f"residual plots are limited to {MAX_PLOT_POINTS} points")
            res["plot"] = plots.residual_plots(fitted, resid, ctx.plot_target("residuals", plot), plot)
        return res
    fn = {"describe": stats.describe, "confidence_interval": stats.confidence_interval, "tukey_hsd": stats.tukey_hsd,
          "chi_square": stats.chi_square, "normality": stats.normality}[operation]
    return fn(**a)


def _t_test_summary(kind: str, a: dict, given: list[str]) -> dict:
    from havoc.tools import stats

    if "x" in a or "y" in a:
        raise ToolError("give data (x, y) or summary statistics (mean, sd, n), not both")
    want = ["mean_x", "sd_x", "n_x"] + (["mean_y", "sd_y", "n_y"] if kind in ("two_sample", "welch") else [])
    missing = [k for k in want if k not in a]
    if missing:
        raise ToolError(f"a {kind} t-test from summary statistics needs {', '.join(missing)}")
    extra = sorted(set(given) - set(want))
    if extra:
        raise ToolError(f"{', '.join(extra)} do not apply to a {kind} t-test" +
                        (" (for paired summaries, mean_x, sd_x, n_x describe the differences)" if kind == "paired" else ""))
    alt, alpha = a.get("alternative", "two-sided"), a.get("alpha", 0.05)
    if kind == "one_sample":
        return stats.t_one_from_summary(a["mean_x"], a["sd_x"], a["n_x"], a.get("mu", 0.0), alt, alpha, summary=True)
    if "mu" in a:
        raise ToolError("mu applies to one-sample tests only")
    if kind == "paired":
        return stats.t_paired_from_summary(a["mean_x"], a["sd_x"], a["n_x"], alt, alpha, summary=True)
    return stats.t_two_from_summary(a["mean_x"], a["sd_x"], a["n_x"], a["mean_y"], a["sd_y"], a["n_y"],
                                    kind == "two_sample", alt, alpha, summary=True)


# ------------------------------------------------------------------------------------------- symbolic
EXPR = {"type": "string", "minLength": 1, "maxLength": 500}
VAR = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{0,23}$"}
LIMIT = {"oneOf": [NUM, {"type": "string", "maxLength": 100}]}
SYMBOLIC = {
    "derivative": op("derivative", {"expression": EXPR, "variable": VAR,
                                    "order": {"type": "integer", "minimum": 1, "maximum": 10}}, ["expression"]),
    "integral": op("integral", {"expression": EXPR, "variable": VAR, "lower": LIMIT, "upper": LIMIT}, ["expression"],
                   "indefinite, or definite with lower and upper (numbers, or expressions such as 'pi', 'oo')"),
    "simplify": op("simplify", {"expression": EXPR}, ["expression"]),
    "solve": op("solve", {"equation": EXPR, "variable": VAR}, ["equation"], "'lhs = rhs', or an expression = 0"),
    "evaluate": op("evaluate", {"expression": EXPR, "values": {"type": "object", "additionalProperties": NUM,
                                                               "maxProperties": 50}}, ["expression"]),
}


def _symbolic(args: dict, ctx: ToolContext) -> dict:
    from havoc.tools import symbolic

    a = dict(args)
    timeout = a.pop("_timeout", symbolic.DEFAULT_TIMEOUT)
    return symbolic.run(a.pop("operation"), timeout=timeout, **a)


# --------------------------------------------------------------------------------------- dsl_executor
DESIGN_COMMON = {"factors": FACTORS, **RANDOM}
DSL_OPS = {
    "full_factorial": op("full_factorial", {**DESIGN_COMMON, "replicates": {"type": "integer", "minimum": 1, "maximum": 100},
                                            "center": CENTER}, ["factors"]),
    "fractional_factorial": op("fractional_factorial", {
        **DESIGN_COMMON, "generators": {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 1, "maxItems": 20},
        "runs": {"type": "integer", "minimum": 4, "maximum": 4096}, "center": CENTER,
        "replicates": {"type": "integer", "minimum": 1, "maximum": 100}}, ["factors"],
        "generators like 'D=ABC' (letters A.. by factor position, no I)"),
    "plackett_burman": op("plackett_burman", {**DESIGN_COMMON, "runs": {"enum": [8, 12, 16, 20, 24]}, "center": CENTER},
                          ["factors"]),
    "box_behnken": op("box_behnken", {**DESIGN_COMMON, "center": CENTER}, ["factors"]),
    "central_composite": op("central_composite", {
        **DESIGN_COMMON, "kind": {"enum": ["circumscribed", "inscribed", "faced"]},
        "alpha": {"oneOf": [{"enum": ["rotatable", "orthogonal"]}, {"type": "number", "exclusiveMinimum": 0, "maximum": 10}]},
        "center": CENTER, "fraction": {"type": "boolean"}}, ["factors"]),
    "convert_units": op("convert_units", {"factors": FACTORS, "point": {"type": "object", "additionalProperties": NUM,
                                                                       "maxProperties": 23},
                                          "to": {"enum": ["natural", "coded"]}}, ["factors", "point", "to"]),
    "control_chart": op("control_chart", {
        "chart": {"enum": ["xbar_r", "xbar_s", "imr", "p", "np", "c", "u"]}, "data": nums(2, 250_000),
        "subgroups": {"type": "array", "items": nums(2, 25), "minItems": 2, "maxItems": 10_000},
        "subgroup_size": {"type": "integer", "minimum": 2, "maximum": 25}, "sizes": nums(2, 10_000),
        "n": {"type": "integer", "minimum": 1, "maximum": 10 ** 9}, "rules": {"enum": ["western_electric", "nelson", "both", "none"]},
        "constants": CONSTANTS, "plot": PLOT}, ["chart"]),
    "ewma_chart": op("ewma_chart", {
        "data": nums(2, 10_000), "subgroups": {"type": "array", "items": nums(2, 25), "minItems": 2, "maxItems": 10_000},
        "lambda": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "L": {"type": "number", "exclusiveMinimum": 0,
                                                                                 "maximum": 10},
        "target": NUM, "sigma": POS, "limits": {"enum": ["exact", "asymptotic"]}, "constants": CONSTANTS}, [],
        "EWMA chart: lambda (default 0.2), L sigmas (3), target and sigma (estimated when left out); exact "
        "(time-varying) or asymptotic limits",
        [{"operation": "ewma_chart", "data": [52.0, 47.0, 53.0, 49.3, 50.1, 47.0, 51.0, 50.1], "lambda": 0.3,
          "target": 50, "sigma": 2.0539, "limits": "asymptotic"}]),
    "cusum_chart": op("cusum_chart", {
        "data": nums(2, 10_000), "subgroups": {"type": "array", "items": nums(2, 25), "minItems": 2, "maxItems": 10_000},
        "target": NUM, "sigma": POS, "k": {"type": "number", "minimum": 0, "maximum": 5},
        "h": {"type": "number", "exclusiveMinimum": 0, "maximum": 50}, "headstart": {"type": "number", "minimum": 0,
                                                                                       "exclusiveMaximum": 1},
        "constants": CONSTANTS}, [],
        "tabular CUSUM: k and h in sigmas (defaults 0.5 and 4), target and sigma estimated when left out",
        [{"operation": "cusum_chart", "data": [9.45, 7.99, 9.29, 11.66, 12.16, 10.18], "target": 10, "sigma": 1,
          "k": 0.5, "h": 5}]),
    "capability": op("capability", {"data": nums(4, 250_000), "lsl": NUM, "usl": NUM,
                                    "subgroup_size": {"type": "integer", "minimum": 2, "maximum": 25}, "target": NUM,
                                    "mean": NUM, "sigma": POS, "sigma_overall": POS, "constants": CONSTANTS}, [],
                     "Cp/Cpk (within sigma) and Pp/Ppk (overall sigma) from data, or from mean and sigma",
                     [{"operation": "capability", "mean": 16, "sigma": 2, "lsl": 8, "usl": 20}]),
    "constants": op("constants", {"n": {"type": "integer", "minimum": 2, "maximum": 25}, "constants": CONSTANTS}, ["n"],
                    "control chart constants for subgroup size n"),
    "gauge_rr": op("gauge_rr", {
        "measurements": nums(8, 100_000), "parts": LABEL_LIST, "operators": LABEL_LIST, "tolerance": POS,
        "k": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "alpha_interaction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}},
        ["measurements", "parts", "operators"],
        "crossed gauge R&R by ANOVA: one part and operator label per measurement",
        [{"operation": "gauge_rr", "measurements": [0.29, 0.41, -0.56, -0.68, 0.08, 0.25, -0.47, -1.22],
          "parts": [1, 1, 2, 2, 1, 1, 2, 2], "operators": ["A", "A", "A", "A", "B", "B", "B", "B"]}]),
    "response_surface": op("response_surface", {
        "factors": FACTORS, "response": nums(3, 4096),
        "coded": {"type": "array", "items": nums(2, 7), "minItems": 3, "maxItems": 4096},
        "natural": {"type": "array", "items": nums(2, 7), "minItems": 3, "maxItems": 4096},
        "design": obj({"kind": {"enum": ["central_composite", "box_behnken"]}, "center": CENTER,
                       "alpha": {"oneOf": [{"enum": ["rotatable", "orthogonal"]},
                                           {"type": "number", "exclusiveMinimum": 0, "maximum": 10}]},
                       "type": {"enum": ["circumscribed", "inscribed", "faced"]}, "fraction": {"type": "boolean"}},
                      ["kind"]),
        "goal": {"enum": ["maximize", "minimize", "target"]}, "target": NUM, "alpha": ALPHA}, ["factors", "response"],
        "second-order fit, stationary point and its nature, optimum within the design region; runs as coded, "
        "natural, or design (its standard order)",
        [{"operation": "response_surface", "factors": [{"name": "time", "low": 80, "high": 90},
                                                      {"name": "temp", "low": 170, "high": 180}],
          "design": {"kind": "central_composite", "center": 5},
          "response": [76.5, 78.0, 77.0, 79.5, 75.6, 78.4, 77.0, 78.5, 79.9, 80.3, 80.0, 79.7, 79.8]}]),
    "sampling_plan": op("sampling_plan", {
        "n": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "c": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "p": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 1, "maxItems": 1000},
        "lot_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "aql": PROB, "ltpd": PROB,
        "distribution": {"enum": ["binomial", "hypergeometric"]}}, ["n", "c"],
        "single sampling plan (n, c): probability of acceptance, AOQ, ATI, AOQL, producer's and consumer's risks",
        [{"operation": "sampling_plan", "n": 89, "c": 2, "lot_size": 10000, "p": [0.01, 0.02]}]),
    "analyze_factorial": op("analyze_factorial", {
        "factors": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 15},
        "coded": {"type": "array", "items": nums(1, 15), "minItems": 2, "maxItems": 4096},
        "response": nums(2, 4096), "max_order": {"type": "integer", "minimum": 1, "maximum": 15}, "alpha": ALPHA,
        "plot": PLOT, "plot_kind": {"enum": ["main_effects", "interaction"]}}, ["factors", "coded", "response"]),
    "script": obj({"operation": {"const": "script"}, "script": {"type": "string", "minLength": 1, "maxLength": 100_000}},
                  ["script"], description="DOE/SPC DSL text (see docs/tools-dsl.md)"),
}


def run_dsl_operation(args: dict, ctx: ToolContext) -> dict:
    """One dsl_executor operation (shared by tool calls and DSL statements).

    Args:
        args: validated args with "operation".
        ctx: where plots go.

    Returns:
        the operation's result dict (with "plot" when one was requested).
    """
    from havoc.tools import doe, spc

    a = dict(args)
    operation = a.pop("operation", "script")  # {"script": "..."} alone is a script
    plot = a.pop("plot", None)
    plot_kind = a.pop("plot_kind", "main_effects")
    if "constants" in a:  # the schema's name; the functions' is constants_source
        a["constants_source"] = a.pop("constants")
    if operation == "script":
        from havoc.tools import dsl

        return dsl.run_script(a["script"], ctx)
    if operation == "control_chart":
        res = spc.control_chart(**a)
        if plot:
            from havoc.tools import plots

            if res["n_points"] > MAX_PLOT_POINTS:
                raise ToolError(f"charts are drawn for at most {MAX_PLOT_POINTS} points")
            res["plot"] = plots.control_chart_plot(res, ctx.plot_target(f"chart-{a['chart']}", plot), plot)
        return res
    if operation == "analyze_factorial":
        res = doe.analyze_factorial(**a)
        if plot:
            from havoc.tools import plots

            fn = plots.main_effects_plot if plot_kind == "main_effects" else plots.interaction_plot
            res["plot"] = fn(res["factors"], a["coded"], a["response"], ctx.plot_target(plot_kind, plot), plot)
        return res
    fn = {"full_factorial": doe.full_factorial, "fractional_factorial": doe.fractional_factorial,
          "plackett_burman": doe.plackett_burman, "box_behnken": doe.box_behnken,
          "central_composite": doe.central_composite, "convert_units": doe.convert_units,
          "capability": spc.capability}.get(operation)
    if operation in ("ewma_chart", "cusum_chart", "gauge_rr", "response_surface", "sampling_plan"):
        return _quality_operation(operation, a)
    if operation == "constants":
        out = spc.constants(a["n"], a.get("constants_source", "exact"))
        return {**out, "method": "computed from the definitions of d2, d3, c4" if out["source"] == "exact" else
                "the printed table (Montgomery, Appendix VI)",
                "interpretation": f"n = {a['n']}: A2 = {out['A2']:.4f}, D3 = {out['D3']:.4f}, D4 = {out['D4']:.4f}, "
                                  f"d2 = {out['d2']:.4f}"}
    return fn(**a)


def _quality_operation(operation: str, a: dict) -> dict:
    if operation == "ewma_chart":
        from havoc.tools import spc

        if "lambda" in a:
            a["lam"] = a.pop("lambda")
        return spc.ewma_chart(**a)
    if operation == "cusum_chart":
        from havoc.tools import spc

        return spc.cusum_chart(**a)
    if operation == "gauge_rr":
        from havoc.tools.msa import gauge_rr

        return gauge_rr(**a)
    if operation == "response_surface":
        from havoc.tools.rsm import response_surface

        return response_surface(**a)
    from havoc.tools.sampling import sampling_plan

    return sampling_plan(**a)


# ----------------------------------------------------------------------------------------- rag_helper
RAG = obj({"query": {"type": "string", "minLength": 1, "maxLength": 2000},
           "top_k": {"type": "integer", "minimum": 1, "maximum": 20}}, ["query"])


def _rag(args: dict, ctx: ToolContext) -> dict:
    from havoc.tools import retrieval

    return retrieval.rag_helper(args["query"], args.get("top_k", 5))


def _preload_statistics() -> None:
    # Imported once in the parent, so the forked child of each call starts with them (scipy.stats alone
    # costs ~0.7 s to import; a call then costs ~15 ms). The normality test's statsmodels too: imported in
    # each child it cost every PRIME t-test answer ~0.45 s per check (two checks per answer).
    from statsmodels.stats.diagnostic import normal_ad  # noqa: F401

    from havoc.tools import compare, power, reliability, stats  # noqa: F401


def _preload_dsl() -> None:
    from havoc.tools import doe, dsl, msa, rsm, sampling, spc  # noqa: F401


def register_builtin(registry: ToolRegistry) -> ToolRegistry:
    """Register the four built-in tools on `registry` and return it."""
    registry.register(ToolSpec(
        "statistics", "Statistical tests and summaries on data: describe, confidence_interval, t_test (data or "
        "summary statistics), anova, anova_two_way, tukey_hsd, regression, chi_square, normality, proportion_test, "
        "variance_test, rank_test, correlation, power (power and sample size), life_data (Weibull/lognormal "
        "reliability). Results carry figures, the method and a one-line interpretation at alpha.", _statistics, STATISTICS, discriminator="operation",
        preload=_preload_statistics, examples=[{"tool": "statistics", "args": e} for k in STATISTICS for e in EXAMPLES.get(k, [])],
        summarize=summaries.statistics))
    registry.register(ToolSpec(
        "symbolic", "Symbolic maths on an expression string (numbers, symbols, + - * / ^, sin cos exp log sqrt "
        "...): derivative, integral, simplify, solve, evaluate.", _symbolic, SYMBOLIC, discriminator="operation",
        timeout=10.0, isolated=True, summarize=summaries.symbolic))
    registry.register(ToolSpec(
        "dsl_executor", "Design of experiments and SPC: full_factorial, fractional_factorial, plackett_burman, "
        "box_behnken, central_composite, convert_units, control_chart, ewma_chart, cusum_chart, capability, "
        "constants, analyze_factorial, response_surface, gauge_rr, sampling_plan; or operation 'script' with DSL "
        "text.", run_dsl_operation, DSL_OPS, discriminator="operation",
        default_variant=lambda a: "script" if "script" in a else None, preload=_preload_dsl,
        examples=[{"tool": "dsl_executor", "args": e} for k in DSL_OPS for e in EXAMPLES.get(k, [])],
        summarize=summaries.dsl_executor))
    registry.register(ToolSpec(
        "rag_helper", "Search havoc's knowledge corpus on statistics, DOE and SPC; returns the top passages with "
        "scores and sources.", _rag, RAG, timeout=120.0, in_process=True, summarize=summaries.rag_helper))
    return registry


_DEFAULT: ToolRegistry | None = None


def default_registry() -> ToolRegistry:
    """The process-wide registry with the built-in tools (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = register_builtin(ToolRegistry())
    return _DEFAULT
