"""Least squares that keeps its digits: Householder QR on power-of-two-scaled columns, then Björck's
iterative refinement of the augmented system with residuals summed in twice the working precision.

Why each piece:
- QR, not the normal equations: forming X'X squares the condition number (Longley's is ~1e8 unscaled, so
  X'X leaves about nothing of 16 digits).
- Column scaling by powers of two: equilibrates the columns without rounding a single entry (a scale
  that is not a power of two perturbs the problem by eps per entry, which on NIST's Filip alone costs
  six digits).
- Refinement (Björck 1967, "Iterative refinement of linear least squares solutions I"): solve
  [I A; A' 0][r; x] = [y; 0] by correcting (r, x) with the same QR, where the defects y - r - Ax and
  -A'r are computed with error-free products (Dekker's split) and compensated sums (Ogita, Rump, Oishi
  2005, "Accurate sum and dot product"). Each step gains about -log10(cond * eps) digits until the
  solution is as good as the data: on Filip (10th-degree polynomial, scaled condition 5e9) a plain QR
  gives 7.9 correct digits and two refinement steps give 14.0, which is what an exact rational solution
  of the same double-precision data gives.
- Polynomial columns x**k are carried as double-double pairs (hi, lo), because rounding x**10 to a
  double perturbs the problem as much as the scaling would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from havoc.errors import ToolError

_SPLIT = 134217729.0  # 2**27 + 1: Dekker's splitter for IEEE doubles
_EPS = np.finfo(np.float64).eps
# A scaled condition number past this leaves fewer than ~3 digits after refinement: call the columns
# dependent instead of printing noise.
_MAX_COND = 1e13


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """a*b as p + e exactly (Dekker/Veltkamp), elementwise; no FMA needed."""
    a = np.asarray(a, dtype=np.float64)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def dd_mul(ah: np.ndarray, al: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ah + al) * b as a double-double pair, b a double."""
    p, e = two_prod(ah, b)
    e = e + al * b
    hi = p + e
    return hi, e - (hi - p)


