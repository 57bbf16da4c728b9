"""Starting values of theta from moment estimates of the variance components.

lme4 starts every fit at lambda_k = I (theta = 1 on the diagonal); a crossed model
such as InstEval then spends most of its evaluations getting near the optimum.
Here the diagonal element of each term's intercept column starts at
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
Penicillin and Pastes start at lme4's REML optimum).  Other columns (slopes) and
covariances start as lme4's do, as does every model with prior weights or a known
residual variance.  Negative estimates start at ``FLOOR``; the optimum does not
depend on the start, only the number of evaluations does.
"""

from __future__ import annotations

import numpy as np

from .blocks import Structure
from .frame import INTERCEPT, ModelFrame

FLOOR, CEILING = 0.05, 20.0


def _cross_term(codes_k, nk, codes_l, ell_l) -> float:
    """c_kl = sum_j sum_m n_(kj,lm)^2 / n_kj, from the cross-classification of two terms."""
    cells, counts = np.unique(codes_k.astype(np.int64) * ell_l + codes_l, return_counts=True)
    return float(np.sum(counts.astype(float) ** 2 / nk[cells // ell_l]))


def moment_start(frame: ModelFrame, st: Structure) -> np.ndarray:
    """theta to start the optimiser at (see the module docstring); lme4's start where
    the moment equations do not apply or cannot be solved."""
    theta = st.theta_start()
    first = np.cumsum([0] + [spec.ntheta for spec in st.terms])[:-1]  # each term's lambda_k[0, 0]
    which = [k for k, t in enumerate(frame.terms) if t.spec.columns[0] == INTERCEPT]
    terms = [frame.terms[k] for k in which]
    if not terms or frame.weights is not None or frame.sigma is not None:
        return theta
    y, X = frame.y, frame.X
    n, p = X.shape
    r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0] if p else y - y.mean()
    counts = [np.bincount(t.codes, minlength=t.spec.nlevels).astype(float) for t in terms]
    centring = [float(np.sum(c ** 2)) / n for c in counts]
    K = len(terms)
    A, b = np.zeros((K + 1, K + 1)), np.zeros(K + 1)
    A[0, 0], A[0, 1:], b[0] = n - p, [n - c for c in centring], r @ r
    for a, (t, nk) in enumerate(zip(terms, counts)):
        sums = np.bincount(t.codes, weights=r, minlength=t.spec.nlevels)
        b[a + 1] = np.sum(sums ** 2 / np.maximum(nk, 1.0))
        A[a + 1, 0] = np.count_nonzero(nk) - 1
        for c, u in enumerate(terms):
            cross = n if u is t else _cross_term(t.codes, nk, u.codes, u.spec.nlevels)
            A[a + 1, c + 1] = cross - centring[c]
    try:
        s = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        return theta
    if not np.all(np.isfinite(s)):
        return theta
    sigma2 = max(s[0], 1e-3 * float(r @ r) / n)
    for k, s2 in zip(which, s[1:]):
        theta[first[k]] = np.clip(np.sqrt(max(s2, 0.0) / sigma2), FLOOR, CEILING)
    return theta
