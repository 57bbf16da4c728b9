"""Satterthwaite's denominator degrees of freedom for t tests of fixed effects, as lmerTest's
``summary(m, ddf = "Satterthwaite")`` gives them.

The variance parameters are phi = (theta, sigma) (theta alone when sigma is known), and
the fixed effects' covariance at phi is C(phi) = sigma^2 (R_X'R_X)^{-1}(theta), R_X the
fixed-effects block of the blocked Cholesky factor (:mod:`jaxhlm.kernel`).  For a
contrast l (here each coefficient, l = e_k), Satterthwaite's approximation
(Kuznetsova, Brockhoff and Christensen 2017, "lmerTest package: tests in linear mixed
effects models", J. Stat. Softw. 82(13), section 3.1) is

    nu = 2 (l'C l)^2 / (g' A g),   g = d(l'C l)/d phi,   A = 2 H^{-1},

with H the Hessian of the deviance -2 log L(phi) (REML or ML, as the model was fitted),
sigma *not* profiled out:

    -2 log L(theta, sigma) = log|L_theta|^2 [+ log|R_X|^2] - sum log w_i
                             + dof log(2 pi sigma^2) + r^2(theta) / sigma^2,

dof = n - p (REML) or n (ML); its minimum over sigma is the profiled criterion that
:func:`jaxhlm.families.gaussian.objective` minimises.  lmerTest differentiates
numerically (numDeriv's Richardson extrapolation); here g and H are autodiff through a
Cholesky factor of the rest's matrix (JAX's, differentiable to any order).  nu does not
depend on how the variance parameters are written (the delta method is invariant), so
theta's Cholesky-factor parameterisation gives lmerTest's numbers.  As lmerTest does,
A uses only H's eigenvalues above 1e-8 (a boundary fit's flat directions drop out).

For an F test of q contrasts L (q x p), lmerTest's ``contestMD``: with L C L' = P D P'
(eigenvalues d_1 >= ... above sqrt(eps) d_1, q' of them), F = sum_m (P_m'L beta)^2 / d_m / q'
with each row's nu_m as above, and the denominator df 2E / (E - q'), E = sum nu_m/(nu_m - 2)
(2 if any nu_m <= 2; their mean if all are equal).

:func:`parts` is a pure function of (phi, blocks): jit-compiled and vmap-able; the
tests of contrasts (:class:`Satterthwaite`) read it on the host.
"""

from __future__ import annotations

from ..lazy_jax import jax, jnp, lax, scipy_linalg
import numpy as np

from ..blocks import Blocks
from ..families.gaussian import deviance_at
from ..kernel import smooth_parts
from ..precompiled import OLDER_EMITTERS, Precompiled, by_size
from ..residual.whiten import blocks_at
from ..structure import Structure

EIGEN_TOL = 1e-8
"""Eigenvalues of the deviance's Hessian at or below this are left out of A (lmerTest's ``tol``)."""


def _split(phi, blocks: Blocks, st: Structure):
    theta = phi[:st.ntheta]
    sigma = jnp.asarray(blocks.sigma, phi.dtype) if st.known_sigma else phi[st.ntheta]
    return theta, sigma


def deviance_and_vcov(phi, blocks: Blocks, st: Structure, reml: bool):
    """-2 log L(theta, sigma), REML or ML, sigma not profiled (the module docstring), and
    C(phi) = sigma^2 (R_X R_X')^{-1}: lme4's ``vcov(m)`` at the variance parameters phi."""
    theta, sigma = _split(phi, blocks, st)
    blocks = blocks_at(theta, blocks, st)
    logdet_theta, logdet_x, pwrss, Rx = smooth_parts(st.lambdas(theta), blocks, st)
    dev = deviance_at(logdet_theta, logdet_x, pwrss, sigma ** 2, blocks, st, reml)
    Ri = scipy_linalg.solve_triangular(Rx, jnp.eye(st.p, dtype=Rx.dtype), lower=True)
    return dev, sigma ** 2 * Ri.T @ Ri


def deviance(phi, blocks: Blocks, st: Structure, reml: bool):
    """-2 log L(theta, sigma) (:func:`deviance_and_vcov`)."""
    return deviance_and_vcov(phi, blocks, st, reml)[0]


