"""Kenward and Roger's adjusted covariance of beta-hat and their F and t tests, as
pbkrtest computes them (``vcovAdj``, ``KRmodcomp``, ``Lb_ddf``) and lmerTest reports them
(``summary(m, ddf = "Kenward-Roger")``, ``anova(m, ddf = "Kenward-Roger")``).

pbkrtest writes the marginal covariance as a linear combination of known matrices,

    Sigma = sum_i gamma_i G_i,   gamma = (each term's free covariance elements, sigma^2),

G_i = Z_k (I_{ell_k} (x) E_i) Z_k' for an element of term k's covariance and G = I
(here W^{-1}, the prior weights') for sigma^2.  With Phi = (X'Sigma^{-1}X)^{-1} and
P = Sigma^{-1} - Sigma^{-1} X Phi X' Sigma^{-1} (Kenward and Roger 1997, "Small sample
inference for fixed effects from restricted maximum likelihood", Biometrics 53(3)):

    P_i  = -X'Sigma^{-1} G_i Sigma^{-1} X,   Q_ij = X'Sigma^{-1} G_i Sigma^{-1} G_j Sigma^{-1} X,
    I_ij = tr(P G_i P G_j)  (twice the expected information),   W = 2 I^{-1},
    Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi.

pbkrtest forms the n x n Sigma^{-1} for these.  Here each is a derivative of what the
blocked factor (:mod:`jaxhlm.kernel`) gives without it, in the linear parameters gamma:

    F(gamma) = X'Sigma^{-1}X = R_X R_X' / sigma^2:   P_i = dF/dgamma_i,
                                                   Q_ij + Q_ji = d^2F/dgamma_i dgamma_j;
    log|Sigma| + log|F| = (n - p) log sigma^2 + log|L_theta|^2 + log|R_X|^2 + const:
                                                   I_ij = -its second derivative,

since dSigma/dgamma_i = G_i and d P = -P dSigma P.  The blocked factor needs the terms'
lambda_k = chol(Cov_k / sigma^2), whose derivatives exist only where each Cov_k is
positive definite; at a boundary (singular) fit they are taken at Cov_k + 1e-6 sigma^2 I
(:data:`BOUNDARY_FLOOR`): on ``tests/reference/inference/boundary.json`` SEs and df then
agree with pbkrtest's to 1e-6.  The tests of L beta (q = rank L rows) then follow pbkrtest's ``.KR_adjust``:
Theta = L'(L Phi L')^{-1} L, A_1 = sum_ij W_ij tr(Theta Phi P_i Phi) tr(Theta Phi P_j Phi),
A_2 = sum_ij W_ij tr(Theta Phi P_i Phi Theta Phi P_j Phi), and from them the denominator df
and the F statistic's scaling (:meth:`KenwardRoger.f_test`); the t test of one
coefficient is the F test of one row (pbkrtest's ``Lb_ddf``) with SE from Phi_A.

Only REML fits, as lmerTest and pbkrtest.  :func:`adjusted` is a pure function of
(gamma, blocks): jit-compiled and vmap-able; a batch's tables run it.  A single fit whose
rows fall into small independent groups (one grouping factor, factors nested in one, a
small crossed design) takes the same matrices in closed form on the host instead
(:mod:`jaxhlm.independent_groups`: milliseconds, against 0.8-0.9 s of tracing and
compilation for Exam's first table); both end in :func:`adjustment`.
"""

from __future__ import annotations

from ..lazy_jax import jax, jnp, lax
import numpy as np

from ..blocks import Blocks
from ..errors import JaxhlmError
from ..kernel import smooth_parts
from ..precompiled import OLDER_EMITTERS, Precompiled, by_size
from ..structure import Structure

BOUNDARY_FLOOR = 1e-6
"""At a boundary fit (a term's relative covariance Cov_k / sigma^2 with an eigenvalue
below this), the derivatives are taken at Cov_k + BOUNDARY_FLOOR sigma^2 I: chol has no
derivative at a singular matrix, while pbkrtest's Sigma(gamma) is smooth there."""

SINGULAR_TOL = 1e-10
"""pbkrtest inverts I when its smallest absolute eigenvalue exceeds this, else takes its
Moore-Penrose inverse."""


def _covariances(gamma, st: Structure):
    """Each term's covariance (p_k, p_k) from its free elements in gamma, and sigma^2 (last)."""
    covs, k = [], 0
    for t in st.terms:
        rows, cols = (np.array(a, dtype=int) for a in zip(*t.covariance.linear_entries()))
        cov = jnp.zeros((t.p, t.p), gamma.dtype).at[rows, cols].set(gamma[k:k + rows.size])
        covs.append(cov.at[cols, rows].set(gamma[k:k + rows.size]))
        k += rows.size
    return covs, gamma[k]


