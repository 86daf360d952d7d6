"""PRIME's prompt reader and router for the toolbox operations of issue 22: a request in plain words for each
new operation reaches its tool (never MICRO), with the arguments the prompt states, and those arguments run."""

from __future__ import annotations

import pytest

from havoc.prime import read_task, route
from havoc.prime.verify import check_args
from havoc.tools import default_registry

EWMA_DATA = [52.0, 47.0, 53.0, 49.3, 50.1, 47.0, 51.0, 50.1, 51.2, 50.5]

CASES = [
    ("Make an EWMA chart of [52.0, 47.0, 53.0, 49.3, 50.1, 47.0, 51.0, 50.1, 51.2, 50.5] with lambda = 0.3, target 50 "
     "and sigma = 2.0539", "dsl_executor",
     {"operation": "ewma_chart", "data": EWMA_DATA, "lambda": 0.3, "target": 50, "sigma": 2.0539}),
    ("EWMA control chart for [10.2, 9.8, 10.5, 10.1, 9.9, 10.3]", "dsl_executor",
     {"operation": "ewma_chart", "data": [10.2, 9.8, 10.5, 10.1, 9.9, 10.3]}),
    ("Run a tabular CUSUM on [9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04] with target 10, sigma 1, k = 0.5 and h = 5",
     "dsl_executor", {"operation": "cusum_chart", "data": [9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04], "target": 10,
                      "sigma": 1, "k": 0.5, "h": 5}),
    ("What is the process capability if USL = 20, LSL = 8, the mean is 16 and sigma = 2?", "dsl_executor",
     {"operation": "capability", "mean": 16, "sigma": 2, "lsl": 8, "usl": 20}),
    ("How many samples do I need to detect a difference of 0.5 with standard deviation 1 and 90% power?", "statistics",
     {"operation": "power", "test": "one_sample_t", "effect": 0.5, "sd": 1, "power": 0.9}),
    ("What sample size per group is needed to detect a difference of 1 between two groups with sd 1 at alpha 0.05 "
     "and power 0.9?", "statistics",
     {"operation": "power", "test": "two_sample_t", "effect": 1, "sd": 1, "power": 0.9, "alpha": 0.05}),
    ("What is the power of a two-sample t-test with n = 20 per group to detect a difference of 1 when sigma = 1?",
     "statistics", {"operation": "power", "test": "two_sample_t", "effect": 1, "sd": 1, "n": 20}),
    ("Sample size for two proportions p1 = 0.5 and p2 = 0.75 with power 0.9", "statistics",
     {"operation": "power", "test": "two_proportions", "p1": 0.5, "p2": 0.75, "power": 0.9}),
    ("Is the defect rate below 5%? We found 4 defectives out of 200.", "statistics",
     {"operation": "proportion_test", "successes": 4, "trials": 200, "p0": 0.05, "alternative": "less"}),
    ("Compare proportions: 5 of 83 vs 12 of 99", "statistics",
     {"operation": "proportion_test", "successes": 5, "trials": 83, "successes_y": 12, "trials_y": 99}),
    ("Fisher's exact test on [[3, 1], [1, 3]]", "statistics",
     {"operation": "proportion_test", "successes": 3, "trials": 4, "successes_y": 1, "trials_y": 4, "method": "exact"}),
    ("Are the variances equal? F test on [1.2, 1.5, 1.1, 1.9] and [2.2, 2.9, 1.5, 3.1]", "statistics",
     {"operation": "variance_test", "kind": "f", "x": [1.2, 1.5, 1.1, 1.9], "y": [2.2, 2.9, 1.5, 3.1]}),
    ("Levene test for [8.88, 9.12, 9.04], [8.88, 8.95, 9.29], [8.95, 9.12, 8.95]", "statistics",
     {"operation": "variance_test", "kind": "levene", "groups": [[8.88, 9.12, 9.04], [8.88, 8.95, 9.29], [8.95, 9.12, 8.95]]}),
    ("Mann-Whitney test: [19, 22, 16, 29, 24] vs [20, 11, 17, 12]", "statistics",
     {"operation": "rank_test", "kind": "mann_whitney", "x": [19, 22, 16, 29, 24], "y": [20, 11, 17, 12]}),
    ("Wilcoxon signed-rank test on [6, 8, 14, 16, 23, 24, 28, 29, 41, -48]", "statistics",
     {"operation": "rank_test", "kind": "wilcoxon", "x": [6, 8, 14, 16, 23, 24, 28, 29, 41, -48]}),
    ("Kruskal-Wallis on [2.9, 3.0, 2.5], [3.8, 2.7, 4.0], [2.8, 3.4, 3.7]", "statistics",
     {"operation": "rank_test", "kind": "kruskal", "groups": [[2.9, 3, 2.5], [3.8, 2.7, 4], [2.8, 3.4, 3.7]]}),
    ("What is the correlation between x = [1, 2, 3, 4, 5] and y = [2, 4, 5, 4, 5]?", "statistics",
     {"operation": "correlation", "x": [1, 2, 3, 4, 5], "y": [2, 4, 5, 4, 5]}),
    ("Spearman correlation of [1,2,3,4,5] and [5,6,7,8,7]", "statistics",
     {"operation": "correlation", "x": [1, 2, 3, 4, 5], "y": [5, 6, 7, 8, 7], "method": "spearman"}),
    ("t-test: group A mean 20.14, sd 6.41, n 249; group B mean 30.48, sd 6.11, n 79", "statistics",
     {"operation": "t_test", "kind": "welch", "mean_x": 20.14, "sd_x": 6.41, "n_x": 249, "mean_y": 30.48, "sd_y": 6.11,
      "n_y": 79}),
    ("Gauge R&R study: measurements = [1, 1.1, 2, 2.2, 1.2, 1.1, 2.1, 2.3], parts = [1, 1, 2, 2, 1, 1, 2, 2], "
     "operators = [A, A, A, A, B, B, B, B]", "dsl_executor",
     {"operation": "gauge_rr", "measurements": [1, 1.1, 2, 2.2, 1.2, 1.1, 2.1, 2.3], "parts": [1, 1, 2, 2, 1, 1, 2, 2],
      "operators": ["A", "A", "A", "A", "B", "B", "B", "B"]}),
    ("Fit a response surface to the central composite design for time(80, 90) and temp(170, 180) with 5 center points: "
     "responses [76.5, 78.0, 77.0, 79.5, 75.6, 78.4, 77.0, 78.5, 79.9, 80.3, 80.0, 79.7, 79.8]", "dsl_executor",
     {"operation": "response_surface", "factors": [{"name": "time", "low": 80, "high": 90},
                                                   {"name": "temp", "low": 170, "high": 180}],
      "response": [76.5, 78, 77, 79.5, 75.6, 78.4, 77, 78.5, 79.9, 80.3, 80, 79.7, 79.8],
      "design": {"kind": "central_composite", "center": 5}}),
    ("Fit a Weibull to the failure times [54, 187, 216, 240, 244, 335, 361, 373, 375, 386]; 10 units were removed "
     "unfailed at 500 hours. What is the B10 life?", "statistics",
     {"operation": "life_data", "times": [54, 187, 216, 240, 244, 335, 361, 373, 375, 386, 500],
      "censored": [False] * 10 + [True], "counts": [1] * 10 + [10]}),
    ("Single sampling plan n = 89, c = 2, lot size 10000: what is the probability of acceptance at p = [0.01, 0.02]?",
     "dsl_executor", {"operation": "sampling_plan", "n": 89, "c": 2, "lot_size": 10000, "p": [0.01, 0.02]}),
]


