"""The registry: strict schemas, never raising, time limits; `<tool>` extraction; fuzzing with junk."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from havoc.tools.builtin import default_registry, register_builtin
from havoc.tools.registry import ToolRegistry, ToolSpec, extract_tool_calls

REG = default_registry()
BB = {"operation": "box_behnken", "factors": [{"name": "Temperature", "low": 100, "high": 200},
                                              {"name": "Pressure", "low": 10, "high": 50},
                                              {"name": "Speed", "low": 50, "high": 150}], "seed": 7}


def test_issue_example_call_runs():
    out = REG.execute_call({"tool": "dsl_executor", "args": BB})
    assert out["success"], out
    assert out["result"]["n_runs"] == 15 and out["result"]["center_points"] == 3
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("name, args, message", [
    ("dsl_executor", {**BB, "colour": "red"}, "unknown key 'colour'"),
    ("dsl_executor", {**BB, "seed": -1}, "args.seed"),
    ("dsl_executor", {**BB, "factors": [{"name": "T", "low": "1", "high": 2}]}, "args.factors[0].low"),
    ("dsl_executor", {"operation": "warp_drive"}, "args.operation must be one of"),
    ("statistics", {"operation": "describe", "data": [1, 2, float("nan")]}, "NaN and Infinity"),
    ("statistics", {"operation": "describe", "data": [1, True]}, "is not of type 'number'"),
    ("statistics", {"operation": "describe", "data": list(range(200_001))}, "too large"),
    ("statistics", {"operation": "describe", "data": []}, "should be non-empty"),
    ("statistics", {"operation": "t_test", "kind": "welch", "x": [1, 2, 3]}, "needs y"),
    ("statistics", {"operation": "describe", "data": [1, 2], "alpha": 0}, "args.alpha"),
    ("statistics", '{"operation": "describe", "data": [1, 2], "data": [3]}', "duplicate key"),
    ("statistics", '{"operation": "describe", "data": [Infinity]}', "not valid JSON"),
    ("statistics", "[1, 2]", "args must be a JSON object"),
    ("symbolic", {"operation": "simplify", "expression": "__import__('os')"}, "not allowed"),
    ("symbolic", {"operation": "simplify", "expression": "x" * 501}, "too large"),
    ("rag_helper", {"query": ""}, "args.query"),
    ("nope", {}, "unknown tool 'nope'"),
    (None, {}, "unknown tool"),
])
def test_bad_calls_get_one_line_errors(name, args, message):
    out = REG.execute(name, args)
    assert out["success"] is False and message in out["error"], out
    assert "\n" not in out["error"] and "Traceback" not in out["error"]


def test_deep_nesting_and_odd_python_values_are_refused():
    deep: list = []
    for _ in range(40):
        deep = [deep]
    assert "nested deeper" in REG.execute("statistics", {"operation": "describe", "data": deep})["error"]
    assert "not a JSON value" in REG.execute("statistics", {"operation": "describe", "data": {1, 2}})["error"]


def test_time_limits_hold():
    reg = ToolRegistry(timeout=0.5)

    def slow(args, ctx):
        time.sleep(5)
        return {}

    reg.register(ToolSpec("sleepy", "sleeps", slow, {"type": "object", "additionalProperties": False}))
    start = time.monotonic()
    out = reg.execute("sleepy", {})
    assert not out["success"] and "within 0.5 s" in out["error"] and time.monotonic() - start < 1.5
    start = time.monotonic()
    out = REG.execute("symbolic", {"operation": "integral", "expression": "exp(sin(x)^x)*tan(x)^x"}, timeout=1)
    assert "did not finish within 1 s" in out["error"] and time.monotonic() - start < 3


def test_a_tool_that_raises_does_not_escape():
    reg = ToolRegistry()

    def broken(args, ctx):
        raise ZeroDivisionError("boom")

    reg.register(ToolSpec("broken", "raises", broken, {"type": "object"}))
    assert reg.execute("broken", {}) == {"success": False,
                                         "error": "internal error in tool 'broken': ZeroDivisionError: boom"}


def test_every_tool_has_a_closed_schema_for_the_prompt():
    described = REG.describe()
    assert [d["name"] for d in described] == ["dsl_executor", "rag_helper", "statistics", "symbolic"]

    def closed(schema):
        if schema.get("type") == "object" and "properties" in schema:
            assert schema.get("additionalProperties") is False, schema
        for v in schema.values():
            for sub in (v if isinstance(v, list) else [v]):
                if isinstance(sub, dict):
                    closed(sub)

    for d in described:
        closed(d["parameters"])
    json.dumps(described)
    with pytest.raises(ValueError, match="already registered"):
        register_builtin(REG)


def test_plots_land_in_the_plot_dir(tmp_path):
    reg = register_builtin(ToolRegistry(plot_dir=tmp_path))
    out = reg.execute("dsl_executor", {"operation": "control_chart", "chart": "c", "data": [3, 4, 2, 5, 14, 3],
                                       "plot": "svg"})
    assert out["success"] and out["result"]["plot"]["path"].startswith(str(tmp_path))
    assert open(out["result"]["plot"]["path"]).read().lstrip().startswith("<?xml")


# ------------------------------------------------------------------------------------------ extraction

def test_extraction_tolerates_whitespace_and_is_strict_about_json():
    text = ('Let me compute.\n<tool>\n  {"tool": "statistics",\n   "args": {"operation": "describe", "data": [1, 2, 3]}}\n'
            '</tool> and <  TOOL >{"tool":"symbolic","args":{"operation":"simplify","expression":"x+x"}}</ tool >')
    calls = extract_tool_calls(text)
    assert [(c.tool, c.error) for c in calls] == [("statistics", None), ("symbolic", None)]
    assert text[calls[0].start:calls[0].end].startswith("<tool>")
    results = REG.run_text(text)
    assert [r["response"]["success"] for r in results] == [True, True]
    assert results[1]["response"]["result"]["result"] == "2*x"


@pytest.mark.parametrize("body, message", [
    ("", "empty"),
    ("{'tool': 'x'}", "not valid JSON"),
    ('{"tool": "x"} trailing', "not valid JSON"),
    ('{"tool": "x", "tool": "y"}', "duplicate key"),
    ('{"tool": "x", "args": {"a": NaN}}', "not valid JSON"),
    ('{"tool": "x", "args": [1]}', '"args" must be a JSON object'),
    ('{"tool": "x", "extra": 1}', "unknown key in the tool call: 'extra'"),
    ('["tool"]', "JSON object"),
    ('{"args": {}}', '"tool"'),
    ('```json\n{"tool": "x"}\n```', "not valid JSON"),
])
def test_extraction_errors(body, message):
    (call,) = extract_tool_calls(f"<tool>{body}</tool>")
    assert call.error and message in call.error


def test_unclosed_and_nested_tags():
    (call,) = extract_tool_calls('thinking <tool>{"tool": "statistics"')
    assert call.error == "unclosed <tool> tag" and not call.complete
    first, second = extract_tool_calls('<tool> oops <tool>{"tool": "a"}</tool>')
    assert first.error and second.tool == "a"
    assert extract_tool_calls("no calls here </tool>") == []


# ---------------------------------------------------------------------------------------------- fuzzing

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)
OPERATIONS = ["describe", "t_test", "anova", "regression", "chi_square", "normality", "box_behnken", "control_chart",
              "central_composite", "fractional_factorial", "analyze_factorial", "derivative", "solve", "script",
              "proportion_test", "variance_test", "rank_test", "correlation", "power", "life_data", "ewma_chart",
              "cusum_chart", "gauge_rr", "response_surface", "sampling_plan"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["statistics", "dsl_executor", "symbolic", "rag_helper", "bogus"]),
       st.dictionaries(st.sampled_from(["operation", "data", "x", "y", "factors", "groups", "expression", "kind",
                                        "chart", "alpha", "seed", "script", "query", "extra"]),
                       st.sampled_from(OPERATIONS) | JSONISH, max_size=5))
def test_registry_fuzz_never_raises(name, args):
    start = time.monotonic()
    out = REG.execute(name, args, timeout=5)
    assert set(out) in ({"success", "result"}, {"success", "error"})
    if not out["success"]:
        assert out["error"] and "\n" not in out["error"]
    json.dumps(out, allow_nan=False)
    assert time.monotonic() - start < 8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list('<>/tool{}":,[] \n') + ["<tool>", "</tool>", '"tool"', '"args"', "{}"]),
                max_size=40).map("".join))
def test_extraction_fuzz(text):
    for call in extract_tool_calls(text):
        assert (call.error is None) == (call.tool is not None and call.args is not None)
        assert 0 <= call.start < call.end <= len(text)


FACTORS3 = [{"name": "T", "low": 100, "high": 200}, {"name": "P", "low": 10, "high": 50}, {"name": "S", "low": 1, "high": 3}]
EVERY_OPERATION = [
    ("statistics", {"operation": "describe", "data": [1, 2, 3, 4.5]}),
    ("statistics", {"operation": "confidence_interval", "kind": "proportion", "successes": 3, "trials": 20}),
    ("statistics", {"operation": "t_test", "kind": "one_sample", "x": [1, 2, 3, 4.5], "mu": 1}),
    ("statistics", {"operation": "t_test", "kind": "two_sample", "x": [1, 2, 3], "y": [2, 3, 4.5]}),
    ("statistics", {"operation": "anova", "groups": [[1, 2, 3], [2, 3, 4.5]]}),
    ("statistics", {"operation": "anova_two_way", "y": [1, 2, 3, 4, 5, 6.5, 7, 8.5], "a": ["x", "x", "y", "y"] * 2,
                    "b": ["u", "v"] * 4}),
    ("statistics", {"operation": "tukey_hsd", "groups": {"a": [1, 2, 3], "b": [2, 3, 4.5], "c": [5, 6, 7]}}),
    ("statistics", {"operation": "regression", "y": [1, 3, 2, 5, 4], "predictors": {"x": [1, 2, 3, 4, 5]}}),
    ("statistics", {"operation": "chi_square", "observed": [[10, 20], [20, 10]]}),
    ("statistics", {"operation": "normality", "data": [1, 2, 3, 4.5, 2.2, 3.1, 2.8]}),
    ("symbolic", {"operation": "derivative", "expression": "x^2"}),
    ("symbolic", {"operation": "integral", "expression": "x", "lower": 0, "upper": 1}),
    ("symbolic", {"operation": "simplify", "expression": "x + x"}),
    ("symbolic", {"operation": "solve", "equation": "2*x = 4"}),
    ("symbolic", {"operation": "evaluate", "expression": "x^2", "values": {"x": 3}}),
    ("dsl_executor", {"operation": "full_factorial", "factors": FACTORS3[:2], "seed": 1}),
    ("dsl_executor", {"operation": "fractional_factorial", "factors": FACTORS3 + [{"name": "R", "low": 0, "high": 1}]}),
    ("dsl_executor", {"operation": "plackett_burman", "factors": FACTORS3}),
    ("dsl_executor", {"operation": "box_behnken", "factors": FACTORS3}),
    ("dsl_executor", {"operation": "central_composite", "factors": FACTORS3[:2], "kind": "faced"}),
    ("dsl_executor", {"operation": "convert_units", "factors": FACTORS3, "point": {"T": 150}, "to": "coded"}),
    ("dsl_executor", {"operation": "control_chart", "chart": "np", "data": [3, 5, 2, 4], "n": 50}),
    ("dsl_executor", {"operation": "capability", "data": [9.9, 10.1, 10, 10.2, 9.8], "lsl": 9, "usl": 11}),
    ("dsl_executor", {"operation": "constants", "n": 5}),
    ("dsl_executor", {"operation": "analyze_factorial", "factors": ["A", "B"],
                      "coded": [[-1, -1], [1, -1], [-1, 1], [1, 1]], "response": [1, 2, 3, 5]}),
    ("dsl_executor", {"script": "constants 3"}),
    ("statistics", {"operation": "proportion_test", "successes": 4, "trials": 200, "p0": 0.05}),
    ("statistics", {"operation": "variance_test", "kind": "f", "x": [1, 2, 3.5, 4], "y": [2, 2.5, 3, 3.2]}),
    ("statistics", {"operation": "rank_test", "kind": "kruskal", "groups": [[1, 2, 3], [2, 3, 4.5], [5, 6, 7]]}),
    ("statistics", {"operation": "correlation", "x": [1, 2, 3, 4], "y": [2, 1, 4, 3], "method": "spearman"}),
    ("statistics", {"operation": "power", "test": "one_sample_t", "effect": 0.5, "sd": 1, "power": 0.8}),
    ("statistics", {"operation": "life_data", "times": [10, 20, 25, 40, 50], "censored": [False, False, False, True, True]}),
    ("dsl_executor", {"operation": "ewma_chart", "data": [10, 11, 9.5, 10.4, 10.9], "lambda": 0.2}),
    ("dsl_executor", {"operation": "cusum_chart", "data": [10, 11, 9.5, 10.4, 10.9], "target": 10}),
    ("dsl_executor", {"operation": "gauge_rr", "measurements": [1, 1.1, 2, 2.2, 1.2, 1.1, 2.1, 2.3],
                      "parts": [1, 1, 2, 2, 1, 1, 2, 2], "operators": ["a"] * 4 + ["b"] * 4}),
    ("dsl_executor", {"operation": "response_surface", "factors": FACTORS3[:2], "design": {"kind": "central_composite"},
                      "response": [5, 6, 6, 8, 4, 6.5, 5, 7, 9, 9.2, 8.9, 9.1, 9]}),
    ("dsl_executor", {"operation": "sampling_plan", "n": 50, "c": 1}),
]


@pytest.mark.parametrize("name, args", EVERY_OPERATION, ids=lambda v: v if isinstance(v, str) else v.get("operation", "script"))
def test_every_operation_answers_with_method_and_one_line_interpretation(name, args):
    out = REG.execute(name, args)
    assert out["success"], out
    res = out["result"]
    assert isinstance(res["method"], str) and res["method"]
    assert isinstance(res["interpretation"], str) and res["interpretation"] and "\n" not in res["interpretation"]
    json.dumps(res, allow_nan=False)


def test_every_operation_is_covered():
    covered = {(n, a.get("operation", "script")) for n, a in EVERY_OPERATION}
    from havoc.tools.builtin import DSL_OPS, STATISTICS, SYMBOLIC

    assert covered == ({("statistics", k) for k in STATISTICS} | {("symbolic", k) for k in SYMBOLIC}
                       | {("dsl_executor", k) for k in DSL_OPS})
