"""SmolLM2-135M on CPU: havoc vs transformers on the same weights, in the same process.

- prefill: one 512-token prompt to its next-token logits (tokens/s);
- decode: greedy decoding of 32 tokens for a batch of 1, 8 or 32 prompts, after a prefill that is not
  timed (tokens/s over the whole batch).

havoc runs its generation loop (`havoc.generation.stream_ids`: sampling, stop checks and all);
transformers runs its fastest eager loop: model forward with its default DynamicCache and an argmax,
without `generate()`'s extra machinery. Each row also records:

- matmul_floor_ms: the same step's matrix products alone, back to back (same weights, same shapes), so
  overhead_ms = step time - floor is the per-token cost of everything else (Python, small ops);
- peak_extra_mb: peak resident memory above the weights during one run (KV cache, activations, logits).

Run: pytest bench --benchmark-only   (bench/report.py turns --benchmark-json output into RESULTS.md rows)
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from havoc.generation import SamplingParams, stream_ids

NEW_TOKENS = 32
PROMPT_TOKENS = 16
PREFILL_TOKENS = 512
ROUNDS = {1: 5, 8: 4, 32: 3}


def _prompts(tokenizer, text: str, batch: int, length: int) -> list[list[int]]:
    ids = tokenizer.encode(text)
    assert len(ids) >= length + batch, "sample text too short"
    return [ids[i : i + length] for i in range(batch)]  # distinct prompts of equal length


def _step_weights(engine: str, model) -> list[torch.Tensor]:
    if engine == "havoc":
        ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        return ws + [model.lm_head_weight]
    ws = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    return ws + [model.lm_head.weight]


def matmul_floor_ms(weights: list[torch.Tensor], batch: int, repeats: int = 5) -> float:
    """Median time of one decode step's matrix products alone (x @ W.T for every W), in ms."""
    xs = {w.shape[1]: torch.randn(batch, 1, w.shape[1], dtype=w.dtype) for w in weights}
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            for w in weights:
                F.linear(xs[w.shape[1]], w)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1e3


def _havoc_decode(model, prompts):
    params = SamplingParams(max_new_tokens=NEW_TOKENS + 1, ignore_eos=True)

    def setup():
        gen = stream_ids(model, prompts, params)
        next(gen)  # prefill and the first token: not timed
        return (gen,), {}

    def run(gen):
        steps = sum(1 for _ in gen)
        assert steps == NEW_TOKENS

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


@pytest.mark.parametrize("batch", [1, 8, 32])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("engine", ["havoc", "transformers"])
def test_decode(benchmark, engines, smollm2, sample_text, peak_extra_mb, engine, dtype, batch):
    model = engines(engine, dtype)
    prompts = _prompts(smollm2[1], sample_text, batch, PROMPT_TOKENS)
    setup, run = (_havoc_decode if engine == "havoc" else _hf_decode)(model, prompts)
    benchmark.group = f"decode {dtype} batch {batch}"
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS[batch], iterations=1, warmup_rounds=1)
    median_s = benchmark.stats.stats.median
    step_ms = median_s / NEW_TOKENS * 1e3
    floor = matmul_floor_ms(_step_weights(engine, model), batch)

    def once():
        args, _ = setup()
        run(*args)

    benchmark.extra_info.update(
        kind="decode", engine=engine, dtype=dtype, batch=batch,
        tokens_per_s=batch * NEW_TOKENS / median_s, step_ms=step_ms,
        matmul_floor_ms=floor, overhead_ms=step_ms - floor, peak_extra_mb=peak_extra_mb(once),
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("engine", ["havoc", "transformers"])
def test_prefill(benchmark, engines, smollm2, sample_text, peak_extra_mb, engine, dtype):
    model = engines(engine, dtype)
    ids = torch.tensor(_prompts(smollm2[1], sample_text, 1, PREFILL_TOKENS))

    if engine == "havoc":
        def setup():
            return (model.new_cache(1, PREFILL_TOKENS + 1),), {}

        def run(cache):
            with torch.inference_mode():
                model(ids, cache=cache, logits_to_keep=1)
    else:
        def setup():
            return (), {}

        def run():
            with torch.inference_mode():
                model(ids, use_cache=True, logits_to_keep=1)

    benchmark.group = f"prefill {dtype} {PREFILL_TOKENS} tokens"
    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1, warmup_rounds=1)

    def once():
        args, _ = setup()
        run(*args)

    benchmark.extra_info.update(
        kind="prefill", engine=engine, dtype=dtype, batch=1,
        tokens_per_s=PREFILL_TOKENS / benchmark.stats.stats.median, peak_extra_mb=peak_extra_mb(once),
    )