@pytest.mark.parametrize("prompt, tool, args", CASES, ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_a_plain_words_request_reaches_the_tool(prompt, tool, args):
    task = read_task(prompt)
    assert (task.tool, task.args) == (tool, args)
    r = route(prompt)
    assert r.budget != "MICRO" and r.task.tool == tool and r.to_dict()["operation"] == args["operation"]
    out = default_registry().execute(tool, task.args)  # the reading is a call that runs
    assert out["success"], out
    # and a model call equal to the reading passes verification against the prompt
    assert check_args(task.args, task.args, task.data_keys, task.numbers) == []


def test_the_handbook_examples_answer_right_through_the_reading():
    task = read_task("Fit a Weibull to the failure times [54, 187, 216, 240, 244, 335, 361, 373, 375, 386]; 10 units "
                     "were removed unfailed at 500 hours.")
    res = default_registry().execute(task.tool, task.args)["result"]
    assert round(res["parameters"]["beta"], 4) == 1.7208
    ewma = default_registry().execute("dsl_executor", read_task(CASES[0][0]).args)["result"]
    assert round(ewma["points"][0], 2) == 50.60


@pytest.mark.parametrize("prompt", [
    "Tell me a story about a cat",
    "What is the mean of [4, 8, 15]?",  # still descriptive statistics
    "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]",  # still the raw-data t-test
    "The power went out at the plant yesterday",  # 'power' without a test is not a power calculation
])
def test_older_readings_and_general_prompts_are_unchanged(prompt):
    task = read_task(prompt)
    assert task.operation not in ("power", "correlation", "ewma_chart", "proportion_test")


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from havoc.llm import LLM

    from .gguf_files import write_tiny_gguf

    path = write_tiny_gguf(tmp_path_factory.mktemp("prime-toolbox") / "tiny.gguf", meta={"llama.context_length": 8192})
    return LLM.load(path)


@pytest.mark.parametrize("index, figure", [
    (0, "52.59"),     # EWMA, NIST 6.3.2.4: steady-state UCL
    (3, "0.667"),     # capability from mean and sigma, NIST 6.1.6: Cpk
    (5, "n = 23"),    # sample size per group
    (21, "1.721"),    # Weibull with censoring, NIST 8.4.1.3: beta
])
def test_prime_answers_with_the_tool_figures_from_a_random_model(tiny_llm, index, figure):
    from havoc.prime import generate_with_prime

    prompt = CASES[index][0]
    out = generate_with_prime(prompt, llm=tiny_llm, budget="LIGHT", max_new_tokens=5)
    call = out.tool_calls[0]
    assert call["tool"] == CASES[index][1] and call["operation"] == CASES[index][2]["operation"]
    assert figure in out.answer
    assert out.verification["passed"], out.verification


def test_the_toolbox_eval_set_is_reachable_and_outside_smoke():
    from havoc.eval.sets import expected, get_set, list_sets

    assert "toolbox" in list_sets()
    tasks = get_set("toolbox").tasks
    smoke_ids = {t.id for t in get_set("smoke").tasks}
    assert tasks and not smoke_ids & {t.id for t in tasks}
    for task in tasks:
        want = expected(task)["figures"]
        assert want, task.id
        reading = read_task(task.prompt)
        assert reading.tool == task.check["tool"], task.id
        assert check_args(task.check["args"], reading.args, reading.data_keys, reading.numbers) == [], task.id
        answer = default_registry().execute(reading.tool, reading.args)["result"]["interpretation"]
        from havoc.eval.harness import is_correct

        assert is_correct(answer, {"figures": want}), (task.id, answer, want)
