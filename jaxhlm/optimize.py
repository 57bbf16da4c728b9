"""Bound-constrained Newton minimisation of a smooth function, inside jit and vmap.

The profiled objective of a mixed model has few parameters (theta, a handful) and is
cheap to differentiate, so each iteration uses the autodiff gradient and the Hessian
(forward differences of that gradient, see ``_value_grad_hess``).  The method is a projected Newton method
(Bertsekas 1982, "Projected Newton methods for optimization problems with simple
constraints", SIAM J. Control Optim. 20(2)):

1. the active set holds the coordinates at their lower bound whose gradient pushes
   outwards (theta_i = lower_i and g_i > 0); they stay fixed this step;
2. on the free coordinates, the Newton direction of the Hessian with its eigenvalues
   made positive (|lambda|, floored at 1e-8 of the largest) so that it always descends;
3. a backtracking line search along the projected path theta(alpha) =
   max(lower, theta + alpha d) with the Armijo condition; the projection puts a
   coordinate exactly on its bound.

When the predicted decrease is below ``ftol (1 + |f|)``, the iteration stops.  Then,
as MixedModels.jl's ``fit!`` does, each bounded coordinate within ``snap`` of its
bound is set exactly onto it if that does not raise the objective: a singular fit
(lme4's Dyestuff2, theta = 0) ends on the boundary, as lme4's bound-constrained
BOBYQA does.  Nothing here raises: the outcome is an integer status (``Status``).
"""

from __future__ import annotations

import enum
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Status(enum.IntEnum):
    """Outcome of a minimisation (an int32 array under jit/vmap)."""

    CONVERGED = 0
    MAX_ITERATIONS = 1
    NONFINITE = 2          # objective or gradient not finite at the start or along the way
    LINE_SEARCH_FAILED = 3  # no decrease along the Newton direction, not at a stationary point


class Minimum(NamedTuple):
    """Result of :func:`minimize`; every field is an array (batched under vmap)."""

    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray          # gradient at x
    projected_grad: jnp.ndarray  # x - max(lower, x - grad): zero at a constrained minimum
    iterations: jnp.ndarray
    evaluations: jnp.ndarray   # objective evaluations, line searches included
    status: jnp.ndarray


class _State(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray        # objective at x
    g: jnp.ndarray        # gradient at x (from the last Newton iteration)
    iteration: jnp.ndarray
    evaluations: jnp.ndarray
    status: jnp.ndarray   # -1 while running


def _value_grad_hess(fun, rel_step: float = 1e-6):
    """f, its autodiff gradient, and the Hessian by forward differences of that gradient.

    The n + 1 gradients come from one ``vmap`` of ``value_and_grad``, so the compiled
    program holds one copy of the gradient (an exact ``jacfwd`` Hessian compiles to
    about twice the code and, on large models, costs more).  With
    h_i = rel_step (1 + |x_i|) the Hessian's error is O(h) from truncation plus
    O(eps |g| / h) from rounding, about 1e-6 relative: Newton's steps stay
    superlinearly convergent, and the answer rests on the exact gradient.
    """
    def vgh(x):
        n = x.shape[0]
        h = rel_step * (1.0 + jnp.abs(x))
        points = jnp.concatenate([x[None], x[None, :] + jnp.eye(n, dtype=x.dtype) * h[None, :]])
        f, g = jax.vmap(jax.value_and_grad(fun))(points)
        H = (g[1:] - g[0][None, :]) / h[:, None]
        return f[0], g[0], 0.5 * (H + H.T)

    return vgh


def _finite(*arrays):
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(a)) for a in arrays])


def _newton_direction(g, H, free, at_bound):
    """Descent direction and predicted decrease from a (possibly indefinite) Hessian.

    On the free coordinates: the Newton step with the Hessian's eigenvalues replaced by
    their absolute values (floored), plus, where the Hessian has a negative eigenvalue,
    a unit step along its eigenvector v.  That second part matters at a saddle with
    zero gradient: the profiled objective is even in each diagonal element of lambda,
    so a variance component projected onto 0 has g_i = 0 there even when moving off 0
    lowers the objective.  v's sign makes it go down the gradient, or, with no gradient
    along it, into the feasible side of the coordinates at their bound.
    """
    n = g.shape[0]
    H = jnp.where(free[:, None] & free[None, :], H, jnp.eye(n, dtype=H.dtype))
    g = jnp.where(free, g, 0.0)
    w, V = jnp.linalg.eigh(H)
    scale = jnp.maximum(jnp.max(jnp.abs(w)), 1.0)
    d = -V @ ((V.T @ g) / jnp.maximum(jnp.abs(w), 1e-8 * scale))
    v, w0 = V[:, 0], w[0]
    negative = w0 < -1e-8 * scale
    gv = jnp.dot(g, v)
    into = jnp.sum(jnp.where(at_bound, v, 0.0))
    sign = jnp.where(jnp.abs(gv) > 1e-10 * (1.0 + jnp.linalg.norm(g)), -jnp.sign(gv),
                     jnp.where(into < 0, -1.0, 1.0))
    d = d + jnp.where(negative, sign * v, 0.0)
    d = jnp.where(free, d, 0.0)
    predicted = -jnp.dot(g, d) + jnp.where(negative, 0.5 * jnp.abs(w0), 0.0)
    return d, predicted


