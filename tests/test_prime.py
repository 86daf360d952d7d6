"""PRIME without the real checkpoint: the prompt reading, router, graph, verification, workspace, and the
whole pipeline driven by a tiny random-weight model (byte-level BPE, chat template) written as a GGUF.

A random model writes nonsense, which is the point: its tool calls, decoded under the schema, must still
be well-formed JSON, and the pipeline must still answer right by verifying and recovering them.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from havoc.errors import PrimeError
from havoc.engine import GrammarConstraint
from havoc.engine.constraint import ConstraintError
from havoc.prime import (
    Engine,
    OperatorGraph,
    RouterConfig,
    Subgoal,
    Workspace,
    build_graph,
    generate_with_prime,
    numbers_in,
    read_task,
    route,
)
from havoc.prime.answer import fmt, summarize
from havoc.prime.pipeline import (call_schema, copy_lists, copy_sequences, decode_schema, engine_for, narrow,
                                  pin_numbers, scalar_numbers)
from havoc.prime.verify import SETTINGS, accepted_numbers, check_args, numeric_leaves, traces_to, untraced_numbers
from havoc.tools import default_registry

from .gguf_files import write_tiny_gguf

TTEST = "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from havoc.llm import LLM

    path = write_tiny_gguf(tmp_path_factory.mktemp("prime") / "tiny.gguf", meta={"llama.context_length": 8192})
    return LLM.load(path)


# ------------------------------------------------------------------------------------------ reading
def test_numbers_in_reads_signs_but_not_hyphens():
    assert numbers_in("t-test of 2-sided data: -1.5, 3e2 and .5") == [2, -1.5, 300, 0.5]
    assert numbers_in("no digits here") == []
    assert numbers_in("shifts of \u22120.4 and \u22122 mm") == [-0.4, -2]  # U+2212, the typographic minus


@pytest.mark.parametrize("prompt,tool,args", [
    (TTEST, "statistics", {"operation": "t_test", "kind": "two_sample", "x": [1, 2, 3, 4, 5], "y": [2, 3, 4, 5, 6]}),
    ("Paired t-test: before [1.5, 2] after [1, 2.5]", "statistics",
     {"operation": "t_test", "kind": "paired", "x": [1.5, 2], "y": [1, 2.5]}),
    ("Welch t test [1,2,3] vs (4, 5, 6.5)", "statistics",
     {"operation": "t_test", "kind": "welch", "x": [1, 2, 3], "y": [4, 5, 6.5]}),
    ("One-sample t-test of [5.1, 4.9, 5.3] against mean = 5", "statistics",
     {"operation": "t_test", "kind": "one_sample", "x": [5.1, 4.9, 5.3], "mu": 5}),
    ("ANOVA: [1,2], [3,4], [5,6]", "statistics", {"operation": "anova", "groups": [[1, 2], [3, 4], [5, 6]]}),
    ("Regression with y = [3, 5, 7] and x = [1, 2, 3]", "statistics",
     {"operation": "regression", "y": [3, 5, 7], "predictors": {"x": [1, 2, 3]}}),
    ("What is the mean of [4, 8, 15]?", "statistics", {"operation": "describe", "data": [4, 8, 15]}),
    ("Box-Behnken design for Temp(100, 200), Time(1, 5), Speed(10, 30) with 2 center points", "dsl_executor",
     {"operation": "box_behnken", "factors": [{"name": "Temp", "low": 100, "high": 200},
                                              {"name": "Time", "low": 1, "high": 5},
                                              {"name": "Speed", "low": 10, "high": 30}], "randomize": False,
      "center": 2}),
    ("Plackett-Burman design for 11 factors in 12 runs", "dsl_executor",
     {"operation": "plackett_burman", "factors": [{"name": chr(65 + i), "low": -1, "high": 1} for i in range(11)],
      "randomize": False, "runs": 12}),
    ("p chart of defectives [3, 4, 2] with 50 units inspected", "dsl_executor",
     {"operation": "control_chart", "chart": "p", "data": [3, 4, 2], "n": 50}),
    ("Control chart constants for subgroup size 4", "dsl_executor", {"operation": "constants", "n": 4}),
    ("Capability of [9.9, 10.1, 10, 10.2] with LSL = 9.5 and USL = 10.5", "dsl_executor",
     {"operation": "capability", "data": [9.9, 10.1, 10, 10.2], "lsl": 9.5, "usl": 10.5}),
    ("What is (3+4)*(2-1)?", "symbolic", {"operation": "evaluate", "expression": "(3+4)*(2-1)"}),
    ("What is 2^10 - 24?", "symbolic", {"operation": "evaluate", "expression": "2^10 - 24"}),
    ("Solve x^2 - 4 = 0", "symbolic", {"operation": "solve", "equation": "x^2 - 4 = 0"}),
    ("What is a p-value?", "rag_helper", {"query": "What is a p-value?", "top_k": 1}),
])
def test_read_task(prompt, tool, args):
    task = read_task(prompt)
    assert task.tool == tool
    assert task.args == args


def test_read_task_leaves_general_prompts_alone():
    task = read_task("Tell me a story about a cat")
    assert task.tool is None and task.task_type == "general"


# ------------------------------------------------------------------------------------------ router
def test_router_budgets_and_reasons():
    r = route(TTEST)
    assert (r.budget, r.task_type) == ("MEDIUM", "statistics")
    assert any("compare" in x for x in r.reasons) and any("t-test" in x for x in r.reasons)
    assert route("Hi there").budget == "MICRO"
    assert route("What is 17*23+4?").budget == "LIGHT"
    long = TTEST + " Explain why, check the assumptions carefully and recommend what to do. Is it significant?"
    assert route(long).budget == "HEAVY"


def test_router_thresholds_are_configurable_and_budget_can_be_forced():
    assert route(TTEST, RouterConfig(medium=5, heavy=6)).budget == "LIGHT"
    assert route(TTEST, RouterConfig(light=0.5, medium=0.5, heavy=1)).budget == "HEAVY"
    forced = route(TTEST, budget="heavy")
    assert forced.budget == "HEAVY" and forced.forced and "MEDIUM" in forced.reasons[-1]


@pytest.mark.parametrize("kwargs,msg", [
    ({"prompt": ""}, "empty"), ({"prompt": "   "}, "empty"), ({"prompt": "x", "budget": "HUGE"}, "unknown budget"),
    ({"prompt": None}, "empty"),
])
def test_router_bad_input(kwargs, msg):
    with pytest.raises(PrimeError, match=msg):
        route(**kwargs)


def test_router_config_bad_values():
    with pytest.raises(PrimeError, match="light <= medium"):
        RouterConfig(light=3, medium=2)
    with pytest.raises(PrimeError, match="number >= 0"):
        RouterConfig(heavy=float("nan"))
    with pytest.raises(PrimeError, match="number >= 0"):
        RouterConfig(tool_weight=-1)


# ------------------------------------------------------------------------------------------ graph
def test_graph_grows_with_the_budget():
    light = build_graph(route(TTEST, budget="LIGHT"))
    assert 1 <= len(light) <= 3 and [s.kind for s in light.order()] == ["read", "compute", "conclude"]
    medium = build_graph(route(TTEST, budget="MEDIUM"))
    kinds = [s.kind for s in medium.order()]
    assert {"check", "argue", "synthesize"} <= set(kinds) and len(medium) > 3
    order = [s.id for s in medium.order()]
    for s in medium.subgoals:
        assert all(order.index(d) < order.index(s.id) for d in s.deps)
    heavy = build_graph(route(TTEST, budget="HEAVY"))
    assert any(s.chrono for s in heavy.subgoals)
    assert [s.kind for s in build_graph(route("Hi there")).subgoals] == ["respond"]


def test_graph_refuses_cycles_and_unknown_deps():
    with pytest.raises(PrimeError, match="cycle"):
        OperatorGraph([Subgoal("a", "read", "x", deps=["b"]), Subgoal("b", "read", "y", deps=["a"])])
    with pytest.raises(PrimeError, match="unknown subgoal"):
        OperatorGraph([Subgoal("a", "read", "x", deps=["zz"])])
    with pytest.raises(PrimeError, match="repeat"):
        OperatorGraph([Subgoal("a", "read", "x"), Subgoal("a", "read", "y")])


# ------------------------------------------------------------------------------------------ verification
def test_traces_to_respects_the_digits_shown():
    assert traces_to("0.3466", 0.34659350708733416) and traces_to("0.347", 0.34659350708733416)
    assert not traces_to("0.35", 0.3) and not traces_to("0.3467", 0.34659350708733416)
    assert traces_to("-1", -1.0) and not traces_to("1", 1.4)  # short integers must be exact
    assert traces_to("5772", 5771.571) and traces_to("95", 0.95)  # percentages


def test_untraced_numbers_flags_made_up_figures():
    sources = [-1.0, 8, 0.34659350708733416]
    assert untraced_numbers("t = -1, df = 8, p = 0.3466", sources) == []
    assert untraced_numbers("t = -2.236, p = 0.048", sources) == ["-2.236", "0.048"]


def test_check_args_against_the_prompt():
    task = read_task(TTEST)
    good = dict(task.args)
    assert check_args(good, task.args, task.data_keys, task.numbers) == []
    wrong = {**good, "y": [2, 3, 4, 5]}
    assert "y is" in check_args(wrong, task.args, task.data_keys, task.numbers)[0]
    invented = {**good, "mu": 7}
    assert any("mu = 7" in p for p in check_args(invented, task.args, task.data_keys, task.numbers))
    assert check_args({**good, "alpha": 0.01}, task.args, task.data_keys, task.numbers) == []  # a setting
    assert check_args(None, task.args, task.data_keys, task.numbers) == ["the arguments are not a JSON object"]
    # without a reading of the prompt, only the numbers are checked
    assert check_args({"x": [1, 2, 9]}, None, (), task.numbers) == ["x[2] = 9 is not a number the prompt states"]


def test_narrow_bounds_array_lengths_only():
    schema = default_registry().arguments_schema("statistics", "anova")
    narrowed = narrow(schema, [[1, 2, 3], [4, 5]])
    branches = narrowed["properties"]["groups"]["oneOf"]
    assert branches[1]["maxItems"] == 2 and branches[1]["items"]["maxItems"] == 3
    assert narrow(schema, []) is schema


def test_pin_numbers_allows_only_the_accepted_numbers():
    schema = default_registry().arguments_schema("statistics", "t_test")
    pinned = pin_numbers(schema, [3, 1, 2.5, -4, 1.0], SETTINGS)
    props = pinned["properties"]
    assert props["x"]["items"]["enum"] == [-4, 1, 2.5, 3]  # sorted, duplicates once, integral values as ints
    assert props["alpha"] == schema["properties"]["alpha"]  # a setting: its value need not be in the prompt
    assert schema["properties"]["x"]["items"].get("enum") is None  # the registry's schema is not changed
    jsonschema.validate({"operation": "t_test", "kind": "two_sample", "x": [1, 3], "y": [2.5, -4]}, pinned)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"operation": "t_test", "kind": "two_sample", "x": [1, 3], "y": [2.5, 7]}, pinned)
    # bounds and integer types: only values meeting them; none meeting them leaves the number free
    node = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 2}, "p": {"type": "number",
            "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "k": {"type": "integer", "minimum": 100}}}
    got = pin_numbers(node, [0.5, 1, 2, 3.5, 4], ())["properties"]
    assert got["n"]["enum"] == [2, 4] and got["p"]["enum"] == [0.5] and "enum" not in got["k"]
    assert pin_numbers(schema, [], SETTINGS) is schema


def _hot_calls(llm, args_schema: dict, seeds: int = 4) -> list:
    """Calls sampled hot (temperature 1) from `llm` under {"tool": "statistics", "args": args_schema}: the
    `Generated` of those that closed, after asserting at least two of `seeds` did."""
    engine = Engine.from_llm(llm)
    schema = {"type": "object", "properties": {"tool": {"const": "statistics"}, "args": args_schema},
              "required": ["tool", "args"], "additionalProperties": False}
    closed = []
    for seed in range(seeds):
        ctx = engine.start("<|im_start|>user\nt-test<|im_end|>\n<|im_start|>assistant\n<tool>")
        g = engine.generate(ctx, 200, temperature=1.0, seed=seed, schema=schema)
        if g.finish == "stop":
            jsonschema.validate(json.loads(g.text), schema)  # the grammar's language is inside the schema's
            closed.append(g)
        ctx.free()
    assert len(closed) >= 2
    return closed


def test_pinned_decoding_writes_only_accepted_numbers(tiny_llm):
    """Random weights sampled hot under the pinned schema: every number of every call that closes is one
    the argument check accepts, so the check never rejects a call for an invented number (unpinned, the
    same sampling writes numbers such as 670.40 and 7.2e+56)."""
    task = read_task(TTEST)
    allowed = accepted_numbers(task.args, task.numbers)
    args_schema = narrow(default_registry().arguments_schema("statistics", "t_test"), task.lists)
    args_schema = pin_numbers({**args_schema, "required": ["operation", "kind", "x", "y", "mu"]}, allowed, SETTINGS)
    for g in _hot_calls(tiny_llm, args_schema):
        args = json.loads(g.text)["args"]
        leaves = numeric_leaves(args, skip=SETTINGS)
        assert all(any(v == a for a in allowed) for _, v in leaves), leaves
        assert not [p for p in check_args(args, None, (), task.numbers) if "not a number" in p]


def test_copy_sequences_read_around_labels_and_pairs():
    days = read_task("Day 1: 7\nDay 2: 9\nDay 3: 6\nDay 4: 8\nThese are defect counts; c chart please.")
    assert copy_sequences(days.numbers, days.lists, days.args) == [[7, 9, 6, 8]]  # the list without its labels
    pairs = read_task("Paired data (before, after): (20, 18), (22, 21), (19, 17). Paired t-test.")
    assert copy_sequences(pairs.numbers, pairs.lists, pairs.args) == [[20, 22, 19], [18, 21, 17]]
    # a reading's list that is not written in one piece counts, as does one inside another (a copy may have
    # to start where it starts); one that starts another adds nothing and is dropped
    assert copy_sequences([1, 2, 3], [[1, 2, 3]], {"x": [3, 1], "y": [2, 3], "z": [1, 2]}) == [[1, 2, 3], [3, 1], [2, 3]]
    # no list in the prompt: the numbers as written
    assert copy_sequences([4, 5, 6], [], None) == [[4, 5, 6]]
    # single values: the numbers written outside the lists (and the reading's), never a value of the data
    spec = read_task("LSL 9.5 and USL 10.5; measurements 10.1, 9.9, 10.2, 10.0, 10.5. Cp and Cpk?")
    assert sorted(set(scalar_numbers(spec.numbers, spec.lists, spec.args))) == [9.5, 10.5]


def _accepts(tok, schema: dict, value: dict) -> bool:
    grammar = GrammarConstraint.json_schema(tok, schema)
    try:
        for t in tok.encode(json.dumps(value, separators=(",", ":")), add_bos=False):
            grammar.accept(t)
    except ConstraintError:
        return False
    return grammar.matcher.is_accepting()


def test_copied_lists_are_runs_of_the_prompt(tiny_llm):
    """Under `copy_lists` a data list is a run of consecutive values of one list of the prompt, from its
    start (`from_start`, what PRIME decodes with) or from anywhere, of any length from minItems, but with no
    value dropped, repeated or moved and never run on into the next list; choices, settings and non-data
    keep their grammar."""
    tok = tiny_llm.tokenizer
    task = read_task("Machine A: 10.2, 10.4, 9.9, 10.1, 10.0 and machine B: 11.5, 11.1, 11.8, 11.2. Welch t-test.")
    schema = decode_schema("statistics", default_registry().arguments_schema("statistics", "t_test"), task.lists,
                           task.args, task.numbers, data=task.lists)
    anywhere = decode_schema("statistics", default_registry().arguments_schema("statistics", "t_test"), task.lists,
                             task.args, task.numbers, pin=True)["properties"]["args"]
    anywhere = call_schema("statistics", copy_lists(anywhere, copy_sequences(task.numbers, task.lists), SETTINGS))

    def call(**args):
        return {"tool": "statistics", "args": {"operation": "t_test", **args}}

    gold = call(kind="welch", x=[10.2, 10.4, 9.9, 10.1, 10], y=[11.5, 11.1, 11.8, 11.2])
    assert _accepts(tok, schema, gold) and _accepts(tok, anywhere, gold)
    short = call(kind="welch", x=[10.2, 10.4, 9.9], y=[11.5, 11.1], alpha=0.01)
    assert _accepts(tok, anywhere, short)
    assert not _accepts(tok, schema, short)  # from a list's start, a copy ends where a list ends
    # where a list of the reading ends inside a longer one as read, a copy may end there too
    ends = copy_lists(default_registry().arguments_schema("statistics", "t_test"), [[1, 2, 3, 4, 5]], SETTINGS,
                      from_start=True,
                      list_ends=[[1, 2, 3, 4, 5], [1, 2, 3]])
    assert ends["properties"]["x"]["x-havoc-copy-ends"] == [[3, 5]]
    marked = call_schema("statistics", ends)
    for x, ok in (([1, 2, 3], True), ([1, 2, 3, 4, 5], True), ([1, 2, 3, 4], False), ([1, 2], False)):
        assert _accepts(tok, marked, call(kind="welch", x=x, y=[1, 2, 3])) == ok, x
    inside = call(kind="welch", x=[10.4, 9.9, 10.1], y=[11.8, 11.2])
    assert _accepts(tok, anywhere, inside) and not _accepts(tok, schema, inside)
    for bad in ([10.2, 9.9, 10.1, 10], [10.2, 10.4, 10.4, 9.9], [10.4, 10.2, 9.9], [10.2], [11.2, 10.2],
                [10.1, 10, 11.5, 11.1]):  # dropped, repeated, moved, too short, backwards, run on into y
        assert not _accepts(tok, anywhere, call(kind="welch", x=bad, y=[11.5, 11.1])), bad
        assert not _accepts(tok, schema, call(kind="welch", x=bad, y=[11.5, 11.1])), bad
    a, b = gold["args"]["x"], gold["args"]["y"]
    assert not _accepts(tok, schema, call(kind="welch", x=a, y=a))  # x and y never one list (the check's differ)
    assert not _accepts(tok, schema, call(kind="welch", x=b, y=b))
    assert not _accepts(tok, schema, call(kind="pooled", x=a, y=b))  # the enum stands
    assert not _accepts(tok, schema, call(kind="one_sample", x=a, mu=3))  # pinned scalars stand
    # where the prompt writes no single number, any of its numbers (never a free one)
    assert _accepts(tok, schema, call(kind="one_sample", x=a, mu=10.1))
    # integer items split a sequence at a value they may not take; no run at all keeps the array's schema
    node = {"type": "object", "properties": {"n": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
                                             "p": {"type": "array", "items": {"type": "number", "maximum": 0}}}}
    got = copy_lists(node, [[1, 2, 2.5, 3, 4, 5]], ())["properties"]
    assert got["n"]["x-havoc-copy"] == [[1, 2], [3, 4, 5]] and got["p"] == node["properties"]["p"]
    # groups: arrays of copied arrays, in either form the schema offers (a list of lists, or named lists)
    groups = read_task("Three groups: 11, 12, 13 / 15, 16, 14 / 10, 12, 11. One-way ANOVA.")
    anova = decode_schema("statistics", default_registry().arguments_schema("statistics", "anova"), groups.lists,
                          groups.args, groups.numbers, data=groups.lists)
    ok = {"tool": "statistics", "args": {"operation": "anova", "groups": [[11, 12, 13], [15, 16, 14], [10, 12, 11]]}}
    assert _accepts(tok, anova, ok)
    assert not _accepts(tok, anova, {"tool": "statistics", "args": {"operation": "anova", "groups": [[11, 12, 13]] * 4}})
    # the prompt's lists in its order, each at most once (the check asks for the reading's, in order): a group
    # given twice or out of order is refused; leaving one out is the model's choice
    for groups in ([[11, 12, 13], [11, 12, 13], [15, 16, 14]], [[11, 12, 13], [15, 16, 14], [11, 12, 13]],
                   [[15, 16, 14], [10, 12, 11], [10, 12, 11]], [[10, 12, 11], [11, 12, 13], [15, 16, 14]]):
        assert not _accepts(tok, anova, {"tool": "statistics", "args": {"operation": "anova", "groups": groups}})
    assert _accepts(tok, anova, {"tool": "statistics", "args": {"operation": "anova", "groups": [[15, 16, 14], [10, 12, 11]]}})
    # and never fewer than the array's minItems (2 groups): no start from which too few lists are left
    last_only = GrammarConstraint.json_schema(tok, anova)
    for t in tok.encode('{"tool":"statistics","args":{"operation":"anova","groups":[[', add_bos=False):
        last_only.accept(t)
    with pytest.raises(ConstraintError):
        for t in tok.encode('10,12,11]', add_bos=False):
            last_only.accept(t)
    # unless the prompt writes one list twice: then a call that gives it twice is the right one
    twice = read_task("Three groups: 11, 12, 13 / 15, 16, 14 / 11, 12, 13. One-way ANOVA.")
    anova2 = decode_schema("statistics", default_registry().arguments_schema("statistics", "anova"), twice.lists,
                           twice.args, twice.numbers, data=twice.lists)
    assert _accepts(tok, anova2, {"tool": "statistics", "args": {"operation": "anova",
                                                                 "groups": [[11, 12, 13], [15, 16, 14], [11, 12, 13]]}})
    named = {"tool": "statistics", "args": {"operation": "anova", "groups": {"a": [11, 12, 13], "b": [15, 16, 14]}}}
    assert _accepts(tok, anova, named)
    ok["args"]["groups"][1] = [15, 14, 16]
    assert not _accepts(tok, anova, ok)
    # a spec limit is a number written outside the data, never one of the data's values
    spec = read_task("The process has LSL 9.5 and USL 10.5; measurements 10.1, 9.9, 10.2, 10.0, 10.3. Cp and Cpk?")
    cap = decode_schema("dsl_executor", default_registry().arguments_schema("dsl_executor", "capability"), spec.lists,
                        spec.args, spec.numbers, data=spec.lists)

    def capability(lsl, usl):
        return {"tool": "dsl_executor", "args": {"operation": "capability", "data": [10.1, 9.9, 10.2, 10, 10.3],
                                                 "lsl": lsl, "usl": usl}}

    assert _accepts(tok, cap, capability(9.5, 10.5))
    assert not _accepts(tok, cap, capability(10.1, 10.3)) and not _accepts(tok, cap, capability(9.5, 10.3))
    with pytest.raises(ConstraintError, match="compact"):
        GrammarConstraint.json_schema(tok, schema, compact=False)


def test_copied_decoding_writes_only_runs(tiny_llm):
    """Random weights sampled hot under the copy grammar: every list of every call that closes is a run of
    one of the prompt's sequences (without it, the same sampling drops, repeats and reorders values)."""
    task = read_task(TTEST)
    seqs = copy_sequences(task.numbers, task.lists, task.args)
    args_schema = narrow(default_registry().arguments_schema("statistics", "t_test"), task.lists)
    args_schema = pin_numbers({**args_schema, "required": ["operation", "kind", "x", "y"]},
                              accepted_numbers(task.args, task.numbers), SETTINGS)
    free = [json.loads(g.text)["args"] for g in _hot_calls(tiny_llm, args_schema)]
    copied = [json.loads(g.text)["args"] for g in _hot_calls(tiny_llm, copy_lists(args_schema, seqs, SETTINGS))]
    assert seqs == [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]]

    def is_run(values):
        return any(seq[i:i + len(values)] == values for seq in seqs for i in range(len(seq)))

    assert all(is_run(a["x"]) and is_run(a["y"]) for a in copied), copied
    assert not all(is_run(a["x"]) and is_run(a["y"]) for a in free), free


