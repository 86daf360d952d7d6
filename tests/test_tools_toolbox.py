"""The statistician's and quality engineer's toolbox (issue 22), each operation against a published worked
example, to the precision it is printed, through the registry a model calls; then a cross-check against
scipy/statsmodels where they compute the same thing; then bad input refused with a reason.

Sources named per test: the NIST/SEMATECH e-Handbook of Statistical Methods (section numbers), Montgomery's
Introduction to Statistical Quality Control (SQC) and Design and Analysis of Experiments (DAE), Montgomery
& Runger's Applied Statistics and Probability for Engineers, the AIAG MSA manual, Lawless's Statistical
Models and Methods for Lifetime Data, Agresti's Categorical Data Analysis, and the documented examples of
R (stats) and scipy where the handbook has none.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from havoc.tools import default_registry

REG = default_registry()


def stat(**args):
    out = REG.execute("statistics", args)
    assert out["success"], out
    return out["result"]


def dsl(**args):
    out = REG.execute("dsl_executor", args)
    assert out["success"], out
    return out["result"]


def printed(value: float, shown: str) -> bool:
    """`value` rounds to `shown` at the digits shown (the test of "to the printed precision")."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(value - float(shown)) <= 0.5 * 10 ** -decimals + 1e-12


# ------------------------------------------------------------------------------------ t from summaries