def _factor(c):
    """chol(c), c a relative covariance; at (near) a singular c, of c + BOUNDARY_FLOOR I
    (the module docstring).  LAPACK's primitives (``lax.linalg``) rather than
    ``jnp.linalg``'s jitted wrappers, which the nested derivatives trace again at each
    level: Exam's first table 0.85 -> 0.80-0.82 s, tracing 0.33 -> 0.30 s."""
    smallest = lax.linalg.eigh(lax.stop_gradient(c))[1][0]   # (vectors, ascending values)
    floor = jnp.where(smallest < BOUNDARY_FLOOR, BOUNDARY_FLOOR, 0.0)
    return lax.linalg.cholesky(c + floor * jnp.eye(c.shape[0], dtype=c.dtype))


def precision_and_log_determinants(gamma, blocks: Blocks, st: Structure):
    """F(gamma) = X'Sigma^{-1}X (p, p) and log|Sigma| + log|F| up to a constant (the
    module docstring)."""
    covs, s2 = _covariances(gamma, st)
    logdet_theta, logdet_x, _, Rx = smooth_parts([_factor(c / s2) for c in covs], blocks, st)
    return Rx @ Rx.T / s2, (blocks.nobs - st.p) * jnp.log(s2) + logdet_theta + logdet_x


def _derivatives(gamma, blocks: Blocks, st: Structure):
    """F, dF/dgamma and d^2F/dgamma^2, and the second derivative of the log-determinants:
    one nested forward pass (gamma has a few elements)."""
    def first(g):
        out = jax.jacfwd(precision_and_log_determinants)(g, blocks, st)
        return out, out

    (d2F, d2logdet), (dF, _) = jax.jacfwd(first, has_aux=True)(gamma)
    return dF, d2F, d2logdet


def adjusted(gamma, blocks: Blocks, st: Structure):
    """(Phi, Phi_A, P (k, p, p), W (k, k)) at the estimates gamma (the module docstring)."""
    F, _ = precision_and_log_determinants(gamma, blocks, st)
    dF, d2F, d2logdet = _derivatives(gamma, blocks, st)
    P = jnp.moveaxis(dF, -1, 0)
    dQ = jnp.moveaxis(d2F, (-2, -1), (0, 1))   # Q_ij + Q_ji
    return adjustment(F, P, dQ, -0.5 * (d2logdet + d2logdet.T), jnp)


def adjustment(F, P, dQ, info, xp=np):
    """(Phi, Phi_A, P, W) from F = X'Sigma^{-1}X, P_i, Q_ij + Q_ji and the expected
    information I_ij = tr(P G_i P G_j) (the module docstring; W is pbkrtest's inverse of I,
    Moore-Penrose where I is singular), with NumPy or ``jax.numpy`` as ``xp``."""
    Phi = xp.linalg.inv(F)
    Phi = 0.5 * (Phi + Phi.T)
    w, V = xp.linalg.eigh(info)
    big = xp.abs(w) > xp.where(xp.min(xp.abs(w)) > SINGULAR_TOL,
                               0.0, xp.sqrt(xp.finfo(w.dtype).eps) * xp.max(xp.abs(w)))
    W = 2.0 * (V * xp.where(big, 1.0 / xp.where(big, w, 1.0), 0.0)[None, :]) @ V.T
    U = 0.5 * xp.einsum("ij,ijab->ab", W, dQ) - xp.einsum("ij,iab,bc,jcd->ad", W, P, Phi, P)
    PhiA = Phi + 2.0 * Phi @ U @ Phi
    return Phi, 0.5 * (PhiA + PhiA.T), P, W


_ADJUSTED = Precompiled(adjusted, (2,), "kenward_roger", cpu_options=OLDER_EMITTERS, level=by_size,
                        without_jax=True)


def linear_parameters(sigma: float, lams, st: Structure) -> np.ndarray:
    """gamma at a fit's sigma and lambda_k: each term's free covariance elements
    (sigma^2 lambda_k lambda_k'), then sigma^2."""
    s2 = float(sigma) ** 2
    out = []
    for t, lam in zip(st.terms, lams):
        lam = np.asarray(lam)
        cov = s2 * lam @ lam.T
        out += [cov[r, c] for r, c in t.covariance.linear_entries()]
    return np.array(out + [s2])


def adjusted_many(gamma, blocks: Blocks, st: Structure, axes: tuple):
    """:func:`adjusted` of B fits at once: ``gamma`` (B, k), ``blocks`` with the batch on
    the axes ``axes`` (:func:`jaxhlm.blocks.response_axes`)."""
    return jax.vmap(lambda g, b: adjusted(g, b, st), in_axes=(0, Blocks(*axes)))(gamma, blocks)