def accurate_residual(a_hi: np.ndarray, a_lo: np.ndarray, x: np.ndarray, y: np.ndarray,
                      minus: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """y - (a_hi + a_lo) @ x [- (m_hi + m_lo)], each row as if computed in double-double, rounded once."""
    s = y.astype(np.float64, copy=True)
    c = np.zeros_like(s)
    if minus is not None:
        s, t = _two_sum(s, -minus[0])
        c += t - minus[1]
    for j in range(a_hi.shape[1]):
        p, e = two_prod(a_hi[:, j], x[j])
        s, t = _two_sum(s, -p)
        c += t - e - a_lo[:, j] * x[j]
    return s + c


def accurate_at_r(a_hi: np.ndarray, a_lo: np.ndarray, r_hi: np.ndarray, r_lo: np.ndarray) -> np.ndarray:
    """(a_hi + a_lo)' (r_hi + r_lo), each entry summed exactly (math.fsum over error-free products)."""
    out = np.empty(a_hi.shape[1])
    for j in range(a_hi.shape[1]):
        p, e = two_prod(a_hi[:, j], r_hi)
        out[j] = math.fsum(np.concatenate([p, e, a_lo[:, j] * r_hi, a_hi[:, j] * r_lo]))
    return out


def accurate_sum(values: np.ndarray) -> float:
    """Correctly rounded sum (Shewchuk via math.fsum)."""
    return math.fsum(np.asarray(values, dtype=np.float64).tolist())


@dataclass
class LstsqResult:
    """Solution of min ||y - X b|| and what the statistics around it need."""

    coef: np.ndarray          # (p,)
    residuals: np.ndarray     # (n,) y - X b, accurately computed
    cov_unscaled: np.ndarray  # (p, p) (X'X)^-1
    condition: float          # 2-norm condition number of the column-scaled X
    refinement_steps: int


def lstsq(x_hi: np.ndarray, y: np.ndarray, x_lo: np.ndarray | None = None, names: list[str] | None = None,
          max_steps: int = 8) -> LstsqResult:
    """Least squares solution of y ~ X b to the accuracy the data support.

    Args:
        x_hi: (n, p) design matrix (the high parts, if `x_lo` is given).
        y: (n,) response.
        x_lo: (n, p) low parts of a double-double design (e.g. exact polynomial powers), or None.
        names: column names for error messages.
        max_steps: most refinement steps.

    Returns:
        LstsqResult with coefficients, residuals, (X'X)^-1 and the scaled condition number.
    """
    n, p = x_hi.shape
    names = names or [f"column {j + 1}" for j in range(p)]
    if x_lo is None:
        x_lo = np.zeros_like(x_hi)
    norms = np.linalg.norm(x_hi, axis=0)
    for j in range(p):
        if norms[j] == 0.0:
            raise ToolError(f"predictor {names[j]!r} is all zeros")
    scale = np.exp2(np.round(np.log2(norms)))  # powers of two: dividing by them is exact
    a_hi, a_lo = x_hi / scale, x_lo / scale
    q, r_mat = np.linalg.qr(a_hi)
    diag = np.abs(np.diag(r_mat))
    for j in range(p):
        if diag[j] <= max(n, p) * _EPS * diag.max() * 10:
            raise ToolError(f"predictor {names[j]!r} is a linear combination of the ones before it; "
                            "drop it (or one of those) and fit again")
    sv = np.linalg.svd(r_mat, compute_uv=False)
    cond = float(sv[0] / sv[-1])
    if cond > _MAX_COND:
        raise ToolError(f"the predictors are nearly collinear (scaled condition number {cond:.2g}); "
                        "the coefficients would carry no correct digits. Centre or drop predictors")

    def solve_aug(f: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # [I A; A' 0][dr; dx] = [f; g]  =>  R'R dx = A'f - g,  dr = f - A dx
        h = sla.solve_triangular(r_mat, g, trans="T")
        dx = sla.solve_triangular(r_mat, q.T @ f - h)
        return f - a_hi @ dx, dx

    def refine(rhs_y: np.ndarray, rhs_g: np.ndarray, r: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        # r is carried as a double-double pair: when the residuals are as large as y (Wampler5: both
        # ~2e7), r rounded to doubles alone holds b to nine digits.
        r_lo = np.zeros_like(r)
        last = math.inf
        steps = 0
        for steps in range(1, max_steps + 1):
            f = accurate_residual(a_hi, a_lo, b, rhs_y, minus=(r, r_lo))
            g = rhs_g - accurate_at_r(a_hi, a_lo, r, r_lo)
            dr, dx = solve_aug(f, g)
            b = b + dx
            r, r_lo = _two_sum(r, dr + r_lo)
            size = float(np.max(np.abs(dx)))
            # Stop once a step changes nothing a double can hold, or stops shrinking (converged to
            # the data's own accuracy).
            if size <= 4 * _EPS * float(np.max(np.abs(b))) or size > 0.5 * last:
                break
            last = size
        return r, b, steps

    b0 = sla.solve_triangular(r_mat, q.T @ y)
    r0 = y - a_hi @ b0
    # Keep the refined r rather than recomputing y - Xb: b rounded to doubles, multiplied out with the
    # cancellation of an ill-conditioned design (Filip's terms reach 1e5 to sum to 0.9), loses the very
    # digits of r that the augmented iteration kept.
    resid, b_scaled, steps = refine(y, np.zeros(p), r0, b0)

    # (A'A)^-1 column by column: the augmented system with right-hand side [0; -e_j] has x = (A'A)^-1 e_j,
    # refined like the solution so standard errors keep their digits on ill-conditioned designs. A
    # well-conditioned design loses nothing to R^-1 R^-T (relative error ~ cond * eps), and big ones
    # (n p^2 large) would spend seconds on it, so they skip the refinement.
    rinv = sla.solve_triangular(r_mat, np.eye(p))
    cov = rinv @ rinv.T
    if cond > 1e4 and n * p * p <= 2_000_000:
        zeros = np.zeros(n)
        for j in range(p):
            e_j = np.zeros(p)
            e_j[j] = 1.0
            z0 = cov[:, j].copy()
            _, z, _ = refine(zeros, -e_j, -(a_hi @ z0), z0)
            cov[:, j] = z
    cov = 0.5 * (cov + cov.T)
    return LstsqResult(coef=b_scaled / scale, residuals=resid, cov_unscaled=cov / np.outer(scale, scale),
                       condition=cond, refinement_steps=steps)


def polynomial_design(x: np.ndarray, degree: int, intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Columns x**k (k = 0 or 1 .. degree) as exact-as-possible double-double pairs (hi, lo)."""
    n = x.shape[0]
    his, los = [], []
    h, lo = np.ones(n), np.zeros(n)
    if intercept:
        his.append(h)
        los.append(lo)
    for _ in range(degree):
        h, lo = dd_mul(h, lo, x)
        his.append(h)
        los.append(lo)
    return np.column_stack(his), np.column_stack(los)
