"""The evaluation harness: task sets and their tool-checked answers, scoring, the three methods (driven by a
tiny random-weight model), the report, and `havoc eval` / `havoc ask` on the command line."""

from __future__ import annotations

import json

import pytest

from havoc.cli import main
from havoc.errors import PrimeError
from havoc.eval import (
    Task,
    TaskSet,
    expected,
    format_table,
    get_set,
    is_correct,
    list_sets,
    load_set,
    register_set,
    run_eval,
    run_task,
)
from havoc.prime import read_task
from havoc.prime.verify import check_args

from .gguf_files import write_tiny_gguf

SHIPPED = ["anova", "arithmetic", "definitions", "doe", "regression", "spc", "ttest"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("evalgguf") / "tiny.gguf", meta={"llama.context_length": 8192})


@pytest.fixture(scope="module")
def tiny_llm(tiny_gguf):
    from havoc.llm import LLM

    return LLM.load(tiny_gguf)


def test_every_shipped_task_has_a_tool_checked_answer_and_a_readable_prompt():
    assert set(SHIPPED) <= set(list_sets()) and "smoke" in list_sets()
    smoke = get_set("smoke")
    assert len(smoke) == sum(len(get_set(s)) for s in SHIPPED)
    for task in smoke.tasks:
        want = expected(task)
        assert want.get("figures") or want.get("keywords")
        # PRIME reads the same call out of the prompt that the check makes (so the answer is reachable)
        reading = read_task(task.prompt)
        assert reading.tool == task.check["tool"], task.id
        assert check_args(task.check["args"], reading.args, reading.data_keys, reading.numbers) == [], task.id


def test_expected_values_are_the_tools():
    want = expected(get_set("ttest").tasks[0])["figures"]
    assert want["statistic"] == pytest.approx(-1.0) and want["p_value"] == pytest.approx(0.3465935, abs=1e-6)


def test_is_correct():
    want = {"figures": {"t": -1.0, "p": 0.34659350708733416}}
    assert is_correct("t = -1, df = 8, p = 0.3466", want)
    assert is_correct("t=-1.000 and p=0.347", want)
    assert not is_correct("t = -2.236, p = 0.048", want)  # the spec's figures
    assert not is_correct("t = -1, p = 0.3", want)  # too few digits to count
    assert not is_correct("", want)
    assert is_correct("It is the Probability under the null hypothesis", {"keywords": ["probability", "null hypothesis"]})
    # a p-value beyond fp64's reach is written as a bound; r = 0.99995 keeps its digits ("1.000", not "1")
    tiny = {"figures": {"r": 0.9999518761755298, "p_value": 3e-20}}
    assert is_correct("reject H0 (r = 1.000, n = 12, p < 1e-16).", tiny)
    assert not is_correct("reject H0 (r = 1, n = 12, p < 1e-16).", tiny)
    assert not is_correct("reject H0 (r = 1.000, n = 12, p < 1e-16).", {"figures": {"r": 0.99995, "p_value": 2e-16}})
    assert not is_correct("r = 1.000, t < 1e-16", {"figures": {"r": 0.99995, "t": 3e-20}})  # a bound on p only


def test_fmt_keeps_the_digits_it_rounded_to():
    from havoc.tools._common import fmt

    assert fmt(0.9999518761755298) == "1.000" and fmt(2.5) == "2.500" and fmt(-6.500353) == "-6.500"
    assert fmt(2.0) == "2" and fmt(-3.0) == "-3" and fmt(0.0) == "0" and fmt(1234.56) == "1235"
    assert fmt(4.8123e-05) == "4.812e-05" and fmt(0.34659, 3) == "0.347" and fmt(None) == "undefined"


