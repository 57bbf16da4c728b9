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

Everything here is a pure function of (phi, blocks): jit-compiled and vmap-able.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.linalg import solve_triangular
from scipy import special

from ..blocks import Blocks
from ..families.gaussian import LOG_2PI
from ..kernel import rest_matrix
from ..linalg import log_diag_sum
from ..precompiled import Precompiled
from ..structure import Structure

EIGEN_TOL = 1e-8
"""Eigenvalues of the deviance's Hessian at or below this are left out of A (lmerTest's ``tol``)."""


def _split(phi, blocks: Blocks, st: Structure):
    theta = phi[:st.ntheta]
    sigma = jnp.asarray(blocks.sigma, phi.dtype) if st.known_sigma else phi[st.ntheta]
    return theta, sigma


def _factor(theta, blocks: Blocks, st: Structure):
    """log|L_theta|^2, log|R_X|^2, r^2 and R_X from a Cholesky factor of the rest's matrix."""
    C, _, M = rest_matrix(theta, blocks, st)
    L = jnp.linalg.cholesky(M)
    log_d = 2.0 * jnp.log(jnp.diagonal(L))
    mr, p = st.m_rand, st.p
    logdet_theta = 2.0 * jnp.sum(log_diag_sum(C)) + jnp.sum(log_d[:mr])
    return logdet_theta, jnp.sum(log_d[mr:mr + p]), L[-1, -1] ** 2, L[mr:mr + p, mr:mr + p]


def deviance(phi, blocks: Blocks, st: Structure, reml: bool):
    """-2 log L(theta, sigma), REML or ML, sigma not profiled (the module docstring)."""
    theta, sigma = _split(phi, blocks, st)
    logdet_theta, logdet_x, pwrss, _ = _factor(theta, blocks, st)
    dof = blocks.nobs - st.p if reml else blocks.nobs
    return (logdet_theta + (logdet_x if reml else 0.0) - blocks.logw
            + dof * (LOG_2PI + 2.0 * jnp.log(sigma)) + pwrss / sigma ** 2)


def vcov_beta(phi, blocks: Blocks, st: Structure):
    """C(phi) = sigma^2 (R_X'R_X)^{-1}: lme4's ``vcov(m)`` at the variance parameters phi."""
    theta, sigma = _split(phi, blocks, st)
    Rx = _factor(theta, blocks, st)[3]
    Ri = solve_triangular(Rx, jnp.eye(st.p, dtype=Rx.dtype), lower=True)
    return sigma ** 2 * Ri.T @ Ri


def varpar(theta, sigma, st: Structure):
    """phi = (theta, sigma), or theta alone when sigma is known."""
    theta = jnp.asarray(theta, jnp.float64)
    return theta if st.known_sigma else jnp.concatenate([theta, jnp.asarray([sigma], jnp.float64)])


def satterthwaite_df(phi, blocks: Blocks, st: Structure, reml: bool):
    """Satterthwaite's df of each coefficient's t test at the estimates phi (module docstring):
    (p,) degrees of freedom, and the coefficients' variances l'C l (p,).  Pure: jit and
    vmap it; :func:`coef_table` runs it as a stored program (:mod:`jaxhlm.precompiled`)."""
    H = jax.hessian(deviance)(phi, blocks, st, reml)
    w, V = jnp.linalg.eigh(0.5 * (H + H.T))
    keep = w > EIGEN_TOL
    A = 2.0 * (V * jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)[None, :]) @ V.T
    variance = jnp.diagonal(vcov_beta(phi, blocks, st))
    g = jax.jacfwd(lambda ph: jnp.diagonal(vcov_beta(ph, blocks, st)))(phi)   # (p, dim phi)
    return 2.0 * variance ** 2 / jnp.einsum("ka,ab,kb->k", g, A, g), variance


_SATTERTHWAITE = Precompiled(satterthwaite_df, (2, 3), "satterthwaite")

DDF = ("satterthwaite", "asymptotic")


def coef_table(result, ddf: str = "satterthwaite") -> pd.DataFrame:
    """The fixed effects' table of a fit (:meth:`jaxhlm.LMMResult.coef_table`)."""
    key = str(ddf).lower().replace("_", "-")
    if key not in DDF:
        from ..errors import JaxhlmError

        known = ", ".join(repr(d) for d in DDF)
        raise JaxhlmError(f"ddf={ddf!r} is not available; use one of {known} "
                          "(Kenward-Roger is not implemented yet)")
    estimate = result.fixef
    se = result.fixef_se
    stat = estimate / se
    if key == "asymptotic":
        return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "z value": stat,
                             "Pr(>|z|)": 2.0 * special.ndtr(-np.abs(stat))})
    bucketed = result._model.bucketed   # padded exactly: the same deviance and vcov(beta)
    phi = np.asarray(varpar(result.theta, result.sigma, bucketed.structure))
    # stored only for jaxhlm's own covariance structures (a user's may change under one repr)
    program = _SATTERTHWAITE if bucketed.structure.builtin else _SATTERTHWAITE.jitted
    df, _ = program(phi, bucketed.blocks, bucketed.structure, bool(result.reml))
    df = pd.Series(np.asarray(df, dtype=float), index=estimate.index)
    return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "df": df, "t value": stat,
                         "Pr(>|t|)": 2.0 * special.stdtr(df, -np.abs(stat))})