def test_t_tests_from_summary_statistics_nist_1_3_5_3():
    # NIST e-Handbook 1.3.5.3 (AUTO83B.DAT, US vs Japanese cars, mpg): N1 = 249, mean 20.14458, sd 6.41470;
    # N2 = 79, mean 30.48101, sd 6.10771. Unequal variances: T = -12.94627, df = 136.8750; equal: T = -12.62059, df 326.
    common = dict(mean_x=20.14458, sd_x=6.41470, n_x=249, mean_y=30.48101, sd_y=6.10771, n_y=79)
    w = stat(operation="t_test", kind="welch", **common)
    assert printed(w["statistic"], "-12.94627") and printed(w["df"], "136.8750")
    s = stat(operation="t_test", kind="two_sample", **common)
    assert printed(s["statistic"], "-12.62059") and s["df"] == 326
    ref = sps.ttest_ind_from_stats(20.14458, 6.41470, 249, 30.48101, 6.10771, 79, equal_var=False)
    assert w["statistic"] == pytest.approx(ref.statistic, rel=1e-12) and w["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_t_test_summary_matches_the_raw_data_path():
    x, y = [5.1, 4.9, 5.6, 5.8, 6.0, 5.2], [4.1, 4.4, 5.0, 4.6, 4.9, 4.2]
    for kind in ("two_sample", "welch"):
        raw = stat(operation="t_test", kind=kind, x=x, y=y)
        summ = stat(operation="t_test", kind=kind, mean_x=float(np.mean(x)), sd_x=float(np.std(x, ddof=1)), n_x=6,
                    mean_y=float(np.mean(y)), sd_y=float(np.std(y, ddof=1)), n_y=6)
        assert summ["statistic"] == pytest.approx(raw["statistic"], rel=1e-12)
        assert "summary" in summ["method"] and "summary" not in raw["method"]
    d = np.subtract(x, y)
    paired = stat(operation="t_test", kind="paired", x=x, y=y)
    psum = stat(operation="t_test", kind="paired", mean_x=float(d.mean()), sd_x=float(d.std(ddof=1)), n_x=6)
    assert psum["statistic"] == pytest.approx(paired["statistic"], rel=1e-12)
    one = stat(operation="t_test", kind="one_sample", mean_x=5.3, sd_x=0.4, n_x=10, mu=5)
    assert one["statistic"] == pytest.approx(0.3 / (0.4 / math.sqrt(10)))


# ------------------------------------------------------------------------------------------ proportions

def test_one_proportion_z_montgomery_runger_9_10():
    # Montgomery & Runger, Applied Statistics and Probability for Engineers, Example 9-10: 4 defective
    # controllers in 200, H0: p = 0.05 vs H1: p < 0.05; z0 = -1.95. (The book reads P = 0.0256 off the table
    # at the rounded z; the exact normal tail at z = -1.9467 is 0.0258.)
    r = stat(operation="proportion_test", successes=4, trials=200, p0=0.05, alternative="less")
    assert printed(r["statistic"], "-1.95")
    assert r["p_value"] == pytest.approx(sps.norm.cdf(r["statistic"]), rel=1e-12) and r["reject_null"]


def test_exact_binomial_scipy_documented_example():
    # scipy.stats.binomtest documentation: 3 of 15 against p = 0.1, alternative 'greater': p = 0.18406106910639114;
    # its Clopper-Pearson one-sided interval (0.05684686759024681, 1.0).
    r = stat(operation="proportion_test", successes=3, trials=15, p0=0.1, method="exact", alternative="greater")
    assert r["p_value"] == pytest.approx(0.18406106910639114, rel=1e-12)
    assert r["ci"][0] == pytest.approx(0.05684686759024681, rel=1e-9) and r["ci"][1] == 1.0


def test_fisher_exact_lady_tasting_tea_agresti():
    # Agresti, Categorical Data Analysis, Table 3.8 (Fisher's tea tasting): 3 of 4 right; one-sided P = 0.243,
    # two-sided 0.486.
    two = stat(operation="proportion_test", successes=3, trials=4, successes_y=1, trials_y=4, method="exact")
    one = stat(operation="proportion_test", successes=3, trials=4, successes_y=1, trials_y=4, method="exact",
               alternative="greater")
    assert printed(two["p_value"], "0.486") and printed(one["p_value"], "0.243")
    assert two["statistic"] == pytest.approx(9.0)  # odds ratio (3*3)/(1*1)


def test_two_proportion_z_statsmodels_documented_example_and_yates_identity():
    # statsmodels proportions_ztest documentation: count [5, 12], nobs [83, 99] -> p = 0.159.
    r = stat(operation="proportion_test", successes=5, trials=83, successes_y=12, trials_y=99)
    assert printed(r["p_value"], "0.159")
    from statsmodels.stats.proportion import proportions_ztest

    z, p = proportions_ztest([5, 12], [83, 99])
    assert r["statistic"] == pytest.approx(z, rel=1e-12) and r["p_value"] == pytest.approx(p, rel=1e-12)
    # With the continuity correction, z² is Yates' corrected chi-square of the 2 x 2 table.
    c = stat(operation="proportion_test", successes=15, trials=40, successes_y=25, trials_y=45, correction=True)
    chi2 = sps.chi2_contingency([[15, 25], [25, 20]], correction=True)[0]
    assert c["statistic"] ** 2 == pytest.approx(chi2, rel=1e-12)


# ------------------------------------------------------------------------------------------- variances

def test_f_test_nist_1_3_5_9():
    # NIST e-Handbook 1.3.5.9 (JAHANMI2.DAT, ceramic strength by batch): s1 = 65.54909, s2 = 61.85425,
    # N = 240 each; F = 1.123037; two-sided critical values at 0.05: 0.7756 and 1.2894.
    r = stat(operation="variance_test", kind="f", sd_x=65.54909, n_x=240, sd_y=61.85425, n_y=240)
    assert printed(r["statistic"], "1.123037")
    assert printed(r["critical_values"][0], "0.7756") and printed(r["critical_values"][1], "1.2894")
    assert not r["reject_null"]


def test_chi_square_one_variance_nist_1_3_5_8():
    # NIST e-Handbook 1.3.5.8 (GEAR.DAT): sigma0 = 0.1, N = 100, s = 0.00628; critical values 73.361 and 128.422.
    # T is printed 0.3903 from the unrounded s; from s as printed it is 0.39044, the same to 3 digits.
    r = stat(operation="variance_test", kind="one_sample", sd_x=0.00628, n_x=100, sigma0=0.1)
    assert printed(r["statistic"], "0.390")
    assert printed(r["critical_values"][0], "73.361") and printed(r["critical_values"][1], "128.422")
    assert r["reject_null"]


SAMPLE_A = [8.88, 9.12, 9.04, 8.98, 9.00, 9.08, 9.01, 8.85, 9.06, 8.99]
SAMPLE_B = [8.88, 8.95, 9.29, 9.44, 9.15, 9.58, 8.36, 9.18, 8.67, 9.05]
SAMPLE_C = [8.95, 9.12, 8.95, 8.85, 9.03, 8.84, 9.07, 8.98, 8.86, 8.98]


def test_bartlett_and_levene_scipy_documented_example():
    # scipy.stats.bartlett / levene documentation (three samples a, b, c): Bartlett 22.789434813726768,
    # p 1.1254782518834628e-05; Levene (median) 7.584952754501659, p 0.002431505967249681.
    bart = stat(operation="variance_test", kind="bartlett", groups=[SAMPLE_A, SAMPLE_B, SAMPLE_C])
    assert bart["statistic"] == pytest.approx(22.789434813726768, rel=1e-12)
    assert bart["p_value"] == pytest.approx(1.1254782518834628e-05, rel=1e-9)
    bf = stat(operation="variance_test", kind="brown_forsythe", groups=[SAMPLE_A, SAMPLE_B, SAMPLE_C])
    assert bf["statistic"] == pytest.approx(7.584952754501659, rel=1e-12)
    assert bf["p_value"] == pytest.approx(0.002431505967249681, rel=1e-9)
    lev = stat(operation="variance_test", kind="levene", groups=[SAMPLE_A, SAMPLE_B, SAMPLE_C])
    assert lev["statistic"] == pytest.approx(sps.levene(SAMPLE_A, SAMPLE_B, SAMPLE_C, center="mean").statistic, rel=1e-12)


# ------------------------------------------------------------------------------------------ rank tests

def test_mann_whitney_scipy_documented_example():
    # scipy.stats.mannwhitneyu documentation (ages of male and female staff): U1 = 17, exact p = 0.1111.
    r = stat(operation="rank_test", kind="mann_whitney", x=[19, 22, 16, 29, 24], y=[20, 11, 17, 12], method="exact")
    assert r["statistic"] == 17 and printed(r["p_value"], "0.1111") and r["w_rank_sum_x"] == 32


def test_wilcoxon_and_sign_test_darwin_zea_mays():
    # Fisher, The Design of Experiments: Darwin's cross- minus self-fertilised Zea mays heights (eighths of an
    # inch), as in scipy.stats.wilcoxon's documentation: T = 24, exact p = 0.041259765625.
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    r = stat(operation="rank_test", kind="wilcoxon", x=d)
    assert r["statistic"] == 24 and r["p_value"] == pytest.approx(0.041259765625, rel=1e-12)
    sign = stat(operation="rank_test", kind="sign", x=d)
    # 13 of 15 positive: 2 * P(X >= 13 | 15, 1/2) = 2 * 121 / 32768
    assert sign["positive"] == 13 and sign["p_value"] == pytest.approx(242 / 32768, rel=1e-12)


def test_kruskal_wallis_hollander_wolfe():
    # Hollander & Wolfe (1973, p. 116), as in R's kruskal.test examples (mucociliary efficiency):
    # Kruskal-Wallis chi-squared = 0.77143, df = 2, p-value = 0.68.
    r = stat(operation="rank_test", kind="kruskal",
             groups={"normal": [2.9, 3.0, 2.5, 2.6, 3.2], "obstructive": [3.8, 2.7, 4.0, 2.4],
                     "asbestosis": [2.8, 3.4, 3.7, 2.2, 2.0]})
    assert printed(r["statistic"], "0.77143") and r["df"] == 2 and printed(r["p_value"], "0.68")


# ------------------------------------------------------------------------------------------ correlation

X9 = [44.4, 45.9, 41.9, 53.3, 44.7, 44.1, 50.7, 45.2, 60.1]
Y9 = [2.6, 3.1, 2.5, 5.0, 3.6, 4.0, 5.2, 2.8, 3.8]


def test_pearson_and_kendall_r_cor_test_example():
    # Hollander & Wolfe, as in R's cor.test examples: t = 1.8411, df = 7, p-value = 0.1082,
    # 95 percent CI -0.1497426 0.8955795, cor 0.5711816; Kendall: p-value = 0.1194, tau 0.4444444.
    r = stat(operation="correlation", x=X9, y=Y9)
    assert printed(r["statistic"], "1.8411") and r["df"] == 7 and printed(r["p_value"], "0.1082")
    assert printed(r["ci"][0], "-0.1497426") and printed(r["ci"][1], "0.8955795") and printed(r["r"], "0.5711816")
    k = stat(operation="correlation", x=X9, y=Y9, method="kendall")
    assert printed(k["p_value"], "0.1194") and printed(k["r"], "0.4444444")


def test_spearman_scipy_documented_example():
    # scipy.stats.spearmanr documentation: [1..5] vs [5, 6, 7, 8, 7]: 0.8207826816681233, p 0.08858700531354381.
    r = stat(operation="correlation", x=[1, 2, 3, 4, 5], y=[5, 6, 7, 8, 7], method="spearman")
    assert r["r"] == pytest.approx(0.8207826816681233, rel=1e-12)
    assert r["p_value"] == pytest.approx(0.08858700531354381, rel=1e-9)


# ---------------------------------------------------------------------------------------- power, n

def test_power_t_r_documented_examples():
    # R's power.t.test examples: (n = 20, delta = 1) power = 0.8689528; (power = .90, delta = 1) n = 22.02110;
    # one-sided: n = 17.84713. R counts one tail (strict = FALSE); havoc's default counts both, 2.5e-7 more here.
    # R solves n with uniroot's default tolerance (eps^0.25 = 1.2e-4), so its last printed digits of a solved n
    # can be off by that much: havoc's root is 17.847121 (to 1e-10).
    r = stat(operation="power", test="two_sample_t", n=20, effect=1, sd=1, strict=False)
    assert printed(r["power"], "0.8689528")
    assert stat(operation="power", test="two_sample_t", n=20, effect=1, sd=1)["power"] - r["power"] == \
        pytest.approx(2.5e-7, abs=1e-7)
    n = stat(operation="power", test="two_sample_t", power=0.9, effect=1, sd=1, strict=False)
    assert printed(n["n_exact"], "22.02110") and n["n"] == 23 and n["solved_for"] == "n"
    one = stat(operation="power", test="two_sample_t", power=0.9, effect=1, sd=1, alternative="greater")
    assert one["n_exact"] == pytest.approx(17.84713, abs=1.2e-4)
    from statsmodels.stats.power import TTestIndPower, TTestPower

    both = stat(operation="power", test="two_sample_t", n=20, effect=1, sd=1)
    assert both["power"] == pytest.approx(TTestIndPower().power(effect_size=1, nobs1=20, alpha=0.05), rel=1e-9)
    assert stat(operation="power", test="one_sample_t", n=20, effect=0.5, sd=1)["power"] == \
        pytest.approx(TTestPower().power(0.5, 20, 0.05), rel=1e-9)


def test_power_proportions_and_anova_r_documented_examples():
    # R's power.prop.test: (n = 50, p1 = .5, p2 = .75) power = 0.7401659; (power = .90) n = 76.7.
    assert printed(stat(operation="power", test="two_proportions", n=50, p1=0.5, p2=0.75, strict=False)["power"],
                   "0.7401659")
    assert printed(stat(operation="power", test="two_proportions", power=0.9, p1=0.5, p2=0.75, strict=False)["n_exact"],
                   "76.7")
    # R's power.anova.test: groups = 4, between.var = 1, within.var = 3: n = 5 power = 0.3535594;
    # power = .80: n = 11.92613 (R's uniroot tolerance 1.2e-4 again; havoc's root 11.926111).
    assert printed(stat(operation="power", test="anova", groups=4, n=5, between_var=1, sd=math.sqrt(3))["power"],
                   "0.3535594")
    assert stat(operation="power", test="anova", groups=4, power=0.8, between_var=1, sd=math.sqrt(3))["n_exact"] == \
        pytest.approx(11.92613, abs=1.2e-4)


def test_power_solves_for_each_unknown_and_round_trips():
    base = stat(operation="power", test="two_sample_t", n=20, effect=1, sd=1)
    eff = stat(operation="power", test="two_sample_t", n=20, power=base["power"], sd=1)
    assert eff["solved_for"] == "effect" and eff["effect"] == pytest.approx(1, rel=1e-7)
    a = stat(operation="power", test="two_sample_t", n=20, power=base["power"], effect=1, sd=1)
    assert a["solved_for"] == "alpha" and a["alpha"] == pytest.approx(0.05, rel=1e-6)
    less = stat(operation="power", test="one_sample_t", n=15, power=0.8, sd=2, alternative="less")
    assert less["effect"] < 0
    # a two-level factorial effect with one model term is the two-sample t-test on its halves
    f = stat(operation="power", test="factorial", factors=2, n=3, effect=2, sd=1, terms=1)
    assert f["power"] == pytest.approx(stat(operation="power", test="two_sample_t", n=6, effect=2, sd=1)["power"], rel=1e-9)
    big = stat(operation="power", test="factorial", factors=5, corner_points=16, effect=1, sd=1, power=0.9)
    assert big["n"] >= 1 and big["power"] >= 0.9
    p1 = stat(operation="power", test="one_proportion", n=100, p0=0.5, power=0.8)
    assert p1["p1"] > 0.5 and p1["p1_lower"] < 0.5


# ------------------------------------------------------------------------------------ EWMA and CUSUM

NIST_EWMA = [52.0, 47.0, 53.0, 49.3, 50.1, 47.0, 51.0, 50.1, 51.2, 50.5, 49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6,
             52.4, 53.6, 52.1]


def test_ewma_nist_6_3_2_4():
    # NIST e-Handbook 6.3.2.4: EWMA0 = 50, s = 2.0539, lambda = 0.3, k = 3: UCL = 52.5884, LCL = 47.4116;
    # EWMA 50.60, 49.52, 50.56, ..., 51.99; no point beyond the limits.
    r = dsl(operation="ewma_chart", data=NIST_EWMA, target=50, sigma=2.0539, limits="asymptotic", L=3, **{"lambda": 0.3})
    printed_ewma = "50.60 49.52 50.56 50.18 50.16 49.21 49.75 49.85 50.26 50.33 50.11 49.36 49.52 50.05 49.38 49.92 " \
                   "50.73 51.23 51.94 51.99".split()
    assert all(printed(z, s) for z, s in zip(r["points"], printed_ewma))
    assert printed(r["ucl"], "52.588") and printed(r["lcl"], "47.412") and r["out_of_control"] == []


MONTGOMERY_9_1 = [9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04, 11.46, 9.20, 10.34, 9.03, 11.47, 10.51, 9.40, 10.08,
                  9.37, 10.62, 10.31, 8.52, 10.84, 10.90, 9.33, 12.29, 11.50, 10.60, 11.08, 10.38, 11.62, 11.31, 10.52]


def test_tabular_cusum_montgomery_example_9_1():
    # Montgomery SQC Example 9.1 (Table 9.2): mu0 = 10, sigma = 1, k = 1/2, h = 5. C+ = 1.16, 2.82, 2.50, 0.04,
    # 1.00 at periods 4-8; C+_29 = 5.28 > H with N+ = 7: the shift began after period 22, new mean 11.25.
    r = dsl(operation="cusum_chart", data=MONTGOMERY_9_1, target=10, sigma=1, k=0.5, h=5)
    assert all(printed(v, s) for v, s in zip(r["upper"][3:8], "1.16 2.82 2.50 0.04 1.00".split()))
    assert r["first_signal"] == 29 and printed(r["upper"][28], "5.28") and r["n_upper"][28] == 7
    assert r["shift_estimate"]["began_after"] == 22 and printed(r["shift_estimate"]["new_mean"], "11.25")
    assert r["out_of_control_lower"] == []


def test_ewma_montgomery_example_9_2_time_varying_limits():
    # Montgomery SQC Example 9.2: the same data, lambda = 0.1, L = 2.7: z1 = 9.945, z2 = 9.7495;
    # UCL at period 1 = 10.27, steady state 10.62.
    r = dsl(operation="ewma_chart", data=MONTGOMERY_9_1, target=10, sigma=1, L=2.7, **{"lambda": 0.1})
    assert printed(r["points"][0], "9.945") and printed(r["points"][1], "9.7495")
    assert printed(r["ucl"][0], "10.27") and printed(r["ucl_steady"], "10.62")
    # the recursion and limits, independently
    z, prev = [], 10.0
    for v in MONTGOMERY_9_1:
        prev = 0.1 * v + 0.9 * prev
        z.append(prev)
    assert np.allclose(r["points"], z, rtol=1e-14)
    out = [i + 1 for i, v in enumerate(z) if abs(v - 10) > 2.7 * math.sqrt(0.1 / 1.9 * (1 - 0.9 ** (2 * (i + 1))))]
    assert r["out_of_control"] == out


# ------------------------------------------------------------------------------- capability, constants

def test_capability_from_summary_nist_6_1_6():
    # NIST e-Handbook 6.1.6: USL = 20, LSL = 8, mu = 16, sigma = 2: Cp = 1.0, Cpu = 0.6667, Cpl = 1.3333, Cpk = 0.6667.
    r = dsl(operation="capability", mean=16, sigma=2, lsl=8, usl=20)
    assert printed(r["cp"], "1.0") and printed(r["cpk"], "0.6667")
    assert printed(r["cpu"], "0.6667") and printed(r["cpl"], "1.3333")
    assert r["pp"] is None and "given" in r["sigma_used"]["cp_cpk"]
    both = dsl(operation="capability", mean=16, sigma=2, sigma_overall=2.5, lsl=8, usl=20)
    assert both["pp"] == pytest.approx(12 / 15) and both["ppk"] == pytest.approx(4 / 7.5)


def test_capability_from_data_names_each_sigma():
    data = [10.1, 9.8, 10.3, 10.0, 9.7, 10.4, 10.2, 9.9, 10.1, 10.0]
    r = dsl(operation="capability", data=data, lsl=9, usl=11)
    assert r["sigma_used"]["cp_cpk"].startswith("within") and r["sigma_used"]["pp_ppk"].startswith("overall")
    assert r["pp"] == pytest.approx(2 / (6 * np.std(data, ddof=1)))


def test_tabled_constants_reproduce_the_textbook_limits():
    # With the printed table (d2 = 1.128, D4 = 3.267) an I-MR chart's limits are the hand calculation's.
    x = NIST_EWMA[10:]
    r = dsl(operation="control_chart", chart="imr", data=x, constants="table")
    mr = np.abs(np.diff(x)).mean()
    assert r["charts"][0]["ucl"] == pytest.approx(np.mean(x) + 3 * mr / 1.128, rel=1e-14)
    assert r["charts"][1]["ucl"] == pytest.approx(3.267 * mr, rel=1e-14)
    exact = dsl(operation="control_chart", chart="imr", data=x)
    assert exact["charts"][0]["ucl"] != r["charts"][0]["ucl"]
    t5 = dsl(operation="constants", n=5, constants="table")
    assert (t5["A2"], t5["D4"], t5["d2"], t5["source"]) == (0.577, 2.114, 2.326, "table")


# ---------------------------------------------------------------------------------------- gauge R&R

# AIAG MSA manual (3rd/4th ed.), the ANOVA-method example: 10 parts, appraisers A, B, C, 3 trials.
AIAG = {
    "A": [[0.29, -0.56, 1.34, 0.47, -0.80, 0.02, 0.59, -0.31, 2.26, -1.36],
          [0.41, -0.68, 1.17, 0.50, -0.92, -0.11, 0.75, -0.20, 1.99, -1.25],
          [0.64, -0.58, 1.27, 0.64, -0.84, -0.21, 0.66, -0.17, 2.01, -1.31]],
    "B": [[0.08, -0.47, 1.19, 0.01, -0.56, -0.20, 0.47, -0.63, 1.80, -1.68],
          [0.25, -1.22, 0.94, 1.03, -1.20, 0.22, 0.55, 0.08, 2.12, -1.62],
          [0.07, -0.68, 1.34, 0.20, -1.28, 0.06, 0.83, -0.34, 2.19, -1.50]],
    "C": [[0.04, -1.38, 0.88, 0.14, -1.46, -0.29, 0.02, -0.46, 1.77, -1.49],
          [-0.11, -1.13, 1.09, 0.20, -1.07, -0.67, 0.01, -0.56, 1.45, -1.77],
          [-0.15, -0.96, 0.67, 0.11, -1.45, -0.49, 0.21, -0.49, 1.87, -2.16]],
}


def _aiag_long():
    y, parts, ops = [], [], []
    for op, trials in AIAG.items():
        for trial in trials:
            for i, v in enumerate(trial):
                y.append(v), parts.append(i + 1), ops.append(op)
    return y, parts, ops


def test_gauge_rr_anova_aiag_msa():
    # AIAG MSA ANOVA table: appraiser SS 3.1673 (MS 1.58363), parts 88.3619 (9.81799), appraiser-by-part 0.3590
    # (0.01994), equipment 2.7589 (0.04598), total 94.6471; df 2, 9, 18, 60, 89. The interaction is not
    # significant and is pooled.
    y, parts, ops = _aiag_long()
    r = dsl(operation="gauge_rr", measurements=y, parts=parts, operators=ops, tolerance=8)
    table = {row["source"]: row for row in r["anova"]}
    for source, ss, ms, df in (("operator", "3.1673", "1.58363", 2), ("part", "88.3619", "9.81799", 9),
                               ("part x operator", "0.3590", "0.01994", 18), ("repeatability", "2.7589", "0.04598", 60)):
        assert printed(table[source]["ss"], ss) and printed(table[source]["ms"], ms) and table[source]["df"] == df
    assert printed(table["total"]["ss"], "94.6471") and r["interaction_pooled"]
    comp = {c["source"]: c for c in r["components"]}
    # the variance components follow from the pooled mean squares (expected-mean-square algebra)
    ms_pool = (0.35898222222222 + 2.75893333333333) / 78
    assert comp["repeatability"]["variance"] == pytest.approx(ms_pool, rel=1e-9)
    assert comp["operator"]["variance"] == pytest.approx((1.58363111111111 - ms_pool) / 30, rel=1e-9)
    assert comp["part-to-part"]["variance"] == pytest.approx((9.81799271604938 - ms_pool) / 9, rel=1e-9)
    # %GRR and ndc as havoc derives them from that table (a regression check, not a printed figure)
    assert r["ndc"] == 4 and printed(comp["total gauge R&R"]["pct_study_var"], "27.86")
    assert comp["total gauge R&R"]["pct_tolerance"] == pytest.approx(600 * comp["total gauge R&R"]["sd"] / 8)


def test_gauge_rr_matches_statsmodels_anova():
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    y, parts, ops = _aiag_long()
    df = pd.DataFrame({"y": y, "part": [str(p) for p in parts], "op": ops})
    table = anova_lm(smf.ols("y ~ C(part) * C(op)", df).fit(), typ=2)
    r = dsl(operation="gauge_rr", measurements=y, parts=parts, operators=ops, alpha_interaction=0)
    ours = {row["source"]: row["ss"] for row in r["anova"]}
    assert ours["part"] == pytest.approx(table.loc["C(part)", "sum_sq"], rel=1e-10)
    assert ours["part x operator"] == pytest.approx(table.loc["C(part):C(op)", "sum_sq"], rel=1e-10)
    assert ours["repeatability"] == pytest.approx(table.loc["Residual", "sum_sq"], rel=1e-10)
    assert not r["interaction_pooled"] and any(c["source"] == "part x operator" for c in r["components"])


# ---------------------------------------------------------------------------------- response surfaces

R2 = math.sqrt(2)  # the rotatable axial distance, printed 1.414
MONTGOMERY_11_2 = {  # DAE Example 11.2: time 80-90 min, temperature 170-180 F, yield
    "coded": [[-1, -1], [1, -1], [-1, 1], [1, 1], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0],
              [R2, 0], [-R2, 0], [0, R2], [0, -R2]],
    "response": [76.5, 78.0, 77.0, 79.5, 79.9, 80.3, 80.0, 79.7, 79.8, 78.4, 75.6, 78.5, 77.0],
}
TIME_TEMP = [{"name": "time", "low": 80, "high": 90}, {"name": "temp", "low": 170, "high": 180}]


