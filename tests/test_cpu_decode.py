"""The whole-step CPU decoder (havoc.cpu_decode.CPUDecoder) against the reference model over the same paged
cache: logits (fp32 <= 1e-4 relative; bf16 and int8 against the formulas of their formats), every kernel
variant (those this CPU lacks skipped with the reason), ragged batches, continuous batching in the
generation loop, greedy continuations on SmolLM2, bad input."""

import copy
import dataclasses

import pytest
import torch

from havoc import GenerationError, _C, cpu_decode, ops
from havoc.cache import PagedKVCache
from havoc.config import PRESETS, ModelConfig
from havoc.cpu_decode import CPUDecoder, Int8Weight
from havoc.errors import ConfigError
from havoc.generation import GenerationStats, SamplingParams, generate_ids
from havoc.kernels import reference
from havoc.model import HavocModel, RMSNorm

VARIANTS = _C.linear_variants()


def variant(name: str) -> str:
    why = _C.linear_variant_missing(name)
    if why:
        pytest.skip(f"kernel variant {name}: {why}")
    return name


def _rel(got, want):
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    # rotary_dim < head_dim: a partial rotary, passing the tail through; untied head
    cfg = ModelConfig.from_preset("tiny", max_seq_len=128, rotary_dim=8, tie_embeddings=False)
    m = HavocModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms
        for mod in m.modules():
            if hasattr(mod, "eps"):
                mod.weight.uniform_(0.5, 1.5)
    return m


PROMPTS = [[5, 9, 11, 3, 7], [1] * 17, [300, 2], [44] * 33]  # ragged; 17 and 33 cross block boundaries


def _prefill(model, cache, prompts):
    sids, nxt = [], []
    with torch.inference_mode(), ops.use_backend("reference"):
        for p in prompts:
            s = cache.new_seq_id()
            cache.add(s, p)
            sids.append(s)
            nxt.append(int(model(cache.prepare([s]), cache=cache, logits_to_keep=1)[0, -1].float().argmax()))
    return sids, nxt


def _decode(model, prompts, steps, decoder=None, block_size=16):
    """Per step, the (B, V) fp32 logits; the reference model's forward when decoder is None."""
    cache = PagedKVCache.for_model(model, 64, block_size)
    sids, nxt = _prefill(model, cache, prompts)
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            if decoder is None:
                with ops.use_backend("reference"):
                    lg = model(cache.prepare(sids, nxt), cache=cache, logits_to_keep=1)[:, -1].float()
            else:
                lg = decoder.step(cache, sids, nxt)
            out.append(lg)
            nxt = lg.argmax(-1).tolist()
    cache.check_invariants()
    return out


@pytest.mark.parametrize("isa", VARIANTS)
def test_fp32_logits_match_the_reference(tiny, isa):
    want = _decode(tiny, PROMPTS, 5)
    got = _decode(tiny, PROMPTS, 5, CPUDecoder(tiny, isa=variant(isa)), block_size=8)  # other block size: same K/V
    for g, w in zip(got, want):
        assert _rel(g, w) <= 1e-4


def test_greedy_head_returns_the_argmax_of_the_logits(tiny):
    dec = CPUDecoder(tiny)
    cache, twin = PagedKVCache.for_model(tiny, 64, 16), PagedKVCache.for_model(tiny, 64, 16)
    sids, nxt = _prefill(tiny, cache, PROMPTS)
    assert _prefill(tiny, twin, PROMPTS) == (sids, nxt)  # the same state twice
    lg = dec.step(cache, sids, nxt)
    ids = dec.step(twin, sids, nxt, greedy=True)
    assert ids.dtype == torch.int64 and torch.equal(ids, lg.argmax(-1))


def test_bf16_logits_are_close_to_the_fp32_product_of_the_bf16_weights(tiny):
    m16 = copy.deepcopy(tiny).to(torch.bfloat16)
    m32 = copy.deepcopy(m16).float()  # the same weights, exactly; the fp32 K/V cache is the difference
    got = _decode(m16, PROMPTS, 4, CPUDecoder(m16))
    want = _decode(m32, PROMPTS, 4)
    for g, w in zip(got, want):
        assert _rel(g, w) <= 2e-2
    ref16 = _decode(m16, PROMPTS, 4)  # and to the reference in bf16 (rounded after every op)
    for g, w in zip(got, ref16):
        assert _rel(g, w) <= 5e-2


