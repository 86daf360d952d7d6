"""The engine (havoc.engine): requests joining and leaving, chunked prefill, preemption and recompute, aborts,
prefix hits across requests, forks of held requests, per-request sampling, constraints and hooks, batch
invariance (a request's logits are the same bits whatever else runs), and the threaded / asyncio faces."""

from __future__ import annotations

import asyncio
import json
import threading

import jsonschema
import pytest
import torch

from havoc import GenerationError, HavocModel, ModelConfig, SamplingParams
from havoc.cache import PagedKVCache
from havoc.engine import Engine, EngineLoop, GrammarConstraint, ToolCallConstraint
from havoc.generation import generate_ids
from havoc.kernels import reference  # noqa: F401  (the installed package)

GREEDY = SamplingParams(max_new_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = HavocModel(ModelConfig.from_preset("tiny", max_seq_len=1024, tie_embeddings=False)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init: varied greedy paths
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(6)
    return m


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A tiny random model with a real byte-level tokenizer and chat template (text, stop strings)."""
    from .gguf_files import write_tiny_gguf

    from havoc.llm import LLM

    path = write_tiny_gguf(tmp_path_factory.mktemp("engine") / "tiny.gguf", meta={"llama.context_length": 512})
    return LLM.load(path)


def tokens(n: int, seed: int, vocab: int = 384) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def run(engine: Engine, reqs=None) -> list:
    """Step until idle; returns every output."""
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    return outs


def alone(model, prompt, params=GREEDY) -> list[int]:
    e = Engine(model, None, kv_cache_tokens=1024)
    r = e.add_request(prompt, params)
    run(e)
    return r.output_ids


# ------------------------------------------------------------------------------------------ the schedule
def test_requests_join_and_leave_between_steps(model):
    e = Engine(model, None, kv_cache_tokens=512)
    short = e.add_request(tokens(10, 1), SamplingParams(max_new_tokens=3, ignore_eos=True))
    e.step()
    e.step()
    assert short.num_output == 2 and e.num_running == 1
    late = e.add_request(tokens(20, 2), GREEDY)
    outs = e.step()  # the late request joins the running batch: its prefill and short's decode, one step
    assert {o.request for o in outs} == {short, late}
    assert short.finished and short.finish_reason == "length" and short.seq_id is None
    used = e.cache.stats()["used"]
    assert used == e.cache.blocks_for(late.num_computed)  # the finished request's blocks are back already
    run(e)
    assert short.output_ids == alone(model, tokens(10, 1), SamplingParams(max_new_tokens=3, ignore_eos=True))
    assert late.output_ids == alone(model, tokens(20, 2))
    assert len(e.cache) == 0 and e.cache.stats()["used"] == 0
    e.cache.check_invariants()


def test_long_prompts_prefill_in_chunks_between_decode_steps(model):
    e = Engine(model, None, kv_cache_tokens=1024, max_batch_tokens=32)
    running = e.add_request(tokens(8, 3), SamplingParams(max_new_tokens=40, ignore_eos=True))
    e.step()
    long = e.add_request(tokens(300, 4), GREEDY)
    steps = 0
    while long.first_token_time is None:
        before = running.num_output
        e.step()
        steps += 1
        assert running.num_output == before + 1  # the stream never pauses for the long prompt
    assert steps == -(-300 // 31)  # 31 prompt tokens per step beside the one decode token
    run(e)
    assert long.output_ids == alone(model, tokens(300, 4))  # chunking changes nothing


def test_prefix_hits_across_requests_and_waiting_for_a_prefix_being_computed(model):
    shared = tokens(40, 7)
    prompts = [shared, tokens(40, 8), shared + [3, 4], tokens(13, 9)]
    e = Engine(model, None, kv_cache_tokens=512, speculative=False)  # (drafts would add to the tokens computed)
    reqs = [e.add_request(p, SamplingParams(max_new_tokens=6, ignore_eos=True)) for p in prompts]
    e.step()
    # prompt 2's first 32 tokens are on prompt 0's blocks, computed in this very step: it waits, not recomputes
    assert [r.admitted for r in reqs] == [True, True, False, True]
    e.step()
    assert reqs[2].num_cached_tokens == 32
    run(e)
    assert e.stats.computed_tokens == 40 + 40 + 13 + 10 + 4 * 5  # prompts once, then 5 decode steps each
    for p, r in zip(prompts, reqs):
        assert r.output_ids == alone(model, p, SamplingParams(max_new_tokens=6, ignore_eos=True))
    later = e.add_request(shared + [9], SamplingParams(max_new_tokens=2, ignore_eos=True))
    run(e)
    assert later.num_cached_tokens == 32  # a later request still finds the blocks (kept in the cache)


def test_preemption_recomputes_and_loses_nothing(model):
    prompts = [tokens(20 + 7 * i, 10 + i) for i in range(8)]
    e = Engine(model, None, kv_cache_tokens=160, block_size=8, max_batch_tokens=64)
    reqs = [e.add_request(p, SamplingParams(max_new_tokens=30, ignore_eos=True)) for p in prompts]
    run(e)
    assert e.stats.preemptions > 0
    assert all(r.finish_reason == "length" and r.num_output == 30 for r in reqs)
    for p, r in zip(prompts, reqs):  # recomputed requests continue exactly where they were
        assert r.output_ids == alone(model, p, SamplingParams(max_new_tokens=30, ignore_eos=True))
    e.cache.check_invariants()
    assert len(e.cache) == 0 and e.cache.stats()["used"] == 0


def test_abort_frees_blocks_at_once(model):
    e = Engine(model, None, kv_cache_tokens=256)
    a = e.add_request(tokens(30, 20), SamplingParams(max_new_tokens=50, ignore_eos=True))
    b = e.add_request(tokens(30, 21), SamplingParams(max_new_tokens=50, ignore_eos=True))
    e.step()
    waiting = e.add_request(tokens(5, 22), GREEDY)
    e.abort(a)
    e.abort(waiting)
    assert a.seq_id is None and e.num_running == 1 and e.num_waiting == 0
    assert e.cache.stats()["used"] == e.cache.blocks_for(b.num_computed)
    outs = e.step()
    assert {(o.request.id, o.finish_reason) for o in outs if o.finished} == {(a.id, "abort"), (waiting.id, "abort")}
    e.abort(b)
    run(e)
    assert len(e.cache) == 0 and e.cache.stats()["used"] == 0
    e.cache.check_invariants()


# ------------------------------------------------------------------------------------------ numerics
def _capture(store):
    def hook(ids, logits):
        store.append(logits.clone())

    return hook


@pytest.mark.parametrize("dtype, weights", [(torch.float32, "auto"), (torch.bfloat16, "auto"), (torch.float32, "int8")])
def test_batch_invariance_logits_are_the_same_bits_under_load(model, dtype, weights):
    """A request's logits at every step equal, bit for bit, those it gets alone — whatever runs beside it,
    however its prompt is chunked, after a preemption (fp32, and bf16 on whichever bf16 kernel this CPU
    runs: AMX tiles, AVX512-BF16 or widening)."""
    import copy

    model = copy.deepcopy(model).to(dtype)
    target = tokens(70, 30)
    solo: list[torch.Tensor] = []
    e = Engine(model, None, kv_cache_tokens=1024, cpu_weights=weights)
    e.add_request(target, SamplingParams(max_new_tokens=10, ignore_eos=True), logits_hook=_capture(solo))
    run(e)
    for kwargs in (dict(kv_cache_tokens=1024), dict(kv_cache_tokens=1024, max_batch_tokens=13),
                   dict(kv_cache_tokens=240, max_batch_tokens=48)):  # (block size stays 16: attention's tiles follow it)
        got: list[torch.Tensor] = []
        e = Engine(model, None, cpu_weights=weights, **kwargs)
        others = [e.add_request(tokens(10 + 9 * i, 40 + i), SamplingParams(max_new_tokens=12, ignore_eos=True))
                  for i in range(5)]
        r = e.add_request(target, SamplingParams(max_new_tokens=10, ignore_eos=True), logits_hook=_capture(got))
        others.append(e.add_request(tokens(50, 50), SamplingParams(max_new_tokens=8, temperature=1.0, seed=1)))
        run(e)
        assert len(got) == len(solo) == 10 and r.finish_reason == "length", kwargs
        for a, b in zip(solo, got):
            assert torch.equal(a, b), kwargs
    assert e.stats.preemptions > 0  # the last setting did preempt


def test_engine_matches_the_static_cache_and_the_reference_path(model):
    from havoc import ops

    prompts = [tokens(n, 60 + n) for n in (1, 5, 17, 33, 64)]
    want = generate_ids(model, prompts, GREEDY, cache="static")
    assert generate_ids(model, prompts, GREEDY) == want
    with ops.use_backend("reference"):  # the model's forward over the paged cache (the non-C++ runner)
        e = Engine(model, None, kv_cache_tokens=512)
        reqs = [e.add_request(p, GREEDY) for p in prompts]
        run(e)
    assert [r.output_ids for r in reqs] == want
    e = Engine(model, None, kv_cache_tokens=512, batch_invariant=False)  # prompts through torch's GEMMs
    reqs = [e.add_request(p, GREEDY) for p in prompts]
    run(e)
    assert [r.output_ids for r in reqs] == want


def test_sampling_depends_on_the_request_alone(model):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=11, ignore_eos=True)
    one = alone(model, tokens(9, 70), params)
    e = Engine(model, None, kv_cache_tokens=512)
    for i in range(4):
        e.add_request(tokens(9 + i, 71 + i), SamplingParams(max_new_tokens=10, temperature=1.0, seed=i))
    r = e.add_request(tokens(9, 70), params)
    run(e)
    assert r.output_ids == one
    assert alone(model, tokens(9, 70), SamplingParams(**{**params.__dict__, "seed": 12})) != one


def test_penalties_logprobs_and_hooks(model):
    plain = alone(model, [5, 5, 5], SamplingParams(max_new_tokens=20, ignore_eos=True))
    assert 5 in plain
    penal = alone(model, [5, 5, 5], SamplingParams(max_new_tokens=20, ignore_eos=True, frequency_penalty=2.0,
                                                   presence_penalty=2.0))
    assert penal != plain
    e = Engine(model, None, kv_cache_tokens=256)
    banned = plain[0]

    def ban(ids, logits):
        logits[banned] = float("-inf")

    r = e.add_request([5, 5, 5], SamplingParams(max_new_tokens=5, ignore_eos=True, logprobs=3), logits_hook=ban)
    run(e)
    assert banned not in r.output_ids
    assert len(r.logprobs) == 5 and all(len(lp.top) == 3 and lp.logprob <= 0 for lp in r.logprobs)
    assert [lp.token_id for lp in r.logprobs] == r.output_ids


def test_a_failing_hook_ends_only_its_request(model):
    e = Engine(model, None, kv_cache_tokens=256)

    def broken(ids, logits):
        raise RuntimeError("boom")

    bad = e.add_request(tokens(5, 80), GREEDY, logits_hook=broken)
    good = e.add_request(tokens(5, 81), GREEDY)
    run(e)
    assert bad.finish_reason == "error" and "boom" in bad.error and bad.seq_id is None
    assert good.finish_reason == "length" and good.output_ids == alone(model, tokens(5, 81))


# ------------------------------------------------------------------------------------------ forks
def test_forks_of_a_held_prompt_share_its_blocks(model):
    e = Engine(model, None, kv_cache_tokens=512, speculative=False)
    prompt = tokens(40, 90)
    holder = e.add_request(prompt, hold=True, prefill_only=True)
    run(e)
    assert holder.finished and holder.num_computed == 39 and e.stats.computed_tokens == 39
    kids = [e.add_request([], SamplingParams(max_new_tokens=6, temperature=1.0, seed=s, ignore_eos=True), parent=holder)
            for s in range(3)]
    e.release(holder)  # forks still waiting keep it until they are admitted
    run(e)
    assert e.stats.computed_tokens == 39 + 3 * (1 + 5)  # each fork: the last prompt token, then its decode
    assert e.cache.stats()["cow_copies"] >= 2  # the shared partial block was copied on write
    for s, k in enumerate(kids):
        assert k.prompt_ids == prompt and k.num_cached_tokens == 39
        assert k.output_ids == alone(model, prompt, SamplingParams(max_new_tokens=6, temperature=1.0, seed=s, ignore_eos=True))
    assert not e.held and len(e.cache) == 0


def test_a_held_request_is_continued_by_a_fork(model):
    e = Engine(model, None, kv_cache_tokens=512)
    first = e.add_request(tokens(20, 91), SamplingParams(max_new_tokens=5, ignore_eos=True), hold=True)
    run(e)
    more = e.add_request([7, 8], SamplingParams(max_new_tokens=4, ignore_eos=True), parent=first)
    run(e)
    assert more.prompt_ids == first.ids + [7, 8]
    assert more.num_cached_tokens == len(first.ids) - 1
    assert more.output_ids == alone(model, first.ids + [7, 8], SamplingParams(max_new_tokens=4, ignore_eos=True))
    with pytest.raises(GenerationError, match="parent must be"):
        e.add_request([1], parent=more)  # not held
    e.release(first)
    assert len(e.cache) == 0


def test_held_sequences_give_way_when_the_pool_runs_out(model):
    e = Engine(model, None, kv_cache_tokens=128, block_size=8)
    held = e.add_request(tokens(60, 92), hold=True, prefill_only=True)
    run(e)
    big = e.add_request(tokens(60, 93), SamplingParams(max_new_tokens=20, ignore_eos=True))
    run(e)
    assert big.finish_reason == "length" and held.seq_id is None  # dropped from the pool, still held
    fork = e.add_request([1], SamplingParams(max_new_tokens=3, ignore_eos=True), parent=held)
    run(e)
    assert fork.output_ids == alone(model, tokens(60, 92) + [1], SamplingParams(max_new_tokens=3, ignore_eos=True))


# ------------------------------------------------------------------------------------------ text
def test_stop_strings_cut_the_text_and_nothing_past_them_is_streamed(tiny_llm):
    e = Engine(tiny_llm.model, tiny_llm.tokenizer, kv_cache_tokens=256)
    prompt = tiny_llm.tokenizer.encode("hello there")
    free = e.add_request(prompt, SamplingParams(max_new_tokens=40, ignore_eos=True, temperature=1.0, seed=5))
    run(e)
    text = free.text
    stop = text[10:13]
    assert len(stop) == 3 and text.find(stop) >= 3
    r = e.add_request(prompt, SamplingParams(max_new_tokens=40, ignore_eos=True, temperature=1.0, seed=5, stop=[stop]))
    streamed = "".join(o.text for o in run(e) if o.request is r)
    assert r.finish_reason == "stop" and r.stop_reason == stop
    assert r.text == streamed == text[: text.find(stop)]


def test_json_schema_constraint_always_parses(tiny_llm):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    e = Engine(tiny_llm.model, tiny_llm.tokenizer, kv_cache_tokens=512)
    prompt = tiny_llm.tokenizer.encode("person:")
    reqs = [e.add_request(prompt, SamplingParams(max_new_tokens=60, temperature=1.0, seed=s),
                          constraint=GrammarConstraint.json_schema(tiny_llm.tokenizer, schema))
            for s in range(4)]
    run(e)
    for r in reqs:
        assert r.finish_reason == "stop" and r.forced_tokens > 0
        jsonschema.validate(json.loads(r.text), schema)


def test_tool_call_constraint_decodes_calls_under_the_schema(tiny_llm):
    fn = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}},
                                                 "required": ["city"], "additionalProperties": False}}
    from havoc.engine.constraint import tool_call_schema

    e = Engine(tiny_llm.model, tiny_llm.tokenizer, kv_cache_tokens=512)
    prompt = tiny_llm.tokenizer.encode("weather?")
    r = e.add_request(prompt, SamplingParams(max_new_tokens=150, temperature=1.0, seed=1),
                      constraint=ToolCallConstraint(tiny_llm.tokenizer, tool_call_schema([fn]), required=True))
    run(e)
    assert r.finish_reason == "stop" and r.text.startswith("<tool>") and r.text.endswith("</tool>")
    call = json.loads(r.text[len("<tool>"): -len("</tool>")])
    assert call["tool"] == "get_weather" and isinstance(call["args"]["city"], str)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_requests_are_refused_before_anything_runs(model):
    e = Engine(model, None, kv_cache_tokens=256)
    with pytest.raises(GenerationError, match="empty"):
        e.add_request([])
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        e.add_request([1, 384])
    with pytest.raises(GenerationError, match="integers"):
        e.add_request([1, 2.5])
    with pytest.raises(GenerationError, match="not text"):
        e.add_request("hello")
    with pytest.raises(GenerationError, match="KV pool holds 256"):
        e.add_request(list(range(1, 300)))
    with pytest.raises(GenerationError, match="stop strings need a tokenizer"):
        e.add_request([1], SamplingParams(stop=["x"]))
    assert not e.has_unfinished()
    with pytest.raises(ValueError, match="max_batch_tokens"):
        Engine(model, None, max_batch_tokens=0)
    with pytest.raises(ValueError, match="PagedKVCache"):
        Engine(model, None, cache="pool")


# ------------------------------------------------------------------------------------------ the loop
def test_the_loop_serves_threads_together_and_a_closed_stream_aborts(model):
    prompts = [tokens(5 + 3 * i, 100 + i) for i in range(6)]
    loop = EngineLoop(Engine(model, None, kv_cache_tokens=1024))
    results: dict[int, list[int]] = {}

    def worker(i):
        results[i] = loop.submit(prompts[i], GREEDY).result().output_ids

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(len(prompts))] == [alone(model, p) for p in prompts]
    stream = loop.submit(prompts[0], SamplingParams(max_new_tokens=500, ignore_eos=True))
    for i, _ in enumerate(stream):
        if i == 2:
            break  # the consumer walks away: the request is aborted and its blocks freed
    assert loop.call(lambda e: (e.num_running, len(e.cache))) == (0, 0)
    assert stream.request.finish_reason == "abort"
    with pytest.raises(GenerationError):
        loop.submit([], GREEDY)  # bad input raises in the caller's thread
    loop.close()


def test_the_asyncio_face(model):
    loop = EngineLoop(Engine(model, None, kv_cache_tokens=512))

    async def main():
        async def one(p):
            return [t async for out in loop.submit_async(p, GREEDY) for t in out.token_ids]

        return await asyncio.gather(*(one(tokens(6 + i, 110 + i)) for i in range(3)))

    got = asyncio.run(main())
    assert got == [alone(model, tokens(6 + i, 110 + i)) for i in range(3)]
    loop.close()


# ------------------------------------------------------------------------------------------ speculation
def test_prompt_lookup_proposes_what_followed_the_latest_match():
    from havoc.engine.speculation import lookup

    assert lookup([1, 2, 3, 9, 9, 1, 2, 3], 4)[1] == [9, 9, 1, 2]  # the trigram 1 2 3 seen before
    assert lookup([5, 1, 2, 7, 1, 2, 8, 1, 2], 2)[1] == [8, 1]  # the latest occurrence wins
    assert lookup([4, 4, 4], 3)[1] == [4]
    assert lookup([1, 2, 3], 3)[1] == [] and lookup([7], 2)[1] == []


def test_draft_plan_pays_for_its_rows():
    from havoc.engine.speculation import plan_drafts

    memory_bound = (0.025, 0.002)  # a step: 25 ms to stream the weights, 2 ms per row
    # batch 1: a likely copy drafts to its limit, an unlikely one a token or two (0.3^2 * 27 ms > 2 ms)
    assert plan_drafts([(0.9, 8)], 1, 1, memory_bound) == [8]
    assert plan_drafts([(0.3, 8)], 1, 1, memory_bound) == [2]
    assert plan_drafts([(0.9, 3)], 1, 1, memory_bound) == [3]  # never past what lookup proposed
    # 32 rows already fill the step (a + 32 b = 89 ms for 32 tokens): only near-certain tokens pay
    many = [(0.3, 8)] * 31 + [(0.9, 8)]
    got = plan_drafts(many, 32, 32, memory_bound)
    assert got[:31] == [0] * 31 and 0 < got[31] < 8
    assert plan_drafts([(0.3, 8)] * 8, 8, 8, (0.025, 0.02)) == [0] * 8  # compute-bound: nothing pays
    assert plan_drafts([(0.5, 0), (0.0, 4)], 2, 2, memory_bound) == [0, 0]
    # the rule itself: each drafted token raised the expected tokens per second, the next one would not
    a, b = memory_bound
    for cands in ([(0.6, 8), (0.8, 8), (0.2, 8)], [(0.7, 8)] * 8):
        n = plan_drafts(cands, len(cands), len(cands), memory_bound)
        e = len(cands) + sum(sum(al ** j for j in range(1, k + 1)) for (al, _), k in zip(cands, n))
        x = len(cands) + sum(n)
        nxt = max(al ** (k + 1) for (al, _), k in zip(cands, n))
        assert (e + nxt) / (a + b * (x + 1)) <= e / (a + b * x)


def test_acceptance_is_counted_per_match_length_and_leans_on_the_engine_at_first():
    from havoc.engine.speculation import Acceptance, lookup

    assert lookup([1, 2, 3, 9, 9, 1, 2, 3], 4) == (3, [9, 9, 1, 2])
    assert lookup([7, 1, 5, 1], 2) == (1, [5, 1]) and lookup([7], 2) == (0, [])
    engine = Acceptance(prior=(0.4, 0.7, 0.85), weight=8.0)
    assert abs(engine.rate(1) - 0.4) < 1e-12 and abs(engine.rate(3) - 0.85) < 1e-12
    req = Acceptance(decay=0.8)
    assert req.rate(3, engine) == engine.rate(3)  # nothing verified yet: the engine's rate
    for _ in range(6):
        req.record(3, 4, 0)  # six 3-token-match drafts missed at their first token
        engine.record(3, 4, 0)
    assert req.rate(3, engine) < 0.2 < engine.rate(3) and req.rate(1, engine) == engine.rate(1)
    req.record(2, 5, 5)  # taken whole: no miss counted
    assert req.accepted[1] == 5 and req.trials[1] == 5


def test_step_cost_fits_the_line_the_steps_follow():
    from havoc.engine.speculation import StepCost

    c = StepCost(prior_ratio=0.1)
    assert c.line() == (1.0, 0.1)
    c.observe(1, 0.027)
    a, b = c.line()  # one row count seen: the prior's slope, through the point
    assert abs(a + b - 0.027) < 1e-12 and abs(b / a - 0.1) < 1e-12
    for rows in [1, 3, 2, 6, 1, 9, 4, 2, 5, 1, 7, 3]:
        c.observe(rows, 0.025 + 0.002 * rows)
    a, b = c.line()
    assert abs(a - 0.025) < 1e-3 and abs(b - 0.002) < 1e-4
    c.observe(0, 1.0)  # ignored: no rows
    c.observe(3, float("nan"))
    assert c.line() == (a, b)
    with pytest.raises(ValueError):
        StepCost(prior_ratio=0)


def _copy_heavy(n_prompts: int) -> list[list[int]]:
    base = [tokens(12, 200 + i) for i in range(n_prompts)]
    return [b + b + b[:5] for b in base]  # a repeated span: what the model continues is in the prompt


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_speculative_decoding_changes_no_token(model, batch):
    prompts = _copy_heavy(batch)
    for params in (SamplingParams(max_new_tokens=40, ignore_eos=True),
                   SamplingParams(max_new_tokens=40, ignore_eos=True, temperature=0.8, top_k=50, seed=3),
                   SamplingParams(max_new_tokens=40, ignore_eos=True, repetition_penalty=1.2)):
        outs = []
        for spec in (False, True):
            e = Engine(model, None, kv_cache_tokens=1024, speculative=spec)
            reqs = [e.add_request(p, params) for p in prompts]
            run(e)
            outs.append([r.output_ids for r in reqs])
            e.cache.check_invariants()
            assert len(e.cache) == 0
        assert outs[0] == outs[1], params
    assert e.stats.drafted_tokens > 0


def test_speculative_decoding_accepts_copies_and_rolls_back_misses(model):
    e = Engine(model, None, kv_cache_tokens=1024)
    r = e.add_request(_copy_heavy(1)[0], SamplingParams(max_new_tokens=200, ignore_eos=True))
    run(e)
    # the random model falls into short cycles, which drafts from its own output then predict: every
    # accepted draft token saves a step (the prefill step gives the first token, each later step 1 + those)
    assert 0 < e.stats.accepted_tokens < e.stats.drafted_tokens  # some taken, the misses rolled back
    assert e.stats.steps == 200 - e.stats.accepted_tokens and r.num_output == 200
    assert r.output_ids == alone(model, _copy_heavy(1)[0], SamplingParams(max_new_tokens=200, ignore_eos=True,
                                                                           speculative=False))
    e.cache.check_invariants()


def test_speculation_under_a_grammar_stays_in_the_grammar(tiny_llm):
    schema = {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "maxItems": 12}},
              "required": ["xs"], "additionalProperties": False}
    tok = tiny_llm.tokenizer
    prompt = tok.encode('copy {"xs":[11,22,33,44,55,66,77,88,99]} {"xs":[11,22,33,44,55,')
    outs = []
    for spec in (False, True):
        e = Engine(tiny_llm.model, tok, kv_cache_tokens=512, speculative=spec)
        r = e.add_request(prompt, SamplingParams(max_new_tokens=120, temperature=0.7, seed=2),
                          constraint=GrammarConstraint.json_schema(tok, schema))
        run(e)
        outs.append(r.text)
        if r.finish_reason == "stop":
            jsonschema.validate(json.loads(r.text), schema)
    assert outs[0] == outs[1]


def test_position_keyed_sampling_has_the_target_distribution():
    from havoc.engine.sampling import Sampler

    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    s = Sampler(SamplingParams(temperature=1.0, seed=123), 4, [])
    draws = torch.tensor([s.sample(logits, pos) for pos in range(20000)])
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64), atol=0.012), freq
    assert s.sample(logits, 77) == Sampler(SamplingParams(temperature=1.0, seed=123), 4, []).sample(logits, 77)