def test_response_surface_montgomery_dae_11_2():
    # Montgomery DAE Example 11.2: y = 79.94 + 0.995 x1 + 0.515 x2 - 1.376 x1² - 1.001 x2² + 0.25 x1x2 (the
    # book's Minitab table; its equation rounds to 79.94 + 0.99 x1 + 0.52 x2 - 1.38 x1² - 1.00 x2²); stationary
    # point x1 = 0.389, x2 = 0.306, i.e. 86.95 min and 176.53 F, predicted yield 80.21; eigenvalues -0.9634 and
    # -1.4141: a maximum.
    r = dsl(operation="response_surface", factors=TIME_TEMP, **MONTGOMERY_11_2)
    est = {c["term"]: c["estimate"] for c in r["coefficients"]}
    for term, shown in (("intercept", "79.94"), ("time", "0.995"), ("temp", "0.515"), ("time^2", "-1.376"),
                        ("temp^2", "-1.001"), ("time*temp", "0.25")):
        assert printed(est[term], shown), (term, est[term])
    sp = r["stationary_point"]
    assert printed(sp["coded"]["time"], "0.389") and printed(sp["coded"]["temp"], "0.306")
    assert printed(sp["natural"]["time"], "86.95") and printed(sp["natural"]["temp"], "176.53")
    assert printed(sp["predicted"], "80.21") and sp["nature"] == "maximum" and sp["inside_region"]
    assert printed(sorted(r["eigenvalues"])[0], "-1.4141") and printed(sorted(r["eigenvalues"])[1], "-0.9634")
    assert r["optimum"]["natural"]["time"] == pytest.approx(sp["natural"]["time"], abs=1e-5)


