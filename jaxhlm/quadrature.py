"""Adaptive Gauss-Hermite quadrature of a GLMM's likelihood (lme4's ``nAGQ > 1``).

With one scalar random-effects term ``(1 | g)`` (lme4's rule for nAGQ > 1), the groups'
random effects are independent given (theta, beta), and the likelihood is a product of
one-dimensional integrals over u_j ~ N(0, 1), b_j = lambda u_j:

    L_j = int p(y_j | u) phi(u) du
        ~ sqrt(2) s_j sum_k w_k exp(x_k^2) p(y_j | u_j* + sqrt(2) s_j x_k) phi(u_j* + sqrt(2) s_j x_k)

(Liu & Pierce 1994), with (x_k, w_k) the K-point Gauss-Hermite rule for the weight
exp(-x^2), u_j* the conditional mode from PIRLS (:mod:`jaxhlm.pirls`) and
s_j = (1 + lambda^2 sum_{i in j} W_i z_i^2)^{-1/2} the conditional SD at the mode (the
diagonal of the Laplace factor L_theta; W the GLM weights at the mode).  K = 1 is the
Laplace approximation exactly; as K grows the sum converges to the integral.

**The likelihood's footing.** jaxhlm reports -2 log L = -2 sum_j log L_j with the full
densities p(y | u) (for the binomial, with its log C(n, k) terms), for every K.  lme4
reports the same quantity for nAGQ = 1, but for nAGQ > 1 its ``logLik`` (and devfun) sums
the family's deviance residuals instead of -2 log p: it is -2 log L minus the saturated
model's -2 log-likelihood -2 sum log p(y_i | mu_i = y_i).  For cbpp, lme4 1.1-31 gives
184.05 (Laplace) and 100.01 (nAGQ = 25); the saturated term is 83.957 and jaxhlm's
nAGQ = 25 value is 100.010 + 83.957 = 183.967.  Estimates are unaffected (the term does
not depend on the parameters); for a 0/1 response the two footings coincide.
"""

from __future__ import annotations

from .lazy_jax import jax, jnp
import numpy as np

from .errors import JaxhlmError
from .pirls import GLMMData, mode
from .structure import Structure

LOG_2PI = 1.8378770664093453


def check_scalar_term(st: Structure, nagq: int) -> None:
    """lme4's rule: nAGQ > 1 needs exactly one random-effects term with one column."""
    if len(st.terms) != 1 or st.terms[0].p != 1 or st.residual is not None:
        raise JaxhlmError(f"nagq={nagq}: adaptive Gauss-Hermite quadrature needs a single scalar "
                          "random-effects term such as (1 | g) (lme4's rule); use nagq=1 (Laplace)")


def rule(nagq: int) -> tuple[np.ndarray, np.ndarray]:
    """The Gauss-Hermite nodes and log weights for the weight exp(-x^2), K = nagq points."""
    x, w = np.polynomial.hermite.hermgauss(nagq)
    return x, np.log(w)


def group_loglik(theta, beta, data: GLMMData, st: Structure, family, nagq: int, b_start=None):
    """log L_j per group (module docstring) at (theta, beta), and PIRLS's mode (from
    ``b_start``, :func:`jaxhlm.pirls.mode`)."""
    m = mode(theta, beta, data, st, family, beta_inside=False, b_start=b_start)
    ell = st.terms[0].nlevels
    code, z = data.codes[0], data.Z[0][:, 0]
    lam = st.lambdas(theta)[0][0, 0]
    positive = lam != 0
    u_hat = jnp.where(positive, m.b[0][:, 0] / jnp.where(positive, lam, 1.0), 0.0)
    link = family.link
    d = link.derivative(m.eta)
    w = data.trials * d ** 2 / family.variance(link.inverse(m.eta))
    s = jax.lax.rsqrt(1.0 + lam ** 2 * jax.ops.segment_sum(w * z ** 2, code, num_segments=ell))
    x, logw = (jnp.asarray(a, m.eta.dtype) for a in rule(nagq))
    fixed = data.offset + data.X @ beta
    nodes = u_hat[None, :] + jnp.sqrt(2.0) * s[None, :] * x[:, None]              # (K, ell)
    eta = fixed[None, :] + lam * z[None, :] * nodes[:, code]                       # (K, n)
    ll = jax.vmap(lambda e: jax.ops.segment_sum(
        family.loglik_kernel(data.y, link.inverse(e), data.trials), code, num_segments=ell))(eta)
    terms = logw[:, None] + x[:, None] ** 2 + ll - 0.5 * nodes ** 2
    normalizer = jax.ops.segment_sum(family.log_normalizer(data.y, data.trials), code, num_segments=ell)
    log_l = (jax.scipy.special.logsumexp(terms, axis=0) + normalizer + jnp.log(jnp.sqrt(2.0) * s)
             - 0.5 * LOG_2PI)
    observed = jax.ops.segment_sum((data.trials > 0).astype(m.eta.dtype), code, num_segments=ell) > 0
    return jnp.where(observed, log_l, 0.0), m       # a level without data: log 1 = 0 exactly


def deviance(nagq: int):
    """The AGQ deviance -2 sum_j log L_j, and PIRLS's mode, as a function of (theta, beta,
    data, st, family, beta_inside, b_start) (the protocol of :func:`jaxhlm.pirls.laplace`;
    beta is always given)."""

    def f(theta, beta, data, st, family, beta_inside, b_start=None):
        log_l, m = group_loglik(theta, beta, data, st, family, nagq, b_start)
        return -2.0 * jnp.sum(log_l), m

    return f
