"""Designs against the NIST/SEMATECH e-Handbook and pyDOE3, design properties by hypothesis, and the
analysis of a two-level factorial against Montgomery's worked example."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.errors import ToolError
from havoc.tools import doe

pydoe = pytest.importorskip("pyDOE3")


def factors(k: int) -> list[dict]:
    return [{"name": f"F{i}", "low": 10.0 * i, "high": 10.0 * i + 4} for i in range(k)]


def coded(design: dict, std_order: bool = True) -> np.ndarray:
    runs = sorted(design["runs"], key=lambda r: r["std_order"]) if std_order else design["runs"]
    names = [f["name"] for f in design["factors"]]
    return np.array([[r["coded"][n] for n in names] for r in runs])


def same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    def key(m):
        return Counter(tuple(np.round(r, 9)) for r in m)
    return a.shape == b.shape and key(a) == key(b)


# ----------------------------------------------------------------------------- e-Handbook run counts

@pytest.mark.parametrize("k, runs, center", [(3, 15, 3), (4, 27, 3), (5, 46, 6), (6, 54, 6), (7, 62, 6)])
def test_box_behnken_runs_and_centre_points_follow_the_handbook(k, runs, center):
    d = doe.box_behnken(factors(k), randomize=False)
    assert d["n_runs"] == runs and d["center_points"] == center
    x = coded(d)
    assert set(np.unique(x)) == {-1.0, 0.0, 1.0}
    assert np.abs(x.sum(axis=0)).max() == 0  # balanced
    assert np.abs((x.T @ x) - np.diag(np.diag(x.T @ x))).max() == 0  # coded columns orthogonal
    assert not np.any(np.all(np.abs(x) == 1, axis=1))  # no corner runs


@pytest.mark.parametrize("k", [3, 4, 5])
def test_box_behnken_matches_pydoe3_where_it_is_right(k):
    d = doe.box_behnken(factors(k), randomize=False)
    assert same_rows(coded(d), pydoe.bbdesign(k))


def test_pydoe3_box_behnken_for_six_factors_is_not_box_and_behnkens():
    assert pydoe.bbdesign(6).shape[0] == 66  # all pairs; Box and Behnken's design has 54 runs
    assert doe.box_behnken(factors(6), randomize=False)["n_runs"] == 54


@pytest.mark.parametrize("k, runs, alpha, fraction", [
    (2, 13, 1.414, False), (3, 20, 1.682, False), (4, 30, 2.000, False), (5, 52, 2.378, False),
    (6, 91, 2.828, False), (5, 33, 2.000, True), (6, 54, 2.378, True)])
def test_ccd_runs_and_rotatable_alpha_follow_the_handbook(k, runs, alpha, fraction):
    d = doe.central_composite(factors(k), fraction=fraction, randomize=False)
    assert d["n_runs"] == runs and round(d["alpha"], 3) == alpha and d["rotatable"]
    x = coded(d)
    assert np.abs(x.sum(axis=0)).max() < 1e-12
    assert np.abs((x.T @ x) - np.diag(np.diag(x.T @ x))).max() < 1e-9


@pytest.mark.parametrize("k", [2, 3, 4])
def test_ccd_matches_pydoe3_given_the_same_centre_points_and_alpha(k):
    d = doe.central_composite(factors(k), randomize=False)
    c = d["center_points"]
    ref = pydoe.ccdesign(k, center=(0, c), alpha="rotatable", face="ccc")
    assert same_rows(coded(d), ref)
    ins = doe.central_composite(factors(k), kind="inscribed", randomize=False)
    assert same_rows(coded(ins), pydoe.ccdesign(k, center=(0, c), alpha="rotatable", face="cci"))
    assert np.abs(coded(ins)).max() == pytest.approx(1.0)
    faced = doe.central_composite(factors(k), kind="faced", randomize=False)
    assert faced["alpha"] == 1.0 and same_rows(coded(faced), pydoe.ccdesign(k, center=(0, c), face="ccf"))


def test_pydoe3_ccd_defaults_differ_from_the_handbook():
    assert pydoe.ccdesign(2).shape[0] == 16  # 4 + 4 centre points, "orthogonal" alpha by default
    assert doe.central_composite(factors(2), randomize=False)["n_runs"] == 13


def test_orthogonal_alpha_makes_the_quadratic_columns_uncorrelated():
    d = doe.central_composite(factors(3), alpha="orthogonal", randomize=False)
    x = coded(d)
    q = x ** 2 - (x ** 2).mean(axis=0)
    cross = q.T @ q
    assert np.abs(cross - np.diag(np.diag(cross))).max() < 1e-9


# ----------------------------------------------------------------------- fractional factorials

NIST_RESOLUTION = {(3, 4): 3, (4, 8): 4, (5, 8): 3, (5, 16): 5, (6, 8): 3, (6, 16): 4, (6, 32): 6, (7, 8): 3,
                   (7, 16): 4, (7, 32): 4, (7, 64): 7, (8, 16): 4, (8, 32): 4, (8, 64): 5, (8, 128): 8}


@pytest.mark.parametrize("k, runs", sorted(NIST_RESOLUTION))
def test_tabled_fractions_have_the_resolution_the_handbook_states(k, runs):
    d = doe.fractional_factorial(factors(k), runs=runs, randomize=False)
    assert d["n_runs"] == runs and d["resolution"] == NIST_RESOLUTION[(k, runs)]
    assert d["resolution"] == brute_force_resolution(coded(d))


def brute_force_resolution(x: np.ndarray) -> int:
    """Shortest word whose column product is constant: the design's resolution, found by brute force."""
    k = x.shape[1]
    for length in range(1, k + 1):
        for combo in itertools.combinations(range(k), length):
            if np.all(np.prod(x[:, combo], axis=1) == np.prod(x[0, combo])):
                return length
    return k + 1