def test_response_surface_design_option_saddle_minimum_and_region():
    # runs given as `design` are havoc's standard order: cube, axial (-a, +a per factor), centre
    y = [76.5, 78.0, 77.0, 79.5, 75.6, 78.4, 77.0, 78.5, 79.9, 80.3, 80.0, 79.7, 79.8]
    r = dsl(operation="response_surface", factors=TIME_TEMP, design={"kind": "central_composite", "center": 5}, response=y)
    assert r["stationary_point"]["nature"] == "maximum"
    sad = dsl(operation="response_surface", factors=TIME_TEMP, coded=MONTGOMERY_11_2["coded"],
              response=[a * a - b * b + 0.01 * i for i, (a, b) in enumerate(MONTGOMERY_11_2["coded"])])
    assert sad["nature"] == "saddle point"
    low = dsl(operation="response_surface", factors=TIME_TEMP, coded=MONTGOMERY_11_2["coded"],
              response=MONTGOMERY_11_2["response"], goal="minimize")
    # a maximum inside: the minimum within the region lies on its boundary
    assert any(abs(v) == pytest.approx(R2) for v in low["optimum"]["coded"].values())
    tgt = dsl(operation="response_surface", factors=TIME_TEMP, coded=MONTGOMERY_11_2["coded"],
              response=MONTGOMERY_11_2["response"], goal="target", target=78)
    assert tgt["optimum"]["predicted"] == pytest.approx(78, abs=1e-6)


