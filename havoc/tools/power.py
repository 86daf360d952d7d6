"""Power and sample size, as Minitab's Stat > Power and Sample Size menu: give all but one of n, the effect,
power and alpha, and the missing one is solved for.

Formulas (each the exact power of the test havoc runs, not a normal shortcut, except where said):
- t tests (one-sample, paired, two-sample with n per group): noncentral t, ncp = effect/sd * sqrt(n)
  (two-sample: sqrt(n/2)), df = n - 1 (two-sample: 2n - 2), both tails counted for two-sided tests
  (Minitab, G*Power; R's power.t.test counts one unless strict = TRUE).
- proportions: the normal approximation of the z test, with p0 (one sample) or the pooled proportion
  (two samples, n per group) in the null standard error, as Minitab and R's power.prop.test.
- one-way ANOVA (n per group): noncentral F, lambda = n * sum((mu_i - mu)^2) / sigma^2; the effect is the
  variance of the group means (R's between.var) or Minitab's maximum difference (least favourable:
  two means that far apart, the others midway).
- two-level factorials: the F test of one effect in the fitted model, lambda = N * effect^2 / (4 sigma^2)
  with N the corner runs, error df = runs - 1 - terms (- 1 for a curvature term when there are centre
  points), as Minitab's Power and Sample Size for 2-Level Factorial Design.
Solving is by bracketing root-finding on the monotone power curve; a sample size is returned both as the
exact solution and rounded up to the whole units to run.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from scipy import optimize
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import check_alternative, fmt, jsonable

TESTS = ("one_sample_t", "paired_t", "two_sample_t", "one_proportion", "two_proportions", "anova", "factorial")
MAX_N = 10_000_000


def _num(v: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ToolError(f"{name} must be a finite number, got {v!r:.40}")
    if positive and v <= 0:
        raise ToolError(f"{name} must be positive, got {v!r:.40}")
    return float(v)


def _proportion(name: str, value: Any, differ_from: tuple[str, float] | None = None) -> float:
    """`value` as a proportion strictly between 0 and 1, and, where `differ_from` names one, unequal to it.

    Args:
        name: the argument's name, for the message.
        value: what the caller gave.
        differ_from: (name, value) of the proportion it is compared with: equal ones leave nothing to detect.

    Returns:
        the proportion as a float.
    """
    p = _num(value, name)
    if differ_from is None:
        if not 0 < p < 1:
            raise ToolError(f"{name} must be between 0 and 1")
    elif not 0 < p < 1 or p == differ_from[1]:
        raise ToolError(f"{name} must be between 0 and 1 and differ from {differ_from[0]}")
    return p


def _t_power(effect: float, sd: float, n: float, alpha: float, alternative: str, two_sample: bool,
             strict: bool = True) -> float:
    df = 2 * n - 2 if two_sample else n - 1
    if df <= 0:
        return alpha
    ncp = effect / sd * math.sqrt(n / 2 if two_sample else n)
    dist = sps.nct(df, ncp)
    q = sps.t.ppf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha, df)
    upper, lower = dist.sf(q), dist.cdf(-q)
    if not (math.isfinite(upper) and math.isfinite(lower)):
        # scipy's noncentral t gives NaN far in the tail (ncp beyond ~37), where power is 1 to double
        # precision anyway; the normal limit of the same statistic is exact enough there.
        upper, lower = sps.norm.sf(q - ncp), sps.norm.cdf(-q - ncp)
    if alternative == "two-sided":
        return float(upper + lower) if strict else float(upper if effect > 0 else lower)
    return float(upper if alternative == "greater" else lower)


def _normal_power(shift: float, se0: float, se1: float, alpha: float, alternative: str, strict: bool = True) -> float:
    """P(reject) for a z test whose statistic has null se `se0` and true mean `shift` with se `se1`."""
    if alternative == "two-sided":
        q = sps.norm.ppf(1 - alpha / 2)
        upper, lower = sps.norm.sf((q * se0 - shift) / se1), sps.norm.cdf((-q * se0 - shift) / se1)
        return float(upper + lower) if strict else float(upper if shift > 0 else lower)
    q = sps.norm.ppf(1 - alpha)
    if alternative == "greater":
        return float(sps.norm.sf((q * se0 - shift) / se1))
    return float(sps.norm.cdf((-q * se0 - shift) / se1))


def _f_power(lam: float, df1: float, df2: float, alpha: float) -> float:
    if df2 <= 0:
        return alpha
    q = sps.f.ppf(1 - alpha, df1, df2)
    return float(sps.ncf.sf(q, df1, df2, lam))


def _solve(f: Callable[[float], float], target: float, lo: float, hi: float, what: str, *,
           grow: bool = False) -> float:
    """x in [lo, hi] with f(x) = target, f monotone increasing; a ToolError when out of reach.

    With grow, hi is only a ceiling: the bracket doubles from 2 lo until it holds the root (sample sizes).
    """
    flo = f(lo) - target
    if flo > 0:
        return lo
    top = hi
    if grow:
        hi = 2 * lo
        while f(hi) < target and hi < top:
            lo, hi = hi, min(2 * hi, top)
    if f(hi) - target < 0:
        raise ToolError(f"no {what} up to {hi:g} reaches that power")
    return float(optimize.brentq(lambda x: f(x) - target, lo, hi, xtol=1e-10, rtol=1e-12, maxiter=500))


def power_sample_size(test: str, n: float | None = None, effect: float | None = None, power: float | None = None,
                      alpha: float | None = None, sd: float | None = None, p0: float | None = None,
                      p1: float | None = None, p2: float | None = None, groups: int | None = None,
                      between_var: float | None = None, factors: int | None = None, corner_points: int | None = None,
                      center_points: int = 0, terms: int | None = None, alternative: str = "two-sided",
                      strict: bool = True) -> dict:
    """Power, sample size, detectable effect or alpha of a test: the one not given is solved for.

    Args:
        test: one_sample_t, paired_t, two_sample_t, one_proportion, two_proportions, anova or factorial.
        n: sample size (per group for two_sample_t, two_proportions and anova; replicates of the corner
            points for factorial).
        effect: the difference to detect (t tests: in the data's units with `sd`; anova: Minitab's maximum
            difference between means; factorial: the effect, high minus low mean). Proportions use p0/p1/p2.
        power: the probability of detecting it.
        alpha: significance level (default 0.05 unless it is the unknown).
        sd: the standard deviation (t tests, anova, factorial).
        p0: the null proportion (one_proportion). p1: the true proportion (one_proportion) or that of group 1.
        p2: group 2's proportion (two_proportions).
        groups: number of groups (anova).
        between_var: variance of the group means (anova, instead of effect; R's between.var).
        factors: number of factors (factorial).
        corner_points: corner runs per replicate (factorial; default 2^factors).
        center_points: centre points per replicate (factorial).
        terms: model terms besides the constant (factorial; default main effects and two-factor interactions).
        alternative: "two-sided", "less" or "greater" (t tests and proportions).
        strict: for two-sided tests count both rejection tails (True, Minitab and G*Power); False counts only
            the tail on the effect's side, as R's power.t.test and power.prop.test do by default.

    Returns:
        solved_for, n (and n_exact when solved), effect, power, alpha, the inputs, method, interpretation.
    """
    if test not in TESTS:
        raise ToolError(f"test must be one of {', '.join(TESTS)}, got {test!r:.40}")
    alternative = check_alternative(alternative)
    if test in ("anova", "factorial") and alternative != "two-sided":
        raise ToolError(f"the {test} F test is two-sided only")
    proportions = test in ("one_proportion", "two_proportions")
    effect_name = "p1" if test == "one_proportion" else "p2" if test == "two_proportions" else \
        "between_var" if test == "anova" and between_var is not None else "effect"
    known = {"n": n, effect_name: {"p1": p1, "p2": p2, "between_var": between_var, "effect": effect}[effect_name],
             "power": power}
    missing = [k for k, v in known.items() if v is None]
    if test == "anova" and between_var is not None and effect is not None:
        raise ToolError("give effect (maximum difference) or between_var, not both")
    if len(missing) > 1:
        raise ToolError(f"give all but one of n, {effect_name}, power (missing: {', '.join(missing)})")
    solve = missing[0] if missing else ("alpha" if alpha is None else None)
    if solve is None:
        raise ToolError(f"n, {effect_name}, power and alpha are all given: leave out the one to solve for")
    if alpha is not None:
        alpha = _num(alpha, "alpha")
        if not 0 < alpha < 1:
            raise ToolError("alpha must be between 0 and 1")
    elif solve != "alpha":
        alpha = 0.05
    if power is not None:
        power = _num(power, "power")
        if not 0 < power < 1:
            raise ToolError("power must be between 0 and 1 (exclusive)")
        if alpha is not None and power <= (alpha / 2 if alternative == "two-sided" else alpha):
            raise ToolError(f"power {power:g} is not above alpha ({alpha:g}): any test has that much")
    if n is not None:
        n = _num(n, "n", positive=True)

    # --- the power function of (n, effect, alpha) for this test, and the domain of each unknown -----------
    if test in ("one_sample_t", "paired_t", "two_sample_t", "anova", "factorial"):
        if sd is None:
            raise ToolError(f"a {test} power calculation needs sd, the standard deviation")
        sd = _num(sd, "sd", positive=True)
    two = test == "two_sample_t"
    if test in ("one_sample_t", "paired_t", "two_sample_t"):
        min_n = 2.0
        if known["effect"] is not None:
            known["effect"] = _num(known["effect"], "effect")
            if known["effect"] == 0:
                raise ToolError("an effect of 0 cannot be detected: power would equal alpha")

        def pw(nn: float, eff: float, a: float) -> float:
            return _t_power(eff, sd, nn, a, alternative, two, strict)

        what = ("noncentral t: df = 2n - 2, ncp = effect/sd sqrt(n/2), n per group" if two else
                "noncentral t: df = n - 1, ncp = effect/sd sqrt(n)")
        eff_range = (1e-9 * sd, 1e3 * sd)
    elif test == "one_proportion":
        if p0 is None:
            raise ToolError("a one-proportion power calculation needs p0, the hypothesised proportion")
        p0 = _proportion("p0", p0)
        min_n = 1.0
        if known["p1"] is not None:
            known["p1"] = _proportion("p1", known["p1"], differ_from=("p0", p0))

        def pw(nn: float, pp: float, a: float) -> float:
            return _normal_power(math.sqrt(nn) * (pp - p0), math.sqrt(p0 * (1 - p0)), math.sqrt(pp * (1 - pp)), a,
                                 alternative, strict)

        what = "normal approximation: z = (p - p0) sqrt(n) / sqrt(p0 (1 - p0))"
        eff_range = (p0, 1 - 1e-12) if alternative != "less" else (1e-12, p0)
    elif test == "two_proportions":
        if p1 is None:
            raise ToolError("a two-proportion power calculation needs p1 (and p2, unless it is solved for)")
        p1 = _proportion("p1", p1)
        min_n = 2.0
        if known["p2"] is not None:
            known["p2"] = _proportion("p2", known["p2"], differ_from=("p1", p1))

        def pw(nn: float, pp: float, a: float) -> float:
            # H1 is stated about p1 - p2; the statistic's null se uses the average proportion
            pbar = (p1 + pp) / 2
            return _normal_power(math.sqrt(nn) * (p1 - pp), math.sqrt(2 * pbar * (1 - pbar)),
                                 math.sqrt(p1 * (1 - p1) + pp * (1 - pp)), a, alternative, strict)

        what = "normal approximation (R's power.prop.test): n per group, null se from the average proportion"
        eff_range = (1e-12, p1) if alternative != "less" else (p1, 1 - 1e-12)
    elif test == "anova":
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 2:
            raise ToolError("an anova power calculation needs groups, a whole number >= 2")
        min_n = 2.0
        by_var = effect_name == "between_var"
        if known[effect_name] is not None:
            known[effect_name] = _num(known[effect_name], effect_name, positive=True)

        def pw(nn: float, eff: float, a: float) -> float:
            ss = (groups - 1) * eff if by_var else eff * eff / 2  # sum of squared deviations of the means
            return _f_power(nn * ss / sd ** 2, groups - 1, groups * (nn - 1), a)

        what = ("noncentral F: df = (g - 1, g(n - 1)), lambda = n sum((mu_i - mu)²)/sigma², " +
                ("sum from the variance of the means (g - 1) between_var" if by_var else
                 "least favourable means: two a maximum difference apart, the rest midway"))
        eff_range = (1e-12, 1e6 * sd ** 2) if by_var else (1e-9 * sd, 1e3 * sd)
    else:
        if isinstance(factors, bool) or not isinstance(factors, int) or not 2 <= factors <= 15:
            raise ToolError("a factorial power calculation needs factors, a whole number from 2 to 15")
        corners = 2 ** factors if corner_points is None else corner_points
        if isinstance(corners, bool) or not isinstance(corners, int) or corners < 4 or corners & (corners - 1) \
                or corners > 2 ** factors:
            raise ToolError(f"corner_points must be a power of two from 4 to 2^factors = {2 ** factors}")
        if isinstance(center_points, bool) or not isinstance(center_points, int) or center_points < 0:
            raise ToolError("center_points must be a whole number >= 0")
        n_terms = factors + factors * (factors - 1) // 2 if terms is None else terms
        if isinstance(n_terms, bool) or not isinstance(n_terms, int) or not 1 <= n_terms < corners:
            raise ToolError(f"terms must be from 1 to {corners - 1} (the corner runs less the constant)")
        if n_terms > corners - 1:
            n_terms = corners - 1
        min_n = 1.0
        if known["effect"] is not None:
            known["effect"] = _num(known["effect"], "effect")
            if known["effect"] == 0:
                raise ToolError("an effect of 0 cannot be detected: power would equal alpha")
        curvature = 1 if center_points else 0

        def pw(nn: float, eff: float, a: float) -> float:
            runs = nn * (corners + center_points)
            return _f_power(nn * corners * eff ** 2 / (4 * sd ** 2), 1, runs - 1 - n_terms - curvature, a)

        what = (f"F test of one effect: lambda = N effect²/(4 sigma²), N = corner runs; error df = runs - 1 - "
                f"{n_terms} terms" + (" - 1 curvature" if curvature else ""))
        eff_range = (1e-9 * sd, 1e3 * sd)

    # --- solve for the unknown ------------------------------------------------------------------------
    eff_val = known[effect_name]
    n_exact = None
    if solve == "n":
        n_exact = _solve(lambda x: pw(x, eff_val, alpha), power, min_n, MAX_N, "sample size", grow=True)
        if test == "factorial":
            n_val = max(1, math.ceil(n_exact - 1e-9))
        else:
            n_val = max(math.ceil(min_n), math.ceil(n_exact - 1e-9))
        achieved = pw(n_val, eff_val, alpha)
        n, power_out = n_val, achieved
    elif solve == effect_name:
        if n < min_n:
            raise ToolError(f"n must be at least {min_n:g} for this test")
        lo, hi = eff_range
        rising = not (proportions and ((test == "one_proportion" and alternative == "less") or
                                       (test == "two_proportions" and alternative != "less")))
        if test == "one_proportion" and alternative == "two-sided":
            lo, hi = p0, 1 - 1e-12  # the larger proportion with that power (the smaller is reported too)
        if test == "two_proportions" and alternative == "two-sided":
            lo, hi = 1e-12, p1
        if test in ("one_sample_t", "paired_t", "two_sample_t") and alternative == "less":
            eff_val = -_solve(lambda e: pw(n, -e, alpha), power, lo, hi, effect_name)
        elif rising:
            eff_val = _solve(lambda e: pw(n, e, alpha), power, lo, hi, effect_name)
        else:
            eff_val = _solve(lambda e: pw(n, hi + lo - e, alpha), power, lo, hi, effect_name)
            eff_val = hi + lo - eff_val
        power_out = power
    elif solve == "power":
        if n < min_n:
            raise ToolError(f"n must be at least {min_n:g} for this test")
        power_out = pw(n, eff_val, alpha)
    else:  # alpha
        if n < min_n:
            raise ToolError(f"n must be at least {min_n:g} for this test")
        alpha = _solve(lambda a: pw(n, eff_val, a), power, 1e-12, 1 - 1e-12, "alpha")
        power_out = power
    other = None
    if solve == effect_name and test == "one_proportion" and alternative == "two-sided":
        other = _solve(lambda e: pw(n, p0 - e, alpha), power, 1e-12, p0 - 1e-12, "p1")
        other = p0 - other
    per = " per group" if test in ("two_sample_t", "two_proportions", "anova") else \
        " replicates" if test == "factorial" else ""
    eff_text = {"p1": f"p1 = {fmt(eff_val)} (p0 = {fmt(p0)})" if test == "one_proportion" else "",
                "p2": f"p1 = {fmt(p1)} vs p2 = {fmt(eff_val)}", "between_var": f"between-means variance {fmt(eff_val)}",
                "effect": f"effect {fmt(eff_val)}" + (f" with sd {fmt(sd)}" if sd else "")}[effect_name]
    if solve == "n":
        text = (f"n = {n}{per} gives power {fmt(power_out)} to detect {eff_text} at alpha = {fmt(alpha)} "
                f"(exact solution {fmt(n_exact)} for target power {fmt(power)})")
    elif solve == effect_name:
        text = f"With n = {fmt(n)}{per} and alpha = {fmt(alpha)}, power {fmt(power_out)} is reached at {eff_text}"
    elif solve == "power":
        text = f"Power {fmt(power_out)} to detect {eff_text} with n = {fmt(n)}{per} at alpha = {fmt(alpha)}"
    else:
        text = f"alpha = {fmt(alpha)} gives power {fmt(power_out)} to detect {eff_text} with n = {fmt(n)}{per}"
    out = {
        "test": test, "solved_for": solve, "n": n, "n_exact": n_exact, effect_name: eff_val, "power": power_out,
        "alpha": alpha, "alternative": alternative, "sd": sd,
        "method": what + ("" if alternative != "two-sided" or test in ("anova", "factorial") else
                          "; both tails counted" if strict else "; only the tail on the effect's side counted (strict off)"),
        "interpretation": text,
    }
    if target := (power if solve == "n" else None):
        out["target_power"] = target
    if other is not None:
        out["p1_lower"] = other
    for k, v in (("p0", p0), ("p1", p1), ("groups", groups), ("factors", factors)):
        if v is not None and k not in out:
            out[k] = v
    if test == "factorial":
        out.update(corner_points=corners, center_points=center_points, terms=n_terms,
                   total_runs=n * (corners + center_points) if solve == "n" or n == int(n) else None)
    return jsonable(out)
