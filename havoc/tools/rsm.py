"""Response surfaces: the second-order model of a central composite or Box-Behnken experiment, its
stationary point and canonical analysis, and the best setting within the design region.

The model is fitted in coded units (centre 0, low/high at -1/+1) by the statistics engine's OLS:

    y = b0 + sum b_i x_i + sum b_ii x_i^2 + sum_{i<j} b_ij x_i x_j

Written y = b0 + x'b + x'Bx (B symmetric, B_ii = b_ii, B_ij = b_ij / 2), the stationary point is
x_s = -B^{-1} b / 2 and the eigenvalues of B say what it is: all negative a maximum, all positive a minimum,
mixed signs a saddle; an eigenvalue near zero (relative to the largest) a ridge, where the stationary
point is poorly determined (Montgomery, Design and Analysis of Experiments, 11.3; NIST handbook 5.5.3).
The optimum within the region is searched over the box the runs span in coded units (the cube for a
face-centred design, out to the axial points for a circumscribed one), by bounded quasi-Newton from the
centre, the clipped stationary point and every corner.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize

from havoc.errors import ToolError
from havoc.tools._common import as_vector, check_alpha, fmt, jsonable
from havoc.tools.doe import parse_factors, to_coded, to_natural
from havoc.tools.stats import regression

RIDGE_RTOL = 1e-3  # |eigenvalue| below this share of the largest: a ridge, not a clean optimum


def _design_runs(design: dict, factors: list[dict]) -> np.ndarray:
    from havoc.tools import doe

    if not isinstance(design, dict) or design.get("kind") not in ("central_composite", "box_behnken"):
        raise ToolError("design must be {\"kind\": \"central_composite\" | \"box_behnken\", ...}")
    opts = {k: v for k, v in design.items() if k != "kind"}
    allowed = {"central_composite": {"center", "alpha", "type", "fraction"}, "box_behnken": {"center"}}[design["kind"]]
    extra = set(opts) - allowed
    if extra:
        raise ToolError(f"unknown design option(s) {', '.join(sorted(extra))} for {design['kind']}")
    if design["kind"] == "box_behnken":
        res = doe.box_behnken(factors, center=opts.get("center"), randomize=False)
    else:
        res = doe.central_composite(factors, kind=opts.get("type", "circumscribed"), alpha=opts.get("alpha", "rotatable"),
                                    center=opts.get("center"), fraction=opts.get("fraction", False), randomize=False)
    return np.array([[r["coded"][f["name"]] for f in factors] for r in res["runs"]])


def response_surface(factors: Any, response: Sequence[float], coded: Sequence[Sequence[float]] | None = None,
                     natural: Sequence[Sequence[float]] | None = None, design: dict | None = None,
                     goal: str = "maximize", target: float | None = None, alpha: float = 0.05) -> dict:
    """Fit the full quadratic model, locate and classify its stationary point, and optimise within the region.

    Args:
        factors: [{"name", "low", "high"}] (low/high = coded -1/+1), 2 to 7 factors.
        response: one response per run.
        coded: the runs' coded settings, one row per response; or
        natural: the runs in natural units; or
        design: {"kind": "central_composite" | "box_behnken", "center", "alpha", "type", "fraction"}: the
            standard-order runs of that design (as `havoc` builds it unrandomised) are the rows.
        goal: "maximize", "minimize" or "target" (with target).
        target: the response value sought when goal is "target".
        alpha: significance level for the coefficient tests.

    Returns:
        coefficients (coded units, with se, t, p), r_squared, stationary_point {coded, natural, predicted,
        nature, eigenvalues, inside_region}, optimum {coded, natural, predicted, goal}, method,
        interpretation.
    """
    fs = parse_factors(factors)
    k = len(fs)
    if not 2 <= k <= 7:
        raise ToolError(f"a response surface here takes 2 to 7 factors, got {k}")
    alpha = check_alpha(alpha)
    y = as_vector(response, "response", min_len=3, max_len=4096)
    given = [v is not None for v in (coded, natural, design)]
    if sum(given) != 1:
        raise ToolError("give the runs one way: coded, natural or design")
    if design is not None:
        x = _design_runs(design, fs)
    else:
        rows = coded if coded is not None else natural
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or len(rows) != y.size:
            raise ToolError(f"{'coded' if coded is not None else 'natural'} must have one row per response ({y.size})")
        x = np.array([as_vector(r, f"run {i + 1}", min_len=k, max_len=k) for i, r in enumerate(rows)])
        if natural is not None:
            x = np.array([[to_coded(v, f["low"], f["high"]) for v, f in zip(row, fs)] for row in x])
    if x.shape[0] != y.size:
        raise ToolError(f"the design has {x.shape[0]} runs but {y.size} responses were given")
    p = 1 + 2 * k + k * (k - 1) // 2
    if y.size <= p:
        raise ToolError(f"a second-order model in {k} factors has {p} coefficients; {y.size} runs leave no "
                        "error degrees of freedom")
    names = [f["name"] for f in fs]
    cols: dict[str, list] = {}
    for i, nm in enumerate(names):
        cols[nm] = x[:, i].tolist()
    for i, nm in enumerate(names):
        cols[f"{nm}^2"] = (x[:, i] ** 2).tolist()
    for i, j in itertools.combinations(range(k), 2):
        cols[f"{names[i]}*{names[j]}"] = (x[:, i] * x[:, j]).tolist()
    levels = {tuple(np.unique(np.round(x[:, i], 9))) for i in range(k)}
    if any(len(lv) < 3 for lv in levels):
        raise ToolError("every factor needs at least three distinct levels to fit its quadratic term")
    fit = regression(y.tolist(), cols, alpha=alpha)
    coef = {c["name"]: c["estimate"] for c in fit["coefficients"]}
    b0 = coef["intercept"]
    b = np.array([coef[nm] for nm in names])
    big_b = np.diag([coef[f"{nm}^2"] for nm in names])
    for i, j in itertools.combinations(range(k), 2):
        big_b[i, j] = big_b[j, i] = coef[f"{names[i]}*{names[j]}"] / 2

    def predict(z: np.ndarray) -> float:
        return float(b0 + z @ b + z @ big_b @ z)

    lo, hi = x.min(axis=0), x.max(axis=0)
    eig, vecs = np.linalg.eigh(big_b)
    scale = float(np.max(np.abs(eig)))
    stationary = None
    if scale == 0:
        nature = "plane (no curvature: every quadratic coefficient is zero)"
    else:
        small = np.abs(eig) < RIDGE_RTOL * scale
        if small.any():
            nature = "ridge (an eigenvalue is near zero: a line or plane of near-equal response)"
        elif np.all(eig < 0):
            nature = "maximum"
        elif np.all(eig > 0):
            nature = "minimum"
        else:
            nature = "saddle point"
        if not small.any():
            xs = -0.5 * np.linalg.solve(big_b, b)
            inside = bool(np.all(xs >= lo - 1e-9) and np.all(xs <= hi + 1e-9))
            stationary = {
                "coded": dict(zip(names, xs.tolist())),
                "natural": {f["name"]: to_natural(float(v), f["low"], f["high"]) for f, v in zip(fs, xs)},
                "predicted": predict(xs), "nature": nature, "inside_region": inside,
            }
    goal_sign = {"maximize": -1.0, "minimize": 1.0}.get(goal)
    if goal == "target":
        if target is None or isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
            raise ToolError("goal 'target' needs target, the response value sought")

        def objective(z: np.ndarray) -> float:
            return (predict(z) - float(target)) ** 2
    elif goal_sign is not None:
        if target is not None:
            raise ToolError("target goes with goal 'target'")

        def objective(z: np.ndarray) -> float:
            return goal_sign * predict(z)
    else:
        raise ToolError("goal must be 'maximize', 'minimize' or 'target'")
    starts = [np.zeros(k)] + [np.array(c, float) for c in itertools.product(*zip(lo, hi))]
    if stationary is not None:
        starts.append(np.clip(np.array(list(stationary["coded"].values())), lo, hi))
    best = None
    for s in starts:
        res = optimize.minimize(objective, s, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                                options={"ftol": 1e-15, "gtol": 1e-12})
        if best is None or res.fun < best.fun - 1e-12:
            best = res
    xo = np.clip(best.x, lo, hi)
    optimum = {"coded": dict(zip(names, xo.tolist())),
               "natural": {f["name"]: to_natural(float(v), f["low"], f["high"]) for f, v in zip(fs, xo)},
               "predicted": predict(xo), "goal": goal, "target": target}
    coefs = [{**c, "term": c["name"]} for c in fit["coefficients"]]
    where = ", ".join(f"{nm} = {fmt(v)}" for nm, v in optimum["natural"].items())
    if stationary is not None:
        sp = ", ".join(f"{nm} = {fmt(v)}" for nm, v in stationary["natural"].items())
        text = (f"Stationary point is a {nature} at {sp} (predicted {fmt(stationary['predicted'])}"
                f"{', inside' if stationary['inside_region'] else ', outside'} the design region); ")
    else:
        text = f"No unique stationary point: the surface is a {nature.split(' (')[0]}; "
    text += f"best within the region ({goal}): {where}, predicted {fmt(optimum['predicted'])} (R² = {fmt(fit['r_squared'])})"
    return jsonable({
        "factors": fs, "n": y.size, "coefficients": coefs, "r_squared": fit["r_squared"],
        "adj_r_squared": fit["adj_r_squared"], "residual_sd": fit["residual_sd"], "f": fit["f"], "f_p": fit["f_p"],
        "b": b, "B": big_b, "eigenvalues": eig, "eigenvectors": vecs, "nature": nature,
        "stationary_point": stationary, "optimum": optimum,
        "region_coded": {nm: [float(a), float(c)] for nm, a, c in zip(names, lo, hi)},
        "method": "second-order OLS in coded units (QR with refinement); x_s = -B^-1 b / 2; canonical analysis by "
                  "the eigenvalues of B; optimum by bounded L-BFGS-B over the runs' coded box from the centre, the "
                  "corners and the stationary point",
        "interpretation": text,
    })
