"""Generalized linear mixed models: conditional modes by PIRLS and the Laplace deviance.

For a family with link g (:mod:`jaxhlm.families.binomial`, ``poisson.py``) and
eta = offset + X beta + Z Lambda u, u ~ N(0, I), lme4's Laplace approximation
(Bates et al., lme4's glmer vignette; MixedModels.jl's ``pirls!`` and ``deviance``) is

    -2 log L(theta, beta) ~ -2 sum_i log p(y_i | mu_i) + ||u*||^2 + log|L_theta|^2,

with u* the conditional mode of u (the minimiser of the penalised deviance
-2 sum log p + ||u||^2) and L_theta L_theta' = Lambda'Z'WZ Lambda + I at the mode's GLM
weights W.  PIRLS finds u* by penalised iteratively reweighted least squares (with
step-halving, :func:`mode`): at the
current eta, W = n (dmu/deta)^2 / V(mu) and the working response
z = eta - offset + (y - mu) / (dmu/deta); the LMM's blocked factor
(:mod:`jaxhlm.kernel`, blocks rebuilt inside jit by :func:`jaxhlm.blocks.values` from
(W, z)) solves the weighted penalised least squares for the next eta.  With beta given
(``nAGQ = 1``: the outer optimisation is over (theta, beta)), X beta is moved into the
offset and the blocks are those of the design without X; with beta solved inside PIRLS
too (``nAGQ = 0``, MixedModels.jl's ``fast = true``) they include X, and the outer
optimisation is over theta alone.  The factor gives the spherical modes u as well as
b = Lambda u (:func:`jaxhlm.kernel.modes`), so ||u||^2 is exact where Lambda is singular.

PIRLS runs a fixed-point ``lax.while_loop`` until the penalised deviance changes by less
than 1e-10 relative, from b = 0 or from a warm start (the modes at a nearby point: the
outer optimiser passes the last accepted point's).  Its derivatives: Newton's method for
the penalised deviance has an iteration map Phi with dPhi/du = 0 at the mode (and,
holding eta, dPhi/deta = 0 there too), so the mode's tangent is that of one Newton step
Phi(u*, x) from the undifferentiated mode (the implicit function theorem's): the loop
runs without tangents, then one differentiated Newton step and the factor at the GLM
weights there (the weights' and the log-determinant's tangents) follow, in reverse mode
(VerbAgg's warm fit: 0.18 s, against 0.56 s with forward mode's 8 tangents).  With the
family's canonical link (logit, log, identity) PIRLS's Fisher scoring is Newton's method;
with another (probit, cloglog, a log-binomial or identity-Poisson model) the step takes
the observed information's weights, -d^2 l_i / deta_i^2 (:func:`_weights`).  (Until
2026-12-04 such links differentiated the Fisher-scoring loop itself, in forward mode: a
warm-started evaluation ran 2-3 iterations from a start without tangents, so its
gradient was off by 1e-4 to 5e-3 relative and the optimiser's line search failed near
the optimum.)  A ``custom_vjp`` hands the gradient to reverse mode, so the optimisers of
:mod:`jaxhlm.optimize` run unchanged.
Everything is pure, jit-compiled and vmap-able.
"""

from __future__ import annotations

from typing import NamedTuple

from .lazy_jax import jax, jnp
import numpy as np

from .blocks import Pattern, values
from .kernel import estimates, factorize_smooth, modes
from .optimize.loop import batched_as
from .structure import Structure

PIRLS_TOL = 1e-10
PIRLS_MAX_ITER = 20
"""PIRLS iterations at most per evaluation (MixedModels.jl's ``pirls!`` stops at 10, from u = 0
every time).  Some evaluations do not meet the tolerance however long they run (the time
grows with the limit while the optima do not change): under vmap a chunk waits for them,
so 1,000 fresh cbpp fits in chunks of 128 took 3.06 s with at most 60, 1.87 s with 30,
1.41 s with 20 and 1.19 s with 10, to identical optima (2026-12-03).  At the optimum,
hitting the limit is the fit's ``PIRLS_DIVERGED`` status."""
PIRLS_HALVINGS = 12
"""At most this many halvings of a PIRLS step that raises the penalised deviance."""


class GLMMData(NamedTuple):
    """The arrays of a GLMM (a pytree): the design's patterns with and without X, the
    rows' X, offset, response (a proportion for binomial), trials, each term's level
    codes and covariates (to form eta = offset + X beta + Z b), and ``base``: None on the
    host; inside a fit's program, -2 sum of the family's ``log_normalizer`` at the response
    (:func:`with_base`; a new response needs ``base=None`` again)."""

    pattern: Pattern        # [Z X] (nAGQ = 0: beta inside PIRLS)
    pattern0: Pattern       # Z alone (beta given)
    X: np.ndarray
    offset: np.ndarray
    y: np.ndarray
    trials: np.ndarray
    codes: tuple
    Z: tuple
    base: object = None


