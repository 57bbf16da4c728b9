"""Starting values of theta from moment estimates of the variance components.

lme4 starts every fit at lambda_k = I (theta = 1 on the diagonal); a crossed model
such as InstEval then spends most of its evaluations getting near the optimum.
Here each random-intercept term ``(1 | g)`` starts at
sqrt(sigma_k^2 / sigma^2) from Henderson's Method 1 (Henderson 1953, Biometrics 9;
Searle, Casella and McCulloch 1992, "Variance Components", section 5.3), on the
residuals r of the least-squares fit of y on X:

    E[r'r]                   = (n - p) sigma^2 + sum_l (n - sum_m n_lm^2 / n) sigma_l^2,
    E[sum_j S_kj^2 / n_kj]   = (ell_k - 1) sigma^2 + sum_l (c_kl - sum_m n_lm^2 / n) sigma_l^2,

with S_kj the sum of r over level j of term k, n_kj its count, n_lm the count of
level m of term l, and c_kl = sum_j sum_m n_(kj,lm)^2 / n_kj (c_kk = n) from the
cross-classification of terms k and l.  One equation per intercept term plus the
total: a (K + 1) x (K + 1) linear system.  For balanced data these are the ANOVA
estimators, which equal the REML estimates when they are positive (Dyestuff,
Penicillin and Pastes start at lme4's REML optimum).  Vector-valued terms
(``(Days | Subject)``: a moment start for the intercept alone made sleepstudy's fit
slower, 68 evaluations against 64) start as lme4's do, as does every model with prior
weights or a known residual variance.  Negative estimates start at ``FLOOR``; the
optimum does not depend on the start, only the number of evaluations does.
"""

from __future__ import annotations

import numpy as np

from .blocks import LevelSums
from .covariance import Diagonal, Unstructured
from .frame import INTERCEPT, ModelFrame
from .structure import Structure

FLOOR, CEILING = 0.05, 20.0
CHUNK = 1 << 14  # responses per pass (bounds the residuals' memory)


def _cross_term(codes_k, nk, codes_l, ell_l) -> float:
    """c_kl = sum_j sum_m n_(kj,lm)^2 / n_kj, from the cross-classification of two terms."""
    cells, counts = np.unique(codes_k.astype(np.int64) * ell_l + codes_l, return_counts=True)
    return float(np.sum(counts.astype(float) ** 2 / nk[cells // ell_l]))


def moment_starts(frame: ModelFrame, st: Structure, Y: np.ndarray) -> np.ndarray:
    """Starting theta (B, ntheta) for responses Y (B, n) on the frame's design (see the
    module docstring); lme4's start for responses with missing values and where the
    moment equations do not apply or cannot be solved.

    The design's part (the coefficient matrix A, the level indicators) is computed once;
    each response adds its least-squares residuals, their level sums and one solve."""
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    theta = np.tile(st.theta_start(), (Y.shape[0], 1))
    first = np.cumsum([0] + [spec.ntheta for spec in st.terms])[:-1]  # each term's lambda_k[0, 0]
    which = [k for k, t in enumerate(frame.terms) if t.spec.columns == (INTERCEPT,)
             and t.spec.covariance in (Unstructured(1), Diagonal(1))]   # lambda_k = theta_k
    if not which or frame.weights is not None or frame.sigma is not None:
        return theta
    terms = [frame.terms[k] for k in which]
    X = frame.X
    n, p = X.shape
    counts = [np.bincount(t.codes, minlength=t.spec.nlevels).astype(float) for t in terms]
    centring = [float(np.sum(c ** 2)) / n for c in counts]
    K = len(terms)
    A = np.zeros((K + 1, K + 1))
    A[0, 0], A[0, 1:] = n - p, [n - c for c in centring]
    for a, (t, nk) in enumerate(zip(terms, counts)):
        A[a + 1, 0] = np.count_nonzero(nk) - 1
        for c, u in enumerate(terms):
            cross = n if u is t else _cross_term(t.codes, nk, u.codes, u.spec.nlevels)
            A[a + 1, c + 1] = cross - centring[c]
    groupings = [LevelSums(t.codes, t.spec.nlevels) for t in terms]
    complete = np.flatnonzero(np.all(np.isfinite(Y), axis=1))
    pinv = np.linalg.pinv(X) if p else np.zeros((0, n))
    for lo in range(0, complete.size, CHUNK):
        rows = complete[lo:lo + CHUNK]
        R = Y[rows] - (Y[rows] @ pinv.T) @ X.T if p else Y[rows] - Y[rows].mean(axis=1, keepdims=True)
        b = np.empty((K + 1, rows.size))
        b[0] = np.einsum("bi,bi->b", R, R)
        for a, (G, nk) in enumerate(zip(groupings, counts)):
            sums = G.sums(R)                                            # (ell_k, B)
            b[a + 1] = np.sum(sums ** 2 / np.maximum(nk, 1.0)[:, None], axis=0)
        try:
            s = np.linalg.solve(A, b)                                   # (K + 1, B)
        except np.linalg.LinAlgError:
            return theta
        ok = np.all(np.isfinite(s), axis=0)
        sigma2 = np.maximum(s[0], 1e-3 * b[0] / n)
        for k, s2 in zip(which, s[1:]):
            value = np.clip(np.sqrt(np.maximum(s2, 0.0) / sigma2), FLOOR, CEILING)
            theta[rows[ok], first[k]] = value[ok]
    return theta


def moment_start(frame: ModelFrame, st: Structure) -> np.ndarray:
    """:func:`moment_starts` for the frame's own response."""
    return moment_starts(frame, st, frame.y[None, :])[0]