def test_workspace_provenance_and_compression():
    ws = Workspace()
    ws.add("fact", "x", [1, 2], "prompt")
    ws.add("partial", "s2.1", {"t": -1}, "tool:statistics#1", "s2")
    ws.add("flag", "call1", "taken from the prompt", "recovered:prompt")
    small = ws.compress(["s2.1"])
    assert small == {"facts": {"x": [1, 2]}, "results": {"s2.1": {"value": {"t": -1}, "source": "tool:statistics#1"}},
                     "flags": ["taken from the prompt"]}
    with pytest.raises(ValueError, match="kind"):
        ws.add("opinion", "k", 1, "me")


def test_answer_figures_come_from_the_result():
    res = default_registry().execute("statistics", read_task(TTEST).args)["result"]
    text = summarize("statistics", "t_test", res)
    assert "t = -1, df = 8, p = 0.3466" in text
    assert fmt(-1.0) == "-1" and fmt(0.34659350708733416) == "0.3466" and fmt("x") == "x"


# ------------------------------------------------------------------------------------------ engine
def test_schema_decoding_from_random_weights_is_always_valid_json(tiny_llm):
    args_schema = narrow(default_registry().arguments_schema("statistics", "t_test"), [[1, 2, 3, 4, 5]])
    for g in _hot_calls(tiny_llm, args_schema):
        assert g.forced > 0  # the keys were forced, not sampled
    assert tiny_llm.loop.call(lambda e: (len(e.held), len(e.cache))) == (0, 0)  # every context released


