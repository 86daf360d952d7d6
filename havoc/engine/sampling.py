"""Sampling, penalties and stop matching: the one place that turns a request's logits into its next token
and its tokens into the text a caller sees.

Every decode path uses it — the engine (`havoc.engine`), the static-cache loop of `havoc.generation`, PRIME
and the server — so a request behaves the same whoever drives it.

Order of operations on a row of logits, as users of transformers, vLLM and the OpenAI API expect:
  1. a constraint's mask (grammar) and the request's logits hook;
  2. penalties on the raw logits: repetition (CTRL rule, over the prompt and the output), then presence and
     frequency (OpenAI's rule, over the output only: logit -= frequency * count + presence * [count > 0]);
  3. greedy argmax at temperature 0; else temperature, top-k, top-p and the inverse CDF at a uniform
     number keyed by the request's seed and the token's position (`Sampler`), so a request's output
     depends on nothing but its own logits — not on what runs beside it, nor on speculative decoding.
Log-probabilities, when asked for, are those of the model's raw distribution (before penalties and
temperature), as vLLM reports them by default.

`TextStream` turns a request's ids into text incrementally (`havoc.tokenizer.StreamDecoder`: never half a
UTF-8 character, constant work per token) and watches for stop strings. Text that could still become the
start of a stop string is held back until it cannot, and a matched stop string is never part of the text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from havoc.errors import GenerationError


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class SamplingParams:
    """How to pick tokens and when to stop.

    Args:
        max_new_tokens: upper bound on generated tokens (the context may stop it earlier).
        temperature: 0 for greedy decoding; otherwise the softmax temperature.
        top_k: keep the k most likely tokens (0: all).
        top_p: keep the smallest set of tokens whose probability reaches top_p (1.0: all).
        repetition_penalty: >1 discourages tokens already in the prompt or the output (CTRL / transformers
            rule: positive logits are divided by it, negative ones multiplied).
        presence_penalty: OpenAI's: subtracted from the logit of every token the output already holds.
        frequency_penalty: OpenAI's: subtracted once per time the output already holds the token.
        seed: seed of the request's own sampling generator; the same seed gives the same output.
        stop: strings that end generation; the text stops before the first one (it is not part of it).
        stop_token_ids: ids that end generation, in addition to the tokenizer's end-of-sequence ids.
        ignore_eos: keep generating through end-of-sequence ids (benchmarks).
        logprobs: None, or how many most likely alternatives to report with each token's log-probability
            (0: the chosen token's only).
        skip_special_tokens: leave special tokens (`<|im_end|>`, ...) out of the text.
        speculative: draft tokens by prompt lookup and verify them in one step (None: the engine's
            setting). Greedy output is the same with or without; sampling keeps its distribution.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    speculative: bool | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise GenerationError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise GenerationError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if (
            not isinstance(self.repetition_penalty, (int, float))
            or not math.isfinite(self.repetition_penalty)
            or self.repetition_penalty <= 0
        ):
            raise GenerationError(f"repetition_penalty must be a positive number, got {self.repetition_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not -2 <= v <= 2:
                raise GenerationError(f"{name} must be a number in [-2, 2], got {v!r}")
        if self.seed is not None and (not _is_int(self.seed) or not -(2**63) <= self.seed < 2**64):
            raise GenerationError(f"seed must be an integer in [-2^63, 2^64) or None, got {self.seed!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise GenerationError(f"stop strings must be non-empty strings, got {s!r}")
        self.stop_token_ids = tuple(self.stop_token_ids)
        for t in self.stop_token_ids:
            if not _is_int(t) or t < 0:
                raise GenerationError(f"stop_token_ids must be non-negative integers, got {t!r}")
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= 20):
            raise GenerationError(f"logprobs must be None or an integer in [0, 20], got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def _penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    # logits: (B, V) fp32, already divided by the temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the first always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick one token per row of `logits` ((B, V)) with one generator for the batch; returns (B,) int64.

    `seen` ((B, V) bool) marks the tokens the repetition penalty applies to. (The engine samples each
    request with its own `Sampler`; this batched form serves the static-cache loop.)
    """
    logits = logits.float()
    if params.repetition_penalty != 1.0 and seen is not None:
        logits = _penalize(logits, seen, params.repetition_penalty)
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = _filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class TokenLogprob:
    """A generated token's log-probability and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class Sampler:
    """One request's sampling state: its parameters, its seed and the counts its penalties use.

    A sampled token is the inverse CDF of the processed distribution at a uniform number drawn from the
    request's seed and the token's position alone (a counter-based generator: splitmix64 of both). So the
    token at a position depends on nothing but the request's own logits there — not on the batch, not on a
    preemption, and not on speculative decoding: a drafted token is accepted exactly when it is the token
    this rule picks, which happens with its target probability p(token), and the output is the one plain
    decoding gives.

    Args:
        params: the request's sampling parameters.
        vocab_size: logits per row.
        prompt_ids: the prompt (the repetition penalty covers it).
    """

    def __init__(self, params: SamplingParams, vocab_size: int, prompt_ids: Sequence[int]) -> None:
        self.params = params
        self.vocab_size = vocab_size
        self.seed = (params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()))) % 2**64
        self.seen: torch.Tensor | None = None  # (V,) bool: prompt and output (repetition penalty)
        self.counts: torch.Tensor | None = None  # (V,) fp32: output only (presence / frequency)
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool)
            ids = torch.tensor([t for t in prompt_ids if 0 <= t < vocab_size], dtype=torch.long)
            self.seen[ids] = True
        if params.presence_penalty or params.frequency_penalty:
            self.counts = torch.zeros(vocab_size, dtype=torch.float32)

    @property
    def needs_logits(self) -> bool:
        """Whether picking a token needs the whole row of logits (not greedy alone: argmax suffices)."""
        return not self.params.greedy or self.params.penalized or self.params.logprobs is not None

    def observe(self, token_id: int) -> None:
        """Count a token the request now holds (sampled or forced)."""
        if self.seen is not None:
            self.seen[token_id] = True
        if self.counts is not None:
            self.counts[token_id] += 1

    def _penalized(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        row = logits.float()
        if self.seen is not None:
            row = _penalize(row, self.seen, p.repetition_penalty)
        if self.counts is not None:
            row = row - self.counts * p.frequency_penalty - (self.counts > 0).float() * p.presence_penalty
        return row

    def uniform(self, position: int) -> float:
        """The request's uniform number in [0, 1) for the token at `position`."""
        return (_splitmix64(self.seed ^ _splitmix64(position)) >> 11) / float(1 << 53)

    def sample(self, logits: torch.Tensor, position: int) -> int:
        """The token at `position` from its row of logits ((V,), any float dtype, already masked by any
        constraint): the argmax when greedy, else the inverse CDF at `uniform(position)`."""
        if self.params.greedy:
            return int(self._penalized(logits).argmax())
        cdf = torch.cumsum(self.distribution(logits), 0)
        u = self.uniform(position) * float(cdf[-1])
        return min(int(torch.searchsorted(cdf, torch.tensor([u]), right=True)[0]), self.vocab_size - 1)

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The (V,) probabilities `sample` draws from: penalties, temperature, top-k, top-p applied."""
        p = self.params
        row = _filter_top_k_top_p(self._penalized(logits)[None] / p.temperature, p.top_k, p.top_p)[0]
        return torch.softmax(row, dim=-1)

    def logprob(self, logits: torch.Tensor, token_id: int) -> TokenLogprob:
        """The chosen token's log-probability under the raw logits, with the top `params.logprobs`."""
        lp = torch.log_softmax(logits.float(), dim=-1)
        k = self.params.logprobs or 0
        top: list[tuple[int, float]] = []
        if k:
            vals, idx = torch.topk(lp, k)
            top = [(int(i), float(v)) for i, v in zip(idx, vals)]
        return TokenLogprob(token_id, float(lp[token_id]), top)


class TextStream:
    """The text of one request as its tokens arrive, cut at the first stop string.

    Args:
        tokenizer: a `havoc.tokenizer.Tokenizer`.
        stops: stop strings.
        skip_special_tokens: leave special tokens out of the text.
    """

    def __init__(self, tokenizer, stops: Sequence[str] = (), *, skip_special_tokens: bool = True) -> None:
        from havoc.tokenizer import StreamDecoder

        self.decoder = StreamDecoder(tokenizer, skip_special_tokens=skip_special_tokens)
        self.stops = tuple(stops)
        self.text = ""
        self.stopped: str | None = None  # the stop string that matched
        self.finished = False
        self._emitted = 0

    def push(self, token_id: int) -> bool:
        """Add a token's text; True when a stop string has appeared (the text is cut before it)."""
        if self.stopped is not None:
            return True
        delta = self.decoder.push(token_id)
        return bool(delta) and self._append(delta)

    def _append(self, delta: str) -> bool:
        start = len(self.text)
        self.text += delta
        hit = -1
        for s in self.stops:
            pos = self.text.find(s, max(0, start - len(s) + 1))
            if pos >= 0 and (hit < 0 or pos < hit):
                hit, self.stopped = pos, s
        if hit >= 0:
            self.text = self.text[:hit]
            return True
        return False

    def finish(self) -> None:
        """No more tokens: flush what the decoder holds (its tail may complete a stop string)."""
        if not self.finished:
            self.finished = True
            if self.stopped is None:
                tail = self.decoder.flush()
                if tail:
                    self._append(tail)

    def take(self) -> str:
        """The text not handed out yet, less a tail that could still grow into a stop string."""
        end = len(self.text)
        if not self.finished and self.stopped is None:
            end -= self._held()
        if end <= self._emitted:
            return ""
        piece = self.text[self._emitted:end]
        self._emitted = end
        return piece

    def _held(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        held = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), held, -1):
                if self.text.endswith(s[:k]):
                    held = k
                    break
        return held


__all__ = ["Sampler", "SamplingParams", "TextStream", "TokenLogprob", "sample_next"]
