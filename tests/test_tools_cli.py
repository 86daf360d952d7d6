"""`havoc tool` and `havoc dsl`: JSON out, bad input as one line with status 2, --plot FILE."""

from __future__ import annotations

import json

import pytest

from havoc.cli import main


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tool_prints_the_result(capsys):
    code, out, _ = run(["tool", "statistics", "--args",
                        '{"operation": "t_test", "kind": "paired", "x": [1, 2, 3, 4], "y": [1.5, 2.4, 3.6, 4.4]}'], capsys)
    assert code == 0 and json.loads(out)["test"] == "paired t-test"


def test_tool_list(capsys):
    code, out, _ = run(["tool", "--list"], capsys)
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["dsl_executor", "rag_helper", "statistics", "symbolic"]


@pytest.mark.parametrize("argv, message", [
    (["tool", "nope"], "unknown tool 'nope'"),
    (["tool", "statistics", "--args", "{bad"], "not valid JSON"),
    (["tool", "statistics", "--args", '{"operation": "describe", "data": [1], "x": 1}'], "unknown key 'x'"),
    (["tool", "symbolic", "--args", '{"operation": "simplify", "expression": "open(1)"}'], "not allowed"),
    (["tool"], "name a tool"),
    (["dsl", "design box_behnken factors T(1,2"], "line 1, column 33"),
    (["dsl", "missing.dsl"], "no such file: missing.dsl"),
    (["dsl", "chart c data [1, 2, 3]", "--plot", "out.jpg"], ".png or .svg"),
])
def test_bad_input_is_one_line_and_status_2(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    err = err.strip()
    assert err.startswith("havoc: error: ") and message in err and "\n" not in err


def test_plot_flag_writes_the_file(tmp_path, capsys):
    target = tmp_path / "chart.png"
    code, out, _ = run(["tool", "dsl_executor", "--args", '{"operation": "control_chart", "chart": "c", '
                        '"data": [3, 4, 2, 5, 14, 3]}', "--plot", str(target)], capsys)
    assert code == 0 and json.loads(out)["plot"]["path"] == str(target)
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_dsl_file_with_plot(tmp_path, capsys):
    script = tmp_path / "exp.dsl"
    script.write_text("design full_factorial factors A(-1,1) B(-1,1) no_randomize\n"
                      "analyze response [10, 14, 11, 19] plot_kind interaction\n")
    code, out, _ = run(["dsl", str(script), "--plot", str(tmp_path / "fx.svg")], capsys)
    res = json.loads(out)
    assert code == 0 and res["statements"][1]["result"]["plot"]["path"] == str(tmp_path / "fx.svg")
    assert (tmp_path / "fx.svg").read_text().lstrip().startswith("<?xml")