def test_forks_share_the_prompt_and_match_a_fresh_context(tiny_llm):
    engine = Engine.from_llm(tiny_llm)
    prompt = list(range(3, 3 + 40))
    root = engine.start(prompt)
    engine.prefill(root)
    assert engine.computed_tokens == 39  # the last token is left for each fork
    forks = [root.fork() for _ in range(3)]
    assert engine.computed_tokens == 39  # forking computes nothing
    for i, f in enumerate(forks):
        f.extend([50 + i, 60 + i])
    gens = engine.generate_batch(forks, 5, temperature=0.0)
    # each branch computes only its own tokens: the shared last prompt token, its 2, and its generated ones
    assert engine.computed_tokens == 39 + sum(3 + len(g.ids) - 1 for g in gens)
    assert tiny_llm.engine.cache.stats()["cow_copies"] >= 2  # the shared partial block was copied on write
    for f, g in zip(forks, gens):  # copy-on-write kept each branch's K/V its own: a fresh context agrees
        fresh = engine.start(f.ids[: len(f.ids) - len(g.ids)])
        assert engine.generate(fresh, 5).ids == g.ids
        fresh.free()
    for c in [root, *forks]:
        c.free()
    with pytest.raises(PrimeError, match="freed"):
        root.fork()
    assert tiny_llm.loop.call(lambda e: len(e.held)) == 0


