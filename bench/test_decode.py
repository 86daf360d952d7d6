"""SmolLM2-135M on CPU: havoc vs transformers on the same weights, in the same process, interleaved.

- prefill: one 512-token prompt to its next-token logits (tokens/s);
- decode: greedy decoding of 32 tokens for a batch of 1, 8 or 32 prompts, after a prefill that is not
  timed (tokens/s over the whole batch); "int8" rows run havoc's bf16 model with weight-only int8 decode
  weights against transformers in bf16.

havoc runs its generation loop (`havoc.generation.stream_ids`: sampling, stop checks and all) on the paged
cache, whose decode steps are one call each into the C++ decoder (`havoc.cpu_decode`);
transformers runs its fastest eager loop: model forward with its default DynamicCache and an argmax,
without `generate()`'s extra machinery.

Rounds alternate: before each timed havoc round (pytest-benchmark's own timing), the setup runs and
times one transformers round. On a shared 2-core VM whose speed drifts by 10-30% within minutes, running
one engine's rounds after the other's measured the drift, not the engines; alternating puts both under
the same conditions. The transformers median and the ratio go in extra_info. Each row also records:

- matmul_floor_ms: the step's matrix products alone, back to back (same weights, same shapes; for havoc
  through the same dispatch; the two engines alternating), so overhead_ms = step time - floor estimates
  the per-token cost of everything else (Python, small ops, attention);
- peak_extra_mb: peak resident memory above the weights during one run (KV cache, activations, logits);
- weight_gb_s and frac_bandwidth: the weight bytes a havoc step reads (every projection and the LM head)
  per step time, and that as a fraction of this machine's read bandwidth measured in the same session
  (`memory_read_gb_s`), i.e. how close a step comes to the memory ceiling.

llama.cpp (bench/llamacpp.py: llama-cpp-python built from source for this machine, or the prebuilt
libllama of `llama-cpp-py-sync`) runs in `test_decode_llamacpp` on the same weights written back as
F32/BF16 GGUF, interleaved with havoc the same way; it is skipped where neither binding loads.

Run: pytest bench --benchmark-only   (bench/report.py turns --benchmark-json output into RESULTS.md rows)
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from havoc import _C, cpu_decode, ops
from havoc.backends import cpu
from havoc.backends.cpu import Int8Weight
from havoc.generation import SamplingParams, generate_ids, stream_ids

NEW_TOKENS = 32
PROMPT_TOKENS = 16
PREFILL_TOKENS = 512
ROUNDS = {1: 7, 8: 5, 32: 4}


def _prompts(tokenizer, text: str, batch: int, length: int) -> list[list[int]]:
    ids = tokenizer.encode(text)
    assert len(ids) >= length + batch, "sample text too short"
    return [ids[i : i + length] for i in range(batch)]  # distinct prompts of equal length


def _matmul_floors_ms(ours, theirs, repeats: int = 7) -> tuple[float, float]:
    """Median time of one step's matrix products alone, in ms, for both engines, alternating."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for _ in range(repeats + 1):
            for products, out in ((ours, times[0]), (theirs, times[1])):
                t0 = time.perf_counter()
                for fn in products:
                    fn()
                out.append(time.perf_counter() - t0)
    return statistics.median(times[0][1:]) * 1e3, statistics.median(times[1][1:]) * 1e3


def _havoc_products(model, batch, weights="auto"):
    if weights == "int8":  # the decoder's own int8 weights, through the same kernel
        ws = cpu_decode.for_model(model, weights).decode_weights()
        xs = {w.shape[1]: torch.randn(batch, w.shape[1]) for w in ws}
        return [lambda w=w: cpu.linear(xs[w.shape[1]], w) for w in ws]
    ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)] + [model.lm_head_weight]
    xs = {w.shape[1]: torch.randn(batch, 1, w.shape[1], dtype=w.dtype) for w in ws}
    return [lambda w=w: ops.linear(xs[w.shape[1]], w) for w in ws]


def _hf_products(model, batch):
    ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]  # lm_head last
    xs = {w.shape[1]: torch.randn(batch, 1, w.shape[1], dtype=w.dtype) for w in ws}
    return [lambda w=w: F.linear(xs[w.shape[1]], w) for w in ws]


