"""The statistics engine: tests, ANOVA, regression and descriptive statistics as JSON-ready dicts.

Every function returns a dict with the figures, `method` (what was computed, and how) and
`interpretation` (one line, at the given alpha). Numbers that are undefined (an F statistic when the
error sum of squares is zero) are None, and the text says why.

Numerical choices, all for digits a statistician would check:
- means by a correctly rounded sum plus one correction pass; sums of squares always of centred data
  (deviations from the accurately computed grand mean), summed with `math.fsum`. NIST's SmLs ANOVA
  sets have 13 constant leading digits; the textbook formula sum(x**2) - n*mean**2 loses all of them.
- regression by QR on power-of-two-scaled columns with iterative refinement (`havoc.tools._linalg`).
- distributions (t, F, chi-square, studentized range) from scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import (
    MAX_GROUPS,
    as_vector,
    check_alpha,
    check_alternative,
    fmt,
    fmt_p,
    jsonable,
    wilson_interval,
)
from havoc.tools._linalg import accurate_sum, lstsq, polynomial_design

# sqrt(SSE / SST) below this is a fit exact to the data's rounding: report it as perfect, not F = 4e27.
PERFECT_FIT_RTOL = 1e-12


# ---------------------------------------------------------------------------------------------- helpers

def _mean(x: np.ndarray) -> float:
    m = accurate_sum(x) / x.size
    # One correction pass: the rounding of the division and of huge offsets (values like 1e12 + 0.4).
    return m + accurate_sum(x - m) / x.size


def _ss(x: np.ndarray, m: float | None = None) -> float:
    """Sum of squared deviations from the mean, from centred data."""
    m = _mean(x) if m is None else m
    d = x - m
    return accurate_sum(d * d) - accurate_sum(d) ** 2 / x.size


def _var(x: np.ndarray) -> float:
    return _ss(x) / (x.size - 1)


def _p_value(t_dist, stat: float, alternative: str) -> float:
    if alternative == "two-sided":
        return float(2 * t_dist.sf(abs(stat)))
    if alternative == "greater":
        return float(t_dist.sf(stat))
    return float(t_dist.cdf(stat))


def _t_ci(est: float, se: float, df: float, alpha: float, alternative: str) -> list[float | None]:
    if alternative == "two-sided":
        q = float(sps.t.ppf(1 - alpha / 2, df))
        return [est - q * se, est + q * se]
    q = float(sps.t.ppf(1 - alpha, df))
    # One-sided tests get the matching one-sided bound; the open end is None (JSON has no infinity).
    return [est - q * se, None] if alternative == "greater" else [None, est + q * se]


def _exact_shift(values: list[list[Any]]) -> list[list[Any]]:
    """Decimal inputs minus their first value, exactly, as floats.

    Data like NIST's 1000000000000.4 are not representable in binary (the nearest double is off by
    2.4e-5, which is 2.4e-4 of the spread); subtracting the common leading digits in decimal first keeps
    every digit. Only `Decimal` inputs (the Python API) take this path; floats are what they are.
    """
    shift = values[0][0]
    with localcontext() as ctx:
        ctx.prec = 60  # wide enough that the subtraction is exact for any double-sized decimal
        return [[float(Decimal(v) - shift) for v in vs] for vs in values]


def _groups(groups: Any, *, min_groups: int = 2, min_size: int = 1, with_shift: bool = False):
    """(names, arrays) of validated groups; with_shift adds the value exact-decimal input was shifted by."""
    if isinstance(groups, Mapping):
        names = [str(k) for k in groups]
        values = list(groups.values())
    elif isinstance(groups, Sequence) and not isinstance(groups, (str, bytes)):
        names = [f"group {i + 1}" for i in range(len(groups))]
        values = list(groups)
    else:
        raise ToolError("groups must be an object {name: [values]} or a list of lists")
    if not (min_groups <= len(values) <= MAX_GROUPS):
        raise ToolError(f"need between {min_groups} and {MAX_GROUPS} groups, got {len(values)}")
    shift = 0.0
    if all(isinstance(vs, Sequence) and vs and all(isinstance(v, Decimal) for v in vs) for vs in values):
        shift = float(values[0][0])
        values = _exact_shift(values)
    arrays = [as_vector(v, f"group {n!r}", min_len=min_size) for n, v in zip(names, values)]
    return (names, arrays, shift) if with_shift else (names, arrays)


def _verdict(p: float, alpha: float) -> str:
    return "reject H0" if p < alpha else "do not reject H0"


def _conclusion(p: float, alpha: float, found: str, not_found: str, detail: str, subject: str = "") -> str:
    """The one-line interpretation every test shares, so that its wording lives in one place.

    Args:
        p: the test's p-value.
        alpha: the significance level.
        found: what a rejection means, e.g. "the means differ".
        not_found: what no rejection means, e.g. "no evidence that the means differ".
        detail: the figures, written in parentheses after the conclusion.
        subject: the test's name, for a result that reports several tests.

    Returns:
        "At alpha = 0.05, reject H0: the means differ (t = 2.1, df = 9, p = 0.0312)".
    """
    subject = f"{subject} " if subject else ""
    return f"At alpha = {alpha:g}, {subject}{_verdict(p, alpha)}: {found if p < alpha else not_found} ({detail})"


# --------------------------------------------------------------------------------------- descriptive

def describe(data: Sequence[float], alpha: float = 0.05) -> dict:
    """Descriptive statistics of one sample, with a t confidence interval for the mean.

    Args:
        data: the observations.
        alpha: 1 - confidence level of the interval.

    Returns:
        n, mean, sd, variance, se, min, q1, median, q3, max, range, iqr, skewness (adjusted
        Fisher-Pearson G1), excess kurtosis (G2), cv, mean_ci, method, interpretation.
    """
    x = as_vector(data, "data")
    alpha = check_alpha(alpha)
    n = x.size
    mean = _mean(x)
    var = _ss(x, mean) / (n - 1) if n > 1 else None
    sd = math.sqrt(var) if var is not None else None
    se = sd / math.sqrt(n) if sd is not None else None
    q1, med, q3 = (float(v) for v in np.percentile(x, [25, 50, 75]))
    # Shape statistics are scale-free: computed on standardized values, the third and fourth powers of
    # data near the schema's 1e100 bound cannot overflow.
    z = (x - mean) / sd if sd else None
    skew = float(sps.skew(z, bias=False)) if n > 2 and sd else None
    kurt = float(sps.kurtosis(z, bias=False)) if n > 3 and sd else None
    ci = _t_ci(mean, se, n - 1, alpha, "two-sided") if se else None
    level = f"{100 * (1 - alpha):g}%"
    text = (f"n = {n}, mean {fmt(mean)}" + (f" (sd {fmt(sd)}); {level} CI for the mean [{fmt(ci[0])}, {fmt(ci[1])}]"
                                            if ci else "; a single value or no spread gives no interval"))
    return jsonable({
        "n": n, "mean": mean, "sd": sd, "variance": var, "se": se,
        "min": float(x.min()), "q1": q1, "median": med, "q3": q3, "max": float(x.max()),
        "range": float(x.max() - x.min()), "iqr": q3 - q1, "skewness": skew, "kurtosis_excess": kurt,
        "cv": sd / mean if sd is not None and mean != 0 else None,
        "mean_ci": ci, "confidence": 1 - alpha,
        "method": "two-pass centred sums (fsum); quartiles by linear interpolation (type 7); "
                  "t interval for the mean",
        "interpretation": text,
    })


def confidence_interval(kind: str = "mean", data: Sequence[float] | None = None, successes: int | None = None,
                        trials: int | None = None, alpha: float = 0.05, method: str | None = None) -> dict:
    """A confidence interval for a mean, a variance, a standard deviation or a proportion.

    Args:
        kind: "mean" (t), "variance" or "sd" (chi-square), or "proportion".
        data: the sample (mean, variance, sd).
        successes: number of successes (proportion).
        trials: number of trials (proportion).
        alpha: 1 - confidence level.
        method: for proportions "wilson" (default) or "clopper-pearson" (exact).

    Returns:
        estimate, lower, upper, confidence, method, interpretation.
    """
    alpha = check_alpha(alpha)
    level = f"{100 * (1 - alpha):g}%"
    if kind in ("mean", "variance", "sd"):
        if data is None:
            raise ToolError(f"a {kind} interval needs data")
        x = as_vector(data, "data", min_len=2)
        n = x.size
        if kind == "mean":
            est = _mean(x)
            se = math.sqrt(_var(x) / n)
            lo, hi = _t_ci(est, se, n - 1, alpha, "two-sided")
            how = f"t interval, df = {n - 1}"
        else:
            var = _var(x)
            lo = (n - 1) * var / float(sps.chi2.ppf(1 - alpha / 2, n - 1))
            hi = (n - 1) * var / float(sps.chi2.ppf(alpha / 2, n - 1))
            est = var
            if kind == "sd":
                est, lo, hi = math.sqrt(var), math.sqrt(lo), math.sqrt(hi)
            how = f"chi-square interval, df = {n - 1} (assumes normal data)"
    elif kind == "proportion":
        if successes is None or trials is None:
            raise ToolError("a proportion interval needs successes and trials")
        if isinstance(successes, bool) or isinstance(trials, bool) or int(successes) != successes or int(trials) != trials:
            raise ToolError("successes and trials must be whole numbers")
        k, n = int(successes), int(trials)
        if not (n >= 1 and 0 <= k <= n):
            raise ToolError(f"need 0 <= successes <= trials and trials >= 1, got {k} of {n}")
        est = k / n
        method = method or "wilson"
        if method == "wilson":
            lo, hi = wilson_interval(k, n, float(sps.norm.ppf(1 - alpha / 2)))
            how = "Wilson score interval"
        elif method == "clopper-pearson":
            lo = float(sps.beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
            hi = float(sps.beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
            how = "Clopper-Pearson exact interval"
        else:
            raise ToolError(f"unknown proportion method {method!r}: use 'wilson' or 'clopper-pearson'")
    else:
        raise ToolError(f"unknown interval kind {kind!r}: use 'mean', 'variance', 'sd' or 'proportion'")
    return jsonable({
        "kind": kind, "estimate": est, "lower": lo, "upper": hi, "confidence": 1 - alpha, "method": how,
        "interpretation": f"{level} confidence interval for the {kind}: [{fmt(lo)}, {fmt(hi)}] (estimate {fmt(est)})",
    })


# ------------------------------------------------------------------------------------------ t-tests

def t_test_one_sample(data: Sequence[float], mu: float = 0.0, alternative: str = "two-sided",
                      alpha: float = 0.05) -> dict:
    """One-sample t-test of H0: mean = mu.

    Args:
        data: the sample (at least 2 values).
        mu: the hypothesised mean.
        alternative: "two-sided", "less" or "greater" (H1: mean < mu or mean > mu).
        alpha: significance level.

    Returns:
        statistic, df, p_value, mean, se, ci (for the mean), cohens_d, reject_null, method, interpretation.
    """
    x = as_vector(data, "data", min_len=2)
    return t_one_from_summary(_mean(x), math.sqrt(_var(x)), x.size, mu, alternative, alpha)


def _summary_numbers(mean: Any, sd: Any, n: Any, which: str) -> tuple[float, float, int]:
    for name, v in (("mean", mean), ("sd", sd)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ToolError(f"{name}{which} must be a finite number")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ToolError(f"n{which} must be a whole number of at least 2 (one value has no standard deviation)")
    if sd < 0:
        raise ToolError(f"sd{which} cannot be negative")
    return float(mean), float(sd), n


def t_one_from_summary(mean: float, sd: float, n: int, mu: float = 0.0, alternative: str = "two-sided",
                       alpha: float = 0.05, *, summary: bool = False) -> dict:
    """One-sample t-test from the sample's mean, standard deviation and size (as results are reported).

    Args:
        mean: sample mean.
        sd: sample standard deviation (n - 1 divisor).
        n: sample size (at least 2).
        mu: the hypothesised mean.
        alternative: "two-sided", "less" or "greater".
        alpha: significance level.
        summary: the figures came from the caller, not from data (said in `method`).

    Returns:
        The same fields as `t_test_one_sample`.
    """
    mean, sd, n = _summary_numbers(mean, sd, n, "")
    alpha, alternative = check_alpha(alpha), check_alternative(alternative)
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu):
        raise ToolError("mu must be a finite number")
    mu = float(mu)
    if sd == 0:
        raise ToolError("all values are equal: the t statistic is undefined (zero standard deviation)")
    se = sd / math.sqrt(n)
    t = (mean - mu) / se
    p = _p_value(sps.t(n - 1), t, alternative)
    ci = _t_ci(mean, se, n - 1, alpha, alternative)
    rel = {"two-sided": "differs from", "less": "is less than", "greater": "is greater than"}[alternative]
    text = _conclusion(p, alpha, f"the mean ({fmt(mean)}) {rel} {fmt(mu)}",
                       f"no evidence that the mean {rel} {fmt(mu)}", f"t = {fmt(t)}, df = {n - 1}, {fmt_p(p)}")
    return jsonable({
        "test": "one-sample t-test", "statistic": t, "df": n - 1, "p_value": p, "alternative": alternative,
        "mean": mean, "mu": mu, "sd": sd, "n": n, "se": se, "ci": ci, "confidence": 1 - alpha,
        "cohens_d": (mean - mu) / sd, "alpha": alpha, "reject_null": p < alpha,
        "method": "one-sample Student t-test" + (" from summary statistics" if summary else ""),
        "interpretation": text,
    })


def t_test_two_sample(x: Sequence[float], y: Sequence[float], equal_var: bool = False,
                      alternative: str = "two-sided", alpha: float = 0.05) -> dict:
    """Two-sample t-test of H0: mean(x) = mean(y), Student (pooled) or Welch.

    Args:
        x: first sample (at least 2 values).
        y: second sample (at least 2 values).
        equal_var: True for Student's pooled-variance test, False (default) for Welch's.
        alternative: "two-sided", "less" or "greater" (H1 about mean(x) - mean(y)).
        alpha: significance level.

    Returns:
        statistic, df, p_value, mean_x, mean_y, difference, se, ci (of the difference), cohens_d,
        reject_null, method, interpretation.
    """
    a, b = as_vector(x, "x", min_len=2), as_vector(y, "y", min_len=2)
    return t_two_from_summary(_mean(a), math.sqrt(_var(a)), a.size, _mean(b), math.sqrt(_var(b)), b.size,
                              equal_var, alternative, alpha)


def t_two_from_summary(mean_x: float, sd_x: float, n_x: int, mean_y: float, sd_y: float, n_y: int,
                       equal_var: bool = False, alternative: str = "two-sided", alpha: float = 0.05, *,
                       summary: bool = False) -> dict:
    """Two-sample t-test (Student or Welch) from each sample's mean, standard deviation and size.

    Args:
        mean_x, sd_x, n_x: the first sample's mean, standard deviation (n - 1 divisor) and size.
        mean_y, sd_y, n_y: the second sample's.
        equal_var: True for Student's pooled-variance test, False for Welch's.
        alternative: "two-sided", "less" or "greater" (H1 about mean(x) - mean(y)).
        alpha: significance level.
        summary: the figures came from the caller, not from data (said in `method`).

    Returns:
        The same fields as `t_test_two_sample`.
    """
    m1, s1, n1 = _summary_numbers(mean_x, sd_x, n_x, "_x")
    m2, s2, n2 = _summary_numbers(mean_y, sd_y, n_y, "_y")
    alpha, alternative = check_alpha(alpha), check_alternative(alternative)
    v1, v2 = s1 * s1, s2 * s2
    diff = m1 - m2
    if equal_var:
        df = n1 + n2 - 2
        sp2 = ((n1 - 1) * v1 + (n2 - 1) * v2) / df
        se = math.sqrt(sp2 * (1 / n1 + 1 / n2))
        d = diff / math.sqrt(sp2) if sp2 > 0 else None
        name = "Student two-sample t-test (pooled variance)"
    else:
        g1, g2 = v1 / n1, v2 / n2
        se = math.sqrt(g1 + g2)
        df = (g1 + g2) ** 2 / (g1 * g1 / (n1 - 1) + g2 * g2 / (n2 - 1)) if se > 0 else float(n1 + n2 - 2)
        d = diff / math.sqrt((v1 + v2) / 2) if v1 + v2 > 0 else None
        name = "Welch two-sample t-test (Welch-Satterthwaite df)"
    if se == 0:
        raise ToolError("both samples have zero variance: the t statistic is undefined")
    t = diff / se
    p = _p_value(sps.t(df), t, alternative)
    ci = _t_ci(diff, se, df, alpha, alternative)
    rel = {"two-sided": "differ", "less": "mean(x) < mean(y)", "greater": "mean(x) > mean(y)"}[alternative]
    text = _conclusion(p, alpha, f"the means {rel}" if alternative == "two-sided" else rel,
                       "no evidence that the means " + ("differ" if alternative == "two-sided" else f"satisfy {rel}"),
                       f"difference {fmt(diff)}, t = {fmt(t)}, df = {fmt(df)}, {fmt_p(p)}")
    return jsonable({
        "test": name, "statistic": t, "df": df, "p_value": p, "alternative": alternative,
        "mean_x": m1, "mean_y": m2, "sd_x": s1, "sd_y": s2, "n_x": n1, "n_y": n2,
        "difference": diff, "se": se, "ci": ci, "confidence": 1 - alpha, "cohens_d": d, "alpha": alpha,
        "reject_null": p < alpha, "method": name + (" from summary statistics" if summary else ""),
        "interpretation": text,
    })


def t_test_paired(x: Sequence[float], y: Sequence[float], alternative: str = "two-sided", alpha: float = 0.05) -> dict:
    """Paired t-test of H0: mean(x - y) = 0.

    Args:
        x: first measurements.
        y: second measurements, same length, paired by position.
        alternative: "two-sided", "less" or "greater" (H1 about mean(x - y)).
        alpha: significance level.

    Returns:
        statistic, df, p_value, mean_difference, sd_difference, se, ci, cohens_dz, reject_null, method,
        interpretation.
    """
    a, b = as_vector(x, "x", min_len=2), as_vector(y, "y", min_len=2)
    if a.size != b.size:
        raise ToolError(f"paired samples must have the same length, got {a.size} and {b.size}")
    d = a - b
    return t_paired_from_summary(_mean(d), math.sqrt(_var(d)), d.size, alternative, alpha)


def t_paired_from_summary(mean_d: float, sd_d: float, n: int, alternative: str = "two-sided", alpha: float = 0.05,
                          *, summary: bool = False) -> dict:
    """Paired t-test from the differences' mean, standard deviation and count of pairs.

    Args:
        mean_d: mean of the differences x - y.
        sd_d: their standard deviation (n - 1 divisor).
        n: number of pairs (at least 2).
        alternative: "two-sided", "less" or "greater" (H1 about mean(x - y)).
        alpha: significance level.
        summary: the figures came from the caller, not from data (said in `method`).

    Returns:
        The same fields as `t_test_paired`.
    """
    res = t_one_from_summary(mean_d, sd_d, n, 0.0, alternative, alpha)
    p = res["p_value"]
    text = _conclusion(p, res["alpha"], "the paired difference is not zero", "no evidence of a paired difference",
                       f"mean difference {fmt(res['mean'])}, t = {fmt(res['statistic'])}, df = {res['df']}, "
                       f"{fmt_p(p)}")
    return {
        "test": "paired t-test", "statistic": res["statistic"], "df": res["df"], "p_value": p,
        "alternative": res["alternative"], "n_pairs": res["n"], "mean_difference": res["mean"],
        "sd_difference": res["sd"], "se": res["se"], "ci": res["ci"], "confidence": res["confidence"],
        "cohens_dz": res["cohens_d"], "alpha": res["alpha"], "reject_null": res["reject_null"],
        "method": "paired Student t-test on the differences x - y" + (" from summary statistics" if summary else ""),
        "interpretation": text,
    }


# ------------------------------------------------------------------------------------------- ANOVA

def anova_oneway(groups: Any, alpha: float = 0.05) -> dict:
    """One-way ANOVA from centred sums, with Levene's (Brown-Forsythe) check of equal variances.

    Args:
        groups: {name: [values]} or a list of lists (at least 2 groups, one value each at least).
            Values given as `decimal.Decimal` are centred exactly before any rounding to binary.
        alpha: significance level.

    Returns:
        table (between, within, total: df, ss, ms, f, p), r_squared, residual_sd, group summaries,
        levene, reject_null, method, interpretation.
    """
    names, arrays, shift = _groups(groups, with_shift=True)
    alpha = check_alpha(alpha)
    allx = np.concatenate(arrays)
    n, k = allx.size, len(arrays)
    if n <= k:
        raise ToolError(f"{n} observations in {k} groups leave no degrees of freedom for error")
    gm = _mean(allx)
    means_d, ssw_parts, counts = [], [], []
    for a in arrays:
        d = a - gm  # centred on the grand mean: exact for data sharing leading digits
        md = _mean(d)
        means_d.append(md)
        ssw_parts.append(_ss(d, md))
        counts.append(a.size)
    ssb = accurate_sum(np.array(counts) * np.array(means_d) ** 2) - accurate_sum(np.array(counts) * np.array(means_d)) ** 2 / n
    ssw = accurate_sum(np.array(ssw_parts))
    dfb, dfw = k - 1, n - k
    msb, msw = ssb / dfb, ssw / dfw
    sst = ssb + ssw
    perfect = ssw <= (PERFECT_FIT_RTOL ** 2) * sst
    f = None if perfect or msw == 0 else msb / msw
    p = None if f is None else float(sps.f.sf(f, dfb, dfw))
    groups_out = [{"name": nm, "n": c, "mean": gm + md + shift, "sd": math.sqrt(s / (c - 1)) if c > 1 else None}
                  for nm, c, md, s in zip(names, counts, means_d, ssw_parts)]
    levene = None
    if all(c >= 2 for c in counts) and not perfect:
        lv = sps.levene(*arrays, center="median")
        levene = {"statistic": float(lv.statistic), "p_value": float(lv.pvalue),
                  "method": "Brown-Forsythe (Levene, median-centred)"}
    if f is None:
        text = ("Every group is constant: within-group variation is zero, so F is undefined (infinite); "
                "the group means differ exactly" if ssb > 0 else "All values are equal: nothing to test")
    else:
        text = _conclusion(p, alpha, "at least one group mean differs", "no evidence that the group means differ",
                           f"F({dfb}, {dfw}) = {fmt(f)}, {fmt_p(p)}")
    return jsonable({
        "test": "one-way ANOVA",
        "table": [
            {"source": "between", "df": dfb, "ss": ssb, "ms": msb, "f": f, "p": p},
            {"source": "within", "df": dfw, "ss": ssw, "ms": msw},
            {"source": "total", "df": n - 1, "ss": sst},
        ],
        "f": f, "p_value": p, "r_squared": ssb / sst if sst > 0 else None, "residual_sd": math.sqrt(msw),
        "perfect_fit": perfect, "groups": groups_out, "levene": levene, "alpha": alpha,
        "reject_null": None if p is None else p < alpha,
        "method": "one-way ANOVA; sums of squares of deviations from the accurately computed grand mean (fsum)",
        "interpretation": text,
    })


def _factor_codes(labels: Sequence[Any], name: str) -> tuple[list[str], np.ndarray]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise ToolError(f"{name} must be a list of level labels")
    for v in labels:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ToolError(f"{name} labels must be strings or numbers, found {v!r:.40}")
    keys = [str(v) for v in labels]
    order: dict[str, int] = {}
    for key in keys:  # levels in order of first appearance
        order.setdefault(key, len(order))
    return list(order), np.array([order[key] for key in keys], dtype=int)


def _sum_coded(idx: np.ndarray, n_levels: int) -> np.ndarray:
    """Sum-to-zero (effect) coding: n_levels - 1 columns; the last level is -1 everywhere."""
    cols = np.zeros((idx.size, n_levels - 1))
    for j in range(n_levels - 1):
        cols[:, j] = (idx == j).astype(float) - (idx == n_levels - 1).astype(float)
    return cols


def _sse(y: np.ndarray, blocks: list[np.ndarray]) -> float:
    x = np.column_stack([np.ones(y.size), *blocks]) if blocks else np.ones((y.size, 1))
    res = lstsq(x, y, max_steps=3)
    return accurate_sum(res.residuals ** 2)


MAX_LSTSQ_WORK = 3e7  # rows x columns^2: ~1.5 s per fit on our 2-core VM, and a two-way ANOVA makes up to five


def anova_twoway(y: Sequence[float], a: Sequence[Any], b: Sequence[Any], interaction: bool = True,
                 ss_type: int = 2, alpha: float = 0.05, a_name: str = "A", b_name: str = "B") -> dict:
    """Two-way ANOVA, with or without the A x B interaction, Type I, II or III sums of squares.

    For a balanced design the three types agree. Type III uses sum-to-zero coding, the only coding
    under which it tests the hypotheses it names.

    Args:
        y: responses.
        a: level of factor A for each response.
        b: level of factor B for each response.
        interaction: include A x B (needs replicates in the cells).
        ss_type: 1 (sequential, A then B), 2 (default) or 3.
        alpha: significance level.
        a_name: display name of factor A.
        b_name: display name of factor B.

    Returns:
        table rows (source, df, ss, ms, f, p), balanced, cells, method, interpretation.
    """
    yv = as_vector(y, "y", min_len=3)
    alpha = check_alpha(alpha)
    if ss_type not in (1, 2, 3):
        raise ToolError(f"ss_type must be 1, 2 or 3, got {ss_type!r}")
    la, ia = _factor_codes(a, "a")
    lb, ib = _factor_codes(b, "b")
    if not (len(ia) == len(ib) == yv.size):
        raise ToolError(f"y, a and b must have the same length, got {yv.size}, {len(ia)}, {len(ib)}")
    if len(la) < 2 or len(lb) < 2:
        raise ToolError("each factor needs at least 2 levels")
    # Each fit is a least-squares solve over n rows and one column per parameter: its cost grows as
    # n * columns^2, so the cap is on that product, not on n alone (4,000 levels of a took 33 s).
    columns = 1 + (len(la) - 1) + (len(lb) - 1) + ((len(la) - 1) * (len(lb) - 1) if interaction else 0)
    if yv.size * columns**2 > MAX_LSTSQ_WORK:
        raise ToolError(f"a has {len(la)} levels and b {len(lb)}: the model has {columns} columns, and "
                        f"{yv.size} responses x {columns}^2 exceeds what this tool fits ({MAX_LSTSQ_WORK:.0e}); "
                        "use factors with fewer levels" + (" or interaction=false" if interaction else ""))
    counts = np.zeros((len(la), len(lb)), dtype=int)
    np.add.at(counts, (ia, ib), 1)
    if interaction and (counts == 0).any():
        raise ToolError("some A x B cells are empty: the interaction cannot be estimated; fit without it")
    xa, xb = _sum_coded(ia, len(la)), _sum_coded(ib, len(lb))
    xab = np.column_stack([xa[:, i] * xb[:, j] for i in range(xa.shape[1]) for j in range(xb.shape[1])])
    # Centre the response: SS are shift-invariant and the fits keep more digits.
    yc = yv - _mean(yv)
    full = [xa, xb, xab] if interaction else [xa, xb]
    sse_full = _sse(yc, full)
    df_err = yv.size - 1 - sum(blk.shape[1] for blk in full)
    if df_err <= 0:
        raise ToolError("no degrees of freedom left for error: the interaction model needs replicates in the "
                        "cells (or fit with interaction=false)")
    dfa, dfb = len(la) - 1, len(lb) - 1
    sse_1 = _ss(yc)
    if ss_type == 1:
        sse_a = _sse(yc, [xa])
        sse_ab_main = _sse(yc, [xa, xb])
        ss_a, ss_b = sse_1 - sse_a, sse_a - sse_ab_main
    elif ss_type == 2:
        sse_a, sse_b, sse_ab_main = _sse(yc, [xa]), _sse(yc, [xb]), _sse(yc, [xa, xb])
        ss_a, ss_b = sse_b - sse_ab_main, sse_a - sse_ab_main
    else:
        rest_a = [xb, xab] if interaction else [xb]
        rest_b = [xa, xab] if interaction else [xa]
        ss_a, ss_b = _sse(yc, rest_a) - sse_full, _sse(yc, rest_b) - sse_full
        sse_ab_main = _sse(yc, [xa, xb]) if interaction else sse_full
    mse = sse_full / df_err
    rows = []
    for src, df, ss in [(a_name, dfa, ss_a), (b_name, dfb, ss_b)] + (
            [(f"{a_name}:{b_name}", dfa * dfb, sse_ab_main - sse_full)] if interaction else []):
        ss = max(ss, 0.0)
        f = ss / df / mse if mse > 0 else None
        rows.append({"source": src, "df": df, "ss": ss, "ms": ss / df, "f": f,
                     "p": None if f is None else float(sps.f.sf(f, df, df_err))})
    rows.append({"source": "residual", "df": df_err, "ss": sse_full, "ms": mse})
    rows.append({"source": "total", "df": yv.size - 1, "ss": sse_1})
    balanced = bool((counts == counts.flat[0]).all())
    sig = [r["source"] for r in rows[:-2] if r.get("p") is not None and r["p"] < alpha]
    if mse == 0:
        text = "Residual variation is zero: F is undefined (the model fits every observation exactly)"
    else:
        text = (f"At alpha = {alpha:g}, significant: {', '.join(sig)}" if sig else
                f"At alpha = {alpha:g}, no factor or interaction is significant") + " (" + "; ".join(
            f"{r['source']} {fmt_p(r['p'])}" for r in rows[:-2]) + ")"
    return jsonable({
        "test": "two-way ANOVA" + (" with interaction" if interaction else " (additive)"),
        "table": rows, "ss_type": ss_type, "balanced": balanced,
        "cells": {"a_levels": la, "b_levels": lb, "counts": counts.tolist()},
        "alpha": alpha,
        "method": f"Type {'I' * ss_type if ss_type < 3 else 'III'} sums of squares from nested least-squares fits "
                  "(QR with refinement, sum-to-zero coding) of the centred response",
        "interpretation": text,
    })


def tukey_hsd(groups: Any, alpha: float = 0.05) -> dict:
    """Tukey's honestly significant difference for all pairs (Tukey-Kramer for unequal sizes).

    Args:
        groups: {name: [values]} or a list of lists (at least 2 groups, 2 values each).
        alpha: family-wise significance level.

    Returns:
        comparisons (group_a, group_b, difference, se, q, p_adj, ci, reject), mse, df, method,
        interpretation.
    """
    names, arrays = _groups(groups, min_size=1)
    alpha = check_alpha(alpha)
    if len(arrays) > 100:
        raise ToolError("Tukey HSD is limited to 100 groups")
    k = len(arrays)
    n = sum(a.size for a in arrays)
    df = n - k
    if df <= 0:
        raise ToolError("no degrees of freedom for error: groups need replicates")
    means = [_mean(a) for a in arrays]
    mse = accurate_sum(np.array([_ss(a, m) for a, m in zip(arrays, means)])) / df
    if mse == 0:
        raise ToolError("within-group variation is zero: Tukey's q is undefined")
    dist = sps.studentized_range(k, df)
    qcrit = float(dist.ppf(1 - alpha))
    comps = []
    for i in range(k):
        for j in range(i + 1, k):
            diff = means[i] - means[j]
            se = math.sqrt(mse / 2 * (1 / arrays[i].size + 1 / arrays[j].size))
            q = abs(diff) / se
            p = float(dist.sf(q))
            comps.append({"group_a": names[i], "group_b": names[j], "difference": diff, "se": se, "q": q,
                          "p_adj": min(1.0, p), "ci": [diff - qcrit * se, diff + qcrit * se], "reject": p < alpha})
    sig = [f"{c['group_a']} vs {c['group_b']}" for c in comps if c["reject"]]
    text = (f"At family-wise alpha = {alpha:g}, {len(sig)} of {len(comps)} pairs differ" +
            (f": {', '.join(sig[:6])}{' ...' if len(sig) > 6 else ''}" if sig else ""))
    return jsonable({
        "test": "Tukey HSD", "comparisons": comps, "mse": mse, "df": df, "q_critical": qcrit, "alpha": alpha,
        "method": "Tukey-Kramer: q = |mean_i - mean_j| / sqrt(MSE/2 (1/n_i + 1/n_j)), studentized range distribution",
        "interpretation": text,
    })


# --------------------------------------------------------------------------------------- regression

def regression(y: Sequence[float], predictors: Mapping[str, Sequence[float]], intercept: bool = True,
               degree: int | None = None, alpha: float = 0.05, _keep_fit: bool = False) -> dict:
    """Ordinary least squares: coefficients, standard errors, t, p, intervals, R², adjusted R², F.

    Args:
        y: the response.
        predictors: {name: values}; with `degree`, exactly one predictor x, fitted as a polynomial.
        intercept: include a constant term.
        degree: fit y = b0 + b1 x + ... + b_degree x**degree in the one predictor (powers formed in
            double-double so the design itself is not rounded).
        alpha: significance level for tests and (1 - alpha) confidence intervals.

    Returns:
        coefficients [{name, estimate, se, t, p, ci}], r_squared, adj_r_squared, residual_sd, f, f_p,
        df_model, df_residual, ss_regression, ss_residual, ss_total, perfect_fit, condition_number,
        method, interpretation.
    """
    yv = as_vector(y, "y", min_len=2)
    alpha = check_alpha(alpha)
    if np.all(yv == yv[0]):  # nothing to explain: R² and F are 0/0, whatever rounding makes of them
        raise ToolError(f"y is constant ({fmt(float(yv[0]))} throughout): there is no variation to explain, so R² "
                        "and F are undefined")
    if not isinstance(predictors, Mapping) or not predictors:
        raise ToolError("predictors must be a non-empty object {name: [values]}")
    cols = {str(k): as_vector(v, f"predictor {k!r}") for k, v in predictors.items()}
    for name, c in cols.items():
        if c.size != yv.size:
            raise ToolError(f"predictor {name!r} has {c.size} values but y has {yv.size}")
    if degree is not None:
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 15:
            raise ToolError("degree must be a whole number from 1 to 15")
        if len(cols) != 1:
            raise ToolError("a polynomial fit takes exactly one predictor")
        (xname, xv), = cols.items()
        x_hi, x_lo = polynomial_design(xv, degree, intercept)
        names = (["intercept"] if intercept else []) + [xname if d == 1 else f"{xname}^{d}" for d in range(1, degree + 1)]
    else:
        names = (["intercept"] if intercept else []) + list(cols)
        x_hi = np.column_stack(([np.ones(yv.size)] if intercept else []) + list(cols.values()))
        x_lo = None
    n, p = x_hi.shape
    if n <= p:
        raise ToolError(f"{n} observations cannot fit {p} coefficients with any error degrees of freedom; "
                        "need more observations than coefficients")
    fit = lstsq(x_hi, yv, x_lo, names)
    r = fit.residuals
    sse = accurate_sum(r * r)
    if intercept:
        ybar = _mean(yv)
        yc = yv - ybar
        sst = accurate_sum(yc * yc)
        fitted_c = yc - r  # fitted - ybar, from the accurate residuals
        ssr = accurate_sum(fitted_c * fitted_c)
    else:
        sst = accurate_sum(yv * yv)  # uncentred, as NIST and R define R² without an intercept
        fitted = yv - r
        ssr = accurate_sum(fitted * fitted)
    df_model, df_resid = p - (1 if intercept else 0), n - p
    perfect = sse <= (PERFECT_FIT_RTOL ** 2) * sst
    tot = ssr + sse
    if perfect:
        r2, mse, sigma = 1.0, 0.0, 0.0
    else:
        # Whichever of SSE/SST or SSR/SST is the smaller share keeps its relative accuracy.
        r2 = 1.0 - sse / tot if sse < ssr else ssr / tot
        mse = sse / df_resid
        sigma = math.sqrt(mse)
    adj = 1.0 - (1.0 - r2) * ((n - 1) if intercept else n) / df_resid if df_model > 0 else None
    tq = float(sps.t.ppf(1 - alpha / 2, df_resid))
    coefs = []
    for j, name in enumerate(names):
        est = float(fit.coef[j])
        se = 0.0 if perfect else sigma * math.sqrt(max(fit.cov_unscaled[j, j], 0.0))
        t = None if se == 0 else est / se
        pv = None if t is None else float(2 * sps.t.sf(abs(t), df_resid))
        coefs.append({"name": name, "estimate": est, "se": se, "t": t, "p": pv,
                      "ci": [est - tq * se, est + tq * se]})
    f = None if perfect or df_model == 0 else (ssr / df_model) / mse
    fp = None if f is None else float(sps.f.sf(f, df_model, df_resid))
    if perfect:
        text = (f"Perfect fit: the model reproduces every observation to rounding (max |residual| "
                f"{fmt(float(np.max(np.abs(r))))}); R² = 1 and F is undefined, not a huge number")
    elif f is None:
        text = f"Residual SD {fmt(sigma)}; no slope terms to test"
    else:
        sig = [c["name"] for c in coefs if c["name"] != "intercept" and c["p"] is not None and c["p"] < alpha]
        text = (f"At alpha = {alpha:g}, the model is {'significant' if fp < alpha else 'not significant'} "
                f"(F({df_model}, {df_resid}) = {fmt(f)}, {fmt_p(fp)}, R² = {fmt(r2)})" +
                (f"; significant terms: {', '.join(sig[:8])}" if sig else "; no term is significant on its own"))
    out = {
        "coefficients": coefs, "n": n, "r_squared": r2, "adj_r_squared": adj, "residual_sd": sigma,
        "f": f, "f_p": fp, "df_model": df_model, "df_residual": df_resid, "ss_regression": ssr,
        "ss_residual": 0.0 if perfect else sse, "ss_total": sst, "perfect_fit": perfect,
        "max_abs_residual": float(np.max(np.abs(r))), "condition_number": fit.condition,
        "intercept": intercept, "alpha": alpha,
        "method": ("OLS by Householder QR on power-of-two-scaled columns with iterative refinement "
                   f"({fit.refinement_steps} steps, residuals in double-double)" +
                   ("; R² and F about zero (no intercept: uncentred total SS)" if not intercept else "")),
        "interpretation": text,
    }
    result = jsonable(out)
    if _keep_fit:  # for residual plots; never part of a JSON result
        result["_fitted"] = (yv - r).tolist()
        result["_residuals"] = r.tolist()
    return result


# --------------------------------------------------------------------------------------- chi-square

def chi_square(observed: Sequence[Any], expected: Sequence[float] | None = None, yates: bool = False,
               alpha: float = 0.05) -> dict:
    """Pearson's chi-square: goodness of fit (1-D counts) or independence (2-D contingency table).

    Args:
        observed: counts; a flat list for goodness of fit, a list of rows for a contingency table.
        expected: goodness of fit only: expected counts or proportions (rescaled to the total);
            uniform when omitted.
        yates: apply Yates' continuity correction (2 x 2 tables only).
        alpha: significance level.

    Returns:
        statistic, df, p_value, expected, cramers_v (tables), small_expected warning, method,
        interpretation.
    """
    alpha = check_alpha(alpha)
    if not isinstance(observed, Sequence) or isinstance(observed, (str, bytes)) or not observed:
        raise ToolError("observed must be a list of counts or a list of rows")
    if all(isinstance(r, Sequence) and not isinstance(r, (str, bytes)) for r in observed):
        rows = [as_vector(r, f"observed row {i + 1}", min_len=2) for i, r in enumerate(observed)]
        if len({r.size for r in rows}) != 1 or len(rows) < 2:
            raise ToolError("a contingency table needs at least 2 rows of equal length (at least 2 columns)")
        table = np.vstack(rows)
        if (table < 0).any():
            raise ToolError("counts cannot be negative")
        if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
            raise ToolError("a row or column of the table sums to zero: its expected counts would be zero")
        if yates and table.shape != (2, 2):
            raise ToolError("Yates' correction applies to 2 x 2 tables only")
        stat, p, df, exp = sps.chi2_contingency(table, correction=yates)
        n = table.sum()
        v = math.sqrt(stat / (n * (min(table.shape) - 1)))
        small = int((exp < 5).sum())
        text = (_conclusion(p, alpha, "rows and columns are associated", "no evidence of association",
                            f"chi² = {fmt(float(stat))}, df = {df}, {fmt_p(float(p))}, Cramér's V = {fmt(v)}") +
                (f"; {small} expected counts < 5, the approximation is doubtful" if small else ""))
        return jsonable({
            "test": "chi-square test of independence", "statistic": stat, "df": df, "p_value": p,
            "expected": exp, "cramers_v": v, "cells_expected_below_5": small, "alpha": alpha,
            "reject_null": p < alpha,
            "method": "Pearson chi-square" + (" with Yates' continuity correction" if yates else ""),
            "interpretation": text,
        })
    obs = as_vector(observed, "observed", min_len=2)
    if (obs < 0).any():
        raise ToolError("counts cannot be negative")
    total = accurate_sum(obs)
    if total == 0:
        raise ToolError("observed counts are all zero: there is nothing to test")
    if expected is None:
        exp = np.full(obs.size, total / obs.size)
    else:
        e = as_vector(expected, "expected", min_len=2)
        if e.size != obs.size:
            raise ToolError(f"expected has {e.size} values but observed has {obs.size}")
        if (e <= 0).any():
            raise ToolError("expected counts must be positive")
        exp = e * (total / accurate_sum(e))
    stat = accurate_sum((obs - exp) ** 2 / exp)
    df = obs.size - 1
    p = float(sps.chi2.sf(stat, df))
    small = int((exp < 5).sum())
    text = (_conclusion(p, alpha, "the counts do not follow the expected distribution",
                        "the counts are consistent with the expected distribution",
                        f"chi² = {fmt(stat)}, df = {df}, {fmt_p(p)}") +
            (f"; {small} expected counts < 5, the approximation is doubtful" if small else ""))
    return jsonable({
        "test": "chi-square goodness of fit", "statistic": stat, "df": df, "p_value": p, "expected": exp,
        "cells_expected_below_5": small, "alpha": alpha, "reject_null": p < alpha,
        "method": "Pearson chi-square; expected counts rescaled to the observed total",
        "interpretation": text,
    })


# ---------------------------------------------------------------------------------------- normality

def normality(data: Sequence[float], alpha: float = 0.05) -> dict:
    """Tests of normality: Shapiro-Wilk (the verdict), Anderson-Darling, D'Agostino-Pearson, Jarque-Bera.

    Args:
        data: the sample (3 to 5000 values for Shapiro-Wilk; the others are skipped where n is too small).
        alpha: significance level.

    Returns:
        tests [{name, statistic, p_value}], verdict test, reject_null, method, interpretation.
    """
    x = as_vector(data, "data", min_len=3)
    alpha = check_alpha(alpha)
    if np.ptp(x) == 0:
        raise ToolError("all values are equal: normality tests are undefined for a constant sample")
    tests = []
    if x.size <= 5000:
        sw = sps.shapiro(x)
        tests.append({"name": "Shapiro-Wilk", "statistic": float(sw.statistic), "p_value": float(sw.pvalue)})
    from statsmodels.stats.diagnostic import normal_ad

    ad, adp = normal_ad(x)
    tests.append({"name": "Anderson-Darling", "statistic": float(ad), "p_value": float(adp)})
    if x.size >= 20:  # the kurtosis part of D'Agostino's test is not valid below 20
        k2 = sps.normaltest(x)
        tests.append({"name": "D'Agostino-Pearson K²", "statistic": float(k2.statistic), "p_value": float(k2.pvalue)})
    jb = sps.jarque_bera(x)
    tests.append({"name": "Jarque-Bera", "statistic": float(jb.statistic), "p_value": float(jb.pvalue)})
    main = tests[0]
    p = main["p_value"]
    # Only Shapiro-Wilk's verdict has words of its own; the fallbacks report the p-value alone.
    text = (_conclusion(p, alpha, "the data are not consistent with a normal distribution",
                        "no evidence against normality", f"W = {fmt(main['statistic'])}, {fmt_p(p)}",
                        subject=main["name"])
            if main["name"] == "Shapiro-Wilk" else
            f"At alpha = {alpha:g}, {main['name']} {_verdict(p, alpha)} ({fmt_p(p)})")
    return jsonable({
        "test": "normality", "n": x.size, "tests": tests, "verdict_test": main["name"], "p_value": p,
        "alpha": alpha, "reject_null": p < alpha,
        "method": "Shapiro-Wilk (scipy) as the verdict for n <= 5000, Anderson-Darling (statsmodels, "
                  "estimated mean and sd), D'Agostino-Pearson (n >= 20), Jarque-Bera",
        "interpretation": text,
    })
