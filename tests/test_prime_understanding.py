"""Issue 15: PRIME understands requests in ordinary wording, and says so when no tool fits.

The old reader needed data in brackets and the test named early; every prompt below went to the model alone
with it (the 135M model then wrote Cp = 6.23 for a process whose Cp is 1.03). Most of this runs without a
model: the reading is scored by running the call it reads.
"""

from __future__ import annotations

import json

import pytest

from havoc.cli import main
from havoc.eval import TaskSet, expected, get_set
from havoc.eval.harness import read_row, run_reading
from havoc.prime import generate_with_prime, read_task, route
from havoc.prime.answer import fmt, is_refusal, summarize
from havoc.prime.engine import Generated
from havoc.prime.prose import read_numbers
from havoc.tools import default_registry

from .gguf_files import write_tiny_gguf

M1 = [10.2, 10.4, 10.1, 10.3, 10.5, 10.2]
M2 = [10.6, 10.8, 10.5, 10.9, 10.7, 10.6]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from havoc.llm import LLM

    return LLM.load(write_tiny_gguf(tmp_path_factory.mktemp("understand") / "tiny.gguf",
                                    meta={"llama.context_length": 8192}))


# ------------------------------------------------------------------------------------ numbers in prose
@pytest.mark.parametrize("text,series,scalars", [
    ("Machine 1: 10.2, 10.4, 10.1. Machine 2: 10.6, 10.8 and 10.5.", [[10.2, 10.4, 10.1], [10.6, 10.8, 10.5]], [1, 2]),
    ("HT-A: 512, 498, 505; HT-B: 530, 541, 528", [[512, 498, 505], [530, 541, 528]], []),
    ("sales 1,250, 1,310, 1,180 and [100,200,300]", [[1250, 1310, 1180], [100, 200, 300]], []),
    ("errors −0.5, -0.2, .5 and 0.1", [[-0.5, -0.2, 0.5, 0.1]], []),
    # compact lists: five groups or more, or a text whose other commas cannot be thousands separators
    ("Day crew 131,154,153,156,155. Spec 1,250", [[131, 154, 153, 156, 155]], [1250]),
    ("x 10.2,10.4,9.9 and y 155,149,142", [[10.2, 10.4, 9.9], [155, 149, 142]], []),
    ("Plot 1: 153,146,151 but 1,250, 1,310, 1,180", [[1250, 1310, 1180]], [1, 153146151]),
    ("12.1 mm, 12.4 mm, 11.9 mm and 12.0 mm", [[12.1, 12.4, 11.9, 12.0]], []),
    ("5, 6, 7 and 8, 9, 10 and 4, 5, 6", [[5, 6, 7], [8, 9, 10], [4, 5, 6]], []),
    ("11, 12, 13 / 15, 16, 14 | 9, 8, 7", [[11, 12, 13], [15, 16, 14], [9, 8, 7]], []),
    ("In 2023, at alpha = 0.05 and 95% confidence, we sampled 6 parts: 14.2, 15.1, 13.8", [[14.2, 15.1, 13.8]],
     [2023, 0.05, 95, 6]),
    ("between 10 and 20, x = 1, 2", [[1, 2]], [10, 20]),
    ("Day 1: 7\nDay 2: 9\nDay 3: 6\nDay 4: 8", [[7, 9, 6, 8]], [1, 2, 3, 4]),
    ("Plant 1\t8.2\t8.5\t8.1\nPlant 2\t9.0\t9.2\t8.8", [[8.2, 8.5, 8.1], [9.0, 9.2, 8.8]], [1, 2]),
    # a named row's number before a space-joined list of decimals is its label; a data word's is not
    ("Reactor 1 21.30 28.40 27.50 28.50. Tolerance from 22.3 to 30.1.", [[21.3, 28.4, 27.5, 28.5]], [1, 22.3, 30.1]),
    ("Reactor 1 .53 .51 .42 .44", [[0.53, 0.51, 0.42, 0.44]], [1]),
    ("Values 3 4.5 5.5 6.5", [[3, 4.5, 5.5, 6.5]], []),
    ("data 10 10.5 11 10.2", [[10, 10.5, 11, 10.2]], []),
])
def test_read_numbers_finds_lists_in_prose_and_keeps_distractors_out(text, series, scalars):
    got = read_numbers(text)
    assert [s.values for s in got.series] == series
    assert [n.value for n in got.scalars] == scalars


def test_read_numbers_keeps_labels():
    got = read_numbers("Before: 142, 138, 150. After: 135, 136, 141. x = 1, 2, 3")
    assert [s.label for s in got.series] == ["before", "after", "x"]


