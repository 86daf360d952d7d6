"""The model decoding on `PagedKVCache`: logits equal to the contiguous `StaticKVCache` path for one
sequence, ragged batches, forks and prefix-cache hits (tiny model, and SmolLM2 where marked); the
copy-on-write never touches the parent; the guards on what a forward may attend over; batched paged
generation equal to the static path.
"""

from __future__ import annotations

import pytest
import torch

from havoc import GenerationError, HavocModel, ModelConfig, SamplingParams
from havoc.cache import PagedKVCache
from havoc.errors import OutOfBlocksError
from havoc.generation import GenerationStats, generate_ids, stream_ids

ATOL = 1e-5  # fp32, absolute, on the tiny model's logits (magnitude ~10)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = HavocModel(ModelConfig.from_preset("tiny", max_seq_len=128, tie_embeddings=False)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init: varied greedy paths, logits of ~10
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(6)
    return m


def tokens(n: int, seed: int, vocab: int = 384) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def static_logits(model, prompt: list[int], continuation: list[int]) -> list[torch.Tensor]:
    """Last-position logits after the prompt and after each continuation token, through a StaticKVCache."""
    cache = model.new_cache(1, len(prompt) + len(continuation) + 1)  # a StaticKVCache, model dtype
    out = [model(torch.tensor([prompt]), cache=cache)[0, -1]]
    for t in continuation:
        out.append(model(torch.tensor([[t]]), cache=cache)[0, -1])
    return out


@torch.inference_mode()
def paged_prefill(model, cache: PagedKVCache, seq_ids: list[int]) -> torch.Tensor:
    return model(cache.prepare(seq_ids), cache=cache)[:, -1]


@torch.inference_mode()
def paged_step(model, cache: PagedKVCache, seq_ids: list[int], toks: list[int]) -> torch.Tensor:
    return model(cache.prepare(seq_ids, toks), cache=cache)[:, -1]


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def close_scaled(a: torch.Tensor, b: torch.Tensor) -> None:
    """1e-5 of the logits' scale. NOTE: on SmolLM2 (logits up to ~32) the static cache itself is 3-5e-5 from
    a no-cache forward, and paged vs static 1.2-2.7e-5 (~7 ulps at 32): two summation orders of attention
    over 30 layers; an absolute 1e-5 is below that floor."""
    torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=0)


# --- logits equal to the contiguous cache ------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 16, 5])
def test_one_sequence_matches_static_cache(model, block_size):
    prompt, cont = tokens(37, 1), tokens(12, 2)
    want = static_logits(model, prompt, cont)
    cache = PagedKVCache.for_model(model, 64, block_size)
    assert cache.add(0, prompt) == 0
    close(paged_prefill(model, cache, [0])[0], want[0])
    for i, t in enumerate(cont):
        close(paged_step(model, cache, [0], [t])[0], want[i + 1])
    assert cache.length(0) == len(prompt) + len(cont) and cache.pending(0) == 0
    cache.check_invariants()


def test_ragged_batch_decodes_in_one_forward(model):
    # lengths around the block boundaries (block size 16) and a one-token prompt
    prompts = [tokens(n, 10 + n) for n in (1, 15, 16, 17, 40)]
    conts = [tokens(9, 20 + i) for i in range(len(prompts))]
    want = [static_logits(model, p, c) for p, c in zip(prompts, conts)]
    cache = PagedKVCache.for_model(model, 40, 16)
    ids = list(range(len(prompts)))
    for s, p in zip(ids, prompts):
        cache.add(s, p)
        close(paged_prefill(model, cache, [s])[0], want[s][0])
    for step in range(9):
        out = paged_step(model, cache, ids, [c[step] for c in conts])  # (5, V): one forward for all
        for s in ids:
            close(out[s], want[s][step + 1])
    cache.check_invariants()


def test_prefill_of_several_prompts_in_one_forward(model):
    # equal lengths: one batched gather; after a prefix hit the starts differ: one gather per sequence
    a, b = tokens(20, 30), tokens(20, 31)
    cache = PagedKVCache.for_model(model, 32, 4)
    cache.add(0, a)
    cache.add(1, b)
    out = paged_prefill(model, cache, [0, 1])
    close(out[0], static_logits(model, a, [])[0])
    close(out[1], static_logits(model, b, [])[0])
    c, d = a[:8] + tokens(4, 32), tokens(12, 33)  # c hits a's first two blocks; d hits nothing
    assert cache.add(2, c) == 8 and cache.add(3, d) == 0
    with pytest.raises(GenerationError, match="must be equal"):
        cache.prepare([2, 3])  # 4 and 12 tokens waiting
    cache.add(4, a[:8] + tokens(12, 34))  # 12 waiting after an 8-token hit, like d's 12 from 0
    out = paged_prefill(model, cache, [3, 4])
    close(out[0], static_logits(model, d, [])[0])
    close(out[1], static_logits(model, a[:8] + tokens(12, 34), [])[0])
    close(paged_prefill(model, cache, [2])[0], static_logits(model, c, [])[0])
    cache.check_invariants()


