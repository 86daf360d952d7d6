"""The engine and the server under load, against llama.cpp's llama-server, on SmolLM2's weights (bench/serving.py
states the workload and what is timed).

- test_serving[C]: `havoc serve` vs `llama-server -np C` at C concurrent clients, rounds alternating
  (llama-server's round runs in the setup of each timed havoc round); output tokens/s, TTFT and TPOT
  p50/p99 of both in extra_info. llama-server comes from HAVOC_LLAMA_SERVER (or the build folder
  bench/RESULTS.md names); its rows are skipped where there is none.
- test_server_tax: the same requests through HTTP and on the engine in this process (8 clients).
- test_shared_system_prompt: 8 clients whose prompts share a 400-token system prompt, TTFT against the same
  suffixes without it (what the prefix cache leaves to compute).
- test_prime_speed: `havoc ask`'s work (PRIME on the spec's t-test example, tool calls and verification
  included) in generated tokens per second of wall time, against `havoc generate`'s decode rate.
- test_batch_invariance_cost: whole generations (prefill-heavy) with the engine's default batch-invariant
  steps against `batch_invariant=False` (prompts through torch's GEMMs), per dtype.

Run: pytest bench/test_serving.py --benchmark-only  (several minutes; the machine must be otherwise idle)
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("havoc_bench_serving", Path(__file__).with_name("serving.py"))
serving = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = serving  # dataclasses look their module up there
_spec.loader.exec_module(serving)

LLAMA_SERVER = os.environ.get("HAVOC_LLAMA_SERVER", "/work/llama/server-build/bin/llama-server")
THREADS = int(os.environ.get("HAVOC_BENCH_THREADS", "2"))
ROUNDS = 3
CTX_PER_SLOT = 512


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """(F32 GGUF path, tokenizer): SmolLM2 dequantized as havoc dequantizes it, for both servers."""
    spec = importlib.util.spec_from_file_location("havoc_bench_llamacpp", Path(__file__).with_name("llamacpp.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from havoc import hub

    _, tok = hub.load("smollm2")
    path = mod.export_gguf(hub.pull("smollm2"), tmp_path_factory.getbasetemp() / "smollm2-F32.gguf", "F32")
    return str(path), tok


@pytest.fixture(scope="session")
def havoc_server(weights):
    # The same KV memory as the largest llama-server below (32 slots x 512 tokens); havoc's default pool
    # (8192 tokens) preempts at 32 clients where llama-server would not have to.
    s = serving.HavocServer(weights[0], threads=THREADS, extra=["--kv-cache-tokens", str(32 * CTX_PER_SLOT)])
    yield s
    s.stop()


def _llama(weights, slots: int):
    if not os.path.exists(LLAMA_SERVER):
        pytest.skip(f"no llama-server at {LLAMA_SERVER} (set HAVOC_LLAMA_SERVER)")
    return serving.LlamaServer(LLAMA_SERVER, weights[0], slots=slots, ctx_per_slot=CTX_PER_SLOT, threads=THREADS)


def _median_summary(results) -> dict[str, float]:
    sums = [r.summary() for r in results]
    return {k: statistics.median(s[k] for s in sums) for k in sums[0]}


@pytest.mark.parametrize("concurrency", [1, 8, 32])
def test_serving(benchmark, weights, havoc_server, concurrency):
    # A fresh draw of requests per round (both servers get the same one): a repeated workload would be
    # served from the prompt caches (llama-server keeps 8 GiB of prompts in RAM across slots by default).
    workloads = [serving.make_workload(weights[1], max(8, 4 * concurrency), seed=1000 * concurrency + i)
                 for i in range(ROUNDS + 1)]
    wl = workloads[0]
    llama = _llama(weights, concurrency)
    ours, theirs = [], []
    try:
        serving.run_http(havoc_server.url, havoc_server.model, wl, concurrency)  # warm both (first requests)
        serving.run_http(llama.url, llama.model, wl, concurrency)

        def setup():
            theirs.append(serving.run_http(llama.url, llama.model, workloads[len(theirs) + 1], concurrency))

        benchmark.pedantic(lambda: ours.append(serving.run_http(havoc_server.url, havoc_server.model,
                                                                workloads[len(theirs)], concurrency)),
                           setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        llama.stop()
    h, ll = _median_summary(ours), _median_summary(theirs)
    benchmark.extra_info.update(
        kind="serving", workload=f"{wl.description} (a new draw each round)", concurrency=concurrency, havoc=h,
        llama_server=ll,
        output_tok_s_ratio=h["output_tok_s"] / ll["output_tok_s"], ttft_p99_ratio=h["ttft_p99_s"] / ll["ttft_p99_s"],
        errors=h["errors"] + ll["errors"])
    assert h["errors"] == 0 and ll["errors"] == 0


def test_server_tax(benchmark, weights, havoc_server):
    from havoc.llm import LLM

    # A new draw each round, the same for both sides: neither is served from its prefix cache.
    workloads = [serving.make_workload(weights[1], 32, seed=8000 + i) for i in range(ROUNDS + 1)]
    wl = workloads[0]
    llm = LLM.load(weights[0])
    loop = llm.loop
    http, local = [], []
    try:
        serving.run_engine(loop, wl, 8)
        benchmark.pedantic(lambda: http.append(serving.run_http(havoc_server.url, havoc_server.model,
                                                                workloads[len(local)], 8)),
                           setup=lambda: local.append(serving.run_engine(loop, workloads[len(local) + 1], 8)),
                           rounds=ROUNDS, iterations=1)
    finally:
        llm.close()
    h, e = _median_summary(http), _median_summary(local)
    benchmark.extra_info.update(kind="server_tax", workload=wl.description, http=h, in_process=e,
                                http_over_engine=h["output_tok_s"] / e["output_tok_s"])


def test_shared_system_prompt(benchmark, weights, havoc_server):
    tok = weights[1]
    # New suffixes each round (the same 400-token prefix): only the prefix may come from the cache.
    rounds = [serving.make_workload(tok, 32, prompt_min=16, prompt_max=48, output_min=16, output_max=16, seed=40 + i,
                                    shared_prefix=400) for i in range(ROUNDS + 1)]
    shared = rounds[0]
    llama = _llama(weights, 8)
    with_prefix, without, theirs = [], [], []
    try:
        serving.run_http(havoc_server.url, havoc_server.model, shared, 8)  # the prefix enters the cache

        def setup():
            wl = rounds[len(without) + 1]
            without.append(serving.run_http(havoc_server.url, havoc_server.model,
                                            serving.Workload([(p[400:], n) for p, n in wl.requests], "suffixes"), 8))
            theirs.append(serving.run_http(llama.url, llama.model, wl, 8))

        benchmark.pedantic(lambda: with_prefix.append(serving.run_http(havoc_server.url, havoc_server.model,
                                                                       rounds[len(without)], 8)),
                           setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        llama.stop()
    s, c, ll = _median_summary(with_prefix), _median_summary(without), _median_summary(theirs)
    benchmark.extra_info.update(kind="shared_prefix", workload=f"{shared.description} (new suffixes each round)",
                                shared=s, suffix_only=c, llama_server=ll,
                                ttft_p50_over_suffix_only=s["ttft_p50_s"] / c["ttft_p50_s"])


TTEST = "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"


def test_prime_speed(benchmark):
    """PRIME's generated tokens per second of wall time (tool calls and verification included) against
    `generate`'s decode rate in the same process: with prompt-lookup drafts (the default of both) and, as a
    second baseline, without them (the story prompt makes SmolLM2 repeat itself, which drafts predict)."""
    from havoc.llm import LLM
    from havoc.prime import generate_with_prime

    torch.set_num_threads(THREADS)
    llm = LLM.load("smollm2")
    no_drafts = LLM.load("smollm2", speculative=False)
    plain: list[float] = []
    undrafted: list[float] = []

    def generate_rate():
        for model, rates in ((llm, plain), (no_drafts, undrafted)):
            out = model.generate("Once upon a time", max_new_tokens=128, ignore_eos=True)
            rates.append(out.stats.generated_tokens / out.stats.decode_seconds)

    prime: list[dict] = []

    def ask():
        prime.append(generate_with_prime(TTEST, llm=llm, max_new_tokens=384).stats)

    generate_rate()
    ask()
    try:
        benchmark.pedantic(ask, setup=generate_rate, rounds=ROUNDS, iterations=1)
    finally:
        llm.close()
        no_drafts.close()
    rates = [s["generated_tokens"] / s["seconds"] for s in prime[1:]]
    benchmark.extra_info.update(kind="prime_speed", prime_tok_s=statistics.median(rates),
                                generate_tok_s=statistics.median(plain[1:]),
                                ratio=statistics.median(rates) / statistics.median(plain[1:]),
                                generate_no_drafts_tok_s=statistics.median(undrafted[1:]),
                                ratio_no_drafts=statistics.median(rates) / statistics.median(undrafted[1:]),
                                prime_tokens=statistics.median(s["generated_tokens"] for s in prime[1:]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_invariance_cost(benchmark, weights, dtype):
    from havoc import hub
    from havoc.engine import Engine, SamplingParams

    model, tok = hub.load("smollm2", dtype=getattr(torch, dtype))
    wl = serving.make_workload(tok, 8, prompt_min=200, prompt_max=300, output_min=32, output_max=32, seed=5)

    def run(invariant: bool) -> float:
        e = Engine(model, tok, batch_invariant=invariant, kv_cache_tokens=8192)
        for p, n in wl.requests:
            e.add_request(p, SamplingParams(max_new_tokens=n, ignore_eos=True))
        t0 = time.perf_counter()
        while e.has_unfinished():
            e.step()
        return time.perf_counter() - t0

    run(True), run(False)
    theirs: list[float] = []
    benchmark.pedantic(lambda: run(True), setup=lambda: theirs.append(run(False)), rounds=ROUNDS, iterations=1)
    ours = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(kind="batch_invariance", dtype=dtype, workload=wl.description,
                                invariant_s=ours, torch_prefill_s=statistics.median(theirs),
                                cost=ours / statistics.median(theirs))


@pytest.mark.parametrize("chunk", [64, 128, 256, 512, 1024])
def test_chunk_size(benchmark, chunk):
    """A 1536-token prompt entering beside a running stream: its prefill rate, and the longest pause the
    stream sees (the step time), per step budget (`max_batch_tokens`)."""
    from havoc import hub
    from havoc.engine import Engine, SamplingParams

    torch.set_num_threads(THREADS)
    model, tok = hub.load("smollm2")
    text = (Path(__file__).with_name("data") / "heldout.txt").read_text(encoding="utf-8")
    long = (tok.encode(text) * 3)[:1536]
    stalls: list[float] = []

    def run():
        e = Engine(model, tok, kv_cache_tokens=4096, max_batch_tokens=chunk, speculative=False)
        stream = e.add_request(tok.encode("Once upon a time"), SamplingParams(max_new_tokens=2000, ignore_eos=True))
        e.step()
        r = e.add_request(long, SamplingParams(max_new_tokens=1))
        t0 = time.perf_counter()
        worst = 0.0
        while not r.finished:
            s = time.perf_counter()
            e.step()
            worst = max(worst, time.perf_counter() - s)
        e.abort(stream)
        stalls.append(worst)
        return time.perf_counter() - t0

    run()
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    t = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(kind="chunk_size", chunk=chunk, prompt_tokens=len(long),
                                prefill_tok_s=len(long) / t, worst_step_s=statistics.median(stalls[1:]))