def test_generate_stops_before_the_stop_string(tiny_llm):
    engine = Engine.from_llm(tiny_llm)
    ctx = engine.start("hello")
    for seed in range(20):  # a sampled text long enough to cut (a random model may end at once)
        a, b = ctx.fork(), ctx.fork()
        full = engine.generate(a, 30, temperature=1.0, seed=seed)
        if len(full.text) >= 8:
            break
        a.free(), b.free()
    stop = full.text[5:7]
    cut = engine.generate(b, 30, temperature=1.0, seed=seed, stop=(stop,))
    assert cut.finish == "stop" and cut.text == full.text[: full.text.find(stop)]
    for c in (ctx, a, b):
        c.free()


# ------------------------------------------------------------------------------------------ pipeline
@pytest.mark.parametrize("budget", ["LIGHT", "MEDIUM", "HEAVY"])
def test_pipeline_answers_right_by_recovery_with_a_random_model(tiny_llm, budget):
    pieces = []
    out = generate_with_prime(TTEST, llm=tiny_llm, budget=budget, max_new_tokens=400, on_text=pieces.append)
    assert "t = -1, df = 8, p = 0.3466" in out.answer  # Student t for these data (not the spec's -2.236)
    assert out.verification["passed"]
    assert out.verification["checks"][2]["name"] == "answer_traceable" and out.verification["checks"][2]["passed"]
    main = out.tool_calls[0]
    assert main["resolution"] in ("model", "regenerated", "recovered_from_prompt")
    if main["resolution"] == "recovered_from_prompt":
        assert any(e.source == "recovered:prompt" for e in out.workspace.entries)
        assert out.verification["recovered"]
    assert "<reason>Step s1" in out.text and "<tool>" in out.text and "<result>" in out.text
    assert "".join(pieces) + "" in out.text  # what was streamed is what the text holds
    assert out.routing["budget"] == budget and out.routing["forced"]
    assert out.stats["generated_tokens"] <= 400
    assert out.generated_ids and all(isinstance(i, int) for i in out.generated_ids)
    graph = {g["id"]: g for g in out.graph}
    assert all(g["status"] == "done" for g in graph.values())
    assert graph["s2"]["inputs"] and "summary" in graph["s2"]["outputs"]
    if budget != "LIGHT":
        argue = graph["a1"]["outputs"]
        assert {"advocate", "attack", "pragmatist"} <= set(argue)
        assert "<advocate>" in out.text and "<attack>" in out.text and "<pragmatist>" in out.text
        # the shared context (hundreds of tokens) was not recomputed by the three branches
        assert argue["computed_tokens"] < argue["shared_prefix_tokens"]
        assert any(c["operation"] == "normality" for c in out.tool_calls)
    if budget == "HEAVY":
        assert graph["s2"]["outputs"]["chrono"]["runs"] >= 2
    assert tiny_llm.loop.call(lambda e: (len(e.held), len(e.cache))) == (0, 0)  # every context was freed


