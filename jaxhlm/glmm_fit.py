"""The compiled GLMM fit: one program from the data to the optimum, its vcov and status.

:func:`fit_program` is vmap-able over the response (:mod:`jaxhlm.glmm_batch` maps it
over chunks of responses; :class:`jaxhlm.GLMM` runs it once): the start
(:func:`default_start`, lme4's), the outer BFGS over theta (``nagq=0``, beta inside PIRLS)
or (theta, beta) (Laplace, or adaptive Gauss-Hermite quadrature, :mod:`jaxhlm.quadrature`),
the final PIRLS modes, vcov(beta) from the deviance's Hessian as lme4's ``use.hessian``
(central differences of the gradient in the optimiser's loop), and the fit's status
(:func:`status`).  Programs are kept on disk for the next process
(:mod:`jaxhlm.precompiled`, :func:`stored`).
"""

from __future__ import annotations


from .lazy_jax import jnp, lazy_jit

from . import quadrature
from .optimize import Status, minimize
from .pirls import (PIRLS_MAX_ITER, Settled, conditional_variances, iterate, laplace, mode, objective_fn,
                    settled, with_base, zero_modes)
from .precompiled import OLDER_EMITTERS, Precompiled


def deviance_for(nagq: int):
    """-2 log L as a function of (theta, beta, data, st, family, beta_inside): Laplace's
    (nagq 0 or 1) or adaptive Gauss-Hermite quadrature's with nagq nodes."""
    return laplace if nagq <= 1 else quadrature.deviance(nagq)


@lazy_jit(static_argnums=(3, 4, 5, 6))
def deviance_at(theta, beta, data, st, family, inside, nagq):
    """:func:`deviance_for` evaluated, compiled (:meth:`jaxhlm.GLMM.objective`)."""
    return deviance_for(nagq)(theta, beta, data, st, family, inside)[0]


HESSIAN_STEP = 1e-4
"""The relative step of the central differences of the gradient for the deviance's
Hessian (:func:`jaxhlm.optimize.minimize`'s ``hessian``; truncation error ~1e-8,
rounding of the gradient ~1e-6 relative)."""


def fit_program(data, st, family, nagq, max_iter, start=None, hessian0=None):
    """One fit (vmap-able over ``data.y``): the optimum, the final PIRLS modes
    (:class:`jaxhlm.pirls.Settled`), theta, beta, vcov(beta), the status (:func:`status`)
    and the deviance's Hessian at the optimum (for nagq >= 1; a refit starts its BFGS from
    it).  ``start``: x0 = (theta, beta) (theta for nagq=0), or None for lme4's
    (:func:`default_start`);
    ``hessian0``: BFGS's starting Hessian (the program then holds no probing phases), or
    None to probe one at x0.

    With beta given (nagq >= 1), PIRLS starts warm: every evaluation from the modes b of
    the last accepted point (:func:`jaxhlm.optimize.minimize`'s ``warm``), and the
    Hessian's 2k gradients (central differences, steps of :data:`HESSIAN_STEP`, computed
    in the optimiser's loop) from the optimum's (cbpp: 2 iterations instead of 4-5 from
    b = 0); the final modes are the optimum's evaluation's (:func:`jaxhlm.pirls.settled`)."""
    nt = st.ntheta
    scales = jnp.asarray(st.scales())
    data = with_base(data, family)   # once, outside every loop
    if start is None:
        start = default_start(data, st, family, nagq)
    if nagq == 0:    # glmer's nAGQ = 0: theta alone, beta inside PIRLS
        g0, _ = objective_fn(data, st, family, True)
        opt = minimize(lambda x: g0(x, None)[0], start, canonical=st.canonical,
                       snap_mask=scales, method="bfgs", max_iter=max_iter, hessian0=hessian0,
                       probe=hessian0 is None)
        m = mode(opt.x, jnp.zeros(st.p), data, st, family, True, with_vcov=True)
        final = Settled(m.eta, m.b, m.pdev, m.iterations)
        return opt, final, opt.x, m.beta, m.vcov, status(opt, final, family), jnp.zeros((nt, nt), start.dtype)
    # Laplace or AGQ: (theta, beta) together
    g1, _ = objective_fn(data, st, family, False, deviance_for(nagq))
    canonical = lambda x: jnp.concatenate([st.canonical(x[:nt]), x[nt:]])  # noqa: E731
    mask = jnp.concatenate([scales, jnp.zeros(st.p, bool)])
    opt = minimize(lambda x, warm: g1(x, warm[0]), start, canonical=canonical, snap_mask=mask,
                   method="bfgs", max_iter=max_iter, warm=zero_modes(st, start.dtype), hessian0=hessian0,
                   probe=hessian0 is None,
                   hessian=True, hessian_step=HESSIAN_STEP)
    theta, beta = opt.x[:nt], opt.x[nt:]
    m = settled(beta, *opt.warm, data, family)    # PIRLS's modes at the optimum
    # lme4's use.hessian: vcov(beta) = 2 H^-1 (its beta block), H of the deviance
    vcov = 2.0 * jnp.linalg.inv(opt.hessian)[nt:, nt:]
    return opt, m, theta, beta, vcov, status(opt, m, family), opt.hessian


