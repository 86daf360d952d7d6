"""PRIME end to end with the real SmolLM2-135M-Instruct: the main job's example, structured tool calls from
the real tokenizer, forks on the real model, and one task of the evaluation harness."""

from __future__ import annotations

import json

import pytest
import torch

from havoc.prime import Engine, generate_with_prime
from havoc.tools import default_registry

pytestmark = pytest.mark.model

TTEST = "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"


@pytest.fixture(scope="module")
def smol_llm(smollm2):
    from havoc.llm import LLM

    model, tokenizer = smollm2
    return LLM(model, tokenizer)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The test machines share two cores; one thread decodes this 135M model fastest there.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_main_job_example(smol_llm):
    out = generate_with_prime(TTEST, llm=smol_llm, budget="LIGHT", max_new_tokens=80)
    # Student t for these data is -1 with p = 0.3466 (the spec's t = -2.236, p = 0.048 is wrong)
    assert "t = -1, df = 8, p = 0.3466" in out.answer
    assert "do not reject H0" in out.answer
    assert out.verification["passed"]
    assert out.text.count("<reason>") >= 2 and "<tool>{\"tool\":\"statistics\"" in out.text
    for call in out.tool_calls:
        for attempt in call["attempts"]:
            if attempt["tokens"] and "ran out of tokens" not in " ".join(attempt["problems"]):
                assert attempt["json_valid"]  # the real model's calls are well-formed under the grammar
    assert smol_llm.tokenizer.decode(out.generated_ids).startswith("<reason>Step s1")


def test_real_tokenizer_schema_decoding_and_forks(smol_llm):
    engine = Engine.from_llm(smol_llm)
    ctx = engine.start(smol_llm.chat_prompt([{"role": "user", "content": "What is 17*23+4?"}]))
    engine.prefill(ctx)
    n = engine.computed_tokens
    a, b = ctx.fork(), ctx.fork()
    assert engine.computed_tokens == n
    schema = {"type": "object", "properties": {"tool": {"const": "symbolic"},
              "args": default_registry().arguments_schema("symbolic", "evaluate")},
              "required": ["tool", "args"], "additionalProperties": False}
    a.extend("<tool>")
    g = engine.generate(a, 40, schema=schema)
    assert g.finish == "stop" and g.forced > 0
    call = json.loads(g.text)
    assert call["tool"] == "symbolic" and call["args"]["operation"] == "evaluate"
    assert set(default_registry().execute("symbolic", call["args"])) & {"success"}  # runs (its value may be wrong)
    b.extend("<tool>")
    fresh = engine.start(list(b.ids))
    assert engine.generate(b, 6).ids == engine.generate(fresh, 6).ids  # the fork's K/V are its own and right
    for c in (ctx, a, b, fresh):
        c.free()


def test_eval_one_task_three_methods(smol_llm):
    from havoc.eval import run_eval

    report = run_eval("arithmetic", llm=smol_llm, limit=1, max_new_tokens=48)
    s = report["summary"]
    assert s["prime"]["accuracy"] == 1.0 and s["prime"]["verification_pass_rate"] == 1.0
    assert set(s) == {"prime", "plain", "self_consistency"}
    assert all(r["tokens"] <= 48 for r in report["rows"])