def vcov_beta(phi, blocks: Blocks, st: Structure):
    """C(phi), lme4's ``vcov(m)`` at phi (:func:`deviance_and_vcov`)."""
    return deviance_and_vcov(phi, blocks, st, True)[1]


def varpar(theta, sigma, st: Structure) -> np.ndarray:
    """phi = (theta, sigma), or theta alone when sigma is known (NumPy: a fit's values)."""
    theta = np.asarray(theta, np.float64)
    return theta if st.known_sigma else np.concatenate([theta, np.asarray([sigma], np.float64)])


def parts(phi, blocks: Blocks, st: Structure, reml: bool):
    """What every Satterthwaite test reads at the estimates phi: C = vcov(beta) (p, p), its
    Jacobian J = dC/dphi (p, p, dim phi) and A = 2 H^{-1} over H's eigenvalues above
    :data:`EIGEN_TOL` (dim phi, dim phi).  Pure: jit and vmap it."""
    def first(ph):   # one nested forward pass (dim phi is small)
        out = jax.jacfwd(deviance_and_vcov)(ph, blocks, st, reml)
        return out[0], out[1]

    H, J = jax.jacfwd(first, has_aux=True)(phi)
    V, w = lax.linalg.eigh(0.5 * (H + H.T))
    keep = w > EIGEN_TOL
    A = 2.0 * (V * jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)[None, :]) @ V.T
    return vcov_beta(phi, blocks, st), J, A


def satterthwaite_df(phi, blocks: Blocks, st: Structure, reml: bool):
    """Satterthwaite's df of each coefficient's t test at the estimates phi (module
    docstring): (p,) degrees of freedom, and the coefficients' variances (p,)."""
    C, J, A = parts(phi, blocks, st, reml)
    variance = jnp.diagonal(C)
    g = jnp.einsum("kka->ka", J)
    return 2.0 * variance ** 2 / jnp.einsum("ka,ab,kb->k", g, A, g), variance


_PARTS = Precompiled(parts, (2, 3), "satterthwaite", cpu_options=OLDER_EMITTERS, level=by_size,
                     without_jax=True)

HOST_STEP = 1e-4
"""The host's central differences of the deviance's gradient: steps of this times
max(0.1, |theta_i|), a relative step of 1e-4 down to theta_i = 0.1 (truncation error about
1e-8 relative, rounding about 1e-11)."""


def host_parts(host, theta, sigma, reml: bool):
    """:func:`parts` on the host, for a fit on the host (:mod:`jaxhlm.host_fit`) without a
    residual structure (None otherwise): nothing compiled, JAX not imported.

    The deviance -2 log L(theta, sigma) = l(theta) + dof log(2 pi sigma^2) + r^2(theta) / sigma^2
    (l: the log-determinants) has, from the host fit's closed-form gradients of l and r^2
    (``host.deviance_pieces``), d/dtheta = grad l + grad r^2 / sigma^2,
    d2/dsigma dtheta = -2 grad r^2 / sigma^3 and d2/dsigma^2 = -2 dof / sigma^2 + 6 r^2 / sigma^4;
    its theta-theta block is central differences of the first, and C = sigma^2 F^{-1}(theta)'s
    Jacobian those of F^{-1} in theta and 2 sigma F^{-1} in sigma.  The fit's own 2k
    factorisations, against a program to compile (the 60,000-row crossed design: 0.19 s
    against 2.8 s on an empty cache)."""
    first = host.deviance_pieces(theta, reml)
    if first is None:
        return None
    grad_l, grad_r2, r2, F_inv, dof = first
    theta = np.asarray(theta, dtype=float)
    k = theta.size
    H = np.empty((k + 1, k + 1))
    J = np.empty(F_inv.shape + (k + 1,))
    for i in range(k):
        h = HOST_STEP * max(0.1, abs(theta[i]))
        step = np.zeros(k)
        step[i] = h
        up, down = host.deviance_pieces(theta + step, reml), host.deviance_pieces(theta - step, reml)
        H[:k, i] = (up[0] - down[0] + (up[1] - down[1]) / sigma ** 2) / (2.0 * h)
        J[:, :, i] = sigma ** 2 * (up[3] - down[3]) / (2.0 * h)
    H[:k, :k] = 0.5 * (H[:k, :k] + H[:k, :k].T)
    H[:k, k] = H[k, :k] = -2.0 * grad_r2 / sigma ** 3
    H[k, k] = -2.0 * dof / sigma ** 2 + 6.0 * r2 / sigma ** 4
    J[:, :, k] = 2.0 * sigma * F_inv
    w, V = np.linalg.eigh(H)
    keep = w > EIGEN_TOL
    return sigma ** 2 * F_inv, J, 2.0 * (V * np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)) @ V.T