def _quantized_reference(model, activations):
    """A copy of `model` whose products are `reference.linear_int8` of int8 weights (group 64) and whose
    embedding holds the dequantized table: the formula the decoder's int8 formats stand for."""
    deq = copy.deepcopy(model)
    q8 = {}
    with torch.no_grad():
        for mod in deq.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                q = Int8Weight.quantize(mod.weight, 64)
                mod.weight.copy_(q.dequantize())
                q8[mod.weight.data_ptr()] = q

    def linear(x, weight):
        q = q8[weight.data_ptr()]
        return reference.linear_int8(x, q.q, q.scales, 64, activations=activations).to(x.dtype)

    return deq, linear


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize(
    "weights, activations, layout", [("int8", "int8", "auto"), ("int8", "int8", "rows"), ("int8_weight_only", "fp32", "auto")]
)
def test_int8_logits_match_the_formula(tiny, isa, weights, activations, layout, monkeypatch):
    """On the variants that read it, "auto" lays int8 weights out interleaved (the embedding lookup too)."""
    dec = CPUDecoder(tiny, weights=weights, group=64, isa=variant(isa), layout=layout)
    interleaves = weights == "int8" and layout == "auto" and _C.reads_interleaved(isa)
    assert dec.layout == ("interleaved" if interleaves else "rows")
    assert all(w.layout == dec.layout for w in dec.decode_weights() + [dec._embedding])
    deq, linear = _quantized_reference(tiny, activations)
    # the prefill (model forward) runs on the dequantized weights, so both paths start from one cache
    cache = PagedKVCache.for_model(deq, 64, 16)
    sids, nxt = _prefill(deq, cache, PROMPTS)
    twin = PagedKVCache.for_model(deq, 64, 16)
    assert _prefill(deq, twin, PROMPTS) == (sids, nxt)
    with torch.inference_mode():
        for _ in range(4):
            got = dec.step(cache, sids, nxt)
            with ops.use_backend("reference"), monkeypatch.context() as m:
                m.setattr(ops, "linear", linear)
                want = deq(twin.prepare(sids, nxt), cache=twin, logits_to_keep=1)[:, -1].float()
            assert _rel(got, want) <= 1e-4
            nxt = want.argmax(-1).tolist()


def test_generation_uses_the_decoder_and_matches_the_reference(tiny, monkeypatch):
    from havoc.engine.engine import _DecoderRunner

    steps = []
    real = _DecoderRunner._rows
    monkeypatch.setattr(_DecoderRunner, "_rows", lambda self, cache, ids, *a: steps.append(len(ids)) or real(self, cache, ids, *a))
    prompts = PROMPTS + [[8, 8, 8], [17] * 20]
    # A pool too small for all at once: later prompts join as earlier ones finish (continuous batching).
    for params in (SamplingParams(max_new_tokens=12, ignore_eos=True),
                   SamplingParams(max_new_tokens=12, temperature=0.8, top_k=20, seed=3, ignore_eos=True)):
        small = PagedKVCache.for_model(tiny, 9, 8)
        fast = generate_ids(tiny, prompts, params, cache=small)
        with ops.use_backend("reference"):
            ref = generate_ids(tiny, prompts, params, cache=PagedKVCache.for_model(tiny, 9, 8))
        assert fast == ref
        small.check_invariants()
    assert steps and max(steps) < len(prompts)  # the pool never held all of them


def test_int8_layout_option_is_checked(tiny):
    with pytest.raises(ConfigError, match="layout must be"):
        CPUDecoder(tiny, weights="int8", layout="columns")
    with pytest.raises(ConfigError, match="needs weights='int8', group=64"):
        CPUDecoder(tiny, weights="int8", group=128, layout="interleaved")
    with pytest.raises(ConfigError, match="needs weights='int8', group=64"):
        CPUDecoder(tiny, weights="int8", isa="scalar", layout="interleaved")
    assert CPUDecoder(tiny, weights="int8", group=128).layout == "rows"