_ADJUSTED_MANY = Precompiled(adjusted_many, (2, 3), "kenward_roger_many", cpu_options=OLDER_EMITTERS,
                             without_jax=True)


def _check(result_reml: bool, st: Structure) -> None:
    if not result_reml:
        raise JaxhlmError("Kenward-Roger's method is only available for REML fits (as in "
                          "lmerTest and pbkrtest); refit with reml=True")
    if st.known_sigma:
        raise JaxhlmError("Kenward-Roger's method needs the residual variance estimated; this "
                          "model's is known (residual_variance=)")
    if st.residual is not None:
        raise JaxhlmError("Kenward-Roger's method needs a covariance linear in its parameters (as "
                          "pbkrtest); a residual correlation or variance function is not; use "
                          "ddf='satterthwaite'")


class KenwardRoger:
    """Kenward-Roger tests of a fit's contrasts (see the module docstring) from its
    :func:`adjusted` arrays and beta-hat."""

    name = "Kenward-Roger"

    def __init__(self, Phi, PhiA, P, W, beta):
        self.Phi, self.PhiA, self.P, self.W = (np.asarray(a, dtype=float) for a in (Phi, PhiA, P, W))
        self.beta = np.asarray(beta, dtype=float)
        if not all(np.all(np.isfinite(a)) for a in (self.PhiA, self.P, self.W)):
            raise JaxhlmError(
                "Kenward-Roger's adjustment is not available at this boundary (singular) fit: a "
                "random-effects covariance is singular, where the derivatives it needs do not exist "
                "in the blocked factor; use ddf='satterthwaite'")

    @classmethod
    def of(cls, result) -> "KenwardRoger":
        """The tests of a single fit (:class:`jaxhlm.LMMResult`)."""
        _check(result.reml, result._model.structure)
        model = result._model
        gamma = linear_parameters(result.sigma, result._lams, model.structure)
        groups = model.independent_groups
        if groups is not None:   # small independent groups: on the host, nothing to compile
            return cls(*adjustment(*groups.kenward_roger(gamma, BOUNDARY_FLOOR)), result.fixef.to_numpy())
        bucketed = model.bucketed
        out = _ADJUSTED.for_structure(bucketed.structure)(gamma, bucketed.blocks, bucketed.structure)
        return cls(*out, result.fixef.to_numpy())

    @staticmethod
    def arrays_many(theta, sigma, lams, blocks, st: Structure, axes, reml: bool):
        """:func:`adjusted` of a chunk of fits (sigma (B,), lams per term (B, p_k, p_k)), as NumPy."""
        _check(reml, st)
        gamma = np.stack([linear_parameters(s, [lam[b] for lam in lams], st)
                          for b, s in enumerate(np.asarray(sigma))])
        out = _ADJUSTED_MANY.for_structure(st)(gamma, blocks, st, tuple(axes))
        return [np.asarray(a) for a in out]

    def _a12(self, L: np.ndarray) -> tuple[float, float]:
        Theta = L.T @ np.linalg.solve(L @ self.Phi @ L.T, L)
        u = np.einsum("ab,bc,kcd,de->kae", Theta, self.Phi, self.P, self.Phi)
        tr = np.einsum("kaa->k", u)
        A1 = float(tr @ self.W @ tr)
        A2 = float(np.einsum("ij,iab,jba->", self.W, u, u))
        return A1, A2

    def f_test(self, L: np.ndarray) -> tuple[float, int, float, float]:
        """(F unscaled, NumDF, DenDF, F's scaling) of L beta = 0 (pbkrtest's ``.KR_adjust``):
        the F statistic is scaling x F unscaled, on (NumDF, DenDF) degrees of freedom."""
        q = int(np.linalg.matrix_rank(L))
        A1, A2 = self._a12(L)
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3.0 * q + 2.0 * (1.0 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        V0 = 1.0 + c1 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        V1, V2 = 1.0 - c2 * B, 1.0 - c3 * B
        x = 1.0 - A2 / q
        ratio = 1.0 if abs(x) < 1e-14 and abs(V1) < 1e-14 else x / V1   # pbkrtest's .divZero
        rho = ratio ** 2 * V0 / V2 / q
        df2 = 4.0 + (q + 2) / (q * rho - 1.0)
        scaling = 1.0 if abs(df2 - 2.0) < 1e-2 else df2 * (1.0 - A2 / q) / (df2 - 2.0)
        Lb = L @ self.beta
        F = float(Lb @ np.linalg.solve(L @ self.PhiA @ L.T, Lb)) / q
        return F, q, df2, scaling

    def t_test(self, l: np.ndarray) -> tuple[float, float]:
        """(adjusted variance of l'beta, df) (lmerTest's KR ``contest1D``: pbkrtest's ``Lb_ddf``)."""
        return float(l @ self.PhiA @ l), self.f_test(l[None, :])[2]