# ---------------------------------------------------------------------------------------- life data

NIST_8_4_1_3 = dict(times=[54, 187, 216, 240, 244, 335, 361, 373, 375, 386, 500], censored=[False] * 10 + [True],
                    counts=[1] * 10 + [10])


def test_weibull_mle_with_censoring_nist_8_4_1_3():
    # NIST e-Handbook 8.4.1.3: 10 failures, 10 units removed at 500 h. eta = 606.5280, beta = 1.7208,
    # log-likelihood -75.135, AIC 154.27 (lognormal AIC 154.39); mean life 540.737 h, sd 323.806 h.
    r = stat(operation="life_data", **NIST_8_4_1_3)
    assert printed(r["parameters"]["beta"], "1.7208") and printed(r["log_likelihood"], "-75.135")
    assert printed(r["aic"], "154.27") and printed(r["mean_life"], "540.737") and printed(r["sd_life"], "323.806")
    # eta: scipy's independent fit and havoc's agree to 1e-8; both are 606.5276, 4e-4 below the printed 606.5280
    # (the handbook's software stopped a little short of the maximum).
    data = sps.CensoredData.right_censored(np.array([54, 187, 216, 240, 244, 335, 361, 373, 375, 386] + [500] * 10, float),
                                           np.array([0] * 10 + [1] * 10))
    shape, _, scale = sps.weibull_min.fit(data, floc=0)
    assert r["parameters"]["eta"] == pytest.approx(scale, rel=1e-7) and r["parameters"]["beta"] == pytest.approx(shape, rel=1e-7)
    assert r["parameters"]["eta"] == pytest.approx(606.5280, abs=1e-3)
    logn = stat(operation="life_data", distribution="lognormal", **NIST_8_4_1_3)
    assert printed(logn["aic"], "154.39")
    s, _, sc = sps.lognorm.fit(data, floc=0)
    assert logn["parameters"]["sigma"] == pytest.approx(s, rel=1e-6) and math.exp(logn["parameters"]["mu"]) == \
        pytest.approx(sc, rel=1e-6)