def test_fork_continues_differently_and_never_corrupts_the_parent(model):
    prompt = tokens(21, 40)  # 21 = 1 full block of 16 + a shared partial block
    pa, ch = tokens(6, 41), tokens(6, 42)
    want_parent, want_child = static_logits(model, prompt, pa), static_logits(model, prompt, ch)
    cache = PagedKVCache.for_model(model, 16, 16)
    cache.add(0, prompt)
    close(paged_prefill(model, cache, [0])[0], want_parent[0])
    cache.fork(0, 1)
    parent_kv = [t.clone() for t in cache.k + cache.v]
    parent_blocks = cache.manager.block_table(0).tolist()
    # the child appends alone first: copy-on-write of the shared partial block
    close(paged_step(model, cache, [1], [ch[0]])[0], want_child[1])
    assert cache.stats()["cow_copies"] == 1
    for before, after in zip(parent_kv, cache.k + cache.v):  # the parent's blocks are bit-for-bit unchanged
        assert torch.equal(before[parent_blocks], after[parent_blocks])
    # then both step together, each down its own path
    for i in range(1, 6):
        out = paged_step(model, cache, [0, 1], [pa[i - 1], ch[i]])
        close(out[0], want_parent[i])
        close(out[1], want_child[i + 1])
    close(paged_step(model, cache, [0], [pa[5]])[0], want_parent[6])
    cache.check_invariants()


def test_siblings_that_step_together_copy_once(model):
    prompt = tokens(10, 50)
    cache = PagedKVCache.for_model(model, 16, 16)
    cache.add(0, prompt)
    paged_prefill(model, cache, [0])
    cache.fork(0, 1)
    cache.fork(0, 2)
    conts = [tokens(3, 51 + i) for i in range(3)]
    for i in range(3):
        out = paged_step(model, cache, [0, 1, 2], [c[i] for c in conts])
        for s in range(3):
            close(out[s], static_logits(model, prompt, conts[s][: i + 1])[-1])
    assert cache.stats()["cow_copies"] == 2  # the last sibling writes the shared block in place


def test_prefix_hit_skips_the_cached_blocks_and_gets_the_same_logits(model):
    shared = tokens(35, 60)
    a, b = shared + tokens(5, 61), shared + tokens(9, 62)
    cache = PagedKVCache.for_model(model, 32, 16)
    cache.add(0, a)
    paged_prefill(model, cache, [0])
    skip = cache.add(1, b)
    assert skip == 32 and cache.pending(1) == len(b) - 32
    fed = cache.prepare([1])
    assert fed.tolist() == [b[32:]]  # only the tokens after the two cached blocks are computed
    cont = tokens(4, 63)
    want = static_logits(model, b, cont)
    close(model(fed, cache=cache)[0, -1], want[0])
    for i, t in enumerate(cont):
        close(paged_step(model, cache, [1], [t])[0], want[i + 1])
    # the first sequence keeps decoding on the shared blocks too
    close(paged_step(model, cache, [0], [7])[0], static_logits(model, a, [7])[-1])
    # another namespace never shares; after the sequences are gone, their blocks still serve a new prompt
    assert cache.add(2, b, namespace="tenant") == 0
    paged_prefill(model, cache, [2])
    for s in (0, 1, 2):
        cache.free(s)
    assert cache.add(3, b + cont + [7]) == 48  # the third block, filled while decoding, is cached too
    close(paged_prefill(model, cache, [3])[0], static_logits(model, b + cont + [7], [])[0])
    cache.check_invariants()


def test_a_whole_cached_prompt_still_computes_its_last_token(model):
    prompt = tokens(32, 70)  # exactly two blocks
    cache = PagedKVCache.for_model(model, 8, 16)
    cache.add(0, prompt)
    paged_prefill(model, cache, [0])
    assert cache.add(1, prompt) == 16  # never the whole prompt: the last block's 16 are computed
    fed = cache.prepare([1])
    assert fed.shape == (1, 16)
    close(model(fed, cache=cache)[0, -1], static_logits(model, prompt, [])[0])