def minimize(fun: Callable[[jnp.ndarray], jnp.ndarray], x0: jnp.ndarray, lower: jnp.ndarray, *,
             max_iter: int = 100, ftol: float = 1e-12, snap: float = 1e-4,
             max_halvings: int = 40) -> Minimum:
    """Minimise ``fun`` subject to ``x >= lower`` (entries of ``lower`` may be -inf).

    Pure and traceable: call it inside ``jax.jit`` and ``jax.vmap``.  Each of the
    objective, its gradient and its Hessian is traced once, which keeps compilation short.
    """
    vgh = _value_grad_hess(fun)
    bounded = jnp.isfinite(lower)
    running = jnp.asarray(-1, jnp.int32)

    def project(x):
        return jnp.maximum(x, lower)

    def body(s: _State) -> _State:
        f, g, H = vgh(s.x)
        finite = _finite(f, g, H)
        at_bound = bounded & (s.x <= lower)
        free = ~(at_bound & (g > 0))
        d, predicted = _newton_direction(g, H, free, at_bound)
        small = predicted <= ftol * (1.0 + jnp.abs(f))
        search = finite & ~small

        # Backtracking along the projected path; the first trial is the full step.
        def ls_cond(c):
            alpha, f_new, k = c
            armijo = f_new <= f + 1e-4 * jnp.dot(g, project(s.x + alpha * d) - s.x)
            return search & ~(armijo & jnp.isfinite(f_new)) & (k < max_halvings)

        def ls_body(c):
            alpha, _, k = c
            alpha = jnp.where(k == 0, alpha, 0.5 * alpha)
            return alpha, fun(project(s.x + alpha * d)), k + 1

        alpha, f_new, k = lax.while_loop(
            ls_cond, ls_body, (jnp.asarray(1.0, s.x.dtype), jnp.asarray(jnp.inf, s.x.dtype), 0))
        accepted = search & jnp.isfinite(f_new) & (f_new <= f)
        status = jnp.where(
            ~finite, Status.NONFINITE,
            jnp.where(small, Status.CONVERGED,
                      jnp.where(~accepted, Status.LINE_SEARCH_FAILED,
                                jnp.where(s.iteration + 1 >= max_iter, Status.MAX_ITERATIONS,
                                          running))))
        x_next = jnp.where(accepted, project(s.x + alpha * d), s.x)
        f_next = jnp.where(accepted, f_new, f)
        return _State(x_next, f_next, g, s.iteration + jnp.where(search, 1, 0),
                      s.evaluations + k + 1, status.astype(jnp.int32))

    x0 = project(x0)
    state = _State(x0, jnp.asarray(jnp.inf, x0.dtype), jnp.zeros_like(x0),
                   jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32), running)
    s = lax.while_loop(lambda s: s.status < 0, body, state)
    x, f = s.x, s.f
    # A line search that fails where the projected gradient is negligible is a minimum
    # reached to rounding: call it converged.
    rounding = jnp.max(jnp.abs(x - project(x - s.g))) <= 1e-6 * (1.0 + jnp.abs(f))
    status = jnp.where((s.status == Status.LINE_SEARCH_FAILED) & rounding, Status.CONVERGED, s.status)

    # Snap the bounded coordinates within `snap` of their bound onto it, one at a time,
    # when that does not raise the objective (MixedModels.jl's fit!).
    def snap_one(i, c):
        x, f = c
        near = bounded[i] & (x[i] > lower[i]) & (x[i] - lower[i] < snap)
        x_try = x.at[i].set(lower[i])
        f_try = jnp.where(near, fun(x_try), jnp.inf)
        take = near & (f_try <= f + 1e-10 * (1.0 + jnp.abs(f)))
        return jnp.where(take, x_try, x), jnp.where(take, f_try, f)

    x, f = lax.fori_loop(0, x.shape[0], snap_one, (x, f))
    f, g = jax.value_and_grad(fun)(x)
    pg = x - project(x - g)
    return Minimum(x, f, g, pg, s.iteration, s.evaluations + x.shape[0] + 1,
                   status.astype(jnp.int32))
