"""The text API on the real SmolLM2: generate, stream, stop strings, batches, chat, save and reload."""

import pytest
import torch

from havoc import LLM, GenerationError, SamplingParams

pytestmark = pytest.mark.model

PROMPTS = ["The three primary colors are", "def add(a, b):\n   ", "Paris is the capital of", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def llm(smollm2):
    return LLM(*smollm2)


def test_generate_text_is_the_decoded_ids(llm):
    out = llm.generate(PROMPTS[0], max_new_tokens=16)
    assert len(out.token_ids) == 16 and out.finish_reason == "length"
    assert out.text == llm.tokenizer.decode(out.token_ids, skip_special_tokens=True)
    assert out.prompt_ids == llm.tokenizer.encode(PROMPTS[0])


@pytest.mark.parametrize("stop", [(), ("colors",), (" and", "\n")])
def test_stream_gives_the_same_text_as_generate(llm, stop):
    whole = llm.generate(PROMPTS[0], max_new_tokens=24, stop=stop)
    pieces = list(llm.stream(PROMPTS[0], max_new_tokens=24, stop=stop))
    assert "".join(pieces) == whole.text
    assert len(pieces) > 1


def test_stop_string_cuts_the_text_and_ends_generation(llm):
    free = llm.generate(PROMPTS[0], max_new_tokens=24)
    word = free.text.split()[3]  # a word the model is known to produce
    out = llm.generate(PROMPTS[0], max_new_tokens=24, stop=[word])
    assert out.finish_reason == "stop"
    assert out.text == free.text[: free.text.index(word)]
    assert len(out.token_ids) < 24


def test_a_batch_of_different_lengths_matches_each_prompt_alone(llm):
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    batched = llm.generate(PROMPTS, params)
    for prompt, out in zip(PROMPTS, batched):
        assert out.token_ids == llm.generate(prompt, params).token_ids, prompt


def test_sampling_is_reproducible_with_a_seed(llm):
    kw = dict(max_new_tokens=16, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    assert llm.generate(PROMPTS[2], **kw).text == llm.generate(PROMPTS[2], **kw).text


def test_chat_answers_and_stops_at_end_of_turn(llm):
    out = llm.chat([{"role": "user", "content": "Say hello."}], max_new_tokens=64)
    assert out.text.strip()
    if out.finish_reason == "stop":
        assert out.token_ids[-1] in llm.tokenizer.stop_ids
    assert "<|im_end|>" not in out.text


def test_save_pretrained_reloads_to_the_same_output(llm, tmp_path):
    llm.save_pretrained(tmp_path / "smollm2")
    again = LLM.load(tmp_path / "smollm2")
    a = llm.generate(PROMPTS[1], max_new_tokens=12)
    b = again.generate(PROMPTS[1], max_new_tokens=12)
    assert a.token_ids == b.token_ids and a.text == b.text


def test_bfloat16_generates(smollm2):
    model, tokenizer = smollm2
    import copy

    llm = LLM(copy.deepcopy(model).to(torch.bfloat16), tokenizer)
    out = llm.generate(PROMPTS[2], max_new_tokens=8)
    assert len(out.token_ids) == 8 and out.text.strip()


def test_bad_prompts_are_named(llm):
    with pytest.raises(GenerationError, match="the prompt is empty"):
        llm.generate("")
    too_long = [100] * llm.config.max_seq_len
    with pytest.raises(GenerationError, match=f"has {llm.config.max_seq_len} tokens but the model's context is"):
        llm.generate(too_long, max_new_tokens=1)
    with pytest.raises(GenerationError, match="either params or keyword arguments"):
        llm.generate("hi", SamplingParams(), max_new_tokens=3)
    with pytest.raises(GenerationError, match="unexpected keyword argument 'temprature'"):
        llm.generate("hi", temprature=0.5)


def _hits(completion) -> int:
    return completion.stats.extra["paged"]["prefix_hit_tokens"]


def test_the_next_chat_turn_reuses_the_kept_cache(smollm2):
    """On the CPU decoder an LLM keeps its paged cache across calls: the second turn of a chat skips the
    first turn's tokens, and gives what an LLM without a kept cache gives."""
    llm, fresh = LLM(*smollm2), LLM(*smollm2, prefix_cache=False)
    turn1 = [{"role": "user", "content": "Name three primes."}]
    a = llm.chat(turn1, max_new_tokens=12)
    assert a.token_ids == fresh.chat(turn1, max_new_tokens=12).token_ids
    turn2 = turn1 + [{"role": "assistant", "content": a.text}, {"role": "user", "content": "Three more?"}]
    b = llm.chat(turn2, max_new_tokens=12)
    first_prompt = len(llm.chat_prompt(turn1))
    assert _hits(b) - _hits(a) >= first_prompt - first_prompt % 16  # every full block of turn 1's prompt
    assert b.token_ids == fresh.chat(turn2, max_new_tokens=12).token_ids
    llm.clear_cache()
    c = llm.chat(turn2, max_new_tokens=12)
    assert _hits(c) == 0 and c.token_ids == b.token_ids


def test_the_kept_cache_is_dropped_when_the_weights_change(smollm2):
    model, tokenizer = smollm2
    llm = LLM(model, tokenizer)
    prompt = "The three primary colors are"
    before = llm.generate(prompt, max_new_tokens=8)
    w = model.layers[0].attention.wqkv.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(0.5)  # in place: the same tensor, new values
        again = llm.generate(prompt, max_new_tokens=8)
        assert _hits(again) == 0  # no K/V computed with the old weights is served
        assert again.token_ids == LLM(model, tokenizer, prefix_cache=False).generate(prompt, max_new_tokens=8).token_ids
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert llm.generate(prompt, max_new_tokens=8).token_ids == before.token_ids


def test_streams_iterated_together_each_get_a_cache(llm):
    one, two = llm.stream(PROMPTS[0], max_new_tokens=8), llm.stream(PROMPTS[2], max_new_tokens=8)
    got = ["", ""]
    for a, b in zip(one, two):
        got[0] += a
        got[1] += b
    got[0] += "".join(one)
    got[1] += "".join(two)
    assert got == [llm.generate(PROMPTS[0], max_new_tokens=8).text, llm.generate(PROMPTS[2], max_new_tokens=8).text]


def test_clear_cache_inside_a_stream_leaves_the_stream_alone(smollm2):
    """clear_cache() from inside a stream loop neither hangs nor pulls the blocks from under the stream:
    only the cached blocks nothing uses go."""
    llm = LLM(*smollm2)
    prompt = "A list of the primary colors, the secondary colors and how to mix them: " * 4  # > 2 blocks
    llm.generate("An earlier prompt that leaves cached blocks behind, " * 3, max_new_tokens=2)
    assert llm.engine.cache.stats()["evictable"] > 0
    pieces = []
    for piece in llm.stream(prompt, max_new_tokens=8):
        llm.clear_cache()
        assert llm.engine.cache.stats()["evictable"] == 0
        pieces.append(piece)
    assert "".join(pieces) == llm.generate(prompt, max_new_tokens=8).text
    assert llm.generate(prompt, max_new_tokens=8).stats.extra["cached_tokens"] > 0  # kept again
