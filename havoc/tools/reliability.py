"""Life data: Weibull and lognormal fits to right-censored failure times by maximum likelihood, with
percentile lives (B10 ...) and Fisher-matrix confidence bounds (NIST handbook 8.4.1.2-8.4.1.3; Meeker &
Escobar, Statistical Methods for Reliability Data, ch. 8).

The likelihood is that of the times themselves (densities for failures, survival for censored units), so
the log-likelihood and AIC compare with other software and between the two distributions. Both models
are fitted on the log scale as location-scale families, parameters (mu, log sigma):

    Weibull:   log T = mu + sigma W, W standard smallest extreme value; eta = exp(mu), beta = 1/sigma
    lognormal: log T = mu + sigma Z, Z standard normal

The maximum is found by Newton's method with the analytic gradient and Hessian (started from the
failures' moments, step-halving to keep the likelihood rising), and the observed information at the
maximum gives the covariance. Bounds are Wald bounds on the log scale (so they stay positive), as Minitab
and Weibull++ print by default: log t_p +- z se(log t_p), se by the delta method.

Why written here rather than taken from `lifelines` or `reliability`: the two fits are ~150 lines over
scipy; those packages bring pandas, autograd and formulaic (or pinned matplotlib versions) into a
tools extra that is otherwise scipy/statsmodels, for estimators scipy already checks independently
(`scipy.stats.CensoredData` fitting, used in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
import numpy as np
from scipy import special
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import as_vector, fmt, jsonable

MAX_ITER = 500


def _loglik(theta: np.ndarray, y: np.ndarray, failed: np.ndarray, dist: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Log-likelihood (on the log-time scale) with its gradient and Hessian in (mu, log sigma).

    A trial step of the search can overflow (exp of a large z); the result is then not finite and the step
    is halved, so the overflow is expected and silenced here.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _loglik_raw(theta, y, failed, dist)


def _loglik_raw(theta: np.ndarray, y: np.ndarray, failed: np.ndarray, dist: str) -> tuple[float, np.ndarray, np.ndarray]:
    mu, ls = theta
    s = math.exp(ls)
    z = (y - mu) / s
    if dist == "weibull":
        ez = np.exp(z)
        lf, lsurv = z - ez, -ez
        g = np.where(failed, 1 - ez, -ez)          # d l_i / dz
        h = -ez                                     # d2 l_i / dz2 (the same for both kinds)
    else:
        lf = -0.5 * z * z - 0.5 * math.log(2 * math.pi)
        lsurv = special.log_ndtr(-z)
        mills = np.exp(sps.norm.logpdf(z) - lsurv)  # f/S, stable in the tail
        g = np.where(failed, -z, -mills)
        h = np.where(failed, -1.0, mills * (z - mills))
    ll = float(np.sum(np.where(failed, lf - ls, lsurv)))
    # chain rule: dz/dmu = -1/s, dz/dls = -z
    d_mu = float(np.sum(-g / s))
    d_ls = float(np.sum(-g * z) - np.sum(failed))
    h_mm = float(np.sum(h) / s ** 2)
    h_ml = float(np.sum(h * z + g) / s)
    h_ll = float(np.sum(h * z * z + g * z))
    return ll, np.array([d_mu, d_ls]), np.array([[h_mm, h_ml], [h_ml, h_ll]])


def _fit(y: np.ndarray, failed: np.ndarray, dist: str) -> tuple[np.ndarray, float, np.ndarray]:
    yf = y[failed]
    sd = float(np.std(yf, ddof=1)) if yf.size > 1 else 1.0
    theta = np.array([float(np.mean(y)), math.log(max(sd, 1e-3 * max(1.0, abs(float(np.mean(y))))))])
    if dist == "weibull":
        theta[1] += math.log(math.sqrt(6) / math.pi)  # sd of the SEV law is pi/sqrt(6) sigma
    ll, g, h = _loglik(theta, y, failed, dist)
    for _ in range(MAX_ITER):
        concave = bool(np.all(np.linalg.eigvalsh(h) < 0))
        # Newton where the surface is concave; otherwise a bounded step uphill along the gradient
        step = -np.linalg.solve(h, g) if concave else g / max(1.0, float(np.max(np.abs(g))))
        t = 1.0
        while t >= 1e-10:
            cand = theta + t * step
            ll2, g2, h2 = _loglik(cand, y, failed, dist)
            if math.isfinite(ll2) and ll2 >= ll - 1e-12 * max(1.0, abs(ll)):
                break
            t /= 2
        else:
            break  # no step improves: at the maximum to rounding (checked below)
        moved = float(np.max(np.abs(cand - theta)))
        theta, ll, g, h = cand, ll2, g2, h2
        if moved < 1e-13:
            break
    if not (np.all(np.linalg.eigvalsh(h) < 0) and np.max(np.abs(g)) < 1e-6 * max(1.0, y.size)):
        raise ToolError("the likelihood has no maximum the search can reach: the failures do not determine both "
                        "parameters")
    try:
        cov = np.linalg.inv(-h)
    except np.linalg.LinAlgError:
        raise ToolError("the information matrix is singular at the maximum: the data cannot fix both parameters") from None
    if not np.all(np.linalg.eigvalsh(cov) > 0):
        raise ToolError("the fitted maximum is not a proper maximum (information not positive definite)")
    return theta, ll, cov


def life_data(times: Sequence[float], censored: Sequence[bool] | None = None, distribution: str = "weibull",
              confidence: float = 0.95, percentiles: Sequence[float] | None = None,
              counts: Sequence[int] | None = None) -> dict:
    """Weibull or lognormal maximum-likelihood fit to right-censored life data.

    Args:
        times: failure or censoring times (> 0).
        censored: True where the unit had not failed at its time (right-censored); default none.
        distribution: "weibull" or "lognormal".
        confidence: two-sided confidence level of the bounds.
        percentiles: percent failing for the percentile lives (default [1, 5, 10, 50]; 10 is B10).
        counts: how many units each row stands for (default 1 each), as the handbook's frequency column.

    Returns:
        parameters (eta, beta or mu, sigma) with bounds, log_likelihood, aic, percentile lives
        [{percent, life, lower, upper}], b10, mean_life, covariance, n, failures, method, interpretation.
    """
    t = as_vector(times, "times", min_len=2, max_len=100_000)
    if np.any(t <= 0):
        raise ToolError("life times must be positive")
    if censored is None:
        cens = np.zeros(t.size, bool)
    else:
        if not isinstance(censored, Sequence) or isinstance(censored, (str, bytes)) or len(censored) != t.size:
            raise ToolError(f"censored must be a list of true/false, one per time ({t.size})")
        if not all(isinstance(c, bool) for c in censored):
            raise ToolError("censored must hold true (still running) or false (failed)")
        cens = np.array(censored, bool)
    if counts is not None:
        w = as_vector(counts, "counts", min_len=t.size, max_len=t.size)
        if np.any(w < 1) or np.any(w != np.round(w)):
            raise ToolError("counts must be whole numbers >= 1")
        reps = w.astype(int)
        if reps.sum() > 1_000_000:
            raise ToolError("at most 1,000,000 units")
        t, cens = np.repeat(t, reps), np.repeat(cens, reps)
    if distribution not in ("weibull", "lognormal"):
        raise ToolError("distribution must be 'weibull' or 'lognormal'")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ToolError("confidence must be between 0 and 1")
    pcts = [1.0, 5.0, 10.0, 50.0] if percentiles is None else list(as_vector(percentiles, "percentiles", max_len=50))
    if any(not 0 < p < 100 for p in pcts):
        raise ToolError("percentiles are percents failing, strictly between 0 and 100")
    failed = ~cens
    nf = int(failed.sum())
    if nf < 2 or np.ptp(t[failed]) == 0:
        raise ToolError(f"a two-parameter fit needs at least 2 failures at different times; got {nf} "
                        f"failure{'s' if nf != 1 else ''}" + (" all at one time" if nf >= 2 else ""))
    y = np.log(t)
    theta, ll_log, cov = _fit(y, failed, distribution)
    mu, ls = theta
    sigma = math.exp(ls)
    ll = ll_log - float(np.sum(y[failed]))  # the likelihood of the times: Jacobian 1/t for each failure
    zq = float(sps.norm.ppf(0.5 + confidence / 2))
    se_mu, se_ls = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])

    def wald(est: float, se: float) -> list[float]:
        return [est - zq * se, est + zq * se]

    lives = []
    for p in pcts:
        q = p / 100
        wq = math.log(-math.log1p(-q)) if distribution == "weibull" else float(sps.norm.ppf(q))
        lp = mu + wq * sigma
        grad = np.array([1.0, wq * sigma])  # d/d(mu, log sigma)
        se = math.sqrt(float(grad @ cov @ grad))
        lo, hi = wald(lp, se)
        lives.append({"percent": p, "life": math.exp(lp), "lower": math.exp(lo), "upper": math.exp(hi)})
    if distribution == "weibull":
        eta, beta = math.exp(mu), 1 / sigma
        params = {"eta": eta, "beta": beta,
                  "eta_bounds": [math.exp(v) for v in wald(mu, se_mu)],
                  "beta_bounds": sorted(1 / math.exp(v) for v in wald(ls, se_ls))}
        mean_life = eta * math.gamma(1 + 1 / beta)
        sd_life = eta * math.sqrt(math.gamma(1 + 2 / beta) - math.gamma(1 + 1 / beta) ** 2)
        desc = f"Weibull: eta = {fmt(eta)}, beta = {fmt(beta)}"
    else:
        params = {"mu": mu, "sigma": sigma, "mu_bounds": wald(mu, se_mu),
                  "sigma_bounds": [math.exp(v) for v in wald(ls, se_ls)]}
        mean_life = math.exp(mu + sigma * sigma / 2)
        sd_life = mean_life * math.sqrt(math.expm1(sigma * sigma))
        desc = f"lognormal: mu = {fmt(mu)}, sigma = {fmt(sigma)} (log scale)"
    b10 = next((x for x in lives if x["percent"] == 10.0), None)
    if b10 is None:
        q = 0.1
        wq = math.log(-math.log1p(-q)) if distribution == "weibull" else float(sps.norm.ppf(q))
        b10 = {"percent": 10.0, "life": math.exp(mu + wq * sigma)}
    level = f"{100 * confidence:g}%"
    text = (f"{desc}; B10 life {fmt(b10['life'])}" +
            (f" ({level} bounds {fmt(b10['lower'])} to {fmt(b10['upper'])})" if "lower" in b10 else "") +
            f"; {nf} failures, {int(cens.sum())} censored; log-likelihood {fmt(ll)}")
    return jsonable({
        "distribution": distribution, "parameters": params, "log_likelihood": ll, "aic": 4 - 2 * ll,
        "percentile_lives": lives, "b10": b10, "mean_life": mean_life, "sd_life": sd_life,
        "covariance_mu_log_sigma": cov, "n": int(t.size), "failures": nf, "censored": int(cens.sum()),
        "confidence": confidence,
        "method": f"maximum likelihood on the log-time scale ({'smallest extreme value' if distribution == 'weibull' else 'normal'} "
                  "location-scale, Newton with analytic derivatives), right-censored units through the survival "
                  "function; Fisher-matrix (Wald) bounds on log scale, percentile se by the delta method",
        "interpretation": text,
    })