def test_int8_generation_option(tiny):
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    out = generate_ids(tiny, PROMPTS, params, cache="paged", cpu_weights="int8")
    assert [len(o) for o in out] == [6] * len(PROMPTS)
    assert generate_ids(tiny, PROMPTS, params, cpu_weights="int8") == out  # the default cache is paged here
    with pytest.raises(GenerationError, match="needs the paged path"):
        generate_ids(tiny, PROMPTS, params, cache="static", cpu_weights="int8")
    with pytest.raises(ConfigError, match="cpu weights must be"):
        generate_ids(tiny, PROMPTS, params, cache="paged", cpu_weights="int4")
    with ops.use_backend("reference"), pytest.raises(ConfigError, match="needs a CPU model"):
        generate_ids(tiny, PROMPTS, params, cache="paged", cpu_weights="int8")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_cache_takes_the_cpu_decoder_where_it_runs(tiny, dtype):
    """cache="auto" (the default, and what LLM and the CLI use) decodes with the C++ decoder on a CPU
    fp32/bf16 model, giving the static path's tokens, and falls back to the static path elsewhere."""
    model = copy.deepcopy(tiny).to(dtype)
    params = SamplingParams(max_new_tokens=8, ignore_eos=True)
    auto, static = GenerationStats(), GenerationStats()
    out = generate_ids(model, PROMPTS, params, stats=auto)
    assert "paged" in auto.extra and cpu_decode.applies(model)
    static_out = generate_ids(model, PROMPTS, params, cache="static", stats=static)
    assert "paged" not in static.extra
    if dtype == torch.float32:  # bf16 products round differently in the two paths: near ties may differ
        assert out == static_out
    with ops.use_backend("reference"):
        ref = GenerationStats()
        assert not cpu_decode.applies(model)
        generate_ids(model, PROMPTS, params, stats=ref)
        assert "paged" not in ref.extra


def test_for_model_rebuilds_after_the_weights_change(tiny):
    m = copy.deepcopy(tiny)
    d1 = cpu_decode.for_model(m)
    assert cpu_decode.for_model(m) is d1
    with torch.no_grad():
        m.layers[0].attention.wo.weight.mul_(2)
    assert cpu_decode.for_model(m) is not d1
    with ops.use_backend("reference"):
        assert cpu_decode.for_model(m) is None