# ------------------------------------------------------------------------------------ the phrasings
@pytest.mark.parametrize("prompt,args", [
    ("Machine 1: 10.2, 10.4, 10.1, 10.3, 10.5, 10.2. Machine 2: 10.6, 10.8, 10.5, 10.9, 10.7, 10.6. Use a two-sample "
     "t-test.", {"operation": "t_test", "kind": "two_sample", "x": M1, "y": M2}),
    ("HT-A: 512, 498, 505, 520; HT-B: 530, 541, 528, 535. Do the heat treatments differ? t-test please.",
     {"operation": "t_test", "kind": "two_sample", "x": [512, 498, 505, 520], "y": [530, 541, 528, 535]}),
    ("Before: 142, 138, 150, 145. After: 135, 136, 141, 140. Paired t-test please.",
     {"operation": "t_test", "kind": "paired", "x": [142, 138, 150, 145], "y": [135, 136, 141, 140]}),
    ("Sample 1: 14.2, 15.1, 13.8, 14.9; sample 2: 12.0, 13.5, 11.2, 16.8, 10.9. Compare the means without assuming "
     "equal variances.", {"operation": "t_test", "kind": "welch", "x": [14.2, 15.1, 13.8, 14.9],
                          "y": [12.0, 13.5, 11.2, 16.8, 10.9]}),
    ("Resistances 98.2, 101.5, 99.7, 100.4 ohms: is the mean 100? One-sample t-test.",
     {"operation": "t_test", "kind": "one_sample", "x": [98.2, 101.5, 99.7, 100.4], "mu": 100}),
    ("Summarize this sample: 14.2, 15.1, 13.8, 14.9, 15.3, 14.7. What are the mean and standard deviation?",
     {"operation": "describe", "data": [14.2, 15.1, 13.8, 14.9, 15.3, 14.7]}),
    ("The spec limits are 9.5 to 10.5. Parts measured 10.1, 9.9, 10.2, 10.0, 10.3, 9.8. What are Cp and Cpk?",
     {"operation": "capability", "data": [10.1, 9.9, 10.2, 10.0, 10.3, 9.8], "lsl": 9.5, "usl": 10.5}),
    ("Process mean 50.2, standard deviation 0.4, specification 49 to 51: Cp and Cpk?",
     {"operation": "capability", "mean": 50.2, "sigma": 0.4, "lsl": 49, "usl": 51}),
    ("Build an individuals and moving range chart for 25.1, 24.8, 25.3, 25.0, 24.7.",
     {"operation": "control_chart", "chart": "imr", "data": [25.1, 24.8, 25.3, 25.0, 24.7]}),
    ("SPC constants A2 and D4 for subgroups of 4", {"operation": "constants", "n": 4}),
    ("Find A2, D3 and D4 for a subgroup size of five.", {"operation": "constants", "n": 5}),
    ("Line A: 4.1, 4.5, 3.9 Line B: 5.2, 5.6, 5.1 Line C: 6.3, 6.0, 6.6. Do the lines differ?",
     {"operation": "anova", "groups": [[4.1, 4.5, 3.9], [5.2, 5.6, 5.1], [6.3, 6.0, 6.6]]}),
    ("Regress yield on temperature: temperature 100, 110, 120, 130; yield 62, 66, 71, 74.",
     {"operation": "regression", "y": [62, 66, 71, 74], "predictors": {"x": [100, 110, 120, 130]}}),
    ("What is 15% of 240?", {"operation": "evaluate", "expression": "(15/100)*240"}),
    # what the generator's train families showed the reader missing (stop 27)
    ("Line 3 readings 0.5 / 0.3 / −0.7 / 0.2 / −0.4 / 0.1. Tolerance from -1.0 to 1.0. Are we within spec (Cp, Cpk)?",
     {"operation": "capability", "data": [0.5, 0.3, -0.7, 0.2, -0.4, 0.1], "lsl": -1, "usl": 1}),
    ("Each value is the mean of 3 parts. Oven 2 12.1, 12.4, 11.9, 12.0, 12.3. Is the average consistent with 12.5? "
     "Single-sample t-test.", {"operation": "t_test", "kind": "one_sample", "x": [12.1, 12.4, 11.9, 12.0, 12.3],
                               "mu": 12.5}),
    ("The same units were measured twice. First: 5.1, 5.3, 5.0, 5.4. Second: 5.3, 5.6, 5.1, 5.5. Did they change?",
     {"operation": "t_test", "kind": "paired", "x": [5.1, 5.3, 5.0, 5.4], "y": [5.3, 5.6, 5.1, 5.5]}),
    ("Group A: 3.8, 4.4, 4.2, 4.6. Group B: 4.9, 4.3, 4.7. The spreads differ a lot, so do not pool the variances "
     "when comparing the means.", {"operation": "t_test", "kind": "welch", "x": [3.8, 4.4, 4.2, 4.6],
                                   "y": [4.9, 4.3, 4.7]}),
    ("x: 1, 2, 3, 4, 5. y: 2.1, 3.9, 6.2, 8.1, 9.8. How strongly do x and y move together?",
     {"operation": "correlation", "x": [1, 2, 3, 4, 5], "y": [2.1, 3.9, 6.2, 8.1, 9.8]}),
    ("Rejects per lot of 80 9, 2, 4, 2, 3, 4, 1, 6. Number-defective (np) chart.",
     {"operation": "control_chart", "chart": "np", "data": [9, 2, 4, 2, 3, 4, 1, 6], "n": 80}),
    ("Two independent groups; smallest difference worth finding 2, standard deviation 3, desired power 90%. How many "
     "per group?", {"operation": "power", "test": "two_sample_t", "effect": 2, "sd": 3, "power": 0.9}),
    ("Line A: 4.1, 4.5, 3.9. Line B: 5.2, 5.6, 5.1. Line C: 6.3, 6.0, 6.6. Is there a difference among them (F test)?",
     {"operation": "anova", "groups": [[4.1, 4.5, 3.9], [5.2, 5.6, 5.1], [6.3, 6.0, 6.6]]}),
    ("What is 3 raised to the power of 4?", {"operation": "evaluate", "expression": "3 ^4"}),
    ("Look up the control chart factors for subgroups of 6.", {"operation": "constants", "n": 6}),
    ("What is the typical value of 4.1, 4.3, 4.2, 4.5 and how much do they vary?",
     {"operation": "describe", "data": [4.1, 4.3, 4.2, 4.5]}),
    ("Estimate the mean of 3.1, 3.4, 3.3, 3.0 with its confidence bounds.",
     {"operation": "confidence_interval", "kind": "mean", "data": [3.1, 3.4, 3.3, 3.0]}),
    ("Readings 9.8, 10.1, 10.3, 9.9, 10.0. Test them against a nominal value of 10.",
     {"operation": "t_test", "kind": "one_sample", "x": [9.8, 10.1, 10.3, 9.9, 10.0], "mu": 10}),
    ("Build the p control chart. Rejects per lot of 200: 4, 6, 3, 5, 7.",
     {"operation": "control_chart", "chart": "p", "data": [4, 6, 3, 5, 7], "n": 200}),
    ("Plan a full factorial: temperature 100 to 200, cure time 20 to 60, fan speed 1 to 5.",
     {"operation": "full_factorial", "randomize": False,
      "factors": [{"name": "temperature", "low": 100, "high": 200}, {"name": "cure time", "low": 20, "high": 60},
                  {"name": "fan speed", "low": 1, "high": 5}]}),
    ("3 factors, labelled A, B and C, each coded from -1 to +1. Lay out a full factorial.",
     {"operation": "full_factorial", "randomize": False,
      "factors": [{"name": n, "low": -1, "high": 1} for n in "ABC"]}),
    ("Expression: 12 plus 8, all over 4. Work it out.", {"operation": "evaluate", "expression": "(12 + 8) / 4"}),
])
def test_ordinary_wording_reaches_the_right_call(prompt, args):
    task = read_task(prompt)
    assert task.args == args, task.args
    assert route(prompt).budget != "MICRO"  # a tool task is never answered by the model alone