def test_weibull_lognormal_ball_bearings_lawless():
    # Lieblein & Zelen's ball bearing failures (millions of revolutions), Lawless Example 4.1.1 / 5.2: Weibull MLE
    # beta = 2.102, alpha = 81.88; lognormal MLE mu = 4.150, sigma = 0.522.
    bb = [17.88, 28.92, 33.00, 41.52, 42.12, 45.60, 48.48, 51.84, 51.96, 54.12, 55.56, 67.80, 68.64, 68.64, 68.88,
          84.12, 93.12, 98.64, 105.12, 105.84, 127.92, 128.04, 173.40]
    w = stat(operation="life_data", times=bb)
    assert printed(w["parameters"]["beta"], "2.102") and printed(w["parameters"]["eta"], "81.88")
    ln = stat(operation="life_data", times=bb, distribution="lognormal")
    assert printed(ln["parameters"]["mu"], "4.150") and printed(ln["parameters"]["sigma"], "0.522")
    # B10 and its bounds: eta (-ln 0.9)^(1/beta), bounds around it
    b10 = w["b10"]
    assert b10["life"] == pytest.approx(w["parameters"]["eta"] * (-math.log(0.9)) ** (1 / w["parameters"]["beta"]))
    assert b10["lower"] < b10["life"] < b10["upper"]


# ------------------------------------------------------------------------------------ sampling plans