def test_pipeline_accepts_a_right_model_call(tiny_llm, monkeypatch):
    """A scripted model that writes the right call (checked against the grammar) is used as written."""
    engine = engine_for(tiny_llm)
    real = Engine.generate
    right = json.dumps({"tool": "statistics", "args": read_task(TTEST).args}, separators=(",", ":"))

    def scripted(self, ctx, max_tokens, *, schema=None, **kwargs):
        if schema is None:
            return real(self, ctx, max_tokens, schema=None, **kwargs)
        ids = self.encode(right)
        grammar = GrammarConstraint.json_schema(self.tokenizer, schema, self.vocab_size)
        assert grammar.matcher.consume_tokens(ids)  # the scripted call is in the grammar's language
        ctx.extend(ids)
        from havoc.prime.engine import Generated

        return Generated(ids, right, "stop")

    monkeypatch.setattr(Engine, "generate", scripted)
    out = generate_with_prime(TTEST, llm=tiny_llm, budget="LIGHT", max_new_tokens=200)
    assert out.tool_calls[0]["resolution"] == "model" and not out.verification["recovered"]
    assert all(c["passed"] for c in out.verification["checks"])
    assert out.verification["model_calls_valid"] == 1
    assert engine is engine_for(tiny_llm)


def test_pipeline_direct_paths(tiny_llm):
    out = generate_with_prime(TTEST, llm=tiny_llm, enable_prime=False, max_new_tokens=12)
    assert out.verification["mode"] == "direct" and out.tool_calls == [] and out.stats["generated_tokens"] <= 12
    assert "PRIME disabled" in out.routing["reasons"][-1]
    micro = generate_with_prime("Hi there", llm=tiny_llm, max_new_tokens=8)
    assert micro.routing["budget"] == "MICRO" and micro.verification["mode"] == "direct"
    limited = generate_with_prime(TTEST, llm=tiny_llm, tools=["symbolic"], max_new_tokens=8)
    assert limited.verification["mode"] == "direct"  # the statistics tool is not enabled