def default_start(data, st, family, nagq):
    """lme4's start: its theta, with (nagq >= 1) beta-hat of PIRLS there (beta inside; the
    loop's, :func:`jaxhlm.pirls.iterate`, without the steps that give tangents).  A single fit and a batch's fresh
    fits start here, so that a batch's fits are the looped ones.  Not the GLM's beta
    (MixedModels.jl's start), or that of glm.fit's first iteration, though either would
    spare the program this PIRLS loop with beta inside (VerbAgg's fit: 0.6-0.8 s of its
    3.5-3.7 s of compilation): vmapped fits wait for the slowest, and 1,000 fresh cbpp
    fits took 1.85-1.92 s warm from glm.fit's first iteration against 0.94-1.04 s from
    here (2-core CPU, 2026-12-03)."""
    theta0 = jnp.asarray(st.theta_start())
    if nagq == 0:
        return theta0
    return jnp.concatenate([theta0, iterate(theta0, jnp.zeros(st.p), data, st, family, True)[1]])


def status(opt, m, family):
    """A fit's status (:class:`jaxhlm.optimize.Status`): PIRLS_DIVERGED when the conditional
    modes at the optimum did not converge (or are not finite), else the optimiser's, then
    SEPARATION when it converged with fitted means numerically at their bounds (R's
    ``glm.fit`` warning "fitted probabilities numerically 0 or 1 occurred")."""
    pirls_ok = jnp.isfinite(m.pdev) & (m.iterations < PIRLS_MAX_ITER)
    bounded = family.at_bound(family.link.inverse(m.eta))
    code = jnp.where(bounded & (opt.status == Status.CONVERGED), Status.SEPARATION, opt.status)
    return jnp.where(pirls_ok, code, Status.PIRLS_DIVERGED).astype(jnp.int32)


SMALL_ROWS = 10_000
"""A single fit of fewer rows than this is compiled without LLVM's optimisations (XLA's
``xla_backend_optimization_level`` 0), larger ones at level 1 (:func:`fit_level`).
VerbAgg's fit program (7,584 rows), older emitters, empty cache, 2-core CPU, 2026-12-03:
XLA's compilation 2.50-2.70 s at the default level 2, 2.30-2.40 s at level 1, 1.41 s at
level 0; the warm run 0.138, 0.133 and 0.580 s.  Level 1 is free; level 0 saves about
1.1 s of compilation whatever the size and costs about 0.06 s per 1,000 rows of run, so
it pays below about 18,000 rows (this threshold leaves a margin)."""


def fit_level(dynamic) -> int:
    """XLA's optimisation level for a single fit of ``data`` (``dynamic[0]``): :data:`SMALL_ROWS`."""
    return 0 if dynamic[0].y.shape[0] < SMALL_ROWS else 1


def single_fit_program(data, st, family, nagq, max_iter):
    """:func:`fit_program` of one fit from lme4's start, then each term's lambda_k at
    theta-hat (``VarCorr``, read without another program)."""
    out = fit_program(data, st, family, nagq, max_iter)
    return out + (tuple(st.lambdas(out[2])),)


FIT = Precompiled(single_fit_program, (1, 2, 3, 4), "glmm_fit", cpu_options=OLDER_EMITTERS, level=fit_level,
                  without_jax=True)
"""One fit, compiled and stored (:meth:`jaxhlm.GLMM.fit`; for a process without ``jax`` too,
:mod:`jaxhlm.stored_run`).  XLA's older CPU emitters
(:data:`jaxhlm.precompiled.OLDER_EMITTERS`) compiled VerbAgg's program in 3.4-3.5 s
instead of 4.7 s, its warm run 0.20-0.24 s instead of 0.16-0.17 s (2026-12-03): a single
fit's first call is mostly compilation.  Batches keep the newer emitters and XLA's default
optimisation."""

CONDITIONAL_VARIANCES = Precompiled(conditional_variances, (4, 5), "glmm_condvar", cpu_options=OLDER_EMITTERS)
"""b's conditional covariances at a fit's modes, compiled and stored (``GLMMResult.ranef``)."""


def own_code(st, family) -> bool:
    """Whether the structure's covariances and the family are jaxhlm's own, whose source
    keys a stored program (:mod:`jaxhlm.precompiled`); a user's class may change under
    the same ``repr``."""
    return st.builtin and type(family).__module__.startswith("jaxhlm.")


def stored(program: Precompiled, st, family):
    """``program`` through the store of compiled programs (:mod:`jaxhlm.precompiled`)
    where :func:`own_code`, else JAX's jit alone."""
    return program if own_code(st, family) else program.jitted