def test_fraction_matches_pydoe3_fracfact():
    d = doe.fractional_factorial(factors(6), generators=["E=ABC", "F=BCD"], randomize=False)
    assert same_rows(coded(d), pydoe.fracfact("a b c d abc bcd"))
    assert d["defining_relation"] == ["I = ABCE", "I = ADEF", "I = BCDF"]
    main_a = next(a for a in d["aliases"] if a["effect"] == "A")
    assert main_a["aliases"] == ["BCE", "DEF"]


def test_default_fraction_is_the_smallest_resolution_iv_from_the_table():
    d = doe.fractional_factorial(factors(6), randomize=False)
    assert d["generators"] == ["E=ABC", "F=BCD"] and d["n_runs"] == 16


@st.composite
def generator_sets(draw):
    base = draw(st.integers(2, 5))
    extra = draw(st.integers(1, 4))
    letters = doe.LETTERS[: base + extra]
    gens = []
    for i in range(extra):
        word = draw(st.lists(st.sampled_from(letters[:base]), min_size=2, max_size=base, unique=True))
        sign = draw(st.sampled_from(["", "-"]))
        gens.append(f"{letters[base + i]}={sign}{''.join(sorted(word, key=doe.LETTERS.index))}")
    return base + extra, gens


@settings(max_examples=60, deadline=None)
@given(generator_sets())
def test_fraction_properties(spec):
    k, gens = spec
    try:
        d = doe.fractional_factorial(factors(k), generators=gens, randomize=False)
    except ToolError as e:  # generators that alias main effects must be refused, with the reason
        assert "resolution below III" in str(e) or "same factor" in str(e)
        return
    x = coded(d)
    p = len(gens)
    assert x.shape == (2 ** (k - p), k)
    assert np.abs(x.sum(axis=0)).max() == 0
    assert np.array_equal(x.T @ x, x.shape[0] * np.eye(k))
    assert d["resolution"] == brute_force_resolution(x)
    for word in d["defining_relation"]:  # every word of the relation is a constant column product
        letters = word.split("= ")[1].lstrip("-")
        idx = [doe.LETTERS.index(ch) for ch in letters]
        prod = np.prod(x[:, idx], axis=1)
        assert np.all(prod == (-1 if "-" in word else 1))


def test_generator_errors_are_clear():
    with pytest.raises(ToolError, match="not like 'D=ABC'"):
        doe.fractional_factorial(factors(4), generators=["D=A+B"])
    with pytest.raises(ToolError, match="resolution below III"):
        doe.fractional_factorial(factors(4), generators=["D=A"])
    with pytest.raises(ToolError, match="only 4 factors"):
        doe.fractional_factorial(factors(4), generators=["E=ABC"])
    with pytest.raises(ToolError, match="base factors"):
        doe.fractional_factorial(factors(5), generators=["D=AB", "E=AD"])
    with pytest.raises(ToolError, match="resolution III"):
        doe.fractional_factorial(factors(3))


# ------------------------------------------------------------------------ Plackett-Burman, full

@pytest.mark.parametrize("runs", [8, 12, 16, 20, 24])
def test_plackett_burman_is_orthogonal_and_balanced(runs):
    d = doe.plackett_burman(factors(runs - 1), randomize=False)
    x = coded(d)
    assert x.shape == (runs, runs - 1)
    assert np.array_equal(x.T @ x, runs * np.eye(runs - 1)) and np.abs(x.sum(axis=0)).max() == 0


def test_plackett_burman_12_is_the_handbook_table():
    x = coded(doe.plackett_burman(factors(11), randomize=False))
    assert "".join("+" if v > 0 else "-" for v in x[0]) == "++-+++---+-"
    assert np.all(x[-1] == -1) and np.array_equal(x[1], np.roll(x[0], 1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(2, 4), min_size=1, max_size=4), st.integers(1, 2))
def test_mixed_level_full_factorial(levels, reps):
    fs = [{"name": f"F{i}", "levels": list(range(n))} for i, n in enumerate(levels)]
    d = doe.full_factorial(fs, replicates=reps, seed=3)
    assert d["n_runs"] == int(np.prod(levels)) * reps
    for i, n in enumerate(levels):  # each level of each factor appears equally often
        counts = Counter(r["natural"][f"F{i}"] for r in d["runs"])
        assert sorted(counts) == list(range(n)) and len(set(counts.values())) == 1
    combos = Counter(tuple(r["natural"][f"F{i}"] for i in range(len(levels))) for r in d["runs"])
    assert len(combos) == int(np.prod(levels)) and set(combos.values()) == {reps}