def _havoc_decode(model, prompts, weights="auto"):
    # plain decoding: prompt-lookup drafts (on by default) are measured apart, in test_speculative.py
    params = SamplingParams(max_new_tokens=NEW_TOKENS + 1, ignore_eos=True, speculative=False)

    def setup():
        gen = stream_ids(model, prompts, params, cache="paged", cpu_weights=weights)
        started, seen = set(), 0
        while len(started) < len(prompts):  # prefill (in chunks of the engine's token budget at batch 32)
            events = next(gen)                # and every prompt's first token: not timed
            started.update(e.index for e in events)
            seen += len(events)
        return (gen, seen), {}

    def run(gen, seen):
        tokens = sum(len(events) for events in gen)
        assert seen + tokens == len(prompts) * (NEW_TOKENS + 1)

    return setup, run


def _hf_decode(model, prompts):
    ids = torch.tensor(prompts)

    def setup():
        with torch.inference_mode():
            out = model(ids, use_cache=True, logits_to_keep=1)
        return (out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)), {}

    def run(cache, nxt):
        with torch.inference_mode():
            for _ in range(NEW_TOKENS):
                out = model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)

    return setup, run


def _havoc_prefill(model, ids):
    def setup():
        return (model.new_cache(1, PREFILL_TOKENS + 1),), {}

    def run(cache):
        with torch.inference_mode():
            model(ids, cache=cache, logits_to_keep=1)

    return setup, run


def _hf_prefill(model, ids):
    def setup():
        return (), {}

    def run():
        with torch.inference_mode():
            model(ids, use_cache=True, logits_to_keep=1)

    return setup, run