def test_single_sampling_plan_montgomery_15_2():
    # Montgomery SQC 15.2: N = 10000, n = 89, c = 2: Pa(0.01) = 0.9397, AOQ = 0.0093, ATI = 687.
    r = dsl(operation="sampling_plan", n=89, c=2, lot_size=10000, p=[0.01, 0.02])
    row = r["oc"][0]
    assert printed(row["pa"], "0.9397") and printed(row["aoq"], "0.0093") and printed(row["ati"], "687")
    assert row["pa"] == pytest.approx(sps.binom.cdf(2, 89, 0.01), rel=1e-12)
    grid = np.linspace(1e-5, 0.2, 200_001)
    assert r["aoql"] == pytest.approx(float(np.max(grid * sps.binom.cdf(2, 89, grid) * 9911 / 10000)), rel=1e-7)
    risks = dsl(operation="sampling_plan", n=89, c=2, aql=0.01, ltpd=0.06)
    assert risks["producer_risk"] == pytest.approx(1 - 0.9397, abs=1e-4) and 0 < risks["consumer_risk"] < 0.1
    hyp = dsl(operation="sampling_plan", n=89, c=2, lot_size=10000, p=[0.01], distribution="hypergeometric")
    assert hyp["oc"][0]["pa"] == pytest.approx(sps.hypergeom.cdf(2, 10000, 100, 89), rel=1e-12)


# ------------------------------------------------------------------------------------ refusals (hostile)

@pytest.mark.parametrize("tool, args, message", [
    ("statistics", {"operation": "t_test", "kind": "welch", "mean_x": 1, "sd_x": 1, "n_x": 5}, "needs mean_y"),
    ("statistics", {"operation": "t_test", "kind": "one_sample", "mean_x": 1, "sd_x": 0, "n_x": 5}, "zero standard deviation"),
    ("statistics", {"operation": "t_test", "kind": "one_sample", "mean_x": 1, "sd_x": 1, "n_x": 5, "x": [1, 2]}, "not both"),
    ("statistics", {"operation": "t_test", "kind": "two_sample"}, "needs data x"),
    ("statistics", {"operation": "proportion_test", "successes": 5, "trials": 3}, "cannot exceed"),
    ("statistics", {"operation": "proportion_test", "successes": 0, "trials": 3, "successes_y": 0, "trials_y": 4}, "undefined"),
    ("statistics", {"operation": "proportion_test", "successes": 1, "trials": 3, "successes_y": 2}, "trials_y"),
    ("statistics", {"operation": "variance_test", "kind": "f", "x": [1, 1, 1], "y": [1, 2, 3]}, "zero variance"),
    ("statistics", {"operation": "variance_test", "kind": "one_sample", "x": [1, 2, 3]}, "sigma0"),
    ("statistics", {"operation": "variance_test", "kind": "bartlett", "groups": [[1, 1, 1], [1, 2, 3]]}, "zero variance"),
    ("statistics", {"operation": "variance_test", "kind": "levene", "groups": [[1, 1], [2, 2]]}, "constant"),
    ("statistics", {"operation": "rank_test", "kind": "wilcoxon", "x": [1, 2], "y": [1, 2]}, "is zero"),
    ("statistics", {"operation": "rank_test", "kind": "mann_whitney", "x": [3, 3], "y": [3, 3]}, "all values are equal"),
    ("statistics", {"operation": "rank_test", "kind": "kruskal", "groups": [[1, 1], [1, 1]]}, "all values are equal"),
    ("statistics", {"operation": "correlation", "x": [1, 1, 1], "y": [1, 2, 3]}, "constant"),
    ("statistics", {"operation": "correlation", "x": [1, 2, 3], "y": [1, 2, 4, 5]}, "same length"),
    ("statistics", {"operation": "correlation", "x": [1, 2], "y": [1, 2]}, "too short"),
    ("statistics", {"operation": "power", "test": "two_sample_t", "effect": 1, "sd": 1}, "all but one"),
    ("statistics", {"operation": "power", "test": "two_sample_t", "n": 5, "effect": 1, "power": 0.9, "alpha": 0.05,
                    "sd": 1}, "leave out"),
    ("statistics", {"operation": "power", "test": "two_sample_t", "n": 5, "effect": 1}, "needs sd"),
    ("statistics", {"operation": "power", "test": "two_sample_t", "effect": 1, "sd": 1, "power": 0.01}, "not above alpha"),
    ("statistics", {"operation": "power", "test": "one_sample_t", "effect": 0, "sd": 1, "power": 0.8}, "cannot be detected"),
    ("statistics", {"operation": "power", "test": "two_sample_t", "effect": 1e-6, "sd": 1, "power": 0.9},
     "reaches that power"),
    ("statistics", {"operation": "power", "test": "anova", "n": 5, "effect": 1, "sd": 1}, "groups"),
    ("statistics", {"operation": "power", "test": "one_proportion", "n": 50, "p0": 0.3, "p1": 0.3},
     "p1 must be between 0 and 1 and differ from p0"),
    ("statistics", {"operation": "power", "test": "two_proportions", "n": 50, "p1": 0.4, "p2": 0.4},
     "p2 must be between 0 and 1 and differ from p1"),
    ("statistics", {"operation": "life_data", "times": [5, 6, 7], "censored": [True, True, False]}, "at least 2 failures"),
    ("statistics", {"operation": "life_data", "times": [5, 5, 7], "censored": [False, False, True]}, "different times"),
    ("statistics", {"operation": "life_data", "times": [5, 6, 7], "censored": [False, True]}, "one per time"),
    ("statistics", {"operation": "life_data", "times": [5, 6], "counts": [1, 0]}, "args.counts[1]: must be in [1, 1e+09], got 0"),
    ("dsl_executor", {"operation": "ewma_chart", "data": [1, 2, 3], "lambda": 0}, "args.lambda"),
    ("dsl_executor", {"operation": "ewma_chart", "data": [2, 2, 2, 2]}, "no variation"),
    ("dsl_executor", {"operation": "ewma_chart", "data": [1, 2, 3], "subgroups": [[1, 2], [3, 4]]}, "one of the two"),
    ("dsl_executor", {"operation": "cusum_chart", "data": [1, 2], "target": 1}, "at least 3 values"),
    ("dsl_executor", {"operation": "capability", "mean": 16, "lsl": 8, "usl": 20}, "mean and sigma"),
    ("dsl_executor", {"operation": "capability", "data": [1, 2, 3, 4], "mean": 2, "sigma": 1, "lsl": 0}, "not both"),
    ("dsl_executor", {"operation": "capability", "mean": 16, "sigma": 2, "lsl": 20, "usl": 8}, "below"),
    ("dsl_executor", {"operation": "gauge_rr", "measurements": [1, 2, 3, 4, 5, 6, 7, 8],
                      "parts": [1, 2, 3, 4, 1, 2, 3, 4], "operators": ["a"] * 4 + ["b"] * 4}, "at least twice"),
    ("dsl_executor", {"operation": "gauge_rr", "measurements": [1, 2, 3, 4, 5, 6, 7, 8, 9],
                      "parts": [1, 1, 2, 2, 1, 1, 2, 2, 2], "operators": ["a"] * 4 + ["b"] * 5}, "balanced"),
    ("dsl_executor", {"operation": "gauge_rr", "measurements": [1, 1, 2, 2, 1, 1, 2, 2],
                      "parts": [1, 1, 2, 2, 1, 1, 2, 2], "operators": ["a"] * 4 + ["b"] * 4}, "zero repeatability"),
    ("dsl_executor", {"operation": "response_surface", "factors": TIME_TEMP, "response": [1, 2, 3, 4],
                      "coded": [[-1, -1], [1, -1], [-1, 1], [1, 1]]}, "no error degrees"),
    ("dsl_executor", {"operation": "response_surface", "factors": TIME_TEMP, "response": [1] * 8,
                      "coded": [[-1, -1], [1, -1], [-1, 1], [1, 1]] * 2}, "three distinct levels"),
    ("dsl_executor", {"operation": "response_surface", "factors": TIME_TEMP, "response": [1] * 13}, "one way"),
    ("dsl_executor", {"operation": "sampling_plan", "n": 5, "c": 5}, "below the sample size"),
    ("dsl_executor", {"operation": "sampling_plan", "n": 50, "c": 1, "lot_size": 10}, "smaller than the sample"),
    ("dsl_executor", {"operation": "sampling_plan", "n": 50, "c": 1, "distribution": "hypergeometric"}, "lot_size"),
])
def test_bad_input_is_refused_with_a_reason(tool, args, message):
    out = REG.execute(tool, args)
    assert not out["success"], out
    assert message in out["error"] and "\n" not in out["error"]