def test_bad_task_sets(tmp_path):
    with pytest.raises(PrimeError, match="empty"):
        Task("a", " ", {"tool": "symbolic", "args": {}, "fields": ["numeric"]})
    with pytest.raises(PrimeError, match="exactly one of"):
        Task("a", "q", {"tool": "symbolic", "args": {}})
    with pytest.raises(PrimeError, match="unknown check keys"):
        Task("a", "q", {"tool": "symbolic", "args": {}, "fields": ["x"], "tolerance": 1})
    with pytest.raises(PrimeError, match="unknown task set"):
        get_set("nope")
    with pytest.raises(PrimeError, match="already registered"):
        register_set(TaskSet("ttest", "dup"))
    bad = Task("b", "What is 1+1?", {"tool": "symbolic", "args": {"operation": "evaluate", "expression": "1+1"},
                                     "fields": ["missing"]})
    with pytest.raises(PrimeError, match="no field"):
        expected(bad)
    words = Task("w", "What is a p-value?", {"tool": "rag_helper", "args": {"query": "p-value", "top_k": 1},
                                             "keywords": ["zebra"]})
    with pytest.raises(PrimeError, match="zebra"):
        expected(words)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(PrimeError, match="not valid JSON"):
        load_set(tmp_path / "broken.json")
    (tmp_path / "empty.json").write_text('{"tasks": []}')
    with pytest.raises(PrimeError, match="at least one task"):
        load_set(tmp_path / "empty.json")
    with pytest.raises(PrimeError, match="cannot read"):
        load_set(tmp_path / "missing.json")
    with pytest.raises(PrimeError, match="unknown methods"):
        run_eval("arithmetic", methods=["magic"])
    with pytest.raises(PrimeError, match="max_new_tokens"):
        run_eval("arithmetic", max_new_tokens=0)


def test_jsonl_set_round_trip(tmp_path):
    task = {"id": "sq", "prompt": "What is 12*12?",
            "check": {"tool": "symbolic", "args": {"operation": "evaluate", "expression": "12*12"}, "fields": ["numeric"]}}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(task) + "\n")
    ts = get_set(str(path))
    assert ts.name == "mine" and expected(ts.tasks[0]) == {"figures": {"numeric": 144.0}}


def test_harness_runs_all_three_methods_at_one_budget(tiny_llm):
    rows = []
    report = run_eval("ttest", llm=tiny_llm, max_new_tokens=80, limit=1, budget="LIGHT", on_row=rows.append)
    assert [r["method"] for r in rows] == ["prime", "plain", "self_consistency"]
    assert all(r["tokens"] <= 80 for r in rows)
    prime = report["summary"]["prime"]
    assert prime["accuracy"] == 1.0  # right by recovery, whatever the random model wrote
    assert prime["verification_pass_rate"] == 1.0 and prime["tool_call_validity"] is not None
    assert report["summary"]["plain"]["tool_call_validity"] is None
    table = format_table(report)
    assert "self_consistency" in table and "accuracy" in table
    json.dumps(report)  # the report is JSON


def test_self_consistency_votes(tiny_llm):
    row = run_task(get_set("arithmetic").tasks[0], "self_consistency", tiny_llm, max_new_tokens=12, samples=3)
    assert row["tokens"] <= 12 and row["tool_calls"] == 0 and isinstance(row["correct"], bool)


def test_cli_eval_and_ask(tiny_gguf, capsys, tmp_path):
    assert main(["eval", "--list"]) == 0
    assert "ttest" in capsys.readouterr().out
    out = tmp_path / "report.json"
    assert main(["eval", "arithmetic", "--model", str(tiny_gguf), "--limit", "1", "-n", "16", "--methods", "prime",
                 "--output", str(out)]) == 0
    assert "prime" in capsys.readouterr().out and json.loads(out.read_text())["summary"]["prime"]["accuracy"] == 1.0
    prompt = "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"
    assert main(["ask", prompt, "--model", str(tiny_gguf), "--budget", "light", "-n", "40"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("[route] LIGHT")
    assert "<reason>" in text and "Answer: Student two-sample t-test (pooled variance): t = -1, df = 8, p = 0.3466" in text
    assert "Verification: PASSED" in text and "answer_traceable: ok" in text
    assert main(["ask", prompt, "--model", str(tiny_gguf), "--json", "-n", "20", "--budget", "LIGHT"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verification"]["passed"] and data["routing"]["task_type"] == "statistics"
    assert main(["ask", prompt, "--model", str(tiny_gguf), "--no-prime", "-n", "4"]) == 0
    assert "PRIME disabled" in capsys.readouterr().out
    assert main(["ask", "", "--model", str(tiny_gguf)]) == 2
    assert "the prompt is empty" in capsys.readouterr().err
    assert main(["eval", "nope"]) == 2
    assert "unknown task set" in capsys.readouterr().err