def test_bad_input_is_rejected_before_anything_is_written(tiny):
    dec = CPUDecoder(tiny)
    cache = PagedKVCache.for_model(tiny, 64, 16)
    sids, nxt = _prefill(tiny, cache, PROMPTS[:2])
    before = [t.clone() for t in cache.k]
    with pytest.raises(IndexError, match="outside the vocabulary"):
        dec.step(cache, sids, [nxt[0], tiny.config.vocab_size])
    assert all(torch.equal(a, b) for a, b in zip(before, cache.k))
    dec.step(cache, sids, nxt)  # the cache is as it was: the step goes through
    raw = dec.bind(cache)
    with pytest.raises(IndexError, match="slot"):
        raw.step([1], [0], [10**9], [[0]], [1])
    with pytest.raises(IndexError, match="block id"):
        raw.step([1], [0], [0], [[999]], [1])
    with pytest.raises(IndexError, match="does not fit its block table"):
        raw.step([1], [0], [0], [[0]], [17])
    with pytest.raises(ValueError, match="logits must be"):
        raw.step([1], [0], [0], [[0]], [1], logits=torch.zeros(1, 3).numpy())
    with pytest.raises(ConfigError, match="the cache holds"):
        dec.bind(PagedKVCache(tiny.config, 8, 16, dtype=torch.bfloat16))
    with pytest.raises(ConfigError, match="CPU model in fp32 or bf16"):
        CPUDecoder(copy.deepcopy(tiny).half())
    with pytest.raises(ConfigError, match="weights must be"):
        CPUDecoder(tiny, weights="int4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prompt_runs_attend_as_a_prefill_with_the_row_by_row_answer(tiny, dtype):
    """Prompt chunks whose rows the step is told are prompt tokens (prompt_runs) attend through the prefill
    kernel (csrc/attention.cpp) over the paged blocks: the logits of every row are those of the row-by-row
    decode kernel up to rounding; runs that are not one sequence's consecutive rows are refused."""
    model = copy.deepcopy(tiny).to(dtype)
    dec = CPUDecoder(model)
    prompts = [[(7 * i + 3) % 250 + 1 for i in range(40)], [(5 * i) % 200 + 2 for i in range(23)]]
    outs = []
    for runs in (None, [[0, 40], [40, 23]]):
        cache = PagedKVCache.for_model(model, 16, 16)
        sids = []
        for p in prompts:
            sids.append(cache.new_seq_id())
            cache.add(sids[-1], p)
        plan = cache.prepare_rows(sids)
        logits = torch.empty(63, model.config.vocab_size)
        dec.bind(cache).step(plan.tokens, plan.positions, plan.slots, plan.tables, plan.lengths,
                             logits=logits.numpy(), prompt_runs=None if runs is None else torch.tensor(runs).numpy())
        cache.end()
        outs.append(logits)
    assert _rel(outs[1], outs[0]) < (1e-5 if dtype == torch.float32 else 2e-2)
    cache = PagedKVCache.for_model(model, 16, 16)
    sids = [cache.new_seq_id(), cache.new_seq_id()]
    for s, p in zip(sids, prompts):
        cache.add(s, p)
    plan = cache.prepare_rows(sids)
    raw = dec.bind(cache)
    args = (plan.tokens, plan.positions, plan.slots, plan.tables, plan.lengths)
    for runs, err, match in (([[30, 20]], ValueError, "not consecutive tokens of one sequence"),
                             ([[0, 10], [5, 10]], ValueError, "overlap"),
                             ([[60, 9]], IndexError, "outside the step"),
                             ([[0, 1, 2]], ValueError, "prompt_runs must be")):
        with pytest.raises(err, match=match):
            raw.step(*args, logits=torch.empty(63, model.config.vocab_size).numpy(), prompt_runs=torch.tensor(runs).numpy())


def test_the_engine_marks_prompt_tokens_and_only_them(tiny, monkeypatch):
    """Each request's prompt rows go to the step as a run, its generated token and drafts do not."""
    from havoc.engine import engine as engine_module

    seen = []
    real = engine_module._DecoderRunner._rows

    def spy(self, cache, seq_ids, logit_reqs, argmax_reqs, prompt_lens):
        out = real(self, cache, seq_ids, logit_reqs, argmax_reqs, prompt_lens)
        seen.append(dict(prompt_lens))
        return out

    monkeypatch.setattr(engine_module._DecoderRunner, "_rows", spy)
    steps = []
    bound_step = _C.Decoder.step

    def record(self, *a, prompt_runs=None, **kw):
        steps.append((a[1].copy(), None if prompt_runs is None else prompt_runs.copy()))
        return bound_step(self, *a, prompt_runs=prompt_runs, **kw)

    monkeypatch.setattr(_C.Decoder, "step", record)
    e = engine_module.Engine(tiny, None, kv_cache_tokens=256, max_batch_tokens=16)
    e.add_request(list(range(1, 21)), SamplingParams(max_new_tokens=3, ignore_eos=True))
    while e.has_unfinished():
        e.step()
    prompt_rows = sum(int(r[:, 1].sum()) for _, r in steps if r is not None)
    assert prompt_rows == 20  # the 20 prompt tokens, chunked 16 + 4; the 2 decode steps have no runs
    assert [r is None for _, r in steps] == [False, False, True, True]
    assert seen and all(lens == {next(iter(lens)): 20} for lens in seen)


@pytest.mark.model
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_smollm2_greedy_continuations_match_the_reference(smollm2, dtype):
    model, tok = smollm2
    m = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    prompts = [tok.encode("The capital of France is"), tok.encode("def fibonacci(n):")]
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    fast = generate_ids(m, prompts, params, cache="paged")
    with ops.use_backend("reference"):
        ref = generate_ids(m, prompts, params, cache="paged")
    if dtype == torch.float32:
        assert fast == ref
        got, want = _decode(m, prompts, 3, cpu_decode.for_model(m)), _decode(m, prompts, 3)
        for g, w in zip(got, want):
            assert _rel(g, w) <= 1e-4
    else:  # fp32 activations vs bf16 rounding after every op: the same start, perhaps a late divergence
        assert all(f[:4] == r[:4] for f, r in zip(fast, ref))


# --- what the decoder implements ---------------------------------------------------------------------


def _preset_model(name):
    """The preset's architecture at a testable size: at most 2 layers and a 512-token vocabulary, every
    other dimension (heads, head_dim, ffn, rotary, tying, theta, eps) as the preset has it."""
    base = PRESETS[name]
    cfg = ModelConfig.from_preset(
        name, n_layers=min(base["n_layers"], 2), vocab_size=min(base["vocab_size"], 512), max_seq_len=128
    )
    torch.manual_seed(0)
    m = HavocModel(cfg).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, RMSNorm):
                mod.weight.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.slow) if PRESETS[p]["dim"] > 1024 else p for p in sorted(PRESETS)]
)
def test_every_preset_decodes_as_the_model_does(preset):
    m = _preset_model(preset)
    assert cpu_decode.missing_features(m) == [] and cpu_decode.applies(m)
    prompts = [[5, 9, 11, 3, 7], [1] * 17]
    got = _decode(m, prompts, 3, CPUDecoder(m))
    want = _decode(m, prompts, 3)
    for g, w in zip(got, want):
        assert _rel(g, w) <= 1e-4


