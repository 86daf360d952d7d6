"""The tools havoc ships: `statistics`, `symbolic`, `dsl_executor` and `rag_helper`, with their schemas.

Every schema is closed (additionalProperties: false) and bounded (maxItems, maxLength), so a model's
call either means exactly one thing or is refused with the argument named.
"""

from __future__ import annotations

from typing import Any

from havoc.errors import ToolError
from havoc.tools.registry import ToolContext, ToolRegistry, ToolSpec

MAX_VALUES = 200_000
MAX_PLOT_POINTS = 10_000

# ----------------------------------------------------------------------------------- schema helpers
NUM = {"type": "number"}
ALPHA = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.05}
SEED = {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1}
PLOT = {"enum": ["png", "svg"], "description": "render a picture; the result carries its path"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64}


def nums(min_items: int = 1, max_items: int = MAX_VALUES) -> dict:
    return {"type": "array", "items": NUM, "minItems": min_items, "maxItems": max_items}


def obj(properties: dict, required: list[str] = (), **extra: Any) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False,
            **extra}


def op(name: str, properties: dict, required: list[str] = (), description: str = "") -> dict:
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

# ----------------------------------------------------------------------------------------- statistics
STATISTICS = {
    "describe": op("describe", {"data": nums(), "alpha": ALPHA}, ["data"], "descriptive statistics"),
    "confidence_interval": op("confidence_interval", {
        "kind": {"enum": ["mean", "variance", "sd", "proportion"]}, "data": nums(2), "alpha": ALPHA,
        "successes": {"type": "integer", "minimum": 0}, "trials": {"type": "integer", "minimum": 1},
        "method": {"enum": ["wilson", "clopper-pearson"]}}, ["kind"]),
    "t_test": op("t_test", {
        "kind": {"enum": ["one_sample", "two_sample", "welch", "paired"]}, "x": nums(2), "y": nums(2),
        "mu": NUM, "alternative": {"enum": ["two-sided", "less", "greater"]}, "alpha": ALPHA},
        ["kind", "x"], "two_sample = Student (pooled), welch = unequal variances"),
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
}


def _statistics(args: dict, ctx: ToolContext) -> dict:
    from havoc.tools import stats

    a = dict(args)
    operation = a.pop("operation")
    plot = a.pop("plot", None)
    if operation == "t_test":
        kind = a.pop("kind")
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
        "n": {"type": "integer", "minimum": 1}, "rules": {"enum": ["western_electric", "nelson", "both", "none"]},
        "plot": PLOT}, ["chart"]),
    "capability": op("capability", {"data": nums(4, 250_000), "lsl": NUM, "usl": NUM,
                                    "subgroup_size": {"type": "integer", "minimum": 2, "maximum": 25}, "target": NUM},
                     ["data"]),
    "constants": op("constants", {"n": {"type": "integer", "minimum": 2, "maximum": 25}}, ["n"],
                    "control chart constants for subgroup size n"),
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
    if operation == "constants":
        out = spc.constants(a["n"])
        return {**out, "method": "computed from the definitions of d2, d3, c4",
                "interpretation": f"n = {a['n']}: A2 = {out['A2']:.4f}, D3 = {out['D3']:.4f}, D4 = {out['D4']:.4f}, "
                                  f"d2 = {out['d2']:.4f}"}
    return fn(**a)


# ----------------------------------------------------------------------------------------- rag_helper
RAG = obj({"query": {"type": "string", "minLength": 1, "maxLength": 2000},
           "top_k": {"type": "integer", "minimum": 1, "maximum": 20}}, ["query"])


def _rag(args: dict, ctx: ToolContext) -> dict:
    from havoc.tools import retrieval

    return retrieval.rag_helper(args["query"], args.get("top_k", 5))


def register_builtin(registry: ToolRegistry) -> ToolRegistry:
    """Register the four built-in tools on `registry` and return it."""
    registry.register(ToolSpec(
        "statistics", "Statistical tests and summaries on data: describe, confidence_interval, t_test, anova, "
        "anova_two_way, tukey_hsd, regression, chi_square, normality. Results carry figures, the method and a "
        "one-line interpretation at alpha.", _statistics, STATISTICS, discriminator="operation"))
    registry.register(ToolSpec(
        "symbolic", "Symbolic maths on an expression string (numbers, symbols, + - * / ^, sin cos exp log sqrt "
        "...): derivative, integral, simplify, solve, evaluate.", _symbolic, SYMBOLIC, discriminator="operation",
        timeout=10.0, isolated=True))
    registry.register(ToolSpec(
        "dsl_executor", "Design of experiments and SPC: full_factorial, fractional_factorial, plackett_burman, "
        "box_behnken, central_composite, convert_units, control_chart, capability, constants, analyze_factorial; "
        "or operation 'script' with DSL text.", run_dsl_operation, DSL_OPS, discriminator="operation",
        default_variant=lambda a: "script" if "script" in a else None))
    registry.register(ToolSpec(
        "rag_helper", "Search havoc's knowledge corpus on statistics, DOE and SPC; returns the top passages with "
        "scores and sources.", _rag, RAG, timeout=120.0))
    return registry


_DEFAULT: ToolRegistry | None = None


def default_registry() -> ToolRegistry:
    """The process-wide registry with the built-in tools (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = register_builtin(ToolRegistry())
    return _DEFAULT
