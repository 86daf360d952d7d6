"""Generation on token ids with the tiny model: greedy, sampling, batching, stopping, bad arguments."""

import inspect
import math

import pytest
import torch

from havoc import GenerationError, HavocModel, ModelConfig, SamplingParams
from havoc.generation import GenerationStats, generate_ids, sample_next, stream_ids


@pytest.fixture(autouse=True, params=["static", "paged"])
def cache_path(request, monkeypatch):
    """Every test here runs on both ways of holding a batch: the static cache (the GPU default) and the
    paged cache with the C++ decoder (what cache="auto" takes on this CPU model)."""
    for fn in (generate_ids, stream_ids):
        monkeypatch.setitem(inspect.unwrap(fn).__kwdefaults__, "cache", request.param)
    return request.param


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = HavocModel(ModelConfig.from_preset("tiny", max_seq_len=64, tie_embeddings=False)).eval()
    # At the 0.02 init a tiny model only repeats its last token; larger weights and an untied head give
    # varied greedy paths, so batching and stopping are really exercised.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(6)
    return m


def greedy_reference(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_greedy_matches_a_full_forward_argmax_loop(model):
    prompt = [5, 17, 42, 7]
    out = generate_ids(model, [prompt], SamplingParams(max_new_tokens=12, ignore_eos=True))[0]
    assert out == greedy_reference(model, prompt, 12)


def test_batch_of_different_lengths_matches_each_prompt_alone(model):
    prompts = [[5, 6], [9, 100, 200, 33, 4, 8, 9], [300], [7, 7, 7, 7]]
    params = SamplingParams(max_new_tokens=10, ignore_eos=True)
    batched = generate_ids(model, prompts, params)
    for p, out in zip(prompts, batched):
        assert out == greedy_reference(model, p, 10)


def test_rows_leave_the_batch_when_they_stop(model):
    prompts = [[5, 6], [9, 100, 200], [300], [7, 7, 7, 7], [11, 12, 13]]
    alone = [greedy_reference(model, p, 12) for p in prompts]
    # stop each prompt at a token it is known to produce, so rows finish at different steps
    stop_ids = {alone[0][1], alone[2][4]}
    params = SamplingParams(max_new_tokens=12, stop_token_ids=tuple(stop_ids))
    stats = GenerationStats()
    outs = generate_ids(model, prompts, params, stats=stats)
    for ref, out in zip(alone, outs):
        cut = next((i + 1 for i, t in enumerate(ref) if t in stop_ids), len(ref))
        assert out == ref[:cut]
    assert stats.generated_tokens == sum(len(o) for o in outs)


def test_finish_reasons_and_stop_ids(model):
    ref = greedy_reference(model, [5, 17], 8)
    events = [e for step in stream_ids(model, [[5, 17]], SamplingParams(max_new_tokens=8), stop_ids=[ref[3]]) for e in step]
    cut = ref.index(ref[3]) + 1  # the first time the stop id comes up
    assert [e.token_id for e in events] == ref[:cut]
    assert [e.finish_reason for e in events] == [None] * (cut - 1) + ["stop"]
    # ignore_eos keeps going through the tokenizer's stop ids, to the budget
    events = [e for step in stream_ids(model, [[5, 17]], SamplingParams(max_new_tokens=8, ignore_eos=True), stop_ids=[ref[3]]) for e in step]
    assert len(events) == 8 and events[-1].finish_reason == "length"


def test_generation_stops_at_the_context(model):
    prompt = list(range(3, 3 + 60))  # context is 64
    out = generate_ids(model, [prompt], SamplingParams(max_new_tokens=50, ignore_eos=True))[0]
    assert len(out) == 4
    with pytest.raises(GenerationError, match="prompt 0 has 64 tokens but the model's context is 64"):
        generate_ids(model, [list(range(64))], SamplingParams(max_new_tokens=1))


def test_same_seed_same_sample_and_seeds_differ(model):
    params = dict(max_new_tokens=16, temperature=1.0, ignore_eos=True)
    a = generate_ids(model, [[5, 6, 7]], SamplingParams(seed=1, **params))
    b = generate_ids(model, [[5, 6, 7]], SamplingParams(seed=1, **params))
    c = generate_ids(model, [[5, 6, 7]], SamplingParams(seed=2, **params))
    assert a == b
    assert a != c


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    greedy = generate_ids(model, [[5, 6, 7]], SamplingParams(max_new_tokens=10, ignore_eos=True))
    for extra in (dict(top_k=1), dict(top_p=1e-6)):
        sampled = generate_ids(model, [[5, 6, 7]], SamplingParams(max_new_tokens=10, temperature=2.0, seed=3, ignore_eos=True, **extra))
        assert sampled == greedy, extra


def _frequencies(logits, params, n=40000):
    gen = torch.Generator().manual_seed(0)
    draws = sample_next(logits.expand(n, -1), params, None, gen)
    return torch.bincount(draws, minlength=logits.shape[-1]).double() / n


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(temperature=1.0), [0.5, 0.3, 0.15, 0.05]),
        (dict(temperature=1.0, top_k=3), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        (dict(temperature=1.0, top_p=0.8), [0.625, 0.375, 0.0, 0.0]),
        (dict(temperature=1.0, top_p=0.81), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        (dict(temperature=2.0), [math.sqrt(p) for p in (0.5, 0.3, 0.15, 0.05)]),
    ],
)
def test_sampling_distribution(kwargs, expected):
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    expected = torch.tensor(expected, dtype=torch.float64)
    expected /= expected.sum()
    freq = _frequencies(logits, SamplingParams(**kwargs))
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)