def test_pipeline_tiny_budget_still_recovers(tiny_llm):
    out = generate_with_prime(TTEST, llm=tiny_llm, budget="LIGHT", max_new_tokens=5)
    assert out.stats["generated_tokens"] <= 5
    assert "p = 0.3466" in out.answer and out.tool_calls[0]["resolution"] == "recovered_from_prompt"


@pytest.mark.parametrize("kwargs,msg", [
    ({"prompt": ""}, "empty"), ({"prompt": 3}, "must be text"), ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"), ({"temperature": -1}, "temperature"),
    ({"temperature": float("inf")}, "temperature"), ({"tools": ["nope"]}, "unknown tools"),
    ({"tools": "statistics"}, "tools must be"), ({"budget": "XL"}, "unknown budget"),
])
def test_pipeline_bad_input(tiny_llm, kwargs, msg):
    args = {"prompt": TTEST, "llm": tiny_llm, **kwargs}
    with pytest.raises(PrimeError, match=msg):
        generate_with_prime(**args)


def test_arguments_schema_names_what_is_wrong():
    from havoc.errors import ToolError

    reg = default_registry()
    assert reg.arguments_schema("statistics", "t_test")["properties"]["operation"] == {"const": "t_test"}
    assert reg.arguments_schema("rag_helper")["required"] == ["query"]
    with pytest.raises(ToolError, match="unknown tool"):
        reg.arguments_schema("nope")
    with pytest.raises(ToolError, match="no operation 'fly'"):
        reg.arguments_schema("statistics", "fly")


