"""Statistical process control: Shewhart charts, run rules, process capability.

Charts: X-bar/R, X-bar/S, individuals and moving range (I-MR), p, np, c and u. Limits are the usual
3-sigma Shewhart limits with the constants for subgroup sizes 2..25, computed from their definitions
rather than copied (tables round d2 and d3 before deriving D3/D4, so their third decimals differ by one
here and there; tests/test_tools_spc.py checks every entry against the standard table to 0.001):
    c4 = sqrt(2/(n-1)) Γ(n/2) / Γ((n-1)/2)
    d2 = E[range of n standard normals] = ∫ 1 - Φ(x)^n - (1 - Φ(x))^n dx
    d3 = sd of that range, from E[R²] = 2 ∫∫_{x<y} 1 - Φ(y)^n - (1 - Φ(x))^n + (Φ(y) - Φ(x))^n dx dy
    A2 = 3/(d2 √n), A3 = 3/(c4 √n), D3,D4 = 1 ∓ 3 d3/d2 (D3 ≥ 0), B3,B4 = 1 ∓ 3 √(1 - c4²)/c4 (B3 ≥ 0)

Run rules (Western Electric 1956; Nelson 1984) are checked on the primary chart, zones measured in that
chart's own sigma at each point (so variable-limit p and u charts are judged point by point). Points
are numbered from 1, as on the chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import integrate
from scipy import stats as sps
from scipy.special import ndtr

from havoc.errors import ToolError
from havoc.tools._common import as_vector, fmt, jsonable

MIN_N, MAX_N = 2, 25
MAX_POINTS = 10_000


# ----------------------------------------------------------------------------------------- constants

@lru_cache(maxsize=None)
def _d2(n: int) -> float:
    return integrate.quad(lambda x: 1 - ndtr(x) ** n - (1 - ndtr(x)) ** n, -np.inf, np.inf,
                          epsabs=1e-13, epsrel=1e-13)[0]


@lru_cache(maxsize=None)
def _d3(n: int) -> float:
    def f(x, y):
        return 1 - ndtr(y) ** n - (1 - ndtr(x)) ** n + (ndtr(y) - ndtr(x)) ** n

    # ±12 sd holds every digit: the integrand's tails are below 1e-30 there.
    second = 2 * integrate.dblquad(f, -12, 12, lambda y: -12, lambda y: y, epsabs=1e-12, epsrel=1e-12)[0]
    return math.sqrt(second - _d2(n) ** 2)


def _c4(n: int) -> float:
    return math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


# The standard printed table (Montgomery, Introduction to Statistical Quality Control, Appendix VI; ASTM
# STP 15D), n = 2..25, for answers that must match a textbook's limits digit for digit. E2 is not in every
# table: it is 3/d2 of the tabled d2, rounded to 3 decimals as printed where it is (2.660 for n = 2).
TABLE = {
    "A2": [1.880, 1.023, 0.729, 0.577, 0.483, 0.419, 0.373, 0.337, 0.308, 0.285, 0.266, 0.249, 0.235, 0.223,
           0.212, 0.203, 0.194, 0.187, 0.180, 0.173, 0.167, 0.162, 0.157, 0.153],
    "A3": [2.659, 1.954, 1.628, 1.427, 1.287, 1.182, 1.099, 1.032, 0.975, 0.927, 0.886, 0.850, 0.817, 0.789,
           0.763, 0.739, 0.718, 0.698, 0.680, 0.663, 0.647, 0.633, 0.619, 0.606],
    "c4": [0.7979, 0.8862, 0.9213, 0.9400, 0.9515, 0.9594, 0.9650, 0.9693, 0.9727, 0.9754, 0.9776, 0.9794,
           0.9810, 0.9823, 0.9835, 0.9845, 0.9854, 0.9862, 0.9869, 0.9876, 0.9882, 0.9887, 0.9892, 0.9896],
    "B3": [0, 0, 0, 0, 0.030, 0.118, 0.185, 0.239, 0.284, 0.321, 0.354, 0.382, 0.406, 0.428, 0.448, 0.466,
           0.482, 0.497, 0.510, 0.523, 0.534, 0.545, 0.555, 0.565],
    "B4": [3.267, 2.568, 2.266, 2.089, 1.970, 1.882, 1.815, 1.761, 1.716, 1.679, 1.646, 1.618, 1.594, 1.572,
           1.552, 1.534, 1.518, 1.503, 1.490, 1.477, 1.466, 1.455, 1.445, 1.435],
    "d2": [1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078, 3.173, 3.258, 3.336, 3.407, 3.472,
           3.532, 3.588, 3.640, 3.689, 3.735, 3.778, 3.819, 3.858, 3.895, 3.931],
    "d3": [0.853, 0.888, 0.880, 0.864, 0.848, 0.833, 0.820, 0.808, 0.797, 0.787, 0.778, 0.770, 0.763, 0.756,
           0.750, 0.744, 0.739, 0.734, 0.729, 0.724, 0.720, 0.716, 0.712, 0.708],
    "D3": [0, 0, 0, 0, 0, 0.076, 0.136, 0.184, 0.223, 0.256, 0.283, 0.307, 0.328, 0.347, 0.363, 0.378, 0.391,
           0.403, 0.415, 0.425, 0.434, 0.443, 0.451, 0.459],
    "D4": [3.267, 2.574, 2.282, 2.114, 2.004, 1.924, 1.864, 1.816, 1.777, 1.744, 1.717, 1.693, 1.672, 1.653,
           1.637, 1.622, 1.608, 1.597, 1.585, 1.575, 1.566, 1.557, 1.548, 1.541],
}
CONSTANT_SOURCES = ("exact", "table")


def constants(n: int, source: str = "exact") -> dict:
    """Control chart constants for subgroup size n (2..25).

    Args:
        n: subgroup size.
        source: "exact" (computed from the definitions) or "table" (the printed 3- and 4-decimal table,
            so that limits match a textbook's).

    Returns:
        {"n", "A2", "A3", "B3", "B4", "D3", "D4", "d2", "d3", "c4", "E2", "source"} (E2 = 3/d2, for
        individuals).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not MIN_N <= n <= MAX_N:
        raise ToolError(f"subgroup size must be a whole number from {MIN_N} to {MAX_N}, got {n!r}")
    if source not in CONSTANT_SOURCES:
        raise ToolError(f"constants must be 'exact' or 'table', got {source!r:.40}")
    if source == "table":
        out = {k: float(v[n - 2]) for k, v in TABLE.items()}
        return {"n": n, **out, "E2": round(3 / out["d2"], 3), "source": "table"}
    d2, d3, c4 = _d2(n), _d3(n), _c4(n)
    s = math.sqrt(1 - c4 * c4) / c4
    return {"n": n, "A2": 3 / (d2 * math.sqrt(n)), "A3": 3 / (c4 * math.sqrt(n)), "B3": max(0.0, 1 - 3 * s),
            "B4": 1 + 3 * s, "D3": max(0.0, 1 - 3 * d3 / d2), "D4": 1 + 3 * d3 / d2, "d2": d2, "d3": d3, "c4": c4,
            "E2": 3 / d2, "source": "exact"}


# -------------------------------------------------------------------------------------------- rules

WESTERN_ELECTRIC = {
    "WE1": "one point beyond 3 sigma",
    "WE2": "2 of 3 consecutive points beyond 2 sigma on the same side",
    "WE3": "4 of 5 consecutive points beyond 1 sigma on the same side",
    "WE4": "8 consecutive points on the same side of the centre line",
}
NELSON = {
    "N1": "one point beyond 3 sigma",
    "N2": "9 points in a row on the same side of the centre line",
    "N3": "6 points in a row steadily increasing or decreasing",
    "N4": "14 points in a row alternating up and down",
    "N5": "2 of 3 consecutive points beyond 2 sigma on the same side",
    "N6": "4 of 5 consecutive points beyond 1 sigma on the same side",
    "N7": "15 points in a row within 1 sigma of the centre line",
    "N8": "8 points in a row beyond 1 sigma, on either side",
}


def _k_of_m(z: np.ndarray, k: int, m: int, level: float) -> tuple[set, list]:
    points, ends = set(), []
    for side in (1, -1):
        beyond = side * z > level
        for end in range(z.size):
            window = range(max(0, end - m + 1), end + 1)  # the first points form shorter windows
            hits = [i for i in window if beyond[i]]
            if len(hits) >= k and beyond[end]:  # the signal fires on the point that completes it
                points.update(hits)
                ends.append(end)
    return points, ends


def _runs(flags: np.ndarray, length: int) -> tuple[set, list]:
    points, ends = set(), []
    run = 0
    for i, f in enumerate(flags):
        run = run + 1 if f else 0
        if run >= length:
            points.update(range(i - length + 1, i + 1))
            ends.append(i)
    return points, ends


def _trend(x: np.ndarray, length: int) -> tuple[set, list]:
    # "6 points in a row increasing" = 5 consecutive rises
    points, ends = set(), []
    d = np.sign(np.diff(x))
    for side in (1, -1):
        p, e = _runs(d == side, length - 1)
        points.update({i for j in p for i in (j, j + 1)})
        ends.extend(i + 1 for i in e)
    return points, ends


def _alternating(x: np.ndarray, length: int) -> tuple[set, list]:
    d = np.sign(np.diff(x))
    alt = np.zeros(d.size, bool)
    alt[1:] = (d[1:] * d[:-1]) < 0
    p, e = _runs(alt, length - 2)
    return {i for j in p for i in (j - 1, j, j + 1)}, [i + 1 for i in e]


def check_rules(values: Sequence[float], center: Any, sigma: Any, rules: str = "western_electric") -> list[dict]:
    """Run-rule violations of a chart.

    Args:
        values: the plotted points.
        center: centre line (a number or one per point).
        sigma: the plotted statistic's sigma (a number or one per point).
        rules: "western_electric", "nelson", "both" or "none".

    Returns:
        [{"rule", "description", "points" (1-based, every point in a breaking window), "signals_at"
          (1-based points where the rule fired)}], only rules that were broken.
    """
    if rules not in ("western_electric", "nelson", "both", "none"):
        raise ToolError("rules must be 'western_electric', 'nelson', 'both' or 'none'")
    x = np.asarray(values, float)
    c = np.broadcast_to(np.asarray(center, float), x.shape)
    s = np.broadcast_to(np.asarray(sigma, float), x.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, (x - c) / s, 0.0)
    found: dict[str, tuple[set, list]] = {}
    if rules in ("western_electric", "both"):
        found["WE1"] = _k_of_m(z, 1, 1, 3)
        found["WE2"] = _k_of_m(z, 2, 3, 2)
        found["WE3"] = _k_of_m(z, 4, 5, 1)
        above, below = _runs(z > 0, 8), _runs(z < 0, 8)
        found["WE4"] = (above[0] | below[0], above[1] + below[1])
    if rules in ("nelson", "both"):
        found["N1"] = _k_of_m(z, 1, 1, 3)
        above, below = _runs(z > 0, 9), _runs(z < 0, 9)
        found["N2"] = (above[0] | below[0], above[1] + below[1])
        found["N3"] = _trend(x, 6)
        found["N4"] = _alternating(x, 14)
        found["N5"] = _k_of_m(z, 2, 3, 2)
        found["N6"] = _k_of_m(z, 4, 5, 1)
        found["N7"] = _runs(np.abs(z) < 1, 15)
        found["N8"] = _runs(np.abs(z) > 1, 8)
    descriptions = {**WESTERN_ELECTRIC, **NELSON}
    return [{"rule": r, "description": descriptions[r], "points": sorted(i + 1 for i in pts),
             "signals_at": sorted({i + 1 for i in ends})}
            for r, (pts, ends) in found.items() if ends]


# ------------------------------------------------------------------------------------------- charts

def _subgroups(subgroups: Any, data: Any, subgroup_size: Any) -> np.ndarray:
    if subgroups is not None:
        if not isinstance(subgroups, Sequence) or isinstance(subgroups, (str, bytes)) or len(subgroups) < 2:
            raise ToolError("subgroups must be a list of at least 2 lists of measurements")
        rows = [as_vector(g, f"subgroup {i + 1}", min_len=MIN_N, max_len=MAX_N) for i, g in enumerate(subgroups)]
        if len({r.size for r in rows}) != 1:
            raise ToolError("all subgroups must have the same size (the limits here assume constant n)")
        if len(rows) > MAX_POINTS:
            raise ToolError(f"at most {MAX_POINTS} subgroups")
        return np.vstack(rows)
    if data is None or subgroup_size is None:
        raise ToolError("give subgroups, or data with subgroup_size")
    if isinstance(subgroup_size, bool) or not isinstance(subgroup_size, int) or not MIN_N <= subgroup_size <= MAX_N:
        raise ToolError(f"subgroup_size must be from {MIN_N} to {MAX_N}")
    x = as_vector(data, "data", min_len=2 * subgroup_size)
    if x.size % subgroup_size:
        raise ToolError(f"{x.size} values do not split into subgroups of {subgroup_size}")
    return x.reshape(-1, subgroup_size)


def _counts(values: Any, name: str) -> np.ndarray:
    x = as_vector(values, name, min_len=2, max_len=MAX_POINTS)
    if (x < 0).any() or (x != np.round(x)).any():
        raise ToolError(f"{name} must be whole, non-negative counts")
    return x


def _chart(name: str, points: np.ndarray, center: Any, ucl: Any, lcl: Any, sigma: Any, rules: str,
           label: str) -> dict:
    viol = check_rules(points, center, sigma, rules) if rules != "none" else []

    def scalar_or_list(v):
        arr = np.broadcast_to(np.asarray(v, float), points.shape)
        return float(arr[0]) if np.all(arr == arr[0]) else arr.tolist()

    return {"chart": name, "statistic": label, "points": points.tolist(), "center": scalar_or_list(center),
            "ucl": scalar_or_list(ucl), "lcl": scalar_or_list(lcl), "violations": viol}


def _secondary(name: str, points: np.ndarray, center: float, ucl: float, lcl: float, label: str) -> dict:
    beyond = [i + 1 for i, v in enumerate(points) if v > ucl or v < lcl]
    viol = [{"rule": "1", "description": "one point beyond the control limits", "points": beyond,
             "signals_at": beyond}] if beyond else []
    return {"chart": name, "statistic": label, "points": points.tolist(), "center": center, "ucl": ucl,
            "lcl": lcl, "violations": viol}


def control_chart(chart: str, data: Sequence[float] | None = None, subgroups: Sequence[Sequence[float]] | None = None,
                  subgroup_size: int | None = None, sizes: Sequence[float] | None = None, n: int | None = None,
                  rules: str = "western_electric", constants_source: str = "exact") -> dict:
    """A Shewhart control chart with its limits and run-rule violations.

    Args:
        chart: "xbar_r", "xbar_s", "imr", "p", "np", "c" or "u".
        data: individual values (imr), counts (p, np: defectives; c, u: defects), or measurements to split
            into subgroups (xbar_r, xbar_s, with subgroup_size).
        subgroups: list of equal-size subgroups (xbar_r, xbar_s), sizes 2..25.
        subgroup_size: subgroup size when data is given flat.
        sizes: sample size of each point (p, u).
        n: constant sample size (np; also accepted by p and u).
        rules: "western_electric" (default), "nelson", "both" or "none".
        constants_source: "exact" (computed d2, A2, D4 ...) or "table" (the printed table: d2 = 1.128 ...).

    Returns:
        chart, charts [primary, secondary (R, S or MR) where there is one], each with points, center,
        ucl, lcl (numbers, or lists when limits vary) and violations; constants used; out_of_control;
        method; interpretation.
    """
    charts: list[dict] = []
    const = None
    if chart in ("xbar_r", "xbar_s"):
        g = _subgroups(subgroups, data, subgroup_size)
        m, size = g.shape
        const = constants(size, constants_source)
        means = g.mean(axis=1)
        xbarbar = float(means.mean())
        if chart == "xbar_r":
            r = g.max(axis=1) - g.min(axis=1)
            rbar = float(r.mean())
            sig = rbar / (const["d2"] * math.sqrt(size))
            charts.append(_chart("xbar", means, xbarbar, xbarbar + const["A2"] * rbar, xbarbar - const["A2"] * rbar,
                                 sig, rules, "subgroup mean"))
            charts.append(_secondary("r", r, rbar, const["D4"] * rbar, const["D3"] * rbar, "subgroup range"))
            method = f"X-bar/R, n = {size}: X-bar limits = grand mean ± A2·R-bar (A2 = {const['A2']:.4f}); R limits D3·R-bar, D4·R-bar"
        else:
            s = g.std(axis=1, ddof=1)
            sbar = float(s.mean())
            sig = sbar / (const["c4"] * math.sqrt(size))
            charts.append(_chart("xbar", means, xbarbar, xbarbar + const["A3"] * sbar, xbarbar - const["A3"] * sbar,
                                 sig, rules, "subgroup mean"))
            charts.append(_secondary("s", s, sbar, const["B4"] * sbar, const["B3"] * sbar, "subgroup standard deviation"))
            method = f"X-bar/S, n = {size}: X-bar limits = grand mean ± A3·S-bar (A3 = {const['A3']:.4f}); S limits B3·S-bar, B4·S-bar"
    elif chart == "imr":
        x = as_vector(data, "data", min_len=3, max_len=MAX_POINTS)
        const = constants(2, constants_source)
        mr = np.abs(np.diff(x))
        mrbar = float(mr.mean())
        xbar = float(x.mean())
        sig = mrbar / const["d2"]
        charts.append(_chart("individuals", x, xbar, xbar + 3 * sig, xbar - 3 * sig, sig, rules, "individual value"))
        mr_chart = _secondary("moving_range", mr, mrbar, const["D4"] * mrbar, 0.0, "moving range of 2")
        # the moving range of point i spans points i and i+1: number it as the later point
        for v in mr_chart["violations"]:
            v["points"] = [p + 1 for p in v["points"]]
            v["signals_at"] = [p + 1 for p in v["signals_at"]]
        charts.append(mr_chart)
        method = f"I-MR: limits = mean ± 3·MR-bar/d2 (d2 = {const['d2']:.4f}); MR upper limit D4·MR-bar = {const['D4']:.4f}·MR-bar"
    elif chart in ("p", "np", "c", "u"):
        counts = _counts(data, "data")
        if chart in ("p", "u", "np"):
            if sizes is not None:
                ns = as_vector(sizes, "sizes", min_len=counts.size, max_len=counts.size)
            elif n is not None:
                ns = np.full(counts.size, float(n))
            else:
                raise ToolError(f"a {chart} chart needs the sample sizes (sizes, or n when constant)")
            if (ns <= 0).any() or (ns != np.round(ns)).any():
                raise ToolError("sample sizes must be positive whole numbers")
            if chart == "np" and not np.all(ns == ns[0]):
                raise ToolError("an np chart needs a constant sample size; use a p chart for varying sizes")
            if chart in ("p", "np") and (counts > ns).any():
                raise ToolError("defectives cannot exceed the sample size")
        if chart == "p":
            pbar = float(counts.sum() / ns.sum())
            sig = np.sqrt(pbar * (1 - pbar) / ns)
            charts.append(_chart("p", counts / ns, pbar, np.minimum(1, pbar + 3 * sig), np.maximum(0, pbar - 3 * sig),
                                 sig, rules, "fraction defective"))
            method = "p chart: p-bar ± 3·sqrt(p-bar(1 - p-bar)/n_i), clipped to [0, 1]"
        elif chart == "np":
            size = float(ns[0])
            pbar = float(counts.sum() / ns.sum())
            sig = math.sqrt(size * pbar * (1 - pbar))
            charts.append(_chart("np", counts, size * pbar, size * pbar + 3 * sig, max(0.0, size * pbar - 3 * sig),
                                 sig, rules, "number defective"))
            method = "np chart: n·p-bar ± 3·sqrt(n·p-bar(1 - p-bar)), LCL clipped at 0"
        elif chart == "c":
            cbar = float(counts.mean())
            sig = math.sqrt(cbar)
            charts.append(_chart("c", counts, cbar, cbar + 3 * sig, max(0.0, cbar - 3 * sig), sig, rules,
                                 "defects per unit inspected"))
            method = "c chart: c-bar ± 3·sqrt(c-bar), LCL clipped at 0"
        else:
            ubar = float(counts.sum() / ns.sum())
            sig = np.sqrt(ubar / ns)
            charts.append(_chart("u", counts / ns, ubar, ubar + 3 * sig, np.maximum(0, ubar - 3 * sig), sig, rules,
                                 "defects per unit"))
            method = "u chart: u-bar ± 3·sqrt(u-bar/n_i), LCL clipped at 0"
        if sig is not None and np.all(np.asarray(sig) == 0):
            raise ToolError("every point is the same (no variation): the limits collapse onto the centre line")
    else:
        raise ToolError(f"unknown chart {chart!r}: use xbar_r, xbar_s, imr, p, np, c or u")
    broken = [v for c in charts for v in c["violations"]]
    primary = charts[0]
    if broken:
        parts = [f"{c['chart']}: {v['rule']} at point{'s' if len(v['signals_at']) > 1 else ''} "
                 f"{', '.join(map(str, v['signals_at'][:6]))}{' ...' if len(v['signals_at']) > 6 else ''}"
                 for c in charts for v in c["violations"]]
        text = "Out of control — " + "; ".join(parts[:4]) + (" ..." if len(parts) > 4 else "")
    else:
        text = f"In statistical control: no point beyond the limits and no {rules.replace('_', ' ')} rule broken" if rules != "none" \
            else "No point beyond the limits (run rules not checked)"
    if const is not None:
        method += f"; {const['source']} constants"
    return jsonable({
        "chart": chart, "charts": charts, "n_points": len(primary["points"]), "constants": const,
        "rules": rules, "out_of_control": bool(broken), "method": method, "interpretation": text,
    })


# ---------------------------------------------------------------------------------------- capability

def _finite(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ToolError(f"{name} must be a finite number")
    return float(v)


def capability(data: Sequence[float] | None = None, lsl: float | None = None, usl: float | None = None,
               subgroup_size: int | None = None, target: float | None = None, mean: float | None = None,
               sigma: float | None = None, sigma_overall: float | None = None,
               constants_source: str = "exact") -> dict:
    """Process capability: Cp, Cpk (within-subgroup sigma) and Pp, Ppk (overall sigma), from data or from
    a stated mean and sigma.

    Args:
        data: measurements in time order (split into consecutive subgroups when subgroup_size is given).
        lsl: lower specification limit (optional if usl is given).
        usl: upper specification limit (optional if lsl is given).
        subgroup_size: 2..25 for sigma_within = R-bar/d2; omitted, sigma_within = MR-bar/d2 of individuals.
        target: optional target, for Cpm.
        mean: the process mean, instead of data (summary statistics, as NIST handbook 6.1.6).
        sigma: the within (short-term) sigma that goes with mean: Cp, Cpk.
        sigma_overall: the overall (long-term) sigma that goes with mean: Pp, Ppk (optional).
        constants_source: "exact" or "table" d2 for sigma_within from data.

    Returns:
        cp, cpk, cpu, cpl, pp, ppk, ppu, ppl, cpm, sigma_within, sigma_overall, sigma_used (which sigma each
        index used), mean, expected_ppm (normal model, overall sigma where known), method, interpretation.
    """
    lsl, usl, target = _finite(lsl, "lsl"), _finite(usl, "usl"), _finite(target, "target")
    if lsl is None and usl is None:
        raise ToolError("give at least one specification limit (lsl or usl)")
    if lsl is not None and usl is not None and not lsl < usl:
        raise ToolError("lsl must be below usl")
    if data is not None:
        if mean is not None or sigma is not None or sigma_overall is not None:
            raise ToolError("give data, or mean with sigma (summary statistics), not both")
        x = as_vector(data, "data", min_len=4, max_len=MAX_POINTS * MAX_N)
        mean = float(x.mean())
        overall = float(x.std(ddof=1))
        n_obs = x.size
        if subgroup_size is not None:
            g = _subgroups(None, x.tolist(), subgroup_size)
            const = constants(subgroup_size, constants_source)
            within = float((g.max(axis=1) - g.min(axis=1)).mean()) / const["d2"]
            how = f"sigma within = R-bar/d2 (n = {subgroup_size}, d2 = {const['d2']:.4f}, {const['source']})"
            within_name = "within subgroups: R-bar/d2"
        else:
            const = constants(2, constants_source)
            within = float(np.abs(np.diff(x)).mean()) / const["d2"]
            how = f"sigma within = MR-bar/d2 (moving ranges of 2, d2 = {const['d2']:.4f}, {const['source']})"
            within_name = "within: MR-bar/d2 of moving ranges of 2"
        overall_name = "overall: sample standard deviation"
        if within == 0 or overall == 0:
            raise ToolError("the data show no variation: capability indices are undefined")
    else:
        mean, within, overall = _finite(mean, "mean"), _finite(sigma, "sigma"), _finite(sigma_overall, "sigma_overall")
        if mean is None or within is None:
            raise ToolError("give data, or the process mean and sigma (summary statistics)")
        if subgroup_size is not None:
            raise ToolError("subgroup_size applies to data, not to a stated sigma")
        for name, v in (("sigma", within), ("sigma_overall", overall)):
            if v is not None and v <= 0:
                raise ToolError(f"{name} must be positive: capability is undefined without variation")
        n_obs = None
        how = "sigma within as given"
        within_name = "within: as given (sigma)"
        overall_name = "overall: as given (sigma_overall)" if overall is not None else None

    def idx(sig: float | None) -> dict:
        if sig is None:
            return {"p": None, "pk": None, "pu": None, "pl": None}
        up = (usl - mean) / (3 * sig) if usl is not None else None
        lo = (mean - lsl) / (3 * sig) if lsl is not None else None
        both = (usl - lsl) / (6 * sig) if usl is not None and lsl is not None else None
        k = min(v for v in (up, lo) if v is not None)
        return {"p": both, "pk": k, "pu": up, "pl": lo}

    w, o = idx(within), idx(overall)
    ppm_sigma = overall if overall is not None else within
    ppm = 0.0
    if usl is not None:
        ppm += float(sps.norm.sf((usl - mean) / ppm_sigma)) * 1e6
    if lsl is not None:
        ppm += float(sps.norm.cdf((lsl - mean) / ppm_sigma)) * 1e6
    cpm = None
    if target is not None and lsl is not None and usl is not None:
        cpm = (usl - lsl) / (6 * math.sqrt(ppm_sigma ** 2 + (mean - target) ** 2))
    verdict = ("capable (Cpk >= 1.33)" if w["pk"] >= 1.33 else "marginal (1 <= Cpk < 1.33)" if w["pk"] >= 1
               else "not capable (Cpk < 1)")
    text = (f"Cpk = {fmt(w['pk'], 3)}" + (f", Cp = {fmt(w['p'], 3)}" if w["p"] is not None else "") +
            (f", Ppk = {fmt(o['pk'], 3)}" if o["pk"] is not None else "") +
            f": {verdict}; about {fmt(ppm, 3)} ppm out of specification")
    return jsonable({
        "cp": w["p"], "cpk": w["pk"], "cpu": w["pu"], "cpl": w["pl"], "pp": o["p"], "ppk": o["pk"], "ppu": o["pu"],
        "ppl": o["pl"], "cpm": cpm, "mean": mean, "sigma_within": within, "sigma_overall": overall,
        "sigma_used": {"cp_cpk": within_name, "pp_ppk": overall_name,
                       "ppm_cpm": "overall" if overall is not None else "within (no overall sigma given)"},
        "expected_ppm": ppm, "lsl": lsl, "usl": usl, "n": n_obs,
        "method": f"Cp = (USL - LSL)/6σ, Cpk = min(USL - mean, mean - LSL)/3σ; {how}; Pp, Ppk with the overall "
                  "sigma; ppm from a normal model" + ("" if data is not None else "; from summary statistics"),
        "interpretation": text,
    })


# ------------------------------------------------------------------------------------ EWMA and CUSUM

def _monitored(data: Any, subgroups: Any, sigma: Any, target: Any, constants_source: str) -> tuple:
    """(plotted values, subgroup size, sigma of one observation, where it came from, target, where from)."""
    if (data is None) == (subgroups is None):
        raise ToolError("give data (individual values) or subgroups, one of the two")
    if subgroups is not None:
        g = _subgroups(subgroups, None, None)
        size = g.shape[1]
        x = g.mean(axis=1)
    else:
        x = as_vector(data, "data", min_len=2, max_len=MAX_POINTS)
        g, size = None, 1
    if sigma is not None:
        sig = _finite(sigma, "sigma")
        if sig <= 0:
            raise ToolError("sigma must be positive")
        sig_from = "given"
    else:
        if x.size < 3 and g is None:
            raise ToolError("estimating sigma from moving ranges needs at least 3 values; give sigma")
        const = constants(max(size, 2), constants_source)
        if g is None:
            sig = float(np.abs(np.diff(x)).mean()) / const["d2"]
            sig_from = f"MR-bar/d2 of the data (d2 = {const['d2']:.4f}, {const['source']})"
        else:
            sig = float((g.max(axis=1) - g.min(axis=1)).mean()) / const["d2"]
            sig_from = f"R-bar/d2 of the subgroups (d2 = {const['d2']:.4f}, {const['source']})"
        if sig == 0:
            raise ToolError("the data show no variation: sigma estimates to zero; give sigma")
    if target is not None:
        mu0, mu_from = _finite(target, "target"), "given"
    else:
        mu0, mu_from = float(x.mean()), "mean of the data"
    return x, size, sig, sig_from, mu0, mu_from


def ewma_chart(data: Sequence[float] | None = None, subgroups: Sequence[Sequence[float]] | None = None,
               lam: float = 0.2, L: float = 3.0, target: float | None = None, sigma: float | None = None,
               limits: str = "exact", constants_source: str = "exact") -> dict:
    """Exponentially weighted moving average chart (Roberts 1959; NIST handbook 6.3.2.4).

    z_i = lam x_i + (1 - lam) z_(i-1), z_0 = target; limits target ± L sigma_x sqrt(lam/(2 - lam) [1 - (1 - lam)^(2i)]),
    sigma_x = sigma / sqrt(subgroup size). "asymptotic" limits drop the bracket (the handbook's constant limits).

    Args:
        data: individual values in time order (or subgroups).
        subgroups: equal-size subgroups; their means are smoothed.
        lam: the weight of the newest point, 0 < lam <= 1.
        L: width of the limits in sigmas of the EWMA.
        target: the centre line and z_0 (default: the data's mean).
        sigma: the process standard deviation of one observation (default: MR-bar/d2 or R-bar/d2).
        limits: "exact" (time-varying, as Minitab and qcc) or "asymptotic" (constant).
        constants_source: "exact" or "table" d2 when sigma is estimated.

    Returns:
        points (the EWMA), data, center, ucl, lcl (lists for exact limits), out_of_control (1-based points
        beyond the limits), first_signal, lambda, L, sigma and its source, method, interpretation.
    """
    lam, L = _finite(lam, "lambda"), _finite(L, "L")
    if not 0 < lam <= 1:
        raise ToolError("lambda must be in (0, 1]")
    if not 0 < L <= 10:
        raise ToolError("L must be between 0 and 10")
    if limits not in ("exact", "asymptotic"):
        raise ToolError("limits must be 'exact' or 'asymptotic'")
    x, size, sig, sig_from, mu0, mu_from = _monitored(data, subgroups, sigma, target, constants_source)
    z = np.empty(x.size)
    prev = mu0
    for i, v in enumerate(x):
        prev = lam * v + (1 - lam) * prev
        z[i] = prev
    sig_x = sig / math.sqrt(size)
    steady = sig_x * math.sqrt(lam / (2 - lam))
    if limits == "exact":
        i = np.arange(1, x.size + 1)
        half = L * steady * np.sqrt(1 - (1 - lam) ** (2 * i))
    else:
        half = np.full(x.size, L * steady)
    ucl, lcl = mu0 + half, mu0 - half
    out = [i + 1 for i in range(x.size) if z[i] > ucl[i] or z[i] < lcl[i]]
    first = out[0] if out else None
    text = (f"Out of control: the EWMA leaves the limits first at point {first}"
            + (f" ({len(out)} points beyond)" if len(out) > 1 else "") if out else
            f"In control: every EWMA point is within the limits (steady-state limits {fmt(mu0 - L * steady)} to "
            f"{fmt(mu0 + L * steady)})")
    return jsonable({
        "chart": "ewma", "points": z, "data": x, "center": mu0, "center_source": mu_from,
        "ucl": ucl if limits == "exact" else float(ucl[0]), "lcl": lcl if limits == "exact" else float(lcl[0]),
        "ucl_steady": mu0 + L * steady, "lcl_steady": mu0 - L * steady, "sigma_ewma_steady": steady,
        "lambda": lam, "L": L, "sigma": sig, "sigma_source": sig_from, "subgroup_size": size, "limits": limits,
        "out_of_control": out, "first_signal": first, "n_points": x.size,
        "method": f"EWMA z_i = {lam:g} x_i + {1 - lam:g} z_(i-1), z_0 = {mu_from}; {limits} limits at ±{L:g} sigma_z; "
                  f"sigma {sig_from}",
        "interpretation": text,
    })


def cusum_chart(data: Sequence[float] | None = None, subgroups: Sequence[Sequence[float]] | None = None,
                target: float | None = None, sigma: float | None = None, k: float = 0.5, h: float = 4.0,
                headstart: float = 0.0, constants_source: str = "exact") -> dict:
    """Tabular (two one-sided) CUSUM chart (Page 1954; NIST handbook 6.3.2.3.1; Montgomery 9.1).

    C+_i = max(0, x_i - (target + K) + C+_(i-1)), C-_i = max(0, (target - K) - x_i + C-_(i-1)), K = k sigma_x,
    H = h sigma_x, sigma_x = sigma / sqrt(subgroup size); a point signals when C+ or C- exceeds H.

    Args:
        data: individual values in time order (or subgroups).
        subgroups: equal-size subgroups; their means are accumulated.
        target: the in-control mean (default: the data's mean).
        sigma: the standard deviation of one observation (default: MR-bar/d2 or R-bar/d2).
        k: reference value in sigmas (half the shift to detect; 0.5 for a one-sigma shift).
        h: decision interval in sigmas (4 as Minitab, 5 as Montgomery).
        headstart: fast initial response, C+_0 = C-_0 = headstart * H (0 to 1).
        constants_source: "exact" or "table" d2 when sigma is estimated.

    Returns:
        upper (C+), lower (C-), n_upper, n_lower (periods since each last was zero), K, H,
        out_of_control_upper / _lower (1-based), first_signal, shift_estimate at the first signal, method,
        interpretation.
    """
    k, h, headstart = _finite(k, "k"), _finite(h, "h"), _finite(headstart, "headstart")
    if not 0 <= k <= 5:
        raise ToolError("k must be between 0 and 5 (sigmas)")
    if not 0 < h <= 50:
        raise ToolError("h must be between 0 and 50 (sigmas)")
    if not 0 <= headstart < 1:
        raise ToolError("headstart must be in [0, 1): a fraction of H")
    x, size, sig, sig_from, mu0, mu_from = _monitored(data, subgroups, sigma, target, constants_source)
    sig_x = sig / math.sqrt(size)
    big_k, big_h = k * sig_x, h * sig_x
    up, lo = np.empty(x.size), np.empty(x.size)
    n_up, n_lo = np.zeros(x.size, int), np.zeros(x.size, int)
    cu = cl = headstart * big_h
    nu = nl = 0
    for i, v in enumerate(x):
        cu = max(0.0, v - (mu0 + big_k) + cu)
        cl = max(0.0, (mu0 - big_k) - v + cl)
        nu = nu + 1 if cu > 0 else 0
        nl = nl + 1 if cl > 0 else 0
        up[i], lo[i], n_up[i], n_lo[i] = cu, cl, nu, nl
    out_up = [i + 1 for i in range(x.size) if up[i] > big_h]
    out_lo = [i + 1 for i in range(x.size) if lo[i] > big_h]
    first = min(out_up[:1] + out_lo[:1]) if out_up or out_lo else None
    shift = None
    if first is not None:
        i = first - 1
        if up[i] > big_h:  # Montgomery (9-6): the new mean is target + K + C+/N+
            shift = {"direction": "up", "new_mean": mu0 + big_k + up[i] / n_up[i], "began_after": first - int(n_up[i])}
        else:
            shift = {"direction": "down", "new_mean": mu0 - big_k - lo[i] / n_lo[i], "began_after": first - int(n_lo[i])}
    if first is not None:
        text = (f"Out of control: C{'+' if shift['direction'] == 'up' else '-'} exceeds H = {fmt(big_h)} first at point "
                f"{first}; estimated new mean {fmt(shift['new_mean'])}, the shift began after point {shift['began_after']}")
    else:
        text = f"In control: neither cumulative sum exceeds H = {fmt(big_h)}"
    return jsonable({
        "chart": "cusum", "upper": up, "lower": lo, "n_upper": n_up, "n_lower": n_lo, "data": x, "target": mu0,
        "target_source": mu_from, "sigma": sig, "sigma_source": sig_from, "subgroup_size": size, "k": k, "h": h,
        "K": big_k, "H": big_h, "headstart": headstart, "out_of_control_upper": out_up, "out_of_control_lower": out_lo,
        "out_of_control": sorted(set(out_up) | set(out_lo)), "first_signal": first, "shift_estimate": shift,
        "n_points": x.size,
        "method": f"tabular CUSUM: K = {k:g} sigma_x, H = {h:g} sigma_x; target {mu_from}; sigma {sig_from}" +
                  (f"; headstart {headstart:g} H" if headstart else ""),
        "interpretation": text,
    })
