"""Prompt-lookup speculative decoding in the engine: tokens/s with drafts against the same engine without, on
SmolLM2, greedy, same process, rounds alternating (the baseline's round runs in the setup of each timed one).

Workloads: copy-heavy — PRIME's own work on the spec's t-test example (its tool calls copy the prompt's
lists), a code edit that rewrites a function, a summary quoting its source — and one with nothing to copy
(a poem). Each row checks the outputs are identical (speculation never changes a token) and records the
draft acceptance and tokens per step. Batch 1 (the memory-bound case) and 8 requests at once.

Against llama.cpp's own lookup decoding (`llama-lookup`, from the llama.cpp tree the llama-cpp-python sdist
vendors: configure with -DLLAMA_BUILD_EXAMPLES=ON and build the target `llama-lookup`; point
HAVOC_LLAMA_LOOKUP at it), batch 1, on the same F32 weights and the same chat-templated prompts.

Run: pytest bench/test_speculative.py --benchmark-only
"""

from __future__ import annotations

import importlib.util
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

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


LLAMA_LOOKUP = os.environ.get("HAVOC_LLAMA_LOOKUP", "")


def _llama_lookup(gguf: str, prompt_file: Path, draft: int) -> dict:
    """One llama-lookup run: tokens generated and the seconds of its prompt encode plus decode."""
    out = subprocess.run([LLAMA_LOOKUP, "-m", gguf, "-f", str(prompt_file), "-n", str(TOKENS), "--temp", "0",
                          "-t", "2", "--spec-draft-n-max", str(draft)], capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    enc = re.search(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds", log)
    dec = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", log)
    if out.returncode != 0 or enc is None or dec is None:
        raise RuntimeError(f"llama-lookup failed ({out.returncode}): {log[-2000:]}")
    got = {k: int(re.search(rf"{k}\s+=\s+(\d+)", log).group(1)) for k in ("n_drafted", "n_accept")}
    return {"tokens": int(dec.group(1)), "seconds": float(enc.group(2)) + float(dec.group(2)), **got}


@pytest.mark.skipif(not os.path.exists(LLAMA_LOOKUP), reason="set HAVOC_LLAMA_LOOKUP to a llama-lookup binary")
@pytest.mark.parametrize("name", list(PROMPTS))
def test_against_llama_lookup(benchmark, model_tok, tmp_path_factory, name):
    from havoc import hub

    model, tok = model_tok
    spec = importlib.util.spec_from_file_location("havoc_bench_llamacpp", Path(__file__).with_name("llamacpp.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = tmp_path_factory.getbasetemp()
    gguf = base / "smollm2-F32.gguf"
    if not gguf.exists():
        mod.export_gguf(hub.pull("smollm2"), gguf, "F32")
    text = tok.apply_chat_template([{"role": "user", "content": PROMPTS[name]}], add_generation_prompt=True)
    prompt_file = base / f"{name}.txt"
    prompt_file.write_text(text)
    ids = tok.encode(text, add_bos=False)
    theirs: list[dict] = []
    ours: list[tuple] = []
    _run(model, tok, [ids], True)
    benchmark.pedantic(lambda: ours.append(_run(model, tok, [ids], True)),
                       setup=lambda: theirs.append(_llama_lookup(str(gguf), prompt_file, MAX_DRAFT_LLAMA)),
                       rounds=3, iterations=1)
    tokens = len(ours[0][1][0])
    t_ours = statistics.median(o[0] for o in ours)
    t_theirs = statistics.median(t["seconds"] for t in theirs)
    l_tok_s = theirs[0]["tokens"] / t_theirs
    benchmark.extra_info.update(
        kind="vs_llama_lookup", workload=name, tokens=tokens, havoc_tok_s=tokens / t_ours, llama_tokens=theirs[0]["tokens"],
        llama_tok_s=l_tok_s, ratio=(tokens / t_ours) / l_tok_s, havoc_drafted=ours[0][2].drafted_tokens,
        havoc_accepted=ours[0][2].accepted_tokens, llama_drafted=theirs[0]["n_drafted"], llama_accepted=theirs[0]["n_accept"])


MAX_DRAFT_LLAMA = 8  # llama-lookup's draft length (havoc's MAX_DRAFT), rather than its default of 3
