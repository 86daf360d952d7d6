"""Measurement systems analysis: the crossed gauge R&R study by the ANOVA method.

Every operator measures every part the same number of times (r >= 2). The two-way ANOVA with interaction
(parts and operators random) gives the mean squares, and the variance components follow from their
expectations (AIAG MSA manual, 4th ed., ch. III; Montgomery, Introduction to SQC, 8.7):

    repeatability   = MS_E
    part x operator = (MS_PO - MS_E) / r
    operator        = (MS_O - MS_PO) / (p r)
    part            = (MS_P - MS_PO) / (o r)

A negative estimate is set to zero (said in the result). When the interaction's p-value exceeds
`alpha_interaction` (0.25, Minitab's default) it is pooled into the error and the reduced model is used,
as Minitab and the AIAG manual do. Study variation is `k` standard deviations (6; 5.15 in older AIAG
editions); the number of distinct categories is floor(1.41 sigma_part / sigma_GRR), at least 1, with
AIAG's and Minitab's 1.41 for sqrt(2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import as_vector, fmt, jsonable

MAX_LEVELS = 500


def _labels(values: Any, name: str, n: int) -> list[str]:
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != n:
        raise ToolError(f"{name} must be a list with one label per measurement ({n})")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ToolError(f"{name} labels must be strings or numbers")
    return [str(v) for v in values]


def gauge_rr(measurements: Sequence[float], parts: Sequence[Any], operators: Sequence[Any],
             tolerance: float | None = None, k: float = 6.0, alpha_interaction: float = 0.25) -> dict:
    """Crossed gauge R&R by the ANOVA method.

    Args:
        measurements: every measurement.
        parts: the part each measurement is of (a label per measurement).
        operators: the operator (appraiser) who made it.
        tolerance: USL - LSL, for %tolerance (optional).
        k: standard deviations in the study variation (6, or 5.15).
        alpha_interaction: pool the part x operator term into error when its p-value is above this
            (0 keeps it always).

    Returns:
        anova (the full table, with interaction), anova_reduced (when pooled), interaction_pooled,
        components [{source, variance, sd, study_var, pct_contribution, pct_study_var, pct_tolerance}],
        ndc, method, interpretation.
    """
    y = as_vector(measurements, "measurements", min_len=8)
    n = y.size
    part, oper = _labels(parts, "parts", n), _labels(operators, "operators", n)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 10:
        raise ToolError("k must be a number in (0, 10]: 6 or 5.15")
    if isinstance(alpha_interaction, bool) or not isinstance(alpha_interaction, (int, float)) \
            or not 0 <= alpha_interaction < 1:
        raise ToolError("alpha_interaction must be in [0, 1)")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                  or not math.isfinite(tolerance) or tolerance <= 0):
        raise ToolError("tolerance must be a positive number (USL - LSL)")
    pl, ol = sorted(set(part), key=part.index), sorted(set(oper), key=oper.index)
    p, o = len(pl), len(ol)
    if p < 2 or o < 2:
        raise ToolError(f"a crossed study needs at least 2 parts and 2 operators, got {p} and {o}")
    if p > MAX_LEVELS or o > MAX_LEVELS:
        raise ToolError(f"at most {MAX_LEVELS} parts and operators")
    pi = np.array([pl.index(v) for v in part])
    oi = np.array([ol.index(v) for v in oper])
    counts = np.zeros((p, o), int)
    np.add.at(counts, (pi, oi), 1)
    r = int(counts[0, 0])
    if not np.all(counts == r):
        raise ToolError("the study must be balanced and crossed: every operator measures every part the same "
                        f"number of times (cell counts range {counts.min()} to {counts.max()})")
    if r < 2:
        raise ToolError("each operator must measure each part at least twice: repeatability needs replicates")
    gm = y.mean()
    cell = np.zeros((p, o))
    np.add.at(cell, (pi, oi), y)
    cell /= r
    pm, om = cell.mean(axis=1), cell.mean(axis=0)
    ss_p = o * r * float(np.sum((pm - gm) ** 2))
    ss_o = p * r * float(np.sum((om - gm) ** 2))
    ss_po = r * float(np.sum((cell - pm[:, None] - om[None, :] + gm) ** 2))
    ss_e = float(np.sum((y - cell[pi, oi]) ** 2))
    ss_t = float(np.sum((y - gm) ** 2))
    df_p, df_o, df_po, df_e = p - 1, o - 1, (p - 1) * (o - 1), p * o * (r - 1)
    ms_p, ms_o, ms_po, ms_e = ss_p / df_p, ss_o / df_o, ss_po / df_po, ss_e / df_e
    if ss_t == 0:
        raise ToolError("every measurement is the same: there is no variation to apportion")
    if ms_e == 0:
        raise ToolError("repeat measurements agree exactly (zero repeatability): the F tests are undefined; "
                        "check the gauge's resolution")
    f_po = ms_po / ms_e
    p_po = float(sps.f.sf(f_po, df_po, df_e))
    if ms_po > 0:
        f_p, f_o = ms_p / ms_po, ms_o / ms_po
        p_p, p_o = float(sps.f.sf(f_p, df_p, df_po)), float(sps.f.sf(f_o, df_o, df_po))
    else:
        f_p = f_o = p_p = p_o = None
    full = [
        {"source": "part", "df": df_p, "ss": ss_p, "ms": ms_p, "f": f_p, "p": p_p},
        {"source": "operator", "df": df_o, "ss": ss_o, "ms": ms_o, "f": f_o, "p": p_o},
        {"source": "part x operator", "df": df_po, "ss": ss_po, "ms": ms_po, "f": f_po, "p": p_po},
        {"source": "repeatability", "df": df_e, "ss": ss_e, "ms": ms_e},
        {"source": "total", "df": n - 1, "ss": ss_t},
    ]
    pooled = alpha_interaction > 0 and p_po > alpha_interaction
    reduced = None
    clipped = []
    if pooled:
        df_err = df_po + df_e
        ms_err = (ss_po + ss_e) / df_err
        f_p2, f_o2 = ms_p / ms_err, ms_o / ms_err
        reduced = [
            {"source": "part", "df": df_p, "ss": ss_p, "ms": ms_p, "f": f_p2, "p": float(sps.f.sf(f_p2, df_p, df_err))},
            {"source": "operator", "df": df_o, "ss": ss_o, "ms": ms_o, "f": f_o2, "p": float(sps.f.sf(f_o2, df_o, df_err))},
            {"source": "repeatability", "df": df_err, "ss": ss_po + ss_e, "ms": ms_err},
            {"source": "total", "df": n - 1, "ss": ss_t},
        ]
        v_rep, v_int = ms_err, 0.0
        v_op = (ms_o - ms_err) / (p * r)
        v_part = (ms_p - ms_err) / (o * r)
    else:
        v_rep = ms_e
        v_int = (ms_po - ms_e) / r
        v_op = (ms_o - ms_po) / (p * r)
        v_part = (ms_p - ms_po) / (o * r)
    for name, v in (("operator", v_op), ("part x operator", v_int), ("part", v_part)):
        if v < 0:
            clipped.append(name)
    v_op, v_int, v_part = max(v_op, 0.0), max(v_int, 0.0), max(v_part, 0.0)
    v_repro = v_op + v_int
    v_grr = v_rep + v_repro
    v_total = v_grr + v_part
    rows = [("total gauge R&R", v_grr), ("repeatability", v_rep), ("reproducibility", v_repro),
            ("operator", v_op)] + ([] if pooled else [("part x operator", v_int)]) + \
        [("part-to-part", v_part), ("total variation", v_total)]
    sd_total = math.sqrt(v_total)
    components = []
    for name, v in rows:
        sd = math.sqrt(v)
        comp = {"source": name, "variance": v, "sd": sd, "study_var": k * sd, "pct_contribution": 100 * v / v_total,
                "pct_study_var": 100 * sd / sd_total}
        if tolerance is not None:
            comp["pct_tolerance"] = 100 * k * sd / tolerance
        components.append(comp)
    sd_grr, sd_part = math.sqrt(v_grr), math.sqrt(v_part)
    ndc = max(1, int(math.floor(1.41 * sd_part / sd_grr))) if sd_grr > 0 else None
    pct = components[0]["pct_study_var"]
    verdict = ("acceptable (< 10% of study variation)" if pct < 10 else
               "marginal (10-30% of study variation)" if pct <= 30 else "not acceptable (> 30% of study variation)")
    text = (f"Gauge R&R is {fmt(pct, 3)}% of the study variation: {verdict}; {ndc} distinct categories"
            + (f"; {fmt(components[0]['pct_tolerance'], 3)}% of the tolerance" if tolerance is not None else "")
            + ("; part x operator pooled into repeatability" if pooled else ""))
    return jsonable({
        "parts": p, "operators": o, "replicates": r, "anova": full, "anova_reduced": reduced,
        "interaction_pooled": pooled, "interaction_p": p_po, "alpha_interaction": alpha_interaction,
        "components": components, "ndc": ndc, "k": k, "tolerance": tolerance, "negative_components_set_to_zero": clipped,
        "method": "crossed two-way random-effects ANOVA (expected mean squares); interaction pooled when its "
                  f"p > {alpha_interaction:g}; study variation = {k:g} sd; ndc = floor(1.41 sd_part / sd_GRR)",
        "interpretation": text,
    })
