"""Speculative decoding by prompt lookup, and how many draft tokens a step can afford.

Drafts: the continuation of the latest earlier occurrence of a request's last 3 (else 2, else 1) tokens in its
prompt and output — what llama.cpp's lookup decoding and prompt-lookup decoding (Saxena 2023) propose, no
second model. The engine verifies them in the same step as every other row (see `Engine._advance`). How
long a match was says much about how sure its draft is: over eight SmolLM2 answers (code, quotes, JSON,
lists, stories; greedy), a draft token after a 1-token match was taken 43% of the time, after a 2-token
match 70%, after a 3-token match 84%; so acceptance is counted per match length.

How long a draft: a draft token is worth computing when the tokens it is expected to save pay for the row it
adds. A step over x token rows takes about a + b·x seconds (a: streaming the weights once, b: one row's
compute), both fitted online from the engine's own decode steps (`StepCost`). A request whose drafted tokens
were taken with rate α (each token given that the ones before it were; `Request.spec_*`, recent steps
weighted most, per match length) gets its j-th draft token accepted with probability α^j. A step that yields E tokens over x
rows gains by one more draft token of probability q exactly when

    (E + q) / (a + b·(x + 1)) > E / (a + b·x)   <=>   q·(a + b·x) > b·E,

so `plan_drafts` adds tokens in order of q while that holds. At batch 1 a step is bound by streaming the
weights (a >> b) and even unlikely tokens pay; at batch 8 or 32 the rows fill the step, only drafts that
are nearly sure pay, and text with nothing to copy drafts nothing. (vLLM switches speculation off above a
fixed batch size; the threshold here is the machine's own, measured as it runs.)
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

# NOTE: the prior ratio b/a before the engine has timed a step with varied rows: SmolLM2 fp32 on 2 cores of the
# AMX Xeon measured a ≈ 25 ms, b ≈ 2 ms (bench/RESULTS.md, "Speculative decoding").
PRIOR_ROW_RATIO = 1 / 10
DECAY = 0.97  # StepCost: weight of an observation one step older (about the last 30 steps count)
MAX_NGRAM = 3
PRIOR_ALPHA = (0.4, 0.7, 0.85)  # acceptance after a match of 1, 2, 3 tokens before any was verified (above)
ALPHA_DECAY = 0.8  # a request's acceptance counts: weight of a verification one older


def lookup(ids: Sequence[int], k: int, max_ngram: int = MAX_NGRAM) -> tuple[int, list[int]]:
    """(n, draft): up to k tokens that followed the latest earlier occurrence of the last n tokens of `ids`
    (n from `max_ngram` down to 1), with the n it matched; (0, []) when none occurred before."""
    arr = np.asarray(ids, dtype=np.int64)
    L = len(arr)
    for n in range(min(max_ngram, L - 1), 0, -1):
        windows = np.lib.stride_tricks.sliding_window_view(arr[: L - 1], n)  # starts 0 .. L - 1 - n
        hits = np.flatnonzero((windows == arr[L - n :]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return n, arr[start : start + k].tolist()
    return 0, []


class StepCost:
    """Seconds a step over x token rows takes, a + b·x: a weighted least-squares line through the recent
    decode steps (older ones decay). Until the rows have varied enough to fit a slope, b = a · `prior_ratio`."""

    def __init__(self, prior_ratio: float = PRIOR_ROW_RATIO, decay: float = DECAY) -> None:
        if not prior_ratio > 0 or not 0 < decay < 1:
            raise ValueError(f"prior_ratio must be > 0 and decay in (0, 1), got {prior_ratio!r}, {decay!r}")
        self.prior_ratio = prior_ratio
        self.decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        """Record one step: `rows` token rows in `seconds` of forward time."""
        if rows < 1 or not seconds > 0:
            return
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + rows
        self._y = d * self._y + seconds
        self._xx = d * self._xx + rows * rows
        self._xy = d * self._xy + rows * seconds

    def line(self) -> tuple[float, float]:
        """(a, b): seconds per step, seconds per row; (1, prior_ratio) before any step was observed."""
        if self._w == 0:
            return 1.0, self.prior_ratio
        mx, my = self._x / self._w, self._y / self._w
        sxx = self._xx - self._x * mx  # weighted spread of the rows around their mean
        if sxx >= 2.0:  # rows varied by a few over several steps: the slope is measured
            b = max((self._xy - self._x * my) / sxx, 0.0)
            a = my - b * mx
            if a > 0:
                return a, b
        a = my / (1.0 + self.prior_ratio * mx)
        return a, a * self.prior_ratio


def plan_drafts(candidates: Sequence[tuple[float, int]], rows: int, tokens: float, cost: tuple[float, float]) -> list[int]:
    """How many draft tokens each candidate gets this step.

    Args:
        candidates: (α, most tokens it can draft) per decoding request; α its acceptance rate per token.
        rows: token rows the step computes without drafts; tokens: tokens it yields without them.
        cost: (a, b) of `StepCost.line`.
    Returns:
        draft lengths, in the order of `candidates` (the module docstring gives the rule).
    """
    a, b = cost
    lengths = [0] * len(candidates)
    heap = [(-alpha, i) for i, (alpha, most) in enumerate(candidates) if most > 0 and alpha > 0]
    heapq.heapify(heap)
    x, e = float(rows), float(tokens)
    while heap:
        neg_q, i = heapq.heappop(heap)
        q = -neg_q
        if q * (a + b * x) <= b * e:
            break  # the rest are less likely still, and the bar only rises
        lengths[i] += 1
        x += 1
        e += q
        alpha, most = candidates[i]
        if lengths[i] < most:
            heapq.heappush(heap, (-(q * alpha), i))
    return lengths


class Acceptance:
    """Draft tokens taken and verified, per match length (1..MAX_NGRAM), optionally decayed: a request's
    recent record, or the engine's whole one (which starts from PRIOR_ALPHA)."""

    def __init__(self, decay: float = 1.0, prior: Sequence[float] | None = None, weight: float = 0.0) -> None:
        self.decay = decay
        self.accepted = [weight * p for p in prior] if prior else [0.0] * MAX_NGRAM
        self.trials = [weight] * MAX_NGRAM if prior else [0.0] * MAX_NGRAM

    def record(self, n: int, drafted: int, accepted: int) -> None:
        """A draft after an n-token match: `accepted` of its `drafted` tokens were taken."""
        i = n - 1
        self.accepted[i] = self.decay * self.accepted[i] + accepted
        self.trials[i] = self.decay * self.trials[i] + accepted + (accepted < drafted)  # + the first miss

    def rate(self, n: int, prior: "Acceptance | None" = None, weight: float = 2.0) -> float:
        """Acceptance per token after an n-token match; with `prior`, these counts shrunk toward its rate by
        `weight` pseudo-trials."""
        i = n - 1
        if prior is None:
            return self.accepted[i] / self.trials[i] if self.trials[i] > 0 else 0.5
        return (self.accepted[i] + weight * prior.rate(n)) / (self.trials[i] + weight)