def f_denominator_df(nu: np.ndarray) -> float:
    """lmerTest's ``get_Fstat_ddf``: the F test's df from its rows' t-test df."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < 1e-8):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - nu.size)


def parts_many(phi, blocks: Blocks, st: Structure, axes: tuple, reml: bool):
    """:func:`parts` of B fits at once: ``phi`` (B, dim phi), ``blocks`` with the batch on
    the axes ``axes`` (:func:`jaxhlm.blocks.response_axes`)."""
    return jax.vmap(lambda ph, b: parts(ph, b, st, reml), in_axes=(0, Blocks(*axes)))(phi, blocks)


_PARTS_MANY = Precompiled(parts_many, (2, 3, 4), "satterthwaite_many", cpu_options=OLDER_EMITTERS,
                          without_jax=True)


class Satterthwaite:
    """Satterthwaite's tests of a fit's contrasts (lmerTest's ``contest1D``, ``contestMD``)
    from its :func:`parts` and beta-hat."""

    name = "Satterthwaite"

    def __init__(self, C, J, A, beta):
        self.C, self.J, self.A = (np.asarray(a, dtype=float) for a in (C, J, A))
        self.beta = np.asarray(beta, dtype=float)

    @classmethod
    def of(cls, result) -> "Satterthwaite":
        """The tests of a single fit (:class:`jaxhlm.LMMResult`): on the host where the fit
        ran there (:func:`host_parts`), else by the compiled :func:`parts`."""
        if result._fitted_by is not None:
            out = host_parts(result._model._host_fit, result.theta, result.sigma, bool(result.reml))
            if out is not None:
                return cls(*out, result.fixef.to_numpy())
        bucketed = result._model.bucketed   # padded exactly: the same deviance and vcov(beta)
        st = bucketed.structure
        phi = np.asarray(varpar(result.theta, result.sigma, st))
        C, J, A = _PARTS.for_structure(st)(phi, bucketed.blocks, st, bool(result.reml))
        return cls(C, J, A, result.fixef.to_numpy())

    @staticmethod
    def arrays_many(theta, sigma, lams, blocks, st: Structure, axes, reml: bool):
        """:func:`parts` of a chunk of fits (their theta (B, ntheta), sigma (B,)), as NumPy."""
        phi = theta if st.known_sigma else np.concatenate([theta, np.asarray(sigma)[:, None]], axis=1)
        out = _PARTS_MANY.for_structure(st)(phi, blocks, st, tuple(axes), bool(reml))
        return [np.asarray(a) for a in out]

    def t_test(self, l: np.ndarray) -> tuple[float, float]:
        """(variance of l'beta, df)."""
        var = float(l @ self.C @ l)
        g = np.einsum("i,ija,j->a", l, self.J, l)
        return var, 2.0 * var ** 2 / float(g @ self.A @ g)

    def f_test(self, L: np.ndarray) -> tuple[float, int, float, float]:
        """(F, NumDF, DenDF, F's scaling 1) of L beta = 0."""
        d, P = np.linalg.eigh(L @ self.C @ L.T)
        d, P = d[::-1], P[:, ::-1]
        q = int(np.sum(d > max(np.sqrt(np.finfo(float).eps) * d[0], 0.0)))
        rows = P[:, :q].T @ L
        nu = np.array([self.t_test(r)[1] for r in rows])
        F = float(np.sum((rows @ self.beta) ** 2 / d[:q]) / q)
        return F, q, f_denominator_df(nu), 1.0