def with_base(data: GLMMData, family) -> GLMMData:
    """``data`` with ``base`` = -2 sum_i log_normalizer(y_i, n_i) (the log-likelihood's
    terms without mu), computed once per fit, outside PIRLS's loops, which evaluate only
    the family's ``loglik_kernel`` (:func:`penalised_deviance`)."""
    if data.base is not None:
        return data
    return data._replace(base=-2.0 * jnp.sum(family.log_normalizer(data.y, data.trials)))


def linear_predictor(beta, b, data: GLMMData):
    """offset + X beta + Z b, row by row, with b per term (ell_k, p_k)."""
    eta = data.offset + data.X @ beta
    for code, Z, bk in zip(data.codes, data.Z, b):
        eta = eta + jnp.sum(Z * bk[code], axis=1)
    return eta


class Mode(NamedTuple):
    """PIRLS's result: the linear predictor, beta, b, the spherical modes u (flat) and
    ||u||^2, the factor's log-determinant, the penalised deviance, iterations; with
    ``with_vcov``, vcov(beta) (beta inside) and b's conditional covariances per term
    (lme4's ``condVar``, beta held at its value)."""

    eta: jnp.ndarray
    beta: jnp.ndarray
    b: list
    u: jnp.ndarray
    usq: jnp.ndarray
    logdet: jnp.ndarray
    pdev: jnp.ndarray
    iterations: jnp.ndarray
    vcov: jnp.ndarray
    b_var: list


def _weights(eta, data: GLMMData, family, observed: bool):
    """Row weights w and working residuals r (z = eta + r) of a PIRLS step at eta: the
    GLM's (Fisher scoring) w = n (dmu/deta)^2 / V(mu), r = (y - mu) / (dmu/deta); or,
    ``observed``, Newton's for the penalised deviance, w = -d^2 l_i / deta^2 and
    r = (dl_i / deta) / w, l_i the row's log-likelihood kernel (its derivatives by
    autodiff: the rows are independent, so the Hessian is diagonal and one jvp of the
    score along ones gives it).  They agree for a canonical link.  A row can have
    curvature 0 and a slope (a Poisson zero under the identity link, a binomial row of
    all successes under the log link), which no working response expresses: its w is
    raised to 1e-10 max |w| (rows of zero trials, padded ones, stay 0): its slope, w r, is
    kept exactly, and the Newton step's matrix moves by 1e-10 relative there, as does the
    tangent.  Negative w (an outlying row under probit or cloglog) are kept: the penalised
    deviance's Hessian at a mode is positive definite, and so is every diagonal block that
    the blocked factor takes."""
    link = family.link
    if not observed:
        mu, d = link.inverse(eta), link.derivative(eta)
        return data.trials * d ** 2 / family.variance(mu), (data.y - mu) / d
    score = jax.grad(lambda e: jnp.sum(family.loglik_kernel(data.y, link.inverse(e), data.trials)))
    s, curvature = jax.jvp(score, (eta,), (jnp.ones_like(eta),))
    floor = 1e-10 * jnp.max(jnp.abs(curvature))
    w = jnp.where(jnp.abs(curvature) < floor, floor, -curvature) * (data.trials > 0)   # padded rows: 0
    return w, s / jnp.where(w != 0, w, 1.0)


def _system(eta, beta, data: GLMMData, st: Structure, family, beta_inside: bool, observed: bool = False):
    """The blocks of PIRLS's weighted least squares at eta (weights W and working
    response z, :func:`_weights`; beta given: z - X beta on Z alone), and the structure
    they are on."""
    w, r = _weights(eta, data, family, observed)
    z = eta - data.offset + r
    if beta_inside:
        pat, s, response = data.pattern, st, z
    else:
        pat, s, response = data.pattern0, _without_x(st), z - data.X @ beta
    return values(pat, s, w, response, xp=jnp), s


def _step(eta, theta, beta, data: GLMMData, st: Structure, family, beta_inside: bool, observed: bool = False):
    """One full PIRLS step from eta (``observed``: Newton's, :func:`_weights`): the next
    eta, beta, b, the spherical u, the log-determinant, and the factor's parts."""
    blocks, s = _system(eta, beta, data, st, family, beta_inside, observed)
    f = factorize_smooth(theta, blocks, s)
    beta_hat, b, u = modes(f, theta, blocks, s)
    beta_new = beta_hat if beta_inside else beta
    return linear_predictor(beta_new, b, data), beta_new, b, u, f.logdet_theta, (f, blocks, s)