def _interleaved(benchmark, ours, baseline, rounds: int) -> list[float]:
    """Benchmark `ours` with pytest-benchmark, timing one `baseline` round before each of its rounds."""
    (our_setup, our_run), (base_setup, base_run) = ours, baseline
    base_times: list[float] = []

    def setup():
        args, kwargs = base_setup()
        t0 = time.perf_counter()
        base_run(*args, **kwargs)
        base_times.append(time.perf_counter() - t0)
        return our_setup()

    benchmark.pedantic(our_run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    return base_times[1:]  # the first belongs to the warm-up round


def _once(setup, run):
    def work():
        args, kwargs = setup()
        run(*args, **kwargs)

    return work


@pytest.mark.parametrize("batch", [1, 8, 32])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_decode(benchmark, engines, smollm2, sample_text, peak_extra_mb, memory_read_gb_s, dtype, batch):
    model_dtype = "bfloat16" if dtype == "int8" else dtype
    weights = "int8" if dtype == "int8" else "auto"
    ours, theirs = engines("havoc", model_dtype), engines("transformers", model_dtype)
    prompts = _prompts(smollm2[1], sample_text, batch, PROMPT_TOKENS)
    havoc_fns, hf_fns = _havoc_decode(ours, prompts, weights), _hf_decode(theirs, prompts)
    benchmark.group = f"decode {dtype}"
    base_times = _interleaved(benchmark, havoc_fns, hf_fns, ROUNDS[batch])
    if benchmark.stats is None:  # --benchmark-disable: each engine ran once as a smoke test, nothing was timed
        return
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    floor_h, floor_t = _matmul_floors_ms(_havoc_products(ours, batch, weights), _hf_products(theirs, batch))
    step_h, step_t = ours_s / NEW_TOKENS * 1e3, base_s / NEW_TOKENS * 1e3
    weight_gb_s = cpu_decode.for_model(ours, weights).bytes_per_step() / (step_h * 1e-3) / 1e9
    benchmark.extra_info.update(
        kind="decode", dtype=dtype, batch=batch, baseline="transformers",
        tokens_per_s=batch * NEW_TOKENS / ours_s, baseline_tokens_per_s=batch * NEW_TOKENS / base_s,
        ratio=base_s / ours_s, step_ms=step_h, baseline_step_ms=step_t,
        matmul_floor_ms=floor_h, baseline_matmul_floor_ms=floor_t,
        overhead_ms=step_h - floor_h, baseline_overhead_ms=step_t - floor_t,
        weight_gb_s=weight_gb_s, memory_read_gb_s=memory_read_gb_s, frac_bandwidth=weight_gb_s / memory_read_gb_s,
        peak_extra_mb=peak_extra_mb(_once(*havoc_fns)), baseline_peak_extra_mb=peak_extra_mb(_once(*hf_fns)),
    )


def _llamacpp_decode(decoder, prompts):
    def setup():
        return (decoder.prefill(prompts),), {}

    def run(nxt):
        for _ in range(NEW_TOKENS):
            nxt = decoder.step(nxt)

    return setup, run


def _weight_gb_s(model, weights: str, seconds_per_step: float) -> float:
    """GB/s of decode weights streamed (every projection and the LM head, int8 scales included)."""
    return cpu_decode.for_model(model, weights).bytes_per_step() / seconds_per_step / 1e9


@pytest.mark.parametrize("batch", [1, 8, 32])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_decode_llamacpp(benchmark, engines, smollm2, sample_text, llamacpp, memory_read_gb_s, dtype, batch):
    """havoc's generation loop against llama.cpp's batched decode on the same weights: F32 and BF16 GGUFs
    of the fp32 weights, and for int8 havoc's int8 decode weights (of the bf16 model) against llama.cpp's
    Q8_0 of the fp32 ones. Both stream the same number of weight bytes per step in every dtype with havoc's
    default int8 group (Q8_0: 34 bytes per 32 weights; havoc's int8: 64 bytes and a 4-byte scale per 64);
    llama.cpp's int8 GB/s is scaled to its own bytes where the group differs."""
    model_dtype = "bfloat16" if dtype == "int8" else dtype
    weights = "int8" if dtype == "int8" else "auto"
    ours = engines("havoc", model_dtype)
    prompts = _prompts(smollm2[1], sample_text, batch, PROMPT_TOKENS)
    theirs = llamacpp(dtype, batch)
    benchmark.group = f"decode {dtype} vs llama.cpp"
    base_times = _interleaved(
        benchmark, _havoc_decode(ours, prompts, weights), _llamacpp_decode(theirs, prompts), ROUNDS[batch]
    )
    if benchmark.stats is None:  # --benchmark-disable: each engine ran once as a smoke test, nothing was timed
        return
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    gb_s = _weight_gb_s(ours, weights, ours_s / NEW_TOKENS)
    # llama.cpp's bytes per weight over havoc's: 1 but for int8 in groups other than Q8_0's 34 bytes per 32
    bytes_ratio = (34 / 32) / (1 + 4 / cpu_decode.for_model(ours, weights).group) if dtype == "int8" else 1.0
    benchmark.extra_info.update(
        kind="decode", dtype=dtype, batch=batch, baseline="llama.cpp", baseline_binding=theirs.binding,
        baseline_format={"float32": "F32", "bfloat16": "BF16", "int8": "Q8_0"}[dtype]
        + ("" if theirs.extra_bufts else ", extra buffer types off"),
        tokens_per_s=batch * NEW_TOKENS / ours_s, baseline_tokens_per_s=batch * NEW_TOKENS / base_s,
        ratio=base_s / ours_s, step_ms=ours_s / NEW_TOKENS * 1e3, baseline_step_ms=base_s / NEW_TOKENS * 1e3,
        weight_gb_s=gb_s, baseline_weight_gb_s=gb_s * ours_s / base_s * bytes_ratio, memory_read_gb_s=memory_read_gb_s,
        frac_bandwidth=gb_s / memory_read_gb_s, kernel_variant=cpu.auto_isa(),
    )


def _llamacpp_prefill(decoder, ids):
    def setup():
        return (), {}

    def run():
        decoder.prefill([ids])

    return setup, run


def _prefill_vs_llamacpp(benchmark, kind: str, dtype: str, ours, llamacpp, ids: list[int]) -> None:
    """Time `ours` (setup, run) on the PREFILL_TOKENS prompt `ids`, alternating with llama.cpp's prefill of
    it on the same weights, and file both rates."""
    theirs = llamacpp(dtype, 1, context=2 * PREFILL_TOKENS)
    benchmark.group = f"{kind.replace('_', ' ')} {PREFILL_TOKENS} tokens vs llama.cpp"
    base_times = _interleaved(benchmark, ours, _llamacpp_prefill(theirs, ids), 5)
    if benchmark.stats is None:
        return
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    benchmark.extra_info.update(
        kind=kind, dtype=dtype, batch=1, baseline="llama.cpp", baseline_binding=theirs.binding,
        tokens_per_s=PREFILL_TOKENS / ours_s, baseline_tokens_per_s=PREFILL_TOKENS / base_s, ratio=base_s / ours_s,
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prefill_llamacpp(benchmark, engines, smollm2, sample_text, llamacpp, dtype):
    """One 512-token prompt to its next-token logits: havoc's model forward (its CPU linear picks the fastest
    product per shape: oneDNN's AMX bf16 GEMM here, or the C++ kernel) against llama.cpp's llama_decode of
    the prompt as one batch, same weights, alternating."""
    ids = _prompts(smollm2[1], sample_text, 1, PREFILL_TOKENS)
    _prefill_vs_llamacpp(benchmark, "prefill", dtype, _havoc_prefill(engines("havoc", dtype), torch.tensor(ids)),
                         llamacpp, ids[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_engine_prefill_llamacpp(benchmark, engines, smollm2, sample_text, llamacpp, dtype):
    """The same 512-token prompt through the engine, as `LLM` / `havoc serve` run it (the C++ decode step:
    the prompt in chunks of the engine's token budget, its rows attending as a prefill, batch invariant), to
    its first token, against llama.cpp's llama_decode of the prompt, alternating."""
    from havoc.engine import Engine, SamplingParams

    ids = _prompts(smollm2[1], sample_text, 1, PREFILL_TOKENS)[0]
    engine = Engine(engines("havoc", dtype), None, kv_cache_tokens=2 * PREFILL_TOKENS, prefix_caching=False,
                    speculative=False)
    params = SamplingParams(max_new_tokens=1, ignore_eos=True)

    def setup():
        return (), {}

    def run():
        req = engine.add_request(ids, params)
        while engine.has_unfinished():
            engine.step()
        assert req.num_output == 1

    _prefill_vs_llamacpp(benchmark, "engine_prefill", dtype, (setup, run), llamacpp, ids)


@pytest.mark.op("linear", "cpu")
@pytest.mark.parametrize("batch", [1, 8, 32])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_linear(benchmark, engines, memory_read_gb_s, dtype, batch):
    """One decode step's products alone (every projection and the LM head of SmolLM2, `batch` activation
    rows): havoc's C++ kernel on the variant "auto" picks, against torch's F.linear on the same weights (in
    bf16 for int8), alternating; extra_info also has the median of every variant this CPU runs, measured
    alternating among themselves, and the GB/s of weights each streams."""
    model = engines("havoc", "bfloat16" if dtype == "int8" else dtype)
    weights = "int8" if dtype == "int8" else "auto"
    ws = cpu_decode.for_model(model, weights).decode_weights()
    tw = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)] + [model.lm_head_weight]
    xs = {K: torch.randn(batch, K) for K in {w.shape[1] for w in ws}}
    txs = {K: x.to(tw[0].dtype) for K, x in xs.items()}
    specs = [(cpu.weight_spec(w), w.shape) for w in ws]
    # the variants that read only row-major int8 bytes get the same weights in that layout
    rows_specs = [(cpu.weight_spec(w.with_layout("rows") if isinstance(w, Int8Weight) else w), w.shape) for w in ws]
    outs = {N: np.empty((batch, N), np.float32) for N in {w.shape[0] for w in ws}}

    def step(isa):
        mine = specs if isa == "auto" or _C.reads_interleaved(isa) else rows_specs

        def run():
            for spec, (N, K) in mine:
                _C.linear(xs[K].numpy(), *spec[:4], cols=K, out=outs[N], isa=isa)

        return run

    def torch_step():
        with torch.inference_mode():
            for w in tw:
                F.linear(txs[w.shape[1]], w)

    benchmark.group = f"linear {dtype} batch {batch}"
    base_times = _interleaved(benchmark, (lambda: ((), {}), step("auto")), (lambda: ((), {}), torch_step), 9)
    if benchmark.stats is None:
        return
    nbytes = cpu_decode.for_model(model, weights).bytes_per_step()
    variants: dict[str, list[float]] = {v: [] for v in cpu.isas()}
    for _ in range(7):
        for v, times in variants.items():
            t0 = time.perf_counter()
            step(v)()
            times.append(time.perf_counter() - t0)
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    benchmark.extra_info.update(
        kind="linear", dtype=dtype, batch=batch, baseline="torch F.linear", variant=cpu.auto_isa(),
        ms=ours_s * 1e3, baseline_ms=base_s * 1e3, ratio=base_s / ours_s, weight_gb_s=nbytes / ours_s / 1e9,
        memory_read_gb_s=memory_read_gb_s,
        variants_ms={v: statistics.median(t[1:]) * 1e3 for v, t in variants.items()},
        int8_layout=cpu_decode.for_model(model, weights).layout if weights == "int8" else None,
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prefill(benchmark, engines, smollm2, sample_text, peak_extra_mb, dtype):
    ours, theirs = engines("havoc", dtype), engines("transformers", dtype)
    ids = torch.tensor(_prompts(smollm2[1], sample_text, 1, PREFILL_TOKENS))
    havoc_fns, hf_fns = _havoc_prefill(ours, ids), _hf_prefill(theirs, ids)
    benchmark.group = f"prefill {PREFILL_TOKENS} tokens"
    base_times = _interleaved(benchmark, havoc_fns, hf_fns, rounds=5)
    if benchmark.stats is None:  # --benchmark-disable: each engine ran once as a smoke test, nothing was timed
        return
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    benchmark.extra_info.update(
        kind="prefill", dtype=dtype, batch=1, baseline="transformers",
        tokens_per_s=PREFILL_TOKENS / ours_s, baseline_tokens_per_s=PREFILL_TOKENS / base_s, ratio=base_s / ours_s,
        peak_extra_mb=peak_extra_mb(_once(*havoc_fns)), baseline_peak_extra_mb=peak_extra_mb(_once(*hf_fns)),
    )


CHAT_TURNS = ["Name three primes.", "Three more?", "Which is the largest?", "Add them up.", "Is the sum prime?"]


def test_chat_prefix_cache(benchmark, engines, smollm2):
    """A 5-turn chat (a ~300-token system prompt, 16 greedy tokens per reply) through `LLM.chat`: the kept
    paged cache (the default: each turn skips the blocks of the earlier ones) against an LLM without one,
    on the same fp32 model, alternating round by round; seconds per whole chat."""
    from havoc import LLM

    model, tokenizer = engines("havoc", "float32"), smollm2[1]
    system = {"role": "system", "content": "You are a careful assistant who checks every step. " * 30}

    def chat_setup(llm):
        def setup():
            llm.clear_cache()  # every round starts from an empty cache: the chat itself is what is timed
            return (llm,), {}

        return setup

    last_prompt = [0]

    def chat(llm):
        messages = [system]
        for turn in CHAT_TURNS:
            messages.append({"role": "user", "content": turn})
            reply = llm.chat(messages, max_new_tokens=16, ignore_eos=True)
            messages.append({"role": "assistant", "content": reply.text})
        last_prompt[0] = len(reply.prompt_ids)
        return reply

    kept, plain = LLM(model, tokenizer), LLM(model, tokenizer, prefix_cache=False)
    benchmark.group = "chat, 5 turns"
    base_times = _interleaved(benchmark, (chat_setup(kept), chat), (chat_setup(plain), chat), rounds=5)
    if benchmark.stats is None:
        return
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    benchmark.extra_info.update(
        kind="chat", dtype="float32", turns=len(CHAT_TURNS), baseline="LLM(prefix_cache=False)",
        seconds=ours_s, baseline_seconds=base_s, ratio=base_s / ours_s,
        last_prompt_tokens=last_prompt[0],
    )


@pytest.mark.parametrize("batch, prompt_tokens", [(8, 16), (32, 16), (8, 200), (32, "8-64"), (8, "100-300")])
def test_generate_default_vs_static(benchmark, engines, smollm2, sample_text, batch, prompt_tokens):
    """Whole `generate_ids` calls (prefill + 32 greedy tokens) on fp32 SmolLM2: the default cache="auto"
    (paged cache, prefill in (B, T) batches or packed rows, C++ decode steps) against cache="static"
    (left-padded batch, one prefill forward, the model's forward per step), alternating round by round;
    tokens/s of new tokens. "lo-hi" prompt tokens: lengths drawn uniformly from [lo, hi] (seed 0)."""
    model = engines("havoc", "float32")
    if isinstance(prompt_tokens, str):
        lo, hi = map(int, prompt_tokens.split("-"))
        ids = smollm2[1].encode(sample_text)
        lengths = np.random.default_rng(0).integers(lo, hi + 1, batch)
        assert len(ids) >= hi + batch, "sample text too short"
        prompts = [ids[i : i + int(n)] for i, n in enumerate(lengths)]
    else:
        prompts = _prompts(smollm2[1], sample_text, batch, prompt_tokens)
    params = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)

    def run(cache):
        return generate_ids(model, prompts, params, cache=cache)

    assert run("auto") == run("static")  # the same greedy tokens
    benchmark.group = f"generate {batch} x {prompt_tokens} tokens"
    base_times = _interleaved(benchmark, (lambda: (("auto",), {}), run), (lambda: (("static",), {}), run), rounds=3)
    if benchmark.stats is None:
        return
    ours_s, base_s = benchmark.stats.stats.median, statistics.median(base_times)
    benchmark.extra_info.update(
        kind="generate", dtype="float32", batch=batch, prompt_tokens=prompt_tokens, baseline='cache="static"',
        tokens_per_s=batch * NEW_TOKENS / ours_s, baseline_tokens_per_s=batch * NEW_TOKENS / base_s, ratio=base_s / ours_s,
    )
