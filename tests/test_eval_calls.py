"""The per-call report (`havoc eval SET --calls`): Wilson intervals, the scoring of known calls into known
figures, the report over a fake writer, and the writer that runs PRIME (a tiny random model, lead on/off)."""

from __future__ import annotations

import json

import pytest

from havoc.errors import PrimeError
from havoc.eval.calls import Written, format_calls, prime_writer, run_calls, score_call, wilson
from havoc.eval.sets import Task, TaskSet

M1 = [10.2, 10.4, 10.1, 10.3, 10.5, 10.2]
M2 = [10.6, 10.8, 10.5, 10.9, 10.7, 10.6]
PROMPT = ("Machine 1: 10.2, 10.4, 10.1, 10.3, 10.5, 10.2. Machine 2: 10.6, 10.8, 10.5, 10.9, 10.7, 10.6. "
          "Is there a significant difference between the machines? Use a two-sample t-test.")
GOLD = {"operation": "t_test", "kind": "two_sample", "x": M1, "y": M2}
TASK = Task("labels-prose/01", PROMPT, {"tool": "statistics", "args": GOLD, "fields": ["statistic", "p_value"]})


def _call(**args) -> str:
    return json.dumps({"tool": "statistics", "args": {**GOLD, **args}})


def test_wilson_matches_the_published_interval():
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert wilson(3, 0) is None
    with pytest.raises(PrimeError, match="k <= n"):
        wilson(4, 3)


def test_the_gold_call_scores_right_on_every_count():
    row = score_call(TASK, _call())
    assert all(row[k] for k in ("called", "schema_valid", "tool_right", "operation_right", "choice_right", "exact",
                                "executable"))
    assert (row["values"], row["copied"], row["invented"], row["dropped"], row["list_len"]) == (12, 12, 0, 0, 6)


def test_one_miscopied_value_is_one_invented_one_dropped_and_not_exact():
    y = list(M2)
    y[3] = 19.0  # 10.9 written as 19.0
    row = score_call(TASK, _call(y=y))
    assert row["schema_valid"] and row["choice_right"]
    assert not row["exact"] and not row["executable"]
    assert (row["copied"], row["invented"], row["dropped"]) == (11, 1, 1)


def test_lists_are_order_sensitive_but_nothing_is_invented_or_dropped():
    row = score_call(TASK, _call(x=M2, y=M1))  # the groups swapped: same numbers, wrong places
    assert not row["exact"]
    assert row["invented"] == 0 and row["dropped"] == 0
    assert row["copied"] == sum(a == b for a, b in zip(M1 + M2, M2 + M1))


def test_the_wrong_kind_is_caught_even_with_every_number_right():
    row = score_call(TASK, _call(kind="paired"))
    assert row["schema_valid"] and row["operation_right"]
    assert not row["choice_right"] and not row["exact"]
    assert row["copied"] == 12
    assert not row["executable"]  # a paired t on these data is another statistic


def test_a_percentage_written_as_a_fraction_is_not_invented():
    task = Task("power/01", "Sample size to detect a difference of 2 with sd 3 at 80% power?",
                {"tool": "statistics", "args": {"operation": "power", "test": "two_sample_t", "effect": 2, "sd": 3,
                                                "power": 0.8}, "fields": ["n"]})
    row = score_call(task, json.dumps({"tool": "statistics", "args": task.check["args"]}))
    assert row["invented"] == 0 and row["exact"] and row["executable"]


def test_no_call_and_broken_text():
    none = score_call(TASK, None)
    assert not none["called"] and not none["schema_valid"] and none["dropped"] == 12
    broken = score_call(TASK, '{"tool": "statistics", "args": {')
    assert broken["called"] and not broken["schema_valid"] and not broken["exact"]
    bad_schema = score_call(TASK, _call(kind="bogus"))
    assert bad_schema["called"] and not bad_schema["schema_valid"] and not bad_schema["executable"]
    with pytest.raises(PrimeError, match="refusal"):
        score_call(Task("no-tool/01", "Forecast sales.", {"refuse": "no forecasting tool"}), None)