def test_box_behnken_with_named_factors_is_a_design_not_micro():
    prompt = ("Box-Behnken design with temperature from 150 to 200, pressure from 10 to 30 and time from 5 to 15, with "
              "3 center points.")
    task = read_task(prompt)
    assert task.args["operation"] == "box_behnken" and task.args["center"] == 3
    assert [f["name"] for f in task.args["factors"]] == ["temperature", "pressure", "time"]
    assert route(prompt).budget != "MICRO"


@pytest.mark.parametrize("prompt,setting", [
    ("At alpha = 0.01, compare 10.2, 10.4, 10.1, 10.3 with 10.6, 10.8, 10.5, 10.9. Two-sample t-test.", {"alpha": 0.01}),
    ("With 90% confidence, give the interval for the mean of 12, 15, 11, 18, 14, 17.", {"alpha": 0.1}),
    ("In 2024 we took 6 samples: 14.2, 15.1, 13.8, 14.9, 15.3, 14.7. Mean and sd?", {}),
    ("Is the average thickness significantly greater than 40? 41, 44, 39, 42, 45, 40.", {"alternative": "greater"}),
])
def test_distractor_numbers_are_settings_or_nothing_never_data(prompt, setting):
    task = read_task(prompt)
    data = [v for k in ("x", "y", "data") for v in task.args.get(k, [])]
    assert data and not {2023, 2024, 6, 95, 90, 0.01, 0.1} & set(data)
    for k, v in setting.items():
        assert task.args[k] == v


