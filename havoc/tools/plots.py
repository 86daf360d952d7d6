"""Pictures: control charts, DOE main-effect and interaction plots, residual plots, as PNG or SVG.

Rendered with matplotlib's object API (`Figure`, no pyplot): no display, no global state, safe from the
registry's worker threads. The format comes from the file extension (.png or .svg).
"""

from __future__ import annotations

import textwrap

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from havoc.errors import ToolError

FORMATS = ("png", "svg")
VIOLATION = "#d62728"
LINE = "#1f77b4"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | os.PathLike, fmt: str | None) -> dict:
    p = Path(path)
    fmt = (fmt or p.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ToolError(f"plot files must be .png or .svg, got {p.name!r}")
    if p.parent and not p.parent.exists():
        raise ToolError(f"the folder {str(p.parent)!r} does not exist")
    from havoc.io.atomic import atomic_path

    try:  # a call stopped at its time limit mid-write leaves no half-written picture
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=fmt)
    except OSError as e:
        raise ToolError(f"cannot write the plot to {str(p)!r}: {e.strerror or e}") from None
    w, h = fig.get_size_inches() * fig.dpi
    return {"path": str(p), "format": fmt, "width_px": int(round(w)), "height_px": int(round(h))}


def _limits(v: Any, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, float), (n,))


def control_chart_plot(result: dict, path: str | os.PathLike, fmt: str | None = None) -> dict:
    """Draw a `spc.control_chart` result: points, centre line, limits, rule violations marked.

    Args:
        result: the dict `havoc.tools.spc.control_chart` returned.
        path: file to write (.png or .svg).
        fmt: "png" or "svg" to override the extension.

    Returns:
        {"path", "format", "width_px", "height_px"}.
    """
    charts = result.get("charts") or []
    if not charts:
        raise ToolError("nothing to plot: the result has no charts")
    fig = _figure(10, 3.2 * len(charts))
    axes = fig.subplots(len(charts), 1, squeeze=False)[:, 0]
    for ax, ch in zip(axes, charts):
        y = np.asarray(ch["points"], float)
        x = np.arange(1, y.size + 1)
        if ch["chart"] == "moving_range":
            x = x + 1  # MR_i spans points i and i+1
        cl, ucl, lcl = (_limits(ch[k], y.size) for k in ("center", "ucl", "lcl"))
        ax.plot(x, y, "-o", color=LINE, ms=4, lw=1, label=ch["statistic"])
        variable = not np.all(ucl == ucl[0])
        style = {"where": "mid"} if variable else {}
        draw = ax.step if variable else ax.plot
        draw(x, cl, color="black", lw=1, label=f"CL {cl[0]:.4g}" if not variable else "CL", **style)
        draw(x, ucl, "--", color="gray", lw=1, label=f"UCL {ucl[0]:.4g}" if not variable else "UCL", **style)
        draw(x, lcl, "--", color="gray", lw=1, label=f"LCL {lcl[0]:.4g}" if not variable else "LCL", **style)
        marked: dict[int, list[str]] = {}
        for v in ch["violations"]:
            for p in v["signals_at"]:
                marked.setdefault(p, []).append(v["rule"])
        if marked:
            idx = np.array(sorted(marked))
            sel = idx - (2 if ch["chart"] == "moving_range" else 1)
            ax.plot(x[sel], y[sel], "o", color=VIOLATION, ms=9, mfc="none", mew=2, label="rule violation")
            for p, s in zip(idx, sel):
                ax.annotate(",".join(marked[p]), (x[s], y[s]), textcoords="offset points", xytext=(0, 8),
                            ha="center", color=VIOLATION, fontsize=8)
        ax.set_title(f"{ch['chart']} chart", loc="left", fontsize=11)
        ax.set_xlabel("point")
        ax.set_ylabel(ch["statistic"])
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    # The verdict names every violated rule; wrapped (not cut at the figure's edge), at most three lines.
    verdict = textwrap.wrap(result.get("interpretation", ""), width=120, max_lines=3, placeholder=" …")
    fig.suptitle("\n".join(verdict), fontsize=9)
    return _save(fig, path, fmt)


def _design_arrays(factors: Sequence[str], coded: Sequence[Sequence[float]], response: Sequence[float]):
    x = np.asarray(coded, float)
    y = np.asarray(response, float)
    if x.ndim != 2 or x.shape[0] != y.size or x.shape[1] != len(factors):
        raise ToolError("coded must have one row per response and one column per factor")
    return x, y