def test_bf16_paged_decode_tracks_the_static_cache(model):
    m16 = HavocModel(model.config).eval()
    m16.load_state_dict(model.state_dict())
    m16 = m16.to(torch.bfloat16)
    prompt, cont = tokens(30, 80), tokens(6, 81)
    want = static_logits(m16, prompt, cont)
    cache = PagedKVCache.for_model(m16, 16, 16)
    assert cache.dtype == torch.bfloat16
    cache.add(0, prompt)
    got = [paged_prefill(m16, cache, [0])[0]] + [paged_step(m16, cache, [0], [t])[0] for t in cont]
    for g, w in zip(got, want):  # bf16 rounding differs between the two attention paths
        torch.testing.assert_close(g.float(), w.float(), atol=0.25, rtol=0.05)


# --- guards ---------------------------------------------------------------------------------------------------


def test_a_forward_needs_prepare_and_its_shape(model):
    cache = PagedKVCache.for_model(model, 8, 4)
    with pytest.raises(GenerationError, match="prepare"):
        model(torch.tensor([[1, 2]]), cache=cache)
    cache.add(0, [1, 2, 3])
    cache.prepare([0])
    with pytest.raises(GenerationError, match=r"prepare\(\) set up \(1, 3\)"):
        model(torch.tensor([[1, 2]]), cache=cache)
    with pytest.raises(GenerationError, match="no padding mask"):
        model(torch.tensor([[1, 2, 3]]), cache=cache, attention_mask=torch.tensor([[0, 1, 1]]))
    with pytest.raises(GenerationError, match="waiting to be computed"):
        cache.prepare([0], [5])
    with pytest.raises(GenerationError, match="not in the cache"):
        cache.prepare([9])
    with pytest.raises(GenerationError, match="distinct"):
        cache.prepare([0, 0])
    with pytest.raises(GenerationError, match="not computed yet"):
        cache.fork(0, 1)
    with pytest.raises(GenerationError, match="empty"):
        cache.add(1, [])


def test_out_of_blocks_leaves_the_cache_unchanged(model):
    cache = PagedKVCache.for_model(model, 3, 4)
    cache.add(0, tokens(7, 90))
    paged_prefill(model, cache, [0])
    cache.add(1, tokens(3, 91))
    paged_prefill(model, cache, [1])
    with pytest.raises(OutOfBlocksError):
        cache.add(2, tokens(5, 92))
    assert 2 not in cache
    paged_step(model, cache, [1], [4])  # fills sequence 1's block
    with pytest.raises(OutOfBlocksError):
        cache.prepare([0, 1], [4, 5])  # 0 has room in its block, 1 needs a new one: none left
    assert cache.length(0) == 7 and cache.length(1) == 4 and cache.pending(0) == 0
    cache.check_invariants()


def test_prefix_blocks_are_attended_only_once_computed(model):
    prompt = tokens(20, 100)
    cache = PagedKVCache.for_model(model, 16, 4)
    cache.add(0, prompt)
    assert cache.add(1, prompt) == 16  # hits blocks that sequence 0 has not computed yet
    with pytest.raises(GenerationError, match="no forward has written yet"):
        cache.prepare([1])
    paged_prefill(model, cache, [0])
    close(paged_prefill(model, cache, [1])[0], static_logits(model, prompt, [])[0])
    cache.check_invariants()


@pytest.mark.parametrize("second", [20, 17])  # the sharer plans a garbage block of its own, or none
def test_freeing_an_uncomputed_sequence_never_serves_its_garbage(model, second):
    prompt = tokens(20, 110)
    cache = PagedKVCache.for_model(model, 16, 4)
    cache.add(0, prompt)
    assert cache.add(1, prompt[:second]) == 16  # shares sequence 0's planned-but-unwritten blocks
    cache.free(0)
    with pytest.raises(GenerationError, match="no forward has written yet"):
        cache.prepare([1])
    cache.free(1)  # the last holder: the garbage blocks are evicted
    assert cache.add(2, prompt) == 0
    close(paged_prefill(model, cache, [2])[0], static_logits(model, prompt, [])[0])
    cache.check_invariants()


def test_free_cancels_a_prepared_forward(model):
    cache = PagedKVCache.for_model(model, 16, 4)
    for s in (0, 1):
        cache.add(s, tokens(6, 120 + s))
    paged_prefill(model, cache, [0, 1])
    cache.prepare([0, 1], [3, 4])
    cache.free(1)
    with pytest.raises(GenerationError, match="prepare"):
        model(torch.tensor([[3], [4]]), cache=cache)
    # sequence 0's planned token still waits, and is computed by the next prepare
    assert cache.pending(0) == 1
    close(paged_prefill(model, cache, [0])[0], static_logits(model, tokens(6, 120), [3])[-1])