# ------------------------------------------------------------------------------------ no tool fits
@pytest.mark.parametrize("prompt", [
    "Forecast next quarter's sales from 120, 135, 150, 160 using an ARIMA model.",
    "What is the probability of getting exactly 3 heads in 5 coin flips?",
    "Compute the Gini coefficient of incomes 20, 35, 50, 80, 150.",
    "What's the net present value of 1000 per year for 5 years at 7%?",
    "Compute the eigenvalues of the matrix [[2, 1], [1, 2]].",
])
def test_requests_no_tool_fits_are_refused_with_a_reason(prompt):
    task = read_task(prompt)
    assert task.tool is None and task.refusal
    r = route(prompt)
    assert r.budget == "MICRO" and any("no tool fits" in x for x in r.reasons)


@pytest.mark.parametrize("prompt,operation", [
    ("Show the design matrix of a full factorial with factors A, B, C.", "full_factorial"),
    ("Prior to the fix: 12, 13, 11, 14. After the fix: 10, 11, 10, 12. Paired t-test.", "t_test"),
    ("Die casting porosity 2.1, 2.3, 2.2, 2.5, 2.4: individuals chart.", "control_chart"),
    ("Simulated data 5.1, 5.3, 5.2, 5.4: mean and sd?", "describe"),
])
def test_words_of_unsupported_requests_do_not_refuse_supported_ones(prompt, operation):
    task = read_task(prompt)
    assert task.refusal is None and task.args["operation"] == operation


def test_a_refusal_runs_no_model_and_gives_no_figures(tiny_llm):
    out = generate_with_prime("Compute the Gini coefficient of incomes 20, 35, 50, 80, 150.", llm=tiny_llm,
                              max_new_tokens=32)
    assert is_refusal(out.answer) and out.stats["generated_tokens"] == 0 and out.tool_calls == []
    assert out.verification["mode"] == "refused" and out.routing["refused"]
    assert "Answer: No tool fits" in out.text


def test_a_direct_reply_with_untraced_figures_is_not_the_answer(tiny_llm, monkeypatch):
    from havoc.prime import pipeline

    def gen(self, ctx, n, on_text=None, **kwargs):  # a model that makes figures up
        text = "Cp = 6.23, Cpk = -1.23"
        if on_text is not None:
            on_text(text)
        return Generated([1, 2, 3], text, "stop")

    monkeypatch.setattr(pipeline._Run, "gen", gen)
    out = generate_with_prime("Hi there, how capable is my process?", llm=tiny_llm, max_new_tokens=8)
    assert out.answer.startswith("No answer") and "6.23" not in out.answer and "6.23" in out.text
    assert not out.verification["passed"]
    assert any(c["name"] == "model_reply_traceable" and not c["passed"] for c in out.verification["checks"])
    plain = generate_with_prime("Hi there, how capable is my process?", llm=tiny_llm, max_new_tokens=8,
                                enable_prime=False)
    assert plain.answer == "Cp = 6.23, Cpk = -1.23"  # the model alone is the baseline: its reply is its answer


def test_an_unrelated_question_does_not_get_an_unrelated_passage():
    out = default_registry().execute("rag_helper", {"query": "What is the capital of France?", "top_k": 1})
    assert out["success"]
    if out["result"]["embedder"] == "all-MiniLM-L6-v2":
        assert is_refusal(summarize("rag_helper", None, out["result"]))
    good = default_registry().execute("rag_helper", {"query": "What is a p-value?", "top_k": 1})
    assert "null hypothesis" in summarize("rag_helper", None, good["result"])


# ------------------------------------------------------------------------------------ the eval set
def test_the_understanding_set_is_gold_checked_and_split_by_family():
    whole, dev, held = get_set("understand"), get_set("understand-dev"), get_set("understand-heldout")
    assert len(whole) >= 150 and len(whole) == len(dev) + len(held)
    fam = lambda ts: {t.id.split("/")[0] for t in ts.tasks}  # noqa: E731
    assert not fam(dev) & fam(held)
    for task in whole.tasks:
        want = expected(task)
        assert want.get("figures") or want.get("refuse")
    assert "understand" not in {t.id.split("/")[0] for t in get_set("smoke").tasks}