def test_randomisation_is_seeded_and_reported():
    a = doe.box_behnken(factors(3), seed=7)
    b = doe.box_behnken(factors(3), seed=7)
    c = doe.box_behnken(factors(3), seed=8)
    order = [r["std_order"] for r in a["runs"]]
    assert order == [r["std_order"] for r in b["runs"]] != [r["std_order"] for r in c["runs"]]
    assert sorted(order) == list(range(1, 16)) and a["seed"] == 7
    fresh = doe.box_behnken(factors(3))
    replay = doe.box_behnken(factors(3), seed=fresh["seed"])
    assert [r["std_order"] for r in fresh["runs"]] == [r["std_order"] for r in replay["runs"]]
    assert [r["std_order"] for r in doe.box_behnken(factors(3), randomize=False)["runs"]] == list(range(1, 16))
    json.dumps(a, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6), st.floats(-2, 2))
def test_coded_natural_round_trip(low, width, c):
    high = low + width
    nat = doe.to_natural(c, low, high)
    assert doe.to_coded(nat, low, high) == pytest.approx(c, abs=1e-9 * max(1, abs(low) / width))
    assert doe.to_natural(-1, low, high) == low
    assert doe.to_natural(1, low, high) == pytest.approx(high, rel=1e-15, abs=1e-15 * width)


def test_natural_units_in_runs():
    d = doe.box_behnken([{"name": "Temperature", "low": 100, "high": 200}, {"name": "Pressure", "low": 10, "high": 50},
                         {"name": "Speed", "low": 50, "high": 150}], center=3, seed=7)
    for r in d["runs"]:
        assert r["natural"]["Temperature"] == 150 + 50 * r["coded"]["Temperature"]
    conv = doe.convert_units(d["factors"], {"Pressure": 40}, "coded")
    assert conv["point"]["Pressure"] == pytest.approx(0.5)


# -------------------------------------------------------------------------------------- analysis

# Montgomery, Design and Analysis of Experiments, Example 6.2 (pilot plant filtration rate, 2^4).
FILTRATION = [45, 71, 48, 65, 68, 60, 80, 65, 43, 100, 45, 104, 75, 86, 70, 96]
MONTGOMERY_EFFECTS = {"A": 21.625, "B": 3.125, "C": 9.875, "D": 14.625, "AB": 0.125, "AC": -18.125, "AD": 16.625,
                      "BC": 2.375, "BD": -0.375, "CD": -1.125, "ABC": 1.875, "ABD": 4.125, "ACD": -1.625,
                      "BCD": -2.625, "ABCD": 1.375}


def test_effects_match_montgomery_example_6_2():
    d = doe.full_factorial([{"name": n, "low": -1, "high": 1} for n in "ABCD"], randomize=False)
    res = doe.analyze_factorial(list("ABCD"), coded(d).tolist(), FILTRATION)
    got = {r["term"]: r["effect"] for r in res["effects"]}
    assert got == pytest.approx(MONTGOMERY_EFFECTS, abs=1e-12)
    active = sorted(r["term"] for r in res["effects"] if r["active"])
    assert active == ["A", "AC", "AD", "C", "D"]  # Lenth: PSE 2.625, margin 6.75
    assert "PSE = 2.625" in res["method"]
    json.dumps(res, allow_nan=False)


def test_replicated_analysis_matches_ols_anova():
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    d = doe.full_factorial(factors(3), replicates=2, randomize=False)
    x = coded(d)
    y = 5 + 2 * x[:, 0] - 1.5 * x[:, 1] * x[:, 2] + rng.normal(0, 0.5, x.shape[0])
    res = doe.analyze_factorial([f["name"] for f in d["factors"]], x.tolist(), y.tolist())
    cols = [np.prod(x[:, c], axis=1) for r in (1, 2, 3) for c in itertools.combinations(range(3), r)]
    ols = sm.OLS(y, sm.add_constant(np.column_stack(cols))).fit()
    for row, coef, p in zip(res["effects"], ols.params[1:], ols.pvalues[1:]):
        assert row["effect"] == pytest.approx(2 * coef, rel=1e-12)
        assert row["p"] == pytest.approx(p, rel=1e-8)


def test_fraction_analysis_names_aliases_and_centre_points_test_curvature():
    d = doe.fractional_factorial(factors(4), generators=["D=ABC"], center=4, randomize=False)
    x = coded(d)
    y = (10 + 3 * x[:, 0] + x[:, 1] + np.where(np.all(x == 0, axis=1), 2.0, 0.0)
         + np.array([0.1, -0.2, 0.05, 0.0, 0.2, -0.1, 0.0, 0.1, 0.3, -0.3, 0.2, -0.1]))
    res = doe.analyze_factorial([f["name"] for f in d["factors"]], x.tolist(), y.tolist(), max_order=2)
    ab = next(r for r in res["effects"] if r["term"] == "AB")
    assert ab["aliases"] == ["CD"]
    assert res["curvature"]["p"] < 0.05 and "curvature" in res["interpretation"]