# --- generation ---------------------------------------------------------------------------------------------

PROMPTS = [[5, 6], [9, 100, 200, 33, 4, 8, 9], [300], [7, 7, 7, 7], list(range(40, 60))]


def test_paged_generation_equals_static(model):
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    static = generate_ids(model, PROMPTS, params, cache="static")
    stats = GenerationStats()
    assert generate_ids(model, PROMPTS, params, cache="paged", stats=stats) == static
    assert stats.generated_tokens == sum(len(o) for o in static) and stats.steps == 12
    assert stats.extra["paged"]["num_seqs"] == 0  # every sequence freed


def test_paged_generation_with_stops_and_a_small_pool(model):
    alone = generate_ids(model, PROMPTS, SamplingParams(max_new_tokens=12, ignore_eos=True), cache="static")
    stop_ids = {alone[0][1], alone[2][4]}
    params = SamplingParams(max_new_tokens=12, stop_token_ids=tuple(stop_ids))
    want = generate_ids(model, PROMPTS, params, cache="static")
    # 10 blocks of 4 tokens: not all prompts fit at once, so later ones wait for finished ones' blocks
    cache = PagedKVCache.for_model(model, 10, 4)
    started = []
    for events in stream_ids(model, PROMPTS, params, cache=cache):
        started += [e.index for e in events if e.index not in started]
    assert started == [0, 1, 2, 3, 4]
    assert generate_ids(model, PROMPTS, params, cache=cache) == want
    assert len(cache) == 0 and cache.stats()["evictions"] > 0
    with pytest.raises(OutOfBlocksError, match="prompt 4 needs"):
        generate_ids(model, PROMPTS, params, cache=PagedKVCache.for_model(model, 6, 4))


def test_a_shared_pool_serves_the_next_call_from_its_prefix_cache(model):
    cache = PagedKVCache.for_model(model, 64, 4)
    system = list(range(100, 124))  # a shared 24-token "system prompt"
    prompts = [system + [1, 2], system + [3]]
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    first = generate_ids(model, prompts, params, cache=cache)
    assert cache.stats()["prefix_hit_tokens"] == 24  # the second prompt reused the first's blocks
    assert generate_ids(model, prompts, params, cache=cache) == first == generate_ids(model, prompts, params, cache="static")
    assert cache.stats()["prefix_hit_tokens"] == 24 + 2 * 24
    generate_ids(model, prompts, params, cache=cache, namespace="other")
    assert cache.stats()["prefix_hit_tokens"] == 24 + 2 * 24 + 24  # within the new namespace only


def test_paged_sampling_and_penalty_run_and_an_early_stop_frees(model):
    params = SamplingParams(max_new_tokens=8, temperature=0.8, top_k=20, seed=3, repetition_penalty=1.3)
    cache = PagedKVCache.for_model(model, 32, 4)
    outs = generate_ids(model, PROMPTS, params, cache=cache)
    assert [len(o) for o in outs] == [8] * 5 and all(0 <= t < 384 for o in outs for t in o)
    assert generate_ids(model, PROMPTS, params, cache=cache) == outs  # seeded: reproducible
    stream = stream_ids(model, PROMPTS, params, cache=cache)
    next(stream)
    assert len(cache) == 5
    stream.close()  # a consumer that stops early leaves nothing behind
    assert len(cache) == 0
    with pytest.raises(GenerationError, match="cache must be"):
        generate_ids(model, PROMPTS, params, cache="pagd")


# --- SmolLM2 ------------------------------------------------------------------------------------------------