def main_effects_plot(factors: Sequence[str], coded: Sequence[Sequence[float]], response: Sequence[float],
                      path: str | os.PathLike, fmt: str | None = None) -> dict:
    """Mean response at each coded level of each factor, one panel per factor, shared y axis.

    Args:
        factors: factor names (columns of coded).
        coded: coded settings of each run.
        response: the runs' responses.
        path: file to write (.png or .svg).
        fmt: "png" or "svg" to override the extension.

    Returns:
        {"path", "format", "width_px", "height_px"}.
    """
    x, y = _design_arrays(factors, coded, response)
    k = len(factors)
    fig = _figure(max(4, 2.6 * k), 3.4)
    axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
    for j, (ax, name) in enumerate(zip(axes, factors)):
        levels = np.unique(x[:, j])
        means = [y[x[:, j] == lv].mean() for lv in levels]
        ax.plot(levels, means, "-o", color=LINE)
        ax.axhline(y.mean(), color="gray", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("coded level")
        ax.set_xticks(levels)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean response")
    fig.suptitle("Main effects", fontsize=11)
    return _save(fig, path, fmt)


def interaction_plot(factors: Sequence[str], coded: Sequence[Sequence[float]], response: Sequence[float],
                     path: str | os.PathLike, fmt: str | None = None, max_pairs: int = 6) -> dict:
    """Two-factor interaction plots: mean response against one factor, a line per level of the other.

    Non-parallel lines show an interaction. Centre points (all factors 0) are left out.

    Args:
        factors: factor names.
        coded: coded settings of each run.
        response: the runs' responses.
        path: file to write (.png or .svg).
        fmt: "png" or "svg" to override the extension.
        max_pairs: most factor pairs drawn (the first ones in order).

    Returns:
        {"path", "format", "width_px", "height_px"}.
    """
    x, y = _design_arrays(factors, coded, response)
    if len(factors) < 2:
        raise ToolError("an interaction plot needs at least two factors")
    keep = ~np.all(x == 0, axis=1)
    x, y = x[keep], y[keep]
    pairs = list(itertools.combinations(range(len(factors)), 2))[:max_pairs]
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig = _figure(3.6 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (i, j) in zip(axes, pairs):
        for lv, color in zip(np.unique(x[:, j]), ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")):
            sel = x[:, j] == lv
            li = np.unique(x[sel, i])
            ax.plot(li, [y[sel & (x[:, i] == a)].mean() for a in li], "-o", color=color,
                    label=f"{factors[j]} = {lv:g}")
        ax.set_xticks(np.unique(x[:, i]))
        ax.set_xlabel(f"{factors[i]} (coded)")
        ax.set_ylabel("mean response")
        ax.set_title(f"{factors[i]} × {factors[j]}", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    fig.suptitle("Interactions", fontsize=11)
    return _save(fig, path, fmt)


def residual_plots(fitted: Sequence[float], residuals: Sequence[float], path: str | os.PathLike,
                   fmt: str | None = None) -> dict:
    """Four residual diagnostics: against fitted values, normal probability plot, histogram, run order.

    Args:
        fitted: fitted values.
        residuals: residuals, same order.
        path: file to write (.png or .svg).
        fmt: "png" or "svg" to override the extension.

    Returns:
        {"path", "format", "width_px", "height_px"}.
    """
    from scipy import stats as sps

    f = np.asarray(fitted, float)
    r = np.asarray(residuals, float)
    if f.shape != r.shape or r.size < 3:
        raise ToolError("fitted and residuals must be equal-length lists of at least 3 values")
    fig = _figure(10, 7)
    (a, b), (c, d) = fig.subplots(2, 2)
    a.scatter(f, r, s=14, color=LINE)
    a.axhline(0, color="gray", lw=0.8)
    a.set(title="Residuals vs fitted", xlabel="fitted value", ylabel="residual")
    (osm, osr), (slope, intercept, _) = sps.probplot(r, dist="norm")
    b.scatter(osm, osr, s=14, color=LINE)
    b.plot(osm, slope * osm + intercept, color=VIOLATION, lw=1)
    b.set(title="Normal probability plot", xlabel="theoretical quantile", ylabel="ordered residual")
    c.hist(r, bins=min(30, max(5, int(np.sqrt(r.size)))), color=LINE, alpha=0.8)
    c.set(title="Histogram", xlabel="residual", ylabel="count")
    d.plot(np.arange(1, r.size + 1), r, "-o", ms=3, color=LINE, lw=0.8)
    d.axhline(0, color="gray", lw=0.8)
    d.set(title="Residuals in run order", xlabel="observation", ylabel="residual")
    for ax in (a, b, c, d):
        ax.grid(alpha=0.3)
    return _save(fig, path, fmt)