def test_repetition_penalty_matches_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(2, 50)
    seen_ids = torch.tensor([[1, 4, 4, 9], [0, 2, 3, 49]])
    seen = torch.zeros(2, 50, dtype=torch.bool).scatter(1, seen_ids, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(seen_ids, logits.clone())
    from havoc.generation import _penalize

    torch.testing.assert_close(_penalize(logits, seen, 1.3), expected)


def test_repetition_penalty_changes_greedy_output(model):
    plain = generate_ids(model, [[5, 5, 5]], SamplingParams(max_new_tokens=20, ignore_eos=True))[0]
    penal = generate_ids(model, [[5, 5, 5]], SamplingParams(max_new_tokens=20, ignore_eos=True, repetition_penalty=10.0))[0]
    assert len(set(penal)) >= len(set(plain))
    assert 5 not in penal


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=2.5), "max_new_tokens"),
        (dict(temperature=-1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=-2), "top_k"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(seed="x"), "seed"),
        (dict(stop=[""]), "stop strings"),
        (dict(stop_token_ids=[-1]), "stop_token_ids"),
    ],
)
def test_invalid_sampling_arguments(kwargs, message):
    with pytest.raises(GenerationError, match=message):
        SamplingParams(**kwargs)


def test_invalid_prompts(model):
    with pytest.raises(GenerationError, match="no prompts"):
        generate_ids(model, [], SamplingParams())
    with pytest.raises(GenerationError, match="prompt 1 is empty"):
        generate_ids(model, [[1], []], SamplingParams())
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        generate_ids(model, [[1, 10_000]], SamplingParams())


def test_stats_are_filled(model):
    stats = GenerationStats()
    generate_ids(model, [[5, 6], [7, 8, 9]], SamplingParams(max_new_tokens=5, ignore_eos=True), stats=stats)
    assert stats.prompt_tokens == 5 and stats.generated_tokens == 10 and stats.steps == 5
    assert stats.prefill_seconds > 0 and stats.decode_seconds > 0


def test_stats_hold_when_the_consumer_stops_early(model):
    stats = GenerationStats()
    gen = stream_ids(model, [[5, 6]], SamplingParams(max_new_tokens=50, ignore_eos=True), stats=stats)
    for i, _ in enumerate(gen):
        if i == 3:
            break
    gen.close()
    assert stats.generated_tokens == 4 and stats.decode_seconds > 0