@pytest.mark.model
def test_smollm2_paged_logits_equal_static(smollm2):
    model, tok = smollm2
    text = "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon."
    prompt = tok.encode(text)
    other = tok.encode("def mean(xs): return sum(xs) / len(xs)")
    cont = tok.encode(" The crew returned on July 24.", add_bos=False)[:6]
    alt = tok.encode(" It was a quiet Sunday in the summer of that year.", add_bos=False)[:6]
    want = static_logits(model, prompt, cont)
    want_alt = static_logits(model, prompt, alt)
    want_other = static_logits(model, other, cont)
    cache = PagedKVCache.for_model(model, 64, 16)
    cache.add(0, prompt)
    close_scaled(paged_prefill(model, cache, [0])[0], want[0])
    cache.add(1, other)
    close_scaled(paged_prefill(model, cache, [1])[0], want_other[0])
    cache.fork(0, 2)  # the same prefix continued differently
    for i in range(len(cont)):
        out = paged_step(model, cache, [0, 1, 2], [cont[i], cont[i], alt[i]])
        close_scaled(out[0], want[i + 1])
        close_scaled(out[1], want_other[i + 1])
        close_scaled(out[2], want_alt[i + 1])
    skip = cache.add(3, prompt + alt[:2])  # a prefix hit on the cached blocks of the prompt
    assert skip == 16 * ((len(prompt) + 1) // 16) and skip > 0
    close_scaled(paged_prefill(model, cache, [3])[0], want_alt[2])
    cache.check_invariants()


@pytest.mark.model
def test_smollm2_paged_generation_equals_static(smollm2):
    model, tok = smollm2
    prompts = [tok.encode(t) for t in ("The capital of France is", "def fib(n):", "1, 2, 3, 4,")]
    params = SamplingParams(max_new_tokens=8, ignore_eos=True)
    assert generate_ids(model, prompts, params, cache="paged") == generate_ids(model, prompts, params, cache="static")


def test_packed_prefill_of_ragged_prompts_equals_static(model):
    # lengths around block boundaries (block size 16), a one-token prompt, and prefix hits that leave
    # different starts: every sequence's logits at its last token, then decoding on from there
    base = tokens(35, 140)
    prompts = [tokens(1, 141), tokens(15, 142), tokens(17, 143), base + tokens(6, 144), tokens(40, 145)]
    hit = base[:32] + tokens(9, 146)  # 32 tokens hit on sequence 3's blocks, once computed
    cache = PagedKVCache.for_model(model, 48, 16)
    for s, p in enumerate(prompts):
        cache.add(s, p)
    fed, ends = cache.prepare_packed(range(5))
    assert fed.shape == (1, sum(map(len, prompts))) and ends.tolist() == [0, 15, 32, 73, 113]
    with torch.inference_mode():
        out = model(fed, cache=cache, logits_at=ends)[0]  # (5, V)
    for s, p in enumerate(prompts):
        close(out[s], static_logits(model, p, [])[0])
        assert cache.pending(s) == 0
    assert cache.add(5, hit) == 32
    cache.add(6, tokens(3, 147))
    fed, ends = cache.prepare_packed([6, 5])  # 3 and 9 tokens, starting at 0 and 32
    assert fed[0].tolist() == tokens(3, 147) + hit[32:]
    with torch.inference_mode():
        out = model(fed, cache=cache, logits_at=ends)[0]
    close(out[0], static_logits(model, tokens(3, 147), [])[0])
    close(out[1], static_logits(model, hit, [])[0])
    every = prompts + [hit, tokens(3, 147)]
    conts = [tokens(3, 150 + s) for s in range(7)]
    for step in range(3):
        got = paged_step(model, cache, list(range(7)), [c[step] for c in conts])
        for s in range(7):
            close(got[s], static_logits(model, every[s], conts[s][: step + 1])[-1])
    cache.check_invariants()


def test_packed_prefill_guards(model):
    cache = PagedKVCache.for_model(model, 16, 4)
    cache.add(0, tokens(5, 160))
    cache.add(1, tokens(3, 161))
    with pytest.raises(GenerationError, match="distinct"):
        cache.prepare_packed([0, 0])
    with pytest.raises(GenerationError, match="not in the cache"):
        cache.prepare_packed([0, 7])
    fed, ends = cache.prepare_packed([0, 1])
    with pytest.raises(GenerationError, match=r"prepare\(\) set up \(1, 8\)"):
        model(fed.view(2, 4), cache=cache)
    with pytest.raises(GenerationError, match="not both"):
        model(fed, cache=cache, logits_at=ends, logits_to_keep=1)
    with pytest.raises(GenerationError, match=r"outside \[0, 8\)"):
        model(fed, cache=cache, logits_at=torch.tensor([4, 8]))
    with pytest.raises(GenerationError, match="integer"):
        model(fed, cache=cache, logits_at=torch.tensor([[4]]))
    assert cache.pending(0) == 5 and cache.pending(1) == 3  # nothing ran
    with torch.inference_mode():
        model(fed, cache=cache, logits_at=ends)
    with pytest.raises(GenerationError, match=r"sequences \[0, 1\] have none"):
        cache.prepare_packed([0, 1])
    cache.check_invariants()
