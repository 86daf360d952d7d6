"""Comparisons beyond the t-test: proportions, variances, rank tests and correlation.

Every function returns a JSON-ready dict with the figures, `method` and a one-line `interpretation`, like
`havoc.tools.stats`. The distributions and exact tests are scipy's (binomtest, fisher_exact, bartlett,
levene, mannwhitneyu, wilcoxon, kruskal, pearsonr, spearmanr, kendalltau); what is written here is the
choice of formula a handbook or Minitab prints, and the refusals:
- proportions: the z test uses p0 (one sample) or the pooled proportion (two samples) in its standard
  error, as Minitab and R's prop.test do; the continuity correction is R's (|x - n p0| reduced by at
  most 1/2, never past zero); intervals are Wilson (z), Clopper-Pearson (exact) and Wald for a
  difference of two proportions.
- variances: chi-square (one), F (two), Bartlett and Levene / Brown-Forsythe (k groups); the first two
  also from summary statistics (sd and n), as Minitab's "summarized data" does.
- Pearson's interval is Fisher's z transform; Spearman's uses the same with se 1/sqrt(n - 3) (an
  approximation, said in the result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import as_vector, check_alpha, check_alternative, fmt, fmt_p, jsonable
from havoc.tools.stats import _conclusion, _groups, _var

_REL = {"two-sided": "differs from", "less": "is less than", "greater": "is greater than"}


def _count(v: Any, name: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ToolError(f"{name} must be a whole number >= {lo}, got {v!r:.40}")
    return v


def _prob(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
        raise ToolError(f"{name} must be a proportion strictly between 0 and 1, got {v!r:.40}")
    return float(v)


def _z_p(z: float, alternative: str) -> float:
    if alternative == "two-sided":
        return float(2 * sps.norm.sf(abs(z)))
    return float(sps.norm.sf(z) if alternative == "greater" else sps.norm.cdf(z))


def _side(lo: float, hi: float, alternative: str, low_end: float, high_end: float) -> list:
    """A two-sided interval, or the one-sided bound that matches the alternative (the open end at its limit)."""
    if alternative == "greater":
        return [lo, high_end]
    if alternative == "less":
        return [low_end, hi]
    return [lo, hi]


# --------------------------------------------------------------------------------------- proportions

def proportion_test(successes: int, trials: int, successes_y: int | None = None, trials_y: int | None = None,
                    p0: float | None = None, method: str = "z", correction: bool = False,
                    alternative: str = "two-sided", alpha: float = 0.05) -> dict:
    """One- or two-proportion test: z (with or without continuity correction), exact binomial, Fisher's exact.

    Args:
        successes: events in the (first) sample.
        trials: size of the (first) sample.
        successes_y: events in the second sample (two-sample test).
        trials_y: size of the second sample.
        p0: the hypothesised proportion (one sample; default 0.5).
        method: "z" (normal approximation) or "exact" (binomial for one sample, Fisher's for two).
        correction: apply the continuity correction to the z test.
        alternative: "two-sided", "less" or "greater" (H1 about p, or p_x - p_y).
        alpha: significance level; the interval has confidence 1 - alpha.

    Returns:
        statistic (z, or the odds ratio for Fisher), p_value, estimate(s), ci, reject_null, method,
        interpretation.
    """
    alpha, alternative = check_alpha(alpha), check_alternative(alternative)
    if method not in ("z", "exact"):
        raise ToolError(f"method must be 'z' or 'exact', got {method!r:.40}")
    x, n = _count(successes, "successes"), _count(trials, "trials", 1)
    if x > n:
        raise ToolError(f"successes ({x}) cannot exceed trials ({n})")
    two = successes_y is not None or trials_y is not None
    level = 1 - alpha
    if not two:
        p0 = 0.5 if p0 is None else _prob(p0, "p0")
        est = x / n
        if method == "exact":
            res = sps.binomtest(x, n, p0, alternative=alternative)
            p = float(res.pvalue)
            ci = res.proportion_ci(confidence_level=level if alternative == "two-sided" else 1 - alpha,
                                   method="exact")
            lo, hi = float(ci.low), float(ci.high)
            stat, how = None, "exact binomial test; Clopper-Pearson interval"
        else:
            dev = x - n * p0
            cc = min(0.5, abs(dev)) if correction else 0.0
            z = math.copysign(abs(dev) - cc, dev) / math.sqrt(n * p0 * (1 - p0))
            p = _z_p(z, alternative)
            q = float(sps.norm.ppf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha))
            centre = (x + q * q / 2) / (n + q * q)
            half = q * math.sqrt(n) / (n + q * q) * math.sqrt(est * (1 - est) + q * q / (4 * n))
            lo, hi = max(0.0, centre - half), min(1.0, centre + half)
            stat = z
            how = ("one-proportion z test, se from p0" + (" with continuity correction" if correction else "") +
                   "; Wilson score interval")
        ci = _side(lo, hi, alternative, 0.0, 1.0)
        text = _conclusion(p, alpha, f"the proportion ({fmt(est)}) {_REL[alternative]} {fmt(p0)}",
                           f"no evidence that the proportion {_REL[alternative]} {fmt(p0)}",
                           f"z = {fmt(stat)}, {fmt_p(p)}" if stat is not None else f"exact, {fmt_p(p)}")
        return jsonable({
            "test": "one-proportion " + ("exact binomial test" if method == "exact" else "z test"),
            "statistic": stat, "p_value": p, "alternative": alternative, "successes": x, "trials": n,
            "estimate": est, "p0": p0, "ci": ci, "confidence": level, "alpha": alpha, "reject_null": p < alpha,
            "method": how, "interpretation": text,
        })
    if successes_y is None or trials_y is None:
        raise ToolError("a two-proportion test needs successes_y and trials_y")
    if p0 is not None:
        raise ToolError("p0 applies to one-proportion tests; two proportions are compared with each other")
    y, m = _count(successes_y, "successes_y"), _count(trials_y, "trials_y", 1)
    if y > m:
        raise ToolError(f"successes_y ({y}) cannot exceed trials_y ({m})")
    p1, p2 = x / n, y / m
    diff = p1 - p2
    pooled = (x + y) / (n + m)
    q = float(sps.norm.ppf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha))
    se_ci = math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / m)
    ci = _side(diff - q * se_ci, diff + q * se_ci, alternative, -1.0, 1.0)
    if method == "exact":
        table = [[x, n - x], [y, m - y]]
        res = sps.fisher_exact(table, alternative=alternative)
        stat, p = float(res.statistic), float(res.pvalue)
        how = "Fisher's exact test on the 2 x 2 table (statistic: the sample odds ratio); Wald interval of p_x - p_y"
        name = "Fisher's exact test"
    else:
        if pooled in (0.0, 1.0):
            raise ToolError("every trial in both samples has the same outcome: the pooled z statistic is undefined")
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
        cc = min(0.5 * (1 / n + 1 / m), abs(diff)) if correction else 0.0
        stat = math.copysign(abs(diff) - cc, diff) / se0
        p = _z_p(stat, alternative)
        how = ("two-proportion z test, pooled se under H0" + (" with continuity correction" if correction else "") +
               "; Wald interval of p_x - p_y")
        name = "two-proportion z test"
    rel = {"two-sided": "differ", "less": "p_x < p_y", "greater": "p_x > p_y"}[alternative]
    text = _conclusion(p, alpha, f"the proportions {rel}", f"no evidence that the proportions {rel}",
                       f"{fmt(p1)} vs {fmt(p2)}, " + (f"z = {fmt(stat)}, " if method == "z" else "") + fmt_p(p))
    return jsonable({
        "test": name, "statistic": stat, "p_value": p, "alternative": alternative, "estimate_x": p1,
        "estimate_y": p2, "difference": diff, "pooled": pooled, "ci": ci, "confidence": level, "alpha": alpha,
        "reject_null": p < alpha, "method": how, "interpretation": text,
    })


# ------------------------------------------------------------------------------------------ variances

def _sample_var(data: Any, sd: Any, n: Any, which: str) -> tuple[float, int]:
    """(variance, n) from data, or from a stated sd and n."""
    if data is not None:
        if sd is not None or n is not None:
            raise ToolError(f"give data{which} or sd{which} with n{which}, not both")
        v = as_vector(data, f"data{which}" if which else "x", min_len=2)
        return _var(v), v.size
    if sd is None or n is None:
        raise ToolError(f"give the sample{which} as data, or as sd{which} and n{which}")
    if isinstance(sd, bool) or not isinstance(sd, (int, float)) or not math.isfinite(sd) or sd < 0:
        raise ToolError(f"sd{which} must be a finite number >= 0")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ToolError(f"n{which} must be a whole number of at least 2")
    return float(sd) ** 2, n


def variance_test(kind: str, x: Sequence[float] | None = None, y: Sequence[float] | None = None,
                  groups: Any = None, sd_x: float | None = None, n_x: int | None = None, sd_y: float | None = None,
                  n_y: int | None = None, sigma0: float | None = None, alternative: str = "two-sided",
                  alpha: float = 0.05) -> dict:
    """Tests on variances: chi-square (one sample), F (two), Bartlett, Levene and Brown-Forsythe (k groups).

    Args:
        kind: "one_sample" (H0: sigma = sigma0), "f" (two samples), "bartlett", "levene" (mean-centred) or
            "brown_forsythe" (median-centred Levene).
        x: first sample (one_sample, f), or give sd_x and n_x.
        y: second sample (f), or give sd_y and n_y.
        groups: {name: [values]} or a list of lists (bartlett, levene, brown_forsythe).
        sd_x, n_x, sd_y, n_y: summary statistics instead of x, y.
        sigma0: the hypothesised standard deviation (one_sample).
        alternative: "two-sided", "less" or "greater" (one_sample and f: H1 about sigma or sigma_x / sigma_y).
        alpha: significance level.

    Returns:
        statistic, df, p_value, critical values (one_sample, f), ci (of sigma or of the sd ratio),
        reject_null, method, interpretation.
    """
    alpha, alternative = check_alpha(alpha), check_alternative(alternative)
    if kind == "one_sample":
        if sigma0 is None or isinstance(sigma0, bool) or not isinstance(sigma0, (int, float)) or not sigma0 > 0:
            raise ToolError("a one-sample variance test needs sigma0 > 0, the hypothesised standard deviation")
        var, n = _sample_var(x, sd_x, n_x, "_x" if x is None else "")
        df = n - 1
        stat = df * var / float(sigma0) ** 2
        dist = sps.chi2(df)
        if alternative == "two-sided":
            p = float(min(1.0, 2 * min(dist.cdf(stat), dist.sf(stat))))
            crit = [float(dist.ppf(alpha / 2)), float(dist.ppf(1 - alpha / 2))]
            ci = [math.sqrt(df * var / crit[1]), math.sqrt(df * var / crit[0])]
        elif alternative == "greater":
            p = float(dist.sf(stat))
            crit = [None, float(dist.ppf(1 - alpha))]
            ci = [math.sqrt(df * var / crit[1]), None]
        else:
            p = float(dist.cdf(stat))
            crit = [float(dist.ppf(alpha)), None]
            ci = [0.0, math.sqrt(df * var / crit[0])]
        sd = math.sqrt(var)
        text = _conclusion(p, alpha, f"the standard deviation ({fmt(sd)}) {_REL[alternative]} {fmt(float(sigma0))}",
                           f"no evidence that the standard deviation {_REL[alternative]} {fmt(float(sigma0))}",
                           f"chi² = {fmt(stat)}, df = {df}, {fmt_p(p)}")
        return jsonable({
            "test": "chi-square test for one variance", "statistic": stat, "df": df, "p_value": p,
            "alternative": alternative, "sd": sd, "variance": var, "n": n, "sigma0": float(sigma0),
            "critical_values": crit, "ci_sd": ci, "confidence": 1 - alpha, "alpha": alpha, "reject_null": p < alpha,
            "method": "T = (n - 1) s² / sigma0², chi-square with n - 1 df (assumes normal data)",
            "interpretation": text,
        })
    if kind == "f":
        v1, n1 = _sample_var(x, sd_x, n_x, "_x" if x is None else "")
        v2, n2 = _sample_var(y, sd_y, n_y, "_y" if y is None else "")
        if v2 == 0:
            raise ToolError("the second sample has zero variance: the F ratio is undefined")
        if v1 == 0:
            raise ToolError("the first sample has zero variance: the F ratio is zero and the test says nothing")
        stat, d1, d2 = v1 / v2, n1 - 1, n2 - 1
        dist = sps.f(d1, d2)
        if alternative == "two-sided":
            p = float(min(1.0, 2 * min(dist.cdf(stat), dist.sf(stat))))
            crit = [float(dist.ppf(alpha / 2)), float(dist.ppf(1 - alpha / 2))]
            ci = [math.sqrt(stat / crit[1]), math.sqrt(stat / crit[0])]
        elif alternative == "greater":
            p = float(dist.sf(stat))
            crit = [None, float(dist.ppf(1 - alpha))]
            ci = [math.sqrt(stat / crit[1]), None]
        else:
            p = float(dist.cdf(stat))
            crit = [float(dist.ppf(alpha)), None]
            ci = [0.0, math.sqrt(stat / crit[0])]
        rel = {"two-sided": "differ", "less": "sigma_x < sigma_y", "greater": "sigma_x > sigma_y"}[alternative]
        text = _conclusion(p, alpha, f"the variances {rel}", f"no evidence that the variances {rel}",
                           f"F = {fmt(stat)}, df = {d1}, {d2}, {fmt_p(p)}")
        return jsonable({
            "test": "F test for two variances", "statistic": stat, "df": [d1, d2], "p_value": p,
            "alternative": alternative, "sd_x": math.sqrt(v1), "sd_y": math.sqrt(v2), "n_x": n1, "n_y": n2,
            "critical_values": crit, "ci_sd_ratio": ci, "confidence": 1 - alpha, "alpha": alpha,
            "reject_null": p < alpha, "method": "F = s_x² / s_y² with (n_x - 1, n_y - 1) df (assumes normal data)",
            "interpretation": text,
        })
    if kind in ("bartlett", "levene", "brown_forsythe"):
        if alternative != "two-sided":
            raise ToolError(f"{kind} tests are two-sided only")
        names, arrays = _groups(groups, min_size=2)
        if kind == "bartlett":
            if any(np.ptp(a) == 0 for a in arrays):
                raise ToolError("a group has zero variance: Bartlett's statistic is undefined (log of zero)")
            res = sps.bartlett(*arrays)
            how, name = "Bartlett's test (assumes normal data)", "Bartlett's test"
        else:
            centre = "mean" if kind == "levene" else "median"
            if all(np.ptp(a) == 0 for a in arrays):
                raise ToolError("every group is constant: Levene's statistic is undefined (0/0)")
            res = sps.levene(*arrays, center=centre)
            how = f"Levene's test on absolute deviations from the group {centre}s" + \
                  (" (Brown-Forsythe)" if centre == "median" else "")
            name = "Brown-Forsythe test" if centre == "median" else "Levene's test"
        stat, p = float(res.statistic), float(res.pvalue)
        if not math.isfinite(stat):
            raise ToolError("the groups' deviations have no spread: the statistic is undefined")
        k, n = len(arrays), sum(a.size for a in arrays)
        df: Any = k - 1 if kind == "bartlett" else [k - 1, n - k]
        text = _conclusion(p, alpha, "the group variances differ", "no evidence that the group variances differ",
                           f"{name}: statistic {fmt(stat)}, {fmt_p(p)}")
        return jsonable({
            "test": name, "statistic": stat, "df": df, "p_value": p, "alpha": alpha, "reject_null": p < alpha,
            "groups": [{"name": nm, "n": a.size, "sd": math.sqrt(_var(a))} for nm, a in zip(names, arrays)],
            "method": how, "interpretation": text,
        })
    raise ToolError(f"unknown variance test {kind!r:.40}: use one_sample, f, bartlett, levene or brown_forsythe")


# ------------------------------------------------------------------------------------------- rank tests

def rank_test(kind: str, x: Sequence[float] | None = None, y: Sequence[float] | None = None, groups: Any = None,
              mu: float = 0.0, alternative: str = "two-sided", method: str = "auto", alpha: float = 0.05) -> dict:
    """Rank-based tests: Mann-Whitney U, Wilcoxon signed-rank, Kruskal-Wallis and the sign test.

    Args:
        kind: "mann_whitney" (x vs y), "wilcoxon" (x - y paired, or x against mu), "kruskal" (groups) or
            "sign" (x - y paired, or x against the median mu).
        x: first sample.
        y: second sample (mann_whitney; paired for wilcoxon and sign).
        groups: {name: [values]} or list of lists (kruskal).
        mu: hypothesised location for one-sample wilcoxon and sign tests.
        alternative: "two-sided", "less" or "greater".
        method: "auto", "exact" or "asymptotic" (mann_whitney and wilcoxon; scipy's choice under auto).
        alpha: significance level.

    Returns:
        statistic (and the companion statistics a reader expects: U and W, T+), p_value, medians,
        reject_null, method, interpretation.
    """
    alpha, alternative = check_alpha(alpha), check_alternative(alternative)
    if method not in ("auto", "exact", "asymptotic"):
        raise ToolError("method must be 'auto', 'exact' or 'asymptotic'")
    if kind == "kruskal":
        if alternative != "two-sided":
            raise ToolError("the Kruskal-Wallis test is two-sided only")
        names, arrays = _groups(groups, min_size=1)
        allx = np.concatenate(arrays)
        if np.ptp(allx) == 0:
            raise ToolError("all values are equal: the Kruskal-Wallis statistic is undefined")
        res = sps.kruskal(*arrays)
        stat, p = float(res.statistic), float(res.pvalue)
        df = len(arrays) - 1
        text = _conclusion(p, alpha, "at least one group differs in location", "no evidence that the groups differ",
                           f"H = {fmt(stat)}, df = {df}, {fmt_p(p)}")
        return jsonable({
            "test": "Kruskal-Wallis test", "statistic": stat, "df": df, "p_value": p, "alpha": alpha,
            "reject_null": p < alpha,
            "groups": [{"name": nm, "n": a.size, "median": float(np.median(a))} for nm, a in zip(names, arrays)],
            "method": "H corrected for ties, chi-square with k - 1 df", "interpretation": text,
        })
    if x is None:
        raise ToolError(f"a {kind} test needs x")
    a = as_vector(x, "x", min_len=1)
    if kind == "mann_whitney":
        if y is None:
            raise ToolError("a Mann-Whitney test needs y")
        b = as_vector(y, "y", min_len=1)
        if np.ptp(np.concatenate([a, b])) == 0:
            raise ToolError("all values are equal: the Mann-Whitney test has nothing to rank")
        res = sps.mannwhitneyu(a, b, alternative=alternative, method=method)
        u = float(res.statistic)
        w = u + a.size * (a.size + 1) / 2  # the rank sum of x, which Minitab and the handbook print
        p = float(res.pvalue)
        text = _conclusion(p, alpha, "the two distributions differ in location", "no evidence of a location difference",
                           f"U = {fmt(u)}, {fmt_p(p)}")
        return jsonable({
            "test": "Mann-Whitney U test", "statistic": u, "u_x": u, "u_y": a.size * b.size - u, "w_rank_sum_x": w,
            "p_value": p, "alternative": alternative, "median_x": float(np.median(a)), "median_y": float(np.median(b)),
            "n_x": a.size, "n_y": b.size, "alpha": alpha, "reject_null": p < alpha,
            "method": f"Mann-Whitney U of x (scipy, method {method}; ties by midranks)", "interpretation": text,
        })
    if kind in ("wilcoxon", "sign"):
        if y is not None:
            b = as_vector(y, "y", min_len=1)
            if b.size != a.size:
                raise ToolError(f"paired samples must have the same length, got {a.size} and {b.size}")
            d, what = a - b, "x - y"
        else:
            if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu):
                raise ToolError("mu must be a finite number")
            d, what = a - float(mu), f"x - {fmt(float(mu))}"
        nz = d[d != 0]
        if nz.size == 0:
            raise ToolError(f"every difference {what} is zero: the test has no signs to count")
        if kind == "wilcoxon":
            res = sps.wilcoxon(nz, alternative=alternative, method=method)
            ranks = sps.rankdata(np.abs(nz))
            t_plus = float(ranks[nz > 0].sum())
            p = float(res.pvalue)
            text = _conclusion(p, alpha, f"the median of {what} {_REL[alternative]} 0",
                               f"no evidence that the median of {what} {_REL[alternative]} 0",
                               f"T+ = {fmt(t_plus)}, {fmt_p(p)}")
            return jsonable({
                "test": "Wilcoxon signed-rank test", "statistic": float(res.statistic), "t_plus": t_plus,
                "t_minus": float(ranks[nz < 0].sum()), "p_value": p, "alternative": alternative,
                "n_nonzero": nz.size, "zeros_dropped": int(d.size - nz.size), "median_difference": float(np.median(d)),
                "alpha": alpha, "reject_null": p < alpha,
                "method": f"signed ranks of the non-zero differences {what} (scipy, method {method}); statistic: "
                          "the smaller rank sum for two-sided tests, T+ otherwise",
                "interpretation": text,
            })
        plus = int((nz > 0).sum())
        res = sps.binomtest(plus, nz.size, 0.5, alternative=alternative)
        p = float(res.pvalue)
        text = _conclusion(p, alpha, f"the median of {what} {_REL[alternative]} 0",
                           f"no evidence that the median of {what} {_REL[alternative]} 0",
                           f"{plus} of {nz.size} positive, {fmt_p(p)}")
        return jsonable({
            "test": "sign test", "statistic": plus, "positive": plus, "negative": int(nz.size - plus),
            "n_nonzero": nz.size, "zeros_dropped": int(d.size - nz.size), "p_value": p, "alternative": alternative,
            "median_difference": float(np.median(d)), "alpha": alpha, "reject_null": p < alpha,
            "method": f"exact binomial test of the signs of {what} (zeros dropped)", "interpretation": text,
        })
    raise ToolError(f"unknown rank test {kind!r:.40}: use mann_whitney, wilcoxon, kruskal or sign")


# ------------------------------------------------------------------------------------------ correlation

def correlation(x: Sequence[float], y: Sequence[float], method: str = "pearson", alternative: str = "two-sided",
                alpha: float = 0.05) -> dict:
    """Pearson, Spearman or Kendall correlation with its test and a confidence interval.

    Args:
        x: first variable.
        y: second variable (same length).
        method: "pearson", "spearman" or "kendall".
        alternative: "two-sided", "less" or "greater" (H1 about the correlation).
        alpha: significance level; the interval has confidence 1 - alpha.

    Returns:
        r, statistic (t for Pearson), df, p_value, ci (Fisher z; none for Kendall), n, reject_null, method,
        interpretation.
    """
    alpha, alternative = check_alpha(alpha), check_alternative(alternative)
    a, b = as_vector(x, "x", min_len=3), as_vector(y, "y", min_len=3)
    if a.size != b.size:
        raise ToolError(f"x and y must have the same length, got {a.size} and {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ToolError(f"{'x' if np.ptp(a) == 0 else 'y'} is constant: the correlation is undefined (zero variance)")
    n = a.size
    if method not in ("pearson", "spearman", "kendall"):
        raise ToolError("method must be 'pearson', 'spearman' or 'kendall'")
    stat, df, ci = None, None, None
    if method == "pearson":
        res = sps.pearsonr(a, b, alternative=alternative)
        r, p = float(res.statistic), float(res.pvalue)
        df = n - 2
        stat = r * math.sqrt(df / (1 - r * r)) if abs(r) < 1 else None
        how = "Pearson r; t = r sqrt((n - 2)/(1 - r²)) with n - 2 df; interval by Fisher's z"
    elif method == "spearman":
        res = sps.spearmanr(a, b, alternative=alternative)
        r, p = float(res.statistic), float(res.pvalue)
        df = n - 2
        stat = r * math.sqrt(df / (1 - r * r)) if abs(r) < 1 else None
        how = ("Spearman's rho (Pearson r of midranks); p from t with n - 2 df; interval by Fisher's z with "
               "se 1/sqrt(n - 3) (approximate)")
    else:
        res = sps.kendalltau(a, b, alternative=alternative)
        r, p = float(res.statistic), float(res.pvalue)
        how = "Kendall's tau-b (scipy: exact p for small samples without ties, else normal approximation)"
    if method != "kendall" and n > 3 and abs(r) < 1:
        q = float(sps.norm.ppf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha))
        z, se = math.atanh(r), 1 / math.sqrt(n - 3)
        ci = _side(math.tanh(z - q * se), math.tanh(z + q * se), alternative, -1.0, 1.0)
    name = {"pearson": "r", "spearman": "rho", "kendall": "tau"}[method]
    rel = {"two-sided": "is not zero", "less": "is negative", "greater": "is positive"}[alternative]
    text = _conclusion(p, alpha, f"the correlation {rel}", f"no evidence that the correlation {rel}",
                       f"{name} = {fmt(r)}, n = {n}, {fmt_p(p)}")
    return jsonable({
        "test": f"{method.capitalize()} correlation", "r": r, "statistic": stat, "df": df, "p_value": p,
        "alternative": alternative, "n": n, "ci": ci, "confidence": 1 - alpha, "alpha": alpha,
        "reject_null": p < alpha, "method": how, "interpretation": text,
    })