@pytest.mark.parametrize("tool, args", [
    ("statistics", {"operation": "correlation", "x": [1, 2, 3, 4], "y": [2, 4, 6, 8]}),
    ("statistics", {"operation": "proportion_test", "successes": 0, "trials": 10, "p0": 0.3, "method": "exact"}),
    ("statistics", {"operation": "rank_test", "kind": "sign", "x": [1, 2, 3], "mu": 2}),
    ("dsl_executor", {"operation": "cusum_chart", "data": [5, 5, 5, 9, 9, 9], "target": 5, "sigma": 1}),
    ("dsl_executor", {"operation": "sampling_plan", "n": 20, "c": 0, "p": [0, 1]}),
])
def test_edge_cases_answer_without_nan(tool, args):
    out = REG.execute(tool, args)
    assert out["success"], out
    json.dumps(out, allow_nan=False)  # undefined figures travel as null, with the text saying why


# ------------------------------------------------------------------------------------ DSL and --list

def test_dsl_statements_run_the_same_operations():
    from havoc.errors import DSLError
    from havoc.tools import dsl

    script = """design ccd factors time(80,90) temp(170,180) center 5 no_randomize
surface response [76.5, 78.0, 77.0, 79.5, 75.6, 78.4, 77.0, 78.5, 79.9, 80.3, 80.0, 79.7, 79.8]
chart ewma data [52.0, 47.0, 53.0, 49.3, 50.1] lambda 0.3 L 3 target 50 sigma 2.0539 limits asymptotic
chart cusum data [9.45, 7.99, 9.29, 11.66, 12.16] target 10 sigma 1 k 0.5 h 5
capability mean 16 sigma 2 lsl 8 usl 20
chart imr data [49.6, 47.6, 49.9, 51.3, 47.8] constants table
gauge measurements [1, 1.1, 2, 2.2, 1.2, 1.1, 2.1, 2.3] parts [1, 1, 2, 2, 1, 1, 2, 2] operators [a, a, a, a, b, b, b, b]
sampling n 89 c 2 lot_size 10000 p [0.01]
constants 2 table"""
    out = dsl.run_script(script)
    ops = [s["operation"] for s in out["statements"]]
    assert ops == ["central_composite", "response_surface", "ewma_chart", "cusum_chart", "capability", "control_chart",
                   "gauge_rr", "sampling_plan", "constants"]
    res = [s["result"] for s in out["statements"]]
    assert res[1]["stationary_point"]["nature"] == "maximum" and printed(res[1]["stationary_point"]["predicted"], "80.21")
    assert printed(res[2]["points"][0], "50.60") and printed(res[4]["cpk"], "0.6667")
    assert printed(res[7]["oc"][0]["pa"], "0.9397") and res[8]["d2"] == 1.128
    with pytest.raises(DSLError, match="line 1, column 21: unknown ewma chart option 'rules'"):
        dsl.run_script("chart ewma data [1] rules nelson")
    with pytest.raises(DSLError, match="surface needs a design"):
        dsl.run_script("surface response [1, 2, 3]")


def test_tool_list_shows_an_example_for_every_new_operation(capsys):
    from havoc.cli import main

    assert main(["tool", "--list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    examples = {e["args"]["operation"] for t in listed for e in t.get("examples", [])}
    assert {"proportion_test", "variance_test", "rank_test", "correlation", "power", "life_data", "ewma_chart",
            "cusum_chart", "capability", "gauge_rr", "response_surface", "sampling_plan", "t_test"} <= examples
    for t in listed:  # every listed example is a valid call, and no schema carries example numbers into a prompt
        assert "examples" not in json.dumps(t["parameters"])
        for e in t.get("examples", []):
            assert REG.execute(e["tool"], e["args"])["success"], e
