"""The Gaussian response: lme4's ``lmer`` criterion, sigma-hat and the marginal likelihood.

With e ~ N(0, sigma^2 W^{-1}) (prior weights W), the blocked factor of
:mod:`jaxhlm.kernel` gives everything (Bates et al. 2015, J. Stat. Softw. 67(1),
equations 34 and 41):

    ML deviance     d(theta) = log|L_theta|^2 + n (1 + log(2 pi r_yy^2 / n))
    REML criterion  d(theta) = log|L_theta|^2 + log|R_X|^2 + (n-p)(1 + log(2 pi r_yy^2 / (n-p)))

(lme4's ``deviance``/``REMLcrit``), minus sum log w_i (lme4's ``ldW``); sigma^2 is
profiled (r_yy^2 / dof) unless known.  With beta and sigma given instead of profiled,
the same factor gives the marginal log-likelihood that NUTS samples
(:func:`marginal_loglik`), and b's exact Gaussian conditional (:func:`draw_ranef`).
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp
import numpy as np

from ..blocks import Blocks
from ..errors import DataError
from ..kernel import (Conditional, Factor, dense_parts, estimates, factorize, lambdas,
                      rest_b, rest_matrix, split_rest, term1_mode)
from ..residual.whiten import blocks_at
from ..linalg import cholesky, log_diag_sum, solve_lower, solve_upper_t
from ..structure import Structure
from .links import Identity

LOG_2PI = 1.8378770664093453


def _dof(blocks: Blocks, st: Structure, reml):
    """n (ML) or n - p (REML).  ``reml`` may be a traced boolean: one compiled fit serves
    both criteria (a profile's or likelihood-ratio test's ML refit of a REML fit compiles
    nothing new)."""
    return blocks.nobs - st.p * reml


def residual_variance(pwrss, blocks: Blocks, st: Structure, reml: bool):
    """sigma^2 at theta: the known value when the model fixes sigma (``st.known_sigma``;
    the value is ``blocks.sigma``), else the profiled estimate pwrss / dof, with dof = n
    (ML) or n - p (REML)."""
    if st.known_sigma:
        return jnp.asarray(blocks.sigma ** 2, pwrss.dtype)
    return pwrss / _dof(blocks, st, reml)


def criterion(f: Factor, blocks: Blocks, st: Structure, reml: bool, penalty=None,
              theta=None) -> jnp.ndarray:
    """The ML deviance or REML criterion read off a factor, at sigma^2 profiled or known.

    -2 log L(theta, sigma^2) = log|L_theta|^2 [+ log|R_X|^2] - sum log w_i
    + dof log(2 pi sigma^2) + r_yy^2 / sigma^2; its minimum over sigma^2 is the module
    docstring's formula (lme4 subtracts sum log w_i, its ``ldW``, for prior weights).
    A ``penalty`` (:mod:`jaxhlm.bayes.priors`) adds a prior's -2 log-density in theta, as
    blme's ``blmer`` does; sigma is profiled as without it.
    """
    out = deviance_at(f.logdet_theta, f.logdet_x, f.pwrss, residual_variance(f.pwrss, blocks, st, reml),
                      blocks, st, reml)
    return out if penalty is None else out + penalty.deviance(theta, st)


def deviance_at(logdet_theta, logdet_x, pwrss, s2, blocks: Blocks, st: Structure, reml) -> jnp.ndarray:
    """-2 log L(theta, sigma^2) (ML) or the REML criterion at a given sigma^2 = ``s2``, from
    the factor's log-determinants and r_yy^2 (:func:`criterion`'s formula, before profiling)."""
    return (logdet_theta + jnp.where(reml, logdet_x, 0.0) - blocks.logw
            + _dof(blocks, st, reml) * (LOG_2PI + jnp.log(s2)) + pwrss / s2)


def objective(theta: jnp.ndarray, blocks: Blocks, st: Structure, reml: bool,
              penalty=None) -> jnp.ndarray:
    """-2 log-likelihood (ML) or the REML criterion at theta, profiled over beta and sigma
    (sigma known when ``st.known_sigma``); with a ``penalty``, -2 log posterior (blme).

    lme4: ``mkLmerDevfun(...)(theta)``; MixedModels.jl: ``objective(updateL!(setθ!(m, θ)))``.
    """
    blocks = blocks_at(theta, blocks, st)
    return criterion(factorize(theta, blocks, st), blocks, st, reml, penalty, theta)


def conditional(theta: jnp.ndarray, blocks: Blocks, st: Structure, reml: bool,
                penalty=None, modes: bool = True, variances: bool = True) -> Conditional:
    """beta-hat, sigma-hat, vcov(beta) and (``modes``) the conditional modes and
    (``variances``) covariances of b at theta (:func:`jaxhlm.kernel.estimates` at the
    profiled or known sigma^2)."""
    blocks = blocks_at(theta, blocks, st)
    f = factorize(theta, blocks, st)
    return estimates(f, theta, blocks, st, residual_variance(f.pwrss, blocks, st, reml), modes, variances)


def marginal_loglik(theta: jnp.ndarray, beta: jnp.ndarray, sigma: jnp.ndarray,
                    blocks: Blocks, st: Structure) -> jnp.ndarray:
    """log p(y | beta, sigma, theta) with b integrated out (not profiled): NUTS's likelihood.

    -2 log p = log|L_theta|^2 - sum log w_i + n log(2 pi sigma^2) + r^2(beta) / sigma^2, where
    r^2(beta) = min_u ||y - X beta - Z Lambda u||^2 + ||u||^2 (Bates et al. 2015, eq. 26 ff.).
    Moving X beta into the response turns the rest's matrix M into P'MP with
    P = [I 0; 0 -beta; 0 1] (random rows, then y - X beta): its dense factor's last
    element squared is r^2(beta) and its leading part gives log|L_theta|^2.
    """
    blocks = blocks_at(theta, blocks, st)
    C, _, M = rest_matrix(theta, blocks, st)
    mr, p = st.m_rand, st.p
    My = M[:mr, -1] - M[:mr, mr:mr + p] @ beta
    Myy = M[-1, -1] - 2.0 * beta @ M[mr:mr + p, -1] + beta @ M[mr:mr + p, mr:mr + p] @ beta
    Mb = jnp.concatenate([jnp.concatenate([M[:mr, :mr], My[:, None]], axis=1),
                          jnp.concatenate([My, Myy[None]])[None, :]], axis=0)
    _, logdet_r, _, rss = dense_parts(Mb, mr, 0)
    logdet_theta = 2.0 * jnp.sum(log_diag_sum(C)) + logdet_r
    n = blocks.nobs
    return -0.5 * (logdet_theta - blocks.logw + n * (LOG_2PI + 2.0 * jnp.log(sigma)) + rss / sigma ** 2)




def draw_ranef(key: jax.Array, theta: jnp.ndarray, beta: jnp.ndarray, sigma: jnp.ndarray,
               blocks: Blocks, st: Structure) -> list[jnp.ndarray]:
    """One draw of b from its exact Gaussian conditional given (theta, beta, sigma) and y.

    u | beta, sigma, theta, y ~ N((Lambda'Z'Z Lambda + I)^{-1} Lambda'Z'(y - X beta),
    sigma^2 (Lambda'Z'Z Lambda + I)^{-1}), drawn blockwise: first the rest's u with term 1
    integrated out (precision M_RR / sigma^2, the rest's random block after eliminating
    term 1, mean M_RR^{-1} (M_Ry - M_RX beta)), then term 1's levels given it, each
    N(:func:`jaxhlm.kernel.term1_mode`, sigma^2 (C_j C_j')^{-1}).  b = Lambda u, per term (ell_k, p_k).
    """
    blocks = blocks_at(theta, blocks, st)
    C, T, M = rest_matrix(theta, blocks, st)
    lams = lambdas(theta, st)
    mr, p = st.m_rand, st.p
    k_rest, k_1 = jax.random.split(key)
    if mr:
        Lr = cholesky(M[:mr, :mr], dense=True)
        My = M[:mr, -1] - M[:mr, mr:mr + p] @ beta
        mean = solve_upper_t(Lr, solve_lower(Lr, My[:, None], dense=True), dense=True)[:, 0]
        z = jax.random.normal(k_rest, (mr, 1), beta.dtype)
        u_rest = mean + sigma * solve_upper_t(Lr, z, dense=True)[:, 0]
    else:
        u_rest = jnp.zeros((0,), beta.dtype)
    b_rest = rest_b(u_rest, lams, st)
    u1 = term1_mode(C, T, jnp.concatenate([b_rest, beta]), blocks)
    z1 = jax.random.normal(k_1, u1.shape + (1,), beta.dtype)
    u1 = u1 + sigma * solve_upper_t(C, z1)[..., 0]
    return [u1 @ lams[0].T] + split_rest(b_rest, st)


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """The Gaussian family (identity link) as the fit and NUTS use it: hashable, static.

    It also speaks the GLMM families' protocol (:mod:`jaxhlm.families.binomial`) with
    the residual SD ``sigma`` given: y_i ~ N(mu_i, sigma^2 / w_i), w_i the ``trials``
    slot (prior weights).  PIRLS then converges in one step and the Laplace
    approximation is exact, which pins :mod:`jaxhlm.pirls` to the LMM: at
    theta_GLMM = sigma theta_LMM (b = sigma Lambda_LMM u) it gives the LMM's ML deviance.
    """

    sigma: float = 1.0
    name = "gaussian"
    link = Identity()
    objective = staticmethod(objective)
    conditional = staticmethod(conditional)
    marginal_loglik = staticmethod(marginal_loglik)
    draw_ranef = staticmethod(draw_ranef)

    canonical = True

    def variance(self, mu):
        return jnp.full_like(mu, self.sigma ** 2)

    def loglik_kernel(self, y, mu, trials):
        return -0.5 * trials * (y - mu) ** 2 / self.sigma ** 2

    def log_normalizer(self, y, trials):
        """-(log 2 pi + log(sigma^2 / w)) / 2, and 0 for rows of weight 0 (padded rows)."""
        positive = trials > 0
        return jnp.where(positive, -0.5 * (LOG_2PI + jnp.log(self.sigma ** 2 / jnp.where(positive, trials, 1.0))),
                         0.0)

    def start(self, y, trials):
        return y

    def sample(self, key, mu, trials):
        """mu + sigma e / sqrt(w), w the prior weights (``trials``; None: 1)."""
        noise = self.sigma * jax.random.normal(key, mu.shape, mu.dtype)
        return mu + (noise if trials is None else noise / jnp.sqrt(jnp.where(trials > 0, trials, 1.0)))

    def at_bound(self, mu):
        return jnp.asarray(False)

    def check(self, y, trials, name, rows) -> None:
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise DataError(f"Gaussian response {name}: row {rows[bad[0]]!r} has {y[bad[0]]!r}")


GAUSSIAN = Gaussian()