def test_the_reading_answers_the_set_and_keeps_smoke_whole():
    for name, floor in (("understand-dev", 0.95), ("understand-heldout", 0.9), ("smoke", 1.0), ("toolbox", 1.0)):
        report = run_reading(name)
        assert report["summary"]["accuracy"] >= floor, (name, report["summary"])
        assert report["summary"]["model_alone"] == 0


def test_read_row_names_what_went_wrong():
    from havoc.eval import Task

    task = Task("x/1", "Compare 1, 2, 3, 4 with 2, 3, 4, 6. Paired t-test.",
                {"tool": "statistics", "args": {"operation": "t_test", "kind": "welch", "x": [1, 2, 3, 4],
                                                "y": [2, 3, 4, 6]}, "fields": ["statistic"]})
    assert read_row(task)["outcome"] == "wrong_operation"
    no_tool = Task("x/2", "Hi there", {"refuse": "nothing to compute"})
    assert read_row(no_tool)["outcome"] == "model_alone"
    assert run_reading(TaskSet("t", "", [no_tool]))["summary"]["model_alone"] == 1


def test_eval_reading_on_the_command_line(capsys):
    assert main(["eval", "understand-dev", "--reading", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["tasks"] == len(get_set("understand-dev")) and report["summary"]["right"] > 100


def test_figures_keep_their_fourth_digit():
    assert (fmt(-6.500353), fmt(1.10004), fmt(-1.0), fmt(0.346593), fmt(1234.4)) == ("-6.500", "1.100", "-1", "0.3466",
                                                                                    "1234")


# ------------------------------------------------------------------------------------ records and the chrono-loop
def test_the_chrono_loops_perturbed_sampling_stays_in_its_runs(tiny_llm, monkeypatch):
    from havoc.prime import pipeline
    from havoc.prime.graph import Subgoal
    from havoc.prime.records import ToolCall

    seen = []

    def step(self, sub, *args, **kwargs):  # three runs that never agree
        seen.append((self.temperature, self.seed))
        return ToolCall(len(seen), sub.id, "statistics", "t_test", resolution="model", summary=f"run {len(seen)}")

    monkeypatch.setattr(pipeline._Run, "tool_step", step)
    prompt = "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"
    run = pipeline._Run(pipeline.engine_for(tiny_llm), default_registry(), prompt, route(prompt, budget="HEAVY"), 64,
                        0.0, 7, None, True)
    run.start(None)
    try:
        chosen = run.chrono(Subgoal("s2", "compute", "compute", chrono=True))
    finally:
        run.free_all()
    assert seen == [(0.0, 7), (0.7, 108), (0.7, 209)]  # each run perturbs from the caller's seed
    assert (run.temperature, run.seed) == (0.0, 7)  # and later steps sample as the caller asked
    assert chosen.summary == "run 3" and chosen.to_dict()["summary"] == "run 3"


def test_tool_call_records_keep_their_public_form(tiny_llm):
    out = generate_with_prime("Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]", llm=tiny_llm,
                              budget="LIGHT", max_new_tokens=40)
    call = out.tool_calls[0]
    assert {"index", "subgoal", "tool", "operation", "label", "attempts", "args", "resolution", "result", "summary",
            "source"} <= set(call)
    assert all(set(a) == {"text", "tokens", "forced", "json_valid", "executed", "problems"} for a in call["attempts"])
    assert all(set(c) == {"name", "passed", "detail"} for c in out.verification["checks"])


def test_a_tool_owns_its_answer_line():
    from havoc.tools import ToolRegistry, ToolSpec

    reg = ToolRegistry()
    reg.register(ToolSpec("echo", "echo", lambda a, c: {}, {"type": "object"}, summarize=lambda op, r, a: f"v is {r['v']}"))
    reg.register(ToolSpec("plain", "plain", lambda a, c: {}, {"type": "object"}))
    assert summarize("echo", None, {"v": 1.5}, registry=reg) == "v is 1.5"
    assert summarize("plain", None, {"v": 1.5, "interpretation": "fine"}, registry=reg) == "fine."
    builtin = default_registry()
    line = summarize("statistics", "describe", builtin.execute("statistics", {"operation": "describe",
                                                                            "data": [3.1, 2.8, 3.6]})["result"])
    assert line.startswith("n = 3, mean = 3.167, sd = 0.4041, variance = 0.1633")
