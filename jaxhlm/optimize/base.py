"""The protocol of an optimiser strategy: how the loop of :mod:`jaxhlm.optimize.loop` models
the objective's curvature.

The loop (one ``lax.while_loop``; line search, folding, snapping, statuses) is shared;
a strategy says

- ``evaluate(value_and_grad, x, steps)``: f, g, a Hessian where it computes one (None
  otherwise) and fun's warm start at a candidate point x, given ``value_and_grad(x) ->
  ((f, warm), g)`` (:func:`jaxhlm.optimize.minimize`'s ``warm``);
- ``probes``: whether the loop first builds a finite-difference Hessian at x0 one
  column per step (one gradient each, so the compiled program keeps one copy of the
  gradient);
- ``init(n, dtype)``: the strategy's state before the first iterate (a pytree);
- ``start(state, H0)``: the state once the probed Hessian H0 is known (``probes`` only);
- ``update(state, x, g, s, y, H_c)``: the state at a trial point x with gradient g,
  reached by the step s = x - x_prev with gradient change y (H_c: ``evaluate``'s
  Hessian there, or None); the loop keeps it only if the point is accepted;
- ``direction(state, g)``: a descent direction d and the predicted decrease
  (-g'd, or more where a negative curvature is followed);
- ``curvature(state)``: the state's Hessian model as an (n, n) matrix, or None for a
  strategy without one (a refit's starting Hessian, ``Minimum.curvature``);
- ``cost(n)``: gradient evaluations per loop step.

Strategies are frozen dataclasses: static under jit, named in the key of compiled fits.
To add one, write a new file with such a class and register it in
:data:`jaxhlm.optimize.STRATEGIES` (or pass the instance as ``Options(method=...)``).
"""

from __future__ import annotations

from ..lazy_jax import jnp

from ..linalg import cholesky, solve_lower, solve_upper_t


def eigen_direction(g, H):
    """Descent direction and predicted decrease from a possibly indefinite Hessian H.

    The Newton step with H's eigenvalues replaced by their absolute values (floored),
    plus a unit step along the eigenvector of a negative eigenvalue, signed to go down
    the gradient, so that a saddle point is left rather than converged to.
    """
    w, V = jnp.linalg.eigh(H)
    scale = jnp.maximum(jnp.max(jnp.abs(w)), 1.0)
    d = -V @ ((V.T @ g) / jnp.maximum(jnp.abs(w), 1e-8 * scale))
    v, w0 = V[:, 0], w[0]
    negative = w0 < -1e-8 * scale
    sign = jnp.where(jnp.dot(g, v) > 0, -1.0, 1.0)
    d = d + jnp.where(negative, sign * v, 0.0)
    return d, -jnp.dot(g, d) + jnp.where(negative, 0.5 * jnp.abs(w0), 0.0)


def spd_direction(g, H):
    """Newton direction -H^{-1} g and predicted decrease g'H^{-1}g for a symmetric positive
    definite H (BFGS keeps its matrix so), by a Cholesky factor: for a small theta that is a
    few unrolled operations (:mod:`jaxhlm.linalg`), not an eigendecomposition, which
    under vmap costs a batch's program about 0.5 s of compilation (sleepstudy, chunks of
    128).  Where the factor fails (H numerically indefinite), steepest descent."""
    L = cholesky(H, dense=True)
    d = -solve_upper_t(L, solve_lower(L, g[:, None], dense=True), dense=True)[:, 0]
    ok = jnp.all(jnp.isfinite(d)) & (jnp.dot(g, d) < 0)
    d = jnp.where(ok, d, -g)
    return d, -jnp.dot(g, d)


def positive(H):
    """H with its eigenvalues replaced by their absolute values (floored)."""
    w, V = jnp.linalg.eigh(H)
    w = jnp.maximum(jnp.abs(w), 1e-8 * jnp.maximum(jnp.max(jnp.abs(w)), 1.0))
    return (V * w[None, :]) @ V.T
