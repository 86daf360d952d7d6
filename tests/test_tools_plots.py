"""Plots render headless to real PNG and SVG files, with the marks they promise."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from havoc.errors import ToolError
from havoc.tools import doe, plots, spc, stats

FILTRATION = [45, 71, 48, 65, 68, 60, 80, 65, 43, 100, 45, 104, 75, 86, 70, 96]


def read_png(path):
    from matplotlib import image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return image.imread(path)


def red_pixels(img) -> int:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(((r > 0.7) & (g < 0.35) & (b < 0.35)).sum())


def check_svg(path, *texts):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    body = open(path).read()
    for t in texts:
        assert t in body


def factorial():
    d = doe.full_factorial([{"name": n, "low": -1, "high": 1} for n in "ABCD"], randomize=False)
    return list("ABCD"), [[r["coded"][n] for n in "ABCD"] for r in d["runs"]]


def test_control_chart_png_marks_violations(tmp_path):
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 25), rng.normal(2.5, 1, 15)])
    res = spc.control_chart("imr", data=x.tolist(), rules="both")
    assert res["out_of_control"]
    meta = plots.control_chart_plot(res, tmp_path / "imr.png")
    img = read_png(meta["path"])
    assert img.shape[:2] == (meta["height_px"], meta["width_px"]) and img.std() > 0.05
    assert red_pixels(img) > 50
    quiet = spc.control_chart("imr", data=[1.0, 1.2, 0.9, 1.1, 1.0, 0.95, 1.05, 1.1], rules="none")
    assert red_pixels(read_png(plots.control_chart_plot(quiet, tmp_path / "quiet.png")["path"])) == 0


def test_control_chart_svg_with_variable_limits(tmp_path):
    res = spc.control_chart("p", data=[12, 15, 8, 10, 4, 30], sizes=[100, 100, 120, 120, 80, 100])
    meta = plots.control_chart_plot(res, tmp_path / "p.svg")
    check_svg(meta["path"], "p chart", "UCL")


def test_doe_plots(tmp_path):
    names, x = factorial()
    for fn, name in [(plots.main_effects_plot, "main.png"), (plots.interaction_plot, "inter.png")]:
        meta = fn(names, x, FILTRATION, tmp_path / name)
        assert read_png(meta["path"]).std() > 0.05
    check_svg(plots.interaction_plot(names, x, FILTRATION, tmp_path / "i.svg")["path"], "Interactions")


def test_residual_plots(tmp_path):
    rng = np.random.default_rng(3)
    xs = np.linspace(0, 10, 30)
    reg = stats.regression((1 + 2 * xs + rng.normal(0, 1, 30)).tolist(), {"x": xs.tolist()}, _keep_fit=True)
    meta = plots.residual_plots(reg["_fitted"], reg["_residuals"], tmp_path / "r.png")
    assert read_png(meta["path"]).shape[:2] == (700, 1000)
    check_svg(plots.residual_plots(reg["_fitted"], reg["_residuals"], tmp_path / "r.svg")["path"], "Normal probability")


def test_plot_refusals(tmp_path):
    names, x = factorial()
    with pytest.raises(ToolError, match=".png or .svg"):
        plots.main_effects_plot(names, x, FILTRATION, tmp_path / "m.jpg")
    with pytest.raises(ToolError, match="does not exist"):
        plots.main_effects_plot(names, x, FILTRATION, tmp_path / "no" / "m.png")
    with pytest.raises(ToolError, match="one row per response"):
        plots.main_effects_plot(names, x[:3], FILTRATION, tmp_path / "m.png")
