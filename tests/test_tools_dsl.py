"""The DOE/SPC DSL: statements map onto dsl_executor operations; errors carry line and column; fuzzing."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from havoc.errors import DSLError, ToolError
from havoc.tools import dsl
from havoc.tools.builtin import default_registry
from havoc.tools.registry import ToolContext

ISSUE_EXAMPLE = "design box_behnken factors Temperature(100,200) Pressure(10,50) Speed(50,150) center 3 seed 7"


def test_issue_example_equals_the_tool_call():
    (args,) = dsl.parse(ISSUE_EXAMPLE)
    assert args == {"operation": "box_behnken", "_line": 1, "_col": 1, "center": 3, "seed": 7,
                    "factors": [{"name": "Temperature", "low": 100, "high": 200},
                                {"name": "Pressure", "low": 10, "high": 50}, {"name": "Speed", "low": 50, "high": 150}]}
    via_dsl = dsl.run_script(ISSUE_EXAMPLE)["statements"][0]["result"]
    args.pop("_line"), args.pop("_col")
    via_tool = default_registry().execute("dsl_executor", args)["result"]
    assert via_dsl == via_tool and via_dsl["n_runs"] == 15


def test_every_statement_kind():
    script = """
    # a comment line
    design fractional_factorial factors A(-1,1) B(-1,1) C(-1,1) D(-1,1) generators D=-ABC no_randomize
    design ccd factors X(0, 10) Y(5, 15) kind inscribed alpha rotatable center 5 seed 1 ; constants 4
    design full_factorial factors Catalyst(A, B, "C 2") Temp(100, 150, 200) replicates 2 seed 3
    chart xbar_s subgroups [[1, 2, 3], [2, 3, 4], [1.5, 2.5, 3.5]] rules both
    chart p data [5, 7, 4] sizes [100, 120, 90]
    capability data [9.9, 10.1, 10.0, 10.2, 9.8, 10.05] lsl 9.5 usl 10.5 target 10
    design full_factorial factors A(-1,1) B(-1,1) no_randomize
    analyze response [1, 5, 2, 9] max_order 1 alpha 0.1
    """
    out = dsl.run_script(script)
    ops = [(s["line"], s["operation"]) for s in out["statements"]]
    assert ops == [(3, "fractional_factorial"), (4, "central_composite"), (4, "constants"), (5, "full_factorial"),
                   (6, "control_chart"), (7, "control_chart"), (8, "capability"), (9, "full_factorial"),
                   (10, "analyze_factorial")]
    ff = out["statements"][0]["result"]
    assert ff["generators"] == ["D=-ABC"] and ff["defining_relation"] == ["I = -ABCD"]
    assert out["statements"][3]["result"]["n_runs"] == 18
    assert out["statements"][3]["result"]["runs"][0]["natural"]["Catalyst"] in ("A", "B", "C 2")
    effects = {e["term"]: e["effect"] for e in out["statements"][-1]["result"]["effects"]}
    assert effects == {"A": 5.5, "B": 2.5}


def test_analyze_in_run_order():
    script = ("design full_factorial factors A(-1,1) B(-1,1) seed 11\n"
              "analyze response [10, 20, 30, 40] order run")
    out = dsl.run_script(script)
    runs = out["statements"][0]["result"]["runs"]
    y = {r["std_order"]: v for r, v in zip(runs, [10, 20, 30, 40])}
    a_effect = (y[2] + y[4] - y[1] - y[3]) / 2
    assert out["statements"][1]["result"]["effects"][0]["effect"] == pytest.approx(a_effect)


@pytest.mark.parametrize("text, line, col, message", [
    ("design box_behnken factors T(1,2", 1, 33, "expected ',' or ')'"),
    ("\n\n  design  wobble factors", 3, 11, "expected a design kind"),
    ("chart imr data [1, 2,, 3]", 1, 22, "expected a number in the list"),
    ("design box_behnken factors T(1,2) P(1,2) S(1,2) colour red", 1, 49, "unknown design option 'colour'"),
    ("design box_behnken factors T(1,2) center 2.5", 1, 42, "whole number"),
    ("chart imr data [1, 2, 3] rules strict", 1, 32, "expected a rule set"),
    ("chart imr", 1, 10, "needs data"),
    ("capability data [1,2,3,4] lsl", 1, 30, "expected a number"),
    ("chart imr data [1, 2, 3] @", 1, 26, "unexpected character '@'"),
    ("plot everything", 1, 1, "unknown statement 'plot'"),
    ("design full_factorial factors A(1,2)\nanalyze response [1, 2, 3]", 2, 1, "2 runs but 3 responses"),
    ("analyze response [1, 2]", 1, 1, "needs a design statement before it"),
    ("design box_behnken factors T(1,2)", 1, 1, "3 to 7 factors"),
    ("design full_factorial factors A(1,2) center -1", 1, 1, "center: must be in [0, 100], got -1"),
    ("constants 30", 1, 1, "must be in [2, 25], got 30"),
])
def test_errors_name_line_and_column(text, line, col, message):
    with pytest.raises(DSLError) as info:
        dsl.run_script(text)
    err = info.value
    assert (err.line, err.column) == (line, col), str(err)
    assert str(err).startswith(f"line {line}, column {col}: ") and message in str(err)


def test_forced_plot_path_draws_every_chart(tmp_path):
    script = "chart c data [3, 4, 2, 5, 14, 3]\nchart imr data [1, 2, 1.5, 1.7, 1.2, 1.1]"
    ctx = ToolContext(tmp_path, tmp_path / "out.png")
    out = dsl.run_script(script, ctx)
    paths = [s["result"]["plot"]["path"] for s in out["statements"]]
    assert paths == [str(tmp_path / "out-line1.png"), str(tmp_path / "out-line2.png")]
    single = dsl.run_script("chart c data [3, 4, 2, 5, 14, 3]", ToolContext(tmp_path, tmp_path / "one.svg"))
    assert single["statements"][0]["result"]["plot"]["path"] == str(tmp_path / "one.svg")


WORDS = ["design", "box_behnken", "full_factorial", "fractional_factorial", "ccd", "factors", "T", "P", "A", "B",
         "(", ")", ",", "[", "]", "=", "-", "1", "2.5", "-3", "1e400", "center", "seed", "generators", "D=AB",
         "chart", "imr", "xbar_r", "data", "subgroups", "rules", "nelson", "analyze", "response", "capability",
         "lsl", "usl", "constants", "5", '"x"', "'", "#", "\n", ";", " ", "@", "é", "\x00"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join))
def test_fuzz_token_soup(text):
    start = time.monotonic()
    try:
        dsl.run_script(text)
    except DSLError as e:
        assert re.match(r"line \d+, column \d+: \S", str(e))
        lines = text.split("\n")
        assert 1 <= e.line <= len(lines) and 1 <= e.column <= len(lines[e.line - 1]) + 1
    except ToolError as e:
        assert str(e) == "the script has no statements"
    assert time.monotonic() - start < 5


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    try:
        dsl.run_script(text)
    except ToolError as e:
        assert str(e)
