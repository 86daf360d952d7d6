"""Acceptance sampling by attributes: a single sampling plan's operating characteristic (NIST handbook
6.2.3-6.2.4; Montgomery, Introduction to Statistical Quality Control, 15.2).

A plan (n, c) inspects n items of a lot and accepts it when at most c are defective. For a lot fraction
defective p the probability of acceptance is binomial, P(X <= c | n, p) (type B, a process), or
hypergeometric given the lot size N (type A, an isolated lot of N p defectives, rounded). With rectifying
inspection (rejected lots screened 100 %, defectives replaced):

    AOQ = p Pa (N - n) / N        (without N: p Pa, the infinite-lot limit)
    ATI = n + (1 - Pa)(N - n)

AOQL is the largest AOQ over p, found by bounded maximisation on (0, 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import as_vector, fmt, jsonable

MAX_N = 1_000_000


def _whole(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_N:
        raise ToolError(f"{name} must be a whole number from {lo} to {MAX_N}, got {v!r:.40}")
    return v


def sampling_plan(n: int, c: int, p: Sequence[float] | None = None, lot_size: int | None = None,
                  aql: float | None = None, ltpd: float | None = None, distribution: str = "binomial") -> dict:
    """Operating characteristic of the single sampling plan (n, c): Pa, AOQ and ATI at each p, AOQL, risks.

    Args:
        n: sample size.
        c: acceptance number (accept when defectives <= c).
        p: lot fractions defective to evaluate (default 0.005 to 0.10 and the AQL/LTPD given).
        lot_size: N, for AOQ's (N - n)/N factor, ATI and the hypergeometric model.
        aql: acceptable quality level (fraction): the producer's risk is 1 - Pa(AQL).
        ltpd: lot tolerance percent defective (fraction): the consumer's risk is Pa(LTPD).
        distribution: "binomial" (type B) or "hypergeometric" (type A, needs lot_size).

    Returns:
        oc [{p, pa, aoq, ati}], aoql, aoql_at, producer_risk, consumer_risk, method, interpretation.
    """
    n, c = _whole(n, "n", 1), _whole(c, "c", 0)
    if c >= n:
        raise ToolError(f"the acceptance number c ({c}) must be below the sample size n ({n}): otherwise every lot passes")
    big_n = None if lot_size is None else _whole(lot_size, "lot_size", 1)
    if big_n is not None and big_n < n:
        raise ToolError(f"the lot ({big_n}) is smaller than the sample ({n})")
    if distribution not in ("binomial", "hypergeometric"):
        raise ToolError("distribution must be 'binomial' or 'hypergeometric'")
    if distribution == "hypergeometric" and big_n is None:
        raise ToolError("the hypergeometric (type A) OC curve needs lot_size")
    for name, v in (("aql", aql), ("ltpd", ltpd)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1):
            raise ToolError(f"{name} must be a fraction defective between 0 and 1 (0.01 for 1 %)")
    if aql is not None and ltpd is not None and not aql < ltpd:
        raise ToolError("aql must be below ltpd")
    if p is None:
        grid = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10]
    else:
        grid = list(as_vector(p, "p", max_len=1000))
        if any(not 0 <= v <= 1 for v in grid):
            raise ToolError("p values are fractions defective between 0 and 1")
    grid = sorted(set(grid) | {v for v in (aql, ltpd) if v is not None})

    def pa(q: float) -> float:
        if distribution == "hypergeometric":
            d = int(round(q * big_n))
            return float(sps.hypergeom.cdf(c, big_n, d, n))
        return float(sps.binom.cdf(c, n, q))

    def aoq(q: float) -> float:
        return q * pa(q) * ((big_n - n) / big_n if big_n else 1.0)

    rows = []
    for q in grid:
        a = pa(q)
        row = {"p": q, "pa": a, "aoq": aoq(q)}
        if big_n is not None:
            row["ati"] = n + (1 - a) * (big_n - n)
        rows.append(row)
    # AOQ rises then falls in p; search its peak on a grid first so the bounded search starts in the right hump
    coarse = np.linspace(1e-6, 1, 2001)
    vals = [aoq(q) for q in coarse]
    i = int(np.argmax(vals))
    lo, hi = coarse[max(0, i - 1)], coarse[min(len(coarse) - 1, i + 1)]
    if distribution == "hypergeometric":
        aoql_at, aoql = float(coarse[i]), float(vals[i])  # a step function in p: the grid peak is the answer
    else:
        res = optimize.minimize_scalar(lambda q: -aoq(q), bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
        aoql_at, aoql = float(res.x), float(-res.fun)
    prod = 1 - pa(aql) if aql is not None else None
    cons = pa(ltpd) if ltpd is not None else None
    parts = [f"plan n = {n}, c = {c}: AOQL {fmt(aoql)} at p = {fmt(aoql_at)}"]
    if prod is not None:
        parts.append(f"producer's risk {fmt(prod)} at AQL {fmt(aql)}")
    if cons is not None:
        parts.append(f"consumer's risk {fmt(cons)} at LTPD {fmt(ltpd)}")
    first = rows[0]
    parts.append(f"Pa = {fmt(first['pa'])} at p = {fmt(first['p'])}")
    return jsonable({
        "n": n, "c": c, "lot_size": big_n, "distribution": distribution, "oc": rows, "aoql": aoql, "aoql_at": aoql_at,
        "aql": aql, "ltpd": ltpd, "producer_risk": prod, "consumer_risk": cons,
        "method": f"Pa = P(X <= {c}) with X {'binomial(n, p)' if distribution == 'binomial' else 'hypergeometric(N, Np, n)'}; "
                  "AOQ = p Pa (N - n)/N" + ("" if big_n else " (no lot size: p Pa)") +
                  ("; ATI = n + (1 - Pa)(N - n)" if big_n else "") + "; AOQL by bounded maximisation",
        "interpretation": "; ".join(parts),
    })