def test_the_report_of_a_fake_writer_has_the_known_figures():
    other = Task("anova/01", "Line A: 4.1, 4.5, 3.9 Line B: 5.2, 5.6, 5.1. One-way ANOVA.",
                 {"tool": "statistics", "args": {"operation": "anova", "groups": [[4.1, 4.5, 3.9], [5.2, 5.6, 5.1]]},
                  "fields": ["f"]})
    refuse = Task("no-tool/01", "Forecast sales.", {"refuse": "no forecasting tool"})
    ts = TaskSet("fake", "three tasks", [TASK, other, refuse])
    written = {(TASK.id, True): Written(_call(), "model"), (TASK.id, False): Written(_call(kind="paired"), "recovered_from_prompt"),
               (other.id, True): Written(None), (other.id, False): Written(json.dumps(
                   {"tool": "statistics", "args": {"operation": "anova", "groups": [[4.1, 4.5, 3.9], [5.2, 5.6, 5.1]]}}), "model")}
    report = run_calls(ts, lambda task, lead: written[(task.id, lead)])
    assert report["tasks"] == 2 and report["skipped_refusals"] == 1
    on, off = report["summary"]["lead_on"], report["summary"]["lead_off"]
    assert (on["exact"]["k"], on["exact"]["n"]) == (1, 2)
    assert (on["called"]["k"], on["recovered"]["k"], on["recovered"]["n"]) == (1, 0, 1)
    assert on["copy_accuracy"]["k"] == 12 and on["copy_accuracy"]["n"] == 18
    assert (off["exact"]["k"], off["choice_right"]["k"], off["recovered"]["k"], off["recovered"]["n"]) == (1, 1, 1, 2)
    assert off["copy_accuracy"]["rate"] == 1.0
    assert off["exact"]["ci95"] == [round(v, 4) for v in wilson(1, 2)]
    table = format_calls(report)
    assert "exact arguments" in table and "1/2 50%" in table
    with pytest.raises(PrimeError, match="lead"):
        run_calls(ts, lambda task, lead: None, lead="sideways")
    with pytest.raises(PrimeError, match="Written"):
        run_calls(ts, lambda task, lead: "text")


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from havoc.llm import LLM

    from .gguf_files import write_tiny_gguf

    path = write_tiny_gguf(tmp_path_factory.mktemp("calls") / "tiny.gguf", meta={"llama.context_length": 8192})
    return LLM.load(path)


def test_prime_writer_takes_the_first_try_of_the_main_call_with_and_without_the_lead(tiny_llm):
    from havoc.prime import generate_with_prime

    with_lead = generate_with_prime(PROMPT, llm=tiny_llm, max_new_tokens=256)
    without = generate_with_prime(PROMPT, llm=tiny_llm, max_new_tokens=256, read_lead=False)
    assert "the prompt gives x = [10.2" in with_lead.text
    assert "the prompt gives x =" not in without.text
    write = prime_writer(tiny_llm)
    for lead in (True, False):
        w = write(TASK, lead)
        assert w.text is not None and w.resolution in ("model", "regenerated", "recovered_from_prompt")
        call = json.loads(w.text)  # decoded under the schema: always JSON, whatever a random model wants
        assert call["tool"] == "statistics" and call["args"]["operation"] == "t_test"
        row = score_call(TASK, w.text)
        assert row["called"] and row["tool_right"]
        assert row["invented"] == 0  # the grammar allows only the prompt's numbers


def test_prime_writer_without_pinned_numbers_lets_a_random_model_invent(tiny_llm):
    rows = [score_call(TASK, prime_writer(tiny_llm, pin_numbers=pin)(TASK, False).text) for pin in (True, False)]
    assert rows[0]["invented"] == 0 and rows[1]["invented"] > 0



def test_prime_writer_passes_the_grammar_switches(monkeypatch):
    """`--free-numbers` and `--free-lists` reach PRIME (what each grammar does is tested in test_prime)."""
    import havoc.prime

    seen = []

    def fake(prompt, **kw):
        seen.append((kw["pin_numbers"], kw["copy_lists"], kw["read_lead"]))
        raise PrimeError("stop here")

    monkeypatch.setattr(havoc.prime, "generate_with_prime", fake)
    for pin, copy in ((True, True), (True, False), (False, True)):
        with pytest.raises(PrimeError, match="stop here"):
            prime_writer(object(), pin_numbers=pin, copy_lists=copy)(TASK, False)
    assert seen == [(True, True, False), (True, False, False), (False, True, False)]