def test_models_the_decoder_does_not_implement_are_refused(tiny):
    assert set(_C.decoder_features()) >= {"rope:partial", "head:untied", "weights:bfloat16"}

    class Subclass(HavocModel):
        pass

    sub = Subclass(tiny.config)
    assert cpu_decode.missing_features(sub) == ["model class " + Subclass.__qualname__ + " (the decoder implements havoc.model.HavocModel)"]
    qk = copy.deepcopy(tiny)
    qk.layers[1].attention.q_norm = RMSNorm(16, 1e-5)  # a model variant with a module the decoder lacks
    assert cpu_decode.missing_features(qk) == ["Attention layers.1.attention has modules ['q_norm']"]
    biased = copy.deepcopy(tiny)
    biased.layers[0].feed_forward.w2.bias = torch.nn.Parameter(torch.zeros(96))
    assert cpu_decode.missing_features(biased) == ["bias of layers.0.feed_forward.w2"]
    Wider = dataclasses.make_dataclass("Wider", [("qk_norm", bool, False)], bases=(ModelConfig,))
    wide = copy.deepcopy(tiny)
    wide.config = Wider(**dataclasses.asdict(tiny.config))
    assert cpu_decode.missing_features(wide) == ["config field 'qk_norm'"]
    assert cpu_decode.missing_features(copy.deepcopy(tiny).half()) == ["weights:float16"]
    for m in (sub, qk, biased, wide):
        assert not cpu_decode.applies(m) and cpu_decode.for_model(m) is None
        with pytest.raises(ConfigError, match="does not implement"):
            CPUDecoder(m)
        with pytest.raises(ConfigError, match="does not implement"):
            cpu_decode.for_model(m, "int8")
    # generation takes the model's own forward for them
    params = SamplingParams(max_new_tokens=5, ignore_eos=True)
    stats = GenerationStats()
    out = generate_ids(qk, PROMPTS, params, stats=stats)
    assert "paged" not in stats.extra
    with ops.use_backend("reference"):
        assert out == generate_ids(qk, PROMPTS, params)


@pytest.mark.parametrize("context", [17, 300])
@pytest.mark.parametrize("dtype, weights", [(torch.float32, "auto"), (torch.bfloat16, "auto"), (torch.bfloat16, "int8")])
def test_a_one_row_step_gives_the_same_bits_on_any_number_of_threads(dtype, weights, context):
    """A batch-1 step runs every layer in one parallel region: the threads meet at barriers and each
    computes the norms and SwiGLU of the row itself; up to 256 tokens of context thread 0 runs attention
    while the others read their share of wo ahead (which moves wo's split between them), past that they
    share attention's work units. None of that may change a bit: the logits equal those of the one-thread
    step (separate products), with more threads than cores too, and those of the same row in a batch of
    two."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", dim=256, n_heads=8, n_kv_heads=2, head_dim=32, ffn_hidden=688,
                                  vocab_size=1000, max_seq_len=512, tie_embeddings=False)
    model = HavocModel(cfg).to(dtype).eval()
    prompt = torch.randint(3, 1000, (context,), generator=torch.Generator().manual_seed(context)).tolist()
    before = torch.get_num_threads()
    got = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            got[threads] = _decode(model, [prompt], 6, CPUDecoder(model, weights=weights))
        batched = _decode(model, [prompt, PROMPTS[2]], 6, CPUDecoder(model, weights=weights))
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        for a, b in zip(got[1], got[threads]):
            assert torch.equal(a, b), threads
    for a, b in zip(got[1], batched):
        assert torch.equal(a[0], b[0])
