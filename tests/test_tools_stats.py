"""The statistics engine against scipy and statsmodels (independent implementations), plus its refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools import stats

rng = np.random.default_rng(20261121)
X = rng.normal(10.0, 2.0, 23)
Y = rng.normal(11.5, 3.0, 17)
PAIRED = X[:17] + rng.normal(1.0, 0.5, 17)


def roundtrip(res: dict) -> dict:
    text = json.dumps(res, allow_nan=False)  # strict JSON: no NaN, no Infinity
    return json.loads(text)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_one_sample_t_matches_scipy(alternative):
    res = roundtrip(stats.t_test_one_sample(X.tolist(), mu=9.5, alternative=alternative, alpha=0.01))
    ref = sps.ttest_1samp(X, 9.5, alternative=alternative)
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.99)
    for got, want in zip(res["ci"], (ci.low, ci.high)):
        assert (got is None and math.isinf(want)) or got == pytest.approx(want, rel=1e-12)
    assert "alpha = 0.01" in res["interpretation"] and res["reject_null"] == (ref.pvalue < 0.01)


@pytest.mark.parametrize("equal_var", [True, False])
@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_two_sample_t_matches_scipy(equal_var, alternative):
    res = roundtrip(stats.t_test_two_sample(X.tolist(), Y.tolist(), equal_var=equal_var, alternative=alternative))
    ref = sps.ttest_ind(X, Y, equal_var=equal_var, alternative=alternative)
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert res["df"] == pytest.approx(ref.df, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert res["ci"][0] == pytest.approx(ci.low, rel=1e-12)
    assert ("Welch" in res["method"]) != equal_var


def test_paired_t_matches_scipy():
    res = roundtrip(stats.t_test_paired(X[:17].tolist(), PAIRED.tolist()))
    ref = sps.ttest_rel(X[:17], PAIRED)
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert res["reject_null"] and "paired difference is not zero" in res["interpretation"]


def test_t_tests_refuse_what_they_cannot_do():
    with pytest.raises(ToolError, match="same length"):
        stats.t_test_paired([1, 2, 3], [1, 2])
    with pytest.raises(ToolError, match="zero standard deviation"):
        stats.t_test_one_sample([3, 3, 3])
    with pytest.raises(ToolError, match="at least 2"):
        stats.t_test_two_sample([1], [2, 3])
    with pytest.raises(ToolError, match="non-finite"):
        stats.t_test_one_sample([1, float("nan"), 2])
    with pytest.raises(ToolError, match="alpha"):
        stats.t_test_one_sample([1, 2, 3], alpha=1.5)
    with pytest.raises(ToolError, match="alternative"):
        stats.t_test_one_sample([1, 2, 3], alternative="sideways")
    with pytest.raises(ToolError, match="only numbers"):
        stats.t_test_one_sample([1, True, 3])


def test_oneway_anova_matches_scipy_and_reports_levene():
    groups = {"a": X[:8].tolist(), "b": Y[:9].tolist(), "c": (X[8:20] + 1).tolist()}
    res = roundtrip(stats.anova_oneway(groups))
    ref = sps.f_oneway(*groups.values())
    assert res["f"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert res["levene"]["p_value"] == pytest.approx(sps.levene(*groups.values(), center="median").pvalue)
    assert [g["name"] for g in res["groups"]] == ["a", "b", "c"]


def test_anova_with_zero_within_variation_says_so():
    res = roundtrip(stats.anova_oneway([[1, 1, 1], [2, 2, 2]]))
    assert res["f"] is None and res["perfect_fit"] and "undefined" in res["interpretation"]


def _twoway_data(balanced: bool):
    a = np.repeat(["lo", "mid", "hi"], 8)
    b = np.tile(np.repeat(["x", "y"], 4), 3)
    y = 5 + (a == "hi") * 2.0 + (b == "y") * 1.0 + ((a == "mid") & (b == "y")) * 1.5 + rng.normal(0, 1, a.size)
    if not balanced:
        keep = np.ones(a.size, bool)
        keep[[0, 5, 13]] = False
        a, b, y = a[keep], b[keep], y[keep]
    return y, a, b


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("ss_type", [1, 2, 3])
def test_twoway_anova_matches_statsmodels(balanced, ss_type):
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    y, a, b = _twoway_data(balanced)
    res = roundtrip(stats.anova_twoway(y.tolist(), a.tolist(), b.tolist(), ss_type=ss_type))
    df = pd.DataFrame({"y": y, "a": a, "b": b})
    model = smf.ols("y ~ C(a, Sum) * C(b, Sum)", df).fit()
    ref = anova_lm(model, typ=ss_type)
    rows = {r["source"]: r for r in res["table"]}
    for ours, theirs in [("A", "C(a, Sum)"), ("B", "C(b, Sum)"), ("A:B", "C(a, Sum):C(b, Sum)")]:
        assert rows[ours]["ss"] == pytest.approx(ref.loc[theirs, "sum_sq"], rel=1e-9)
        assert rows[ours]["p"] == pytest.approx(ref.loc[theirs, "PR(>F)"], rel=1e-7)
    assert rows["residual"]["df"] == ref.loc["Residual", "df"]
    assert res["balanced"] == balanced


def test_twoway_interaction_needs_replicates():
    with pytest.raises(ToolError, match="replicates"):
        stats.anova_twoway([1, 2, 3, 4], ["a", "a", "b", "b"], ["x", "y", "x", "y"])
    res = stats.anova_twoway([1, 2, 3, 4.5], ["a", "a", "b", "b"], ["x", "y", "x", "y"], interaction=False)
    assert [r["source"] for r in res["table"]] == ["A", "B", "residual", "total"]


def test_tukey_hsd_matches_scipy_unequal_sizes():
    groups = [X[:6].tolist(), Y[:9].tolist(), (X[6:17] + 2).tolist(), Y[9:].tolist()]
    res = roundtrip(stats.tukey_hsd(groups))
    ref = sps.tukey_hsd(*groups)
    ci = ref.confidence_interval(0.95)
    for c in res["comparisons"]:
        i, j = int(c["group_a"].split()[-1]) - 1, int(c["group_b"].split()[-1]) - 1
        assert c["difference"] == pytest.approx(ref.statistic[i, j], rel=1e-12)
        assert c["p_adj"] == pytest.approx(ref.pvalue[i, j], rel=1e-5, abs=1e-9)
        assert c["ci"][0] == pytest.approx(ci.low[i, j], rel=1e-6)
    assert len(res["comparisons"]) == 6


def test_regression_matches_statsmodels():
    import statsmodels.api as sm

    n = 40
    x1, x2 = rng.normal(0, 1, n), rng.uniform(-3, 3, n)
    y = 1.5 + 2.0 * x1 - 0.7 * x2 + rng.normal(0, 0.8, n)
    res = roundtrip(stats.regression(y.tolist(), {"x1": x1.tolist(), "x2": x2.tolist()}, alpha=0.1))
    ref = sm.OLS(y, sm.add_constant(np.column_stack([x1, x2]))).fit()
    for j, c in enumerate(res["coefficients"]):
        assert c["estimate"] == pytest.approx(ref.params[j], rel=1e-12)
        assert c["se"] == pytest.approx(ref.bse[j], rel=1e-10)
        assert c["t"] == pytest.approx(ref.tvalues[j], rel=1e-10)
        assert c["p"] == pytest.approx(ref.pvalues[j], rel=1e-8)
        assert c["ci"] == pytest.approx(list(ref.conf_int(0.1)[j]), rel=1e-10)
    assert res["r_squared"] == pytest.approx(ref.rsquared, rel=1e-12)
    assert res["adj_r_squared"] == pytest.approx(ref.rsquared_adj, rel=1e-12)
    assert res["f"] == pytest.approx(ref.fvalue, rel=1e-10)
    assert res["f_p"] == pytest.approx(ref.f_pvalue, rel=1e-8)
    assert [c["name"] for c in res["coefficients"]] == ["intercept", "x1", "x2"]


def test_regression_perfect_fit_is_said_not_printed_as_huge_f():
    x = list(range(10))
    res = roundtrip(stats.regression([3 + 2 * v for v in x], {"x": x}))
    assert res["perfect_fit"] and res["f"] is None and res["r_squared"] == 1.0
    assert "Perfect fit" in res["interpretation"]
    assert res["coefficients"][1]["estimate"] == pytest.approx(2.0, rel=1e-15)


def test_regression_refuses_collinear_and_short_inputs():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ToolError, match="linear combination"):
        stats.regression([1, 3, 2, 5, 4], {"x": x, "twice_x": [2 * v for v in x]})
    with pytest.raises(ToolError, match="more observations"):
        stats.regression([1, 2], {"x": [1, 2]})
    with pytest.raises(ToolError, match="has 2 values"):
        stats.regression([1, 2, 3], {"x": [1, 2]})
    with pytest.raises(ToolError, match="all zeros"):
        stats.regression([1, 2, 3, 4], {"x": [0, 0, 0, 0]}, intercept=False)


def test_chi_square_matches_scipy():
    table = [[12, 5, 9], [7, 14, 11]]
    res = roundtrip(stats.chi_square(table))
    ref = sps.chi2_contingency(table, correction=False)
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert res["df"] == ref.dof
    gof = roundtrip(stats.chi_square([18, 22, 30, 30], expected=[0.25, 0.25, 0.25, 0.25]))
    ref = sps.chisquare([18, 22, 30, 30])
    assert gof["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert gof["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    yates = stats.chi_square([[10, 20], [30, 25]], yates=True)
    assert yates["statistic"] == pytest.approx(sps.chi2_contingency([[10, 20], [30, 25]]).statistic, rel=1e-12)
    with pytest.raises(ToolError, match="2 x 2"):
        stats.chi_square(table, yates=True)


def test_normality_verdict_is_shapiro_wilk():
    skewed = rng.exponential(1.0, 60)
    res = roundtrip(stats.normality(skewed.tolist()))
    assert res["tests"][0]["name"] == "Shapiro-Wilk"
    assert res["tests"][0]["p_value"] == pytest.approx(sps.shapiro(skewed).pvalue, rel=1e-10)
    assert res["reject_null"] and "not consistent with a normal" in res["interpretation"]
    ok = stats.normality(rng.normal(0, 1, 50).tolist(), alpha=0.001)
    assert not ok["reject_null"]


def test_describe_and_intervals_match_references():
    from statsmodels.stats.proportion import proportion_confint

    res = roundtrip(stats.describe(X.tolist()))
    d = sps.describe(X)
    assert res["mean"] == pytest.approx(d.mean, rel=1e-15)
    assert res["variance"] == pytest.approx(d.variance, rel=1e-13)
    assert res["skewness"] == pytest.approx(sps.skew(X, bias=False), rel=1e-12)
    assert res["kurtosis_excess"] == pytest.approx(sps.kurtosis(X, bias=False), rel=1e-12)
    assert res["median"] == pytest.approx(np.median(X))
    for method, sm_method in [("wilson", "wilson"), ("clopper-pearson", "beta")]:
        ci = stats.confidence_interval("proportion", successes=17, trials=40, method=method)
        lo, hi = proportion_confint(17, 40, alpha=0.05, method=sm_method)
        assert (ci["lower"], ci["upper"]) == pytest.approx((lo, hi), rel=1e-10)
    v = stats.confidence_interval("variance", data=X.tolist(), alpha=0.1)
    n, s2 = X.size, np.var(X, ddof=1)
    assert v["lower"] == pytest.approx((n - 1) * s2 / sps.chi2.ppf(0.95, n - 1), rel=1e-12)
    single = roundtrip(stats.describe([4.0]))
    assert single["sd"] is None and single["mean_ci"] is None


def test_mean_of_values_sharing_leading_digits_is_exact():
    base = 1e12
    res = stats.describe([base + 0.25, base + 0.5, base + 0.75])
    assert res["mean"] == base + 0.5 and res["variance"] == pytest.approx(0.0625, rel=1e-15)
