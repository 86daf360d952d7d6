"""Prompt-lookup speculative decoding in the engine: tokens/s with drafts against the same engine without, on
SmolLM2, greedy, same process, rounds alternating (the baseline's round runs in the setup of each timed one).

Workloads: copy-heavy — PRIME's own work on the spec's t-test example (its tool calls copy the prompt's
lists), a code edit that rewrites a function, a summary quoting its source — and one with nothing to copy
(a poem). Each row checks the outputs are identical (speculation never changes a token) and records the
draft acceptance and tokens per step. Batch 1 (the memory-bound case) and 8 requests at once.

Run: pytest bench/test_speculative.py --benchmark-only
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

CODE = '''def mean(xs):
    total = 0
    count = 0
    for x in xs:
        total += x
        count += 1
    return total / count
'''
QUOTE = ("Apollo 11 landed on the Moon on July 20, 1969. Neil Armstrong stepped onto the surface and said: "
         "'That's one small step for man, one giant leap for mankind.' Buzz Aldrin joined him 19 minutes later; "
         "Michael Collins stayed in lunar orbit aboard Columbia.")
PROMPTS = {
    "code_edit": "Rename the variable total to acc in this function and show the whole function:\n" + CODE,
    "quote": "Summarize this text, quoting Armstrong's words exactly:\n" + QUOTE,
    "no_copy": "Write a short poem about autumn leaves.",
}
TOKENS = 128


@pytest.fixture(scope="module")
def model_tok():
    from havoc import hub

    torch.set_num_threads(2)
    return hub.load("smollm2")


def _run(model, tok, prompts: list[list[int]], speculative: bool) -> tuple[float, list, object]:
    from havoc.engine import Engine, SamplingParams

    e = Engine(model, tok, speculative=speculative, kv_cache_tokens=8192)
    reqs = [e.add_request(p, SamplingParams(max_new_tokens=TOKENS)) for p in prompts]
    t0 = time.perf_counter()
    while e.has_unfinished():
        e.step()
    return time.perf_counter() - t0, [r.output_ids for r in reqs], e.stats


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_speculative_decoding(benchmark, model_tok, name, batch):
    model, tok = model_tok
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPTS[name]}], add_generation_prompt=True),
                     add_bos=False)
    prompts = [ids] * batch
    _run(model, tok, prompts, True)
    plain: list[tuple] = []
    spec: list[tuple] = []
    benchmark.pedantic(lambda: spec.append(_run(model, tok, prompts, True)),
                       setup=lambda: plain.append(_run(model, tok, prompts, False)), rounds=5, iterations=1)
    assert spec[0][1] == plain[0][1]  # the same tokens
    tokens = sum(len(o) for o in spec[0][1])
    st = spec[0][2]
    t_spec, t_plain = statistics.median(s[0] for s in spec), statistics.median(p[0] for p in plain)
    benchmark.extra_info.update(
        kind="speculative", workload=name, batch=batch, tokens=tokens, spec_tok_s=tokens / t_spec,
        plain_tok_s=tokens / t_plain, speedup=t_plain / t_spec, drafted=st.drafted_tokens,
        accepted=st.accepted_tokens, steps=st.steps, plain_steps=plain[0][2].steps)


def test_prime_with_and_without_speculation(benchmark):
    from havoc.llm import LLM
    from havoc.prime import generate_with_prime

    prompt = "Compare two groups using t-test: [1.5, 2.25, 3.75, 4.5, 5.25, 6.5] vs [2.5, 3.25, 4.75, 5.5, 6.25, 7.5]"
    torch.set_num_threads(2)
    on, off = LLM.load("smollm2"), LLM.load("smollm2", speculative=False)
    plain: list[dict] = []
    spec: list[dict] = []

    def ask(llm, out):
        t0 = time.perf_counter()
        r = generate_with_prime(prompt, llm=llm, max_new_tokens=384)
        out.append({"seconds": time.perf_counter() - t0, "text": r.text, "tokens": r.stats["generated_tokens"]})

    ask(on, [])
    try:
        benchmark.pedantic(lambda: ask(on, spec), setup=lambda: ask(off, plain), rounds=3, iterations=1)
    finally:
        on.close()
        off.close()
    assert spec[0]["text"] == plain[0]["text"]
    t_spec, t_plain = statistics.median(s["seconds"] for s in spec), statistics.median(p["seconds"] for p in plain)
    benchmark.extra_info.update(kind="speculative_prime", tokens=spec[0]["tokens"], speedup=t_plain / t_spec,
                                spec_s=t_spec, plain_s=t_plain)