def test_check_args_compares_text_up_to_case_space_and_final_punctuation():
    task = read_task("What is a p-value?")
    assert check_args({"query": "what is a p-value"}, task.args, task.data_keys, task.numbers) == []
    assert check_args({"query": "What is a t-test?"}, task.args, task.data_keys, task.numbers)
    calc = read_task("What is 17*23+4?")
    assert check_args({"operation": "evaluate", "expression": "17 * 23 + 4"}, calc.args, calc.data_keys, calc.numbers) == []


def test_check_args_flags_a_call_of_another_kind_than_asked():
    task = read_task("Welch t-test: group A [20.1, 22.3, 19.8] vs group B [25.2, 24.8, 26.1]")
    assert task.args["kind"] == "welch"
    right = dict(task.args)
    assert check_args(right, task.args, task.data_keys, task.numbers) == []
    pooled = {**task.args, "kind": "two_sample"}  # the right numbers, the wrong test
    assert check_args(pooled, task.args, task.data_keys, task.numbers) == ["kind is 'two_sample'; the prompt asks for 'welch'"]
    assert "kind is missing" in check_args({k: v for k, v in task.args.items() if k != "kind"}, task.args,
                                           task.data_keys, task.numbers)[0]


def test_a_call_scoped_adapter_writes_the_calls_and_nothing_else(tiny_llm, tmp_path):
    """An LLM loaded with a call-scoped adapter (span "call"): PRIME's tool calls go through the adapted
    model from the last token of `<tool>` on, every other token through the model itself."""
    import torch

    from havoc import hub
    from havoc.llm import LLM
    from havoc.train.lora import LoraConfig, LoRALinear, apply_lora, save_adapter

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", meta={"llama.context_length": 8192})
    model, _ = hub.load(gguf)
    apply_lora(model, LoraConfig(r=4, alpha=8, span="call"))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                for p in m.lora_B.values():
                    p.normal_(0, 0.05)
    save_adapter(model, tmp_path / "ad")
    llm = LLM.load(gguf, adapter=tmp_path / "ad")
    plain = LLM.load(gguf, adapter=None)
    outs = {}
    for name, which in (("adapter", llm), ("plain", plain)):
        out = generate_with_prime(TTEST, llm=which, budget="LIGHT", max_new_tokens=200)
        stats = which.engine.stats
        outs[name] = (out, stats.adapted_tokens, stats.computed_tokens)
    out, adapted, computed = outs["adapter"]
    assert 0 < adapted < computed  # the calls' tokens, and only those
    assert outs["plain"][1] == 0
    assert out["answer"] == outs["plain"][0]["answer"]  # the tools' figures either way (recovered if need be)