def _without_x(st: Structure) -> Structure:
    import dataclasses

    return dataclasses.replace(st, p=0)


def penalised_deviance(eta, u, data: GLMMData, family):
    """-2 sum log p(y | mu(eta)) + ||u||^2, from ``data.base`` (:func:`with_base`) and the
    family's ``loglik_kernel``."""
    kernel = family.loglik_kernel(data.y, family.link.inverse(eta), data.trials)
    return data.base - 2.0 * jnp.sum(kernel) + jnp.sum(u ** 2)


def iterate(theta, beta, data: GLMMData, st: Structure, family, beta_inside: bool, b_start=None):
    """PIRLS's loop (module docstring) from b = ``b_start`` (default 0; with beta given; b,
    unlike u, is the same at every theta of the same Lambda Lambda', so a warm start
    survives the optimiser's folding of theta) or R's starting means (beta inside), halving
    a step that does not lower the penalised deviance (lme4's and MixedModels.jl's
    step-halving; without it PIRLS can oscillate from b = 0 when lambda is large): eta,
    beta and the iterations where it stopped.  Alone, it is lme4's start (:func:`jaxhlm.glmm_fit.default_start`); :func:`mode` finishes it."""
    data = with_base(data, family)
    eta0 = family.link.link(family.start(data.y, data.trials))
    u0 = jnp.zeros(sum(t.q for t in st.terms), eta0.dtype)
    inf = jnp.asarray(jnp.inf, eta0.dtype)
    if beta_inside:          # R's start is no (beta, u): its first step is taken whole
        pdev0 = inf
    elif b_start is None:    # b = 0
        eta0 = eta0 * 0 + data.offset + data.X @ beta
        pdev0 = penalised_deviance(eta0, u0, data, family)
    else:                    # a warm start, the mode at a nearby (theta, beta): first step whole
        eta0 = linear_predictor(beta, jax.lax.stop_gradient(b_start), data)
        pdev0 = inf
    beta0 = jnp.zeros(st.p, eta0.dtype) if beta_inside else beta

    def loop(s):
        eta, beta_s, u, pdev, it, _ = s
        eta_f, beta_f, _, u_f, _, _ = _step(eta, theta, beta_s, data, st, family, beta_inside)
        at = lambda t: (eta + t * (eta_f - eta), beta_s + t * (beta_f - beta_s), u + t * (u_f - u))  # noqa: E731
        dev_at = lambda t: penalised_deviance(at(t)[0], at(t)[2], data, family)  # noqa: E731
        worse = lambda h: (h[1] > pdev + PIRLS_TOL * (1.0 + jnp.abs(pdev))) & (h[2] < PIRLS_HALVINGS)  # noqa: E731
        half = lambda h: (h[0] / 2, dev_at(h[0] / 2), h[2] + 1)  # noqa: E731
        one = jnp.asarray(1.0, eta.dtype)
        t, dev, _ = jax.lax.while_loop(worse, half, batched_as((one, dev_at(one), jnp.asarray(0)), pdev))
        return (*at(t), dev, it + 1, pdev)

    def going(s):
        *_, pdev, it, last = s
        change = ~(jnp.abs(pdev - last) <= PIRLS_TOL * (1.0 + jnp.abs(pdev)))
        return (it < 2) | (change & (it < PIRLS_MAX_ITER))

    init = batched_as((eta0, beta0, u0, pdev0, jnp.asarray(0), inf), eta0)
    eta, beta_c, _, _, it, _ = jax.lax.while_loop(going, loop, init)
    return eta, beta_c, it


def mode(theta, beta, data: GLMMData, st: Structure, family, beta_inside: bool,
         with_vcov: bool = False, b_start=None) -> Mode:
    """The conditional mode: PIRLS's loop (:func:`iterate`), then the steps that give its
    tangents (module docstring); ``with_vcov``: also PIRLS's (X'WX-based) covariance of
    beta (nAGQ = 0's) and b's conditional covariances."""
    data = with_base(data, family)
    theta_d, beta_d = theta, beta
    theta, beta = jax.lax.stop_gradient(theta), jax.lax.stop_gradient(beta)   # the loop runs without tangents
    eta, beta_c, it = iterate(theta, beta, data, st, family, beta_inside, b_start)
    beta_s = beta_d if not beta_inside else beta_c
    # one differentiated Newton step from the (undifferentiated) mode: exact tangents
    # (module docstring; with a link that is not canonical, at the observed information's
    # weights), then the factor at the GLM weights there: the log-determinant's tangent
    eta_f, beta_f, b, u, *_ = _step(eta, theta_d, beta_s, data, st, family, beta_inside,
                                    observed=not family.canonical)
    blocks, s = _system(eta_f, beta_f, data, st, family, beta_inside)
    f = factorize_smooth(theta_d, blocks, s)
    logdet = f.logdet_theta
    if with_vcov:
        cond = estimates(f, theta_d, blocks, s, jnp.asarray(1.0, eta.dtype))
        vcov, b_var = cond.vcov, cond.b_var
    else:
        vcov, b_var = jnp.zeros((0, 0), eta.dtype), []
    usq = jnp.sum(u ** 2)
    return Mode(eta_f, beta_f, b, u, usq, logdet, penalised_deviance(eta_f, u, data, family), it, vcov, b_var)


class Settled(NamedTuple):
    """A fit's conditional modes at its optimum, and what its status reads there: the
    linear predictor, b (per term), the penalised deviance and PIRLS's iterations."""

    eta: jnp.ndarray
    b: list
    pdev: jnp.ndarray
    iterations: jnp.ndarray


def settled(beta, b, u, iterations, data: GLMMData, family) -> Settled:
    """The :class:`Settled` modes (beta given) from PIRLS's b and u at the optimum, without
    iterating or factoring again (b's conditional covariances: :func:`conditional_variances`,
    when asked for)."""
    eta = linear_predictor(beta, b, data)
    return Settled(eta, b, penalised_deviance(eta, u, with_base(data, family), family), iterations)


def conditional_variances(theta, beta, b, data: GLMMData, st: Structure, family) -> list:
    """b's conditional covariances per term (lme4's ``condVar``, beta held) from the factor
    at the modes' GLM weights, Lambda (L L')^{-1} Lambda'.  They are the same at every theta
    of the same Lambda Lambda' (the optimiser's fold).  A program of its own, run when a
    result's ``ranef`` asks: in the fit's program this factor was 0.5-0.7 s of VerbAgg's
    compilation (2-core CPU, 2026-12-03)."""
    eta = linear_predictor(beta, b, data)
    *_, (f, blocks, s) = _step(eta, theta, beta, data, st, family, False)
    return estimates(f, theta, blocks, s, jnp.asarray(1.0, eta.dtype)).b_var


def laplace(theta, beta, data: GLMMData, st: Structure, family, beta_inside: bool, b_start=None):
    """The Laplace deviance -2 log L at (theta, beta) (beta ignored when ``beta_inside``), and
    PIRLS's mode there, from ``b_start`` (the deviance protocol of :func:`objective_fn`)."""
    m = mode(theta, beta, data, st, family, beta_inside, b_start=b_start)
    return m.pdev + m.logdet, m


def objective_fn(data: GLMMData, st: Structure, family, beta_inside: bool, deviance=laplace):
    """The outer criterion as a function ``g(x, b_start) -> (value, (b, u, iterations))`` of
    x = theta (nAGQ = 0) or (theta, beta), with PIRLS started from the modes ``b_start`` (a
    list per term; those at a nearby point: the optimiser's warm start; None: b = 0), the
    modes b and u it reached and its iterations, and a reverse-mode gradient in x (module
    docstring); and ``f(x)``, the value from b = 0.  ``deviance``: :func:`laplace`, or
    adaptive Gauss-Hermite quadrature's (:func:`jaxhlm.quadrature.deviance`), each
    ``(theta, beta, data, st, family, beta_inside, b_start) -> (value, Mode)``."""
    nt = st.ntheta

    def value_and_modes(x, b_start):
        theta, beta = (x, None) if beta_inside else (x[:nt], x[nt:])
        value, m = deviance(theta, jnp.zeros(st.p, x.dtype) if beta is None else beta, data, st,
                            family, beta_inside, b_start)
        return value, (m.b, m.u, m.iterations)

    @jax.custom_vjp
    def g(x, b_start):
        return value_and_modes(x, b_start)

    def fwd(x, b_start):   # one pass of PIRLS and its gradient: reverse mode through two steps
        no_cotangent = jax.tree.map(jnp.zeros_like, b_start)
        out, grad = jax.value_and_grad(value_and_modes, has_aux=True)(x, b_start)
        return out, (grad, no_cotangent)

    def bwd(res, ct):
        grad, no_cotangent = res
        return ct[0] * grad, no_cotangent

    g.defvjp(fwd, bwd)

    def f(x):
        return value_and_modes(x, None)[0]

    return g, f


def zero_modes(st: Structure, dtype) -> tuple:
    """(b, u, iterations) of b = 0: the optimiser's first warm start (:func:`objective_fn`)."""
    return ([jnp.zeros((t.nlevels, t.p), dtype) for t in st.terms],
            jnp.zeros(sum(t.q for t in st.terms), dtype), jnp.asarray(0))
