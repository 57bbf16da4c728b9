"""Newton and BFGS minimisation of a smooth, sign-symmetric objective, inside jit and vmap.

The profiled objective of a mixed model depends on theta only through
Lambda Lambda', so negating any column of a lambda_k leaves it unchanged: it is
smooth for every real theta and even in each diagonal element.  lme4 bounds those
diagonal elements below by 0; here the iteration runs unconstrained and the end point
is *folded* into lme4's half-space (``canonical``: columns with a negative diagonal
negated), which is the same point of the model.  Then, as MixedModels.jl's ``fit!``
does, each diagonal element within ``snap`` of 0 is set exactly to 0 when that does not
raise the objective: a singular fit (Dyestuff2) ends exactly on lme4's boundary.  No
projection is needed, so no coordinate is ever stuck at 0 with a zero gradient.

Each iteration takes a descent direction from a Hessian model and backtracks along it
until the Armijo condition holds; every trial point gets its value and autodiff
gradient together, so the accepted point's gradient costs nothing more.  The Hessian:

- ``"newton"``: forward differences of the gradient at every iterate (n + 1 gradients,
  one ``vmap``); eigenvalues replaced by their absolute values, and a step along the
  most negative curvature where there is one (an interior saddle);
- ``"bfgs"``: the same finite-difference Hessian at the start (eigenvalues made
  positive), then BFGS updates
  (one gradient per iteration; Nocedal and Wright 2006, eq. 6.19), skipped when
  the curvature condition y's > 0 fails.  For large models, whose gradient is costly.

Iteration stops when the predicted decrease g'(H^-1)g / 2 is below ftol (1 + |f|).
Nothing raises: the outcome is an integer :class:`Status`.
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
    LINE_SEARCH_FAILED = 3  # no decrease along the search direction, not at a stationary point


class Minimum(NamedTuple):
    """Result of :func:`minimize`; every field is an array (batched under vmap)."""

    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray        # gradient at x
    iterations: jnp.ndarray
    evaluations: jnp.ndarray  # gradient evaluations, line searches and Hessians included
    status: jnp.ndarray


class _State(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    H: jnp.ndarray            # Hessian model at x
    iteration: jnp.ndarray
    evaluations: jnp.ndarray
    status: jnp.ndarray       # -1 while running


def _fd_hessian(value_and_grad, x, g, rel_step: float = 1e-6):
    """Hessian by forward differences of the autodiff gradient (n gradients, one vmap).

    h_i = rel_step (1 + |x_i|): error O(h) from truncation plus O(eps |g| / h) from
    rounding, about 1e-6 relative, which keeps Newton superlinear; the answer itself
    rests on the exact gradient.
    """
    n = x.shape[0]
    h = rel_step * (1.0 + jnp.abs(x))
    points = x[None, :] + jnp.eye(n, dtype=x.dtype) * h[None, :]
    _, gs = jax.vmap(value_and_grad)(points)
    H = (gs - g[None, :]) / h[:, None]
    return 0.5 * (H + H.T)


def _direction(g, H):
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


def _positive(H):
    """H with its eigenvalues replaced by their absolute values (floored): BFGS's start."""
    w, V = jnp.linalg.eigh(H)
    w = jnp.maximum(jnp.abs(w), 1e-8 * jnp.maximum(jnp.max(jnp.abs(w)), 1.0))
    return (V * w[None, :]) @ V.T


def _bfgs_update(H, s, y):
    """BFGS update of the Hessian model B (Nocedal and Wright 2006, eq. 6.19)."""
    sy = jnp.dot(s, y)
    Bs = H @ s
    sBs = jnp.dot(s, Bs)
    ok = (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y)) & (sBs > 0)
    updated = H - jnp.outer(Bs, Bs) / jnp.where(ok, sBs, 1.0) + jnp.outer(y, y) / jnp.where(ok, sy, 1.0)
    return jnp.where(ok, updated, H)


def _finite(*arrays):
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(a)) for a in arrays])


def minimize(fun: Callable[[jnp.ndarray], jnp.ndarray], x0: jnp.ndarray, *,
             canonical: Callable[[jnp.ndarray], jnp.ndarray] = lambda x: x,
             snap_mask: jnp.ndarray | None = None, method: str = "newton",
             max_iter: int = 100, ftol: float = 1e-12, snap: float = 1e-4,
             max_halvings: int = 40) -> Minimum:
    """Minimise ``fun`` (see the module docstring); pure, for ``jax.jit`` and ``jax.vmap``.

    ``canonical`` maps a point to its equivalent in the canonical half-space (a symmetry
    of ``fun``); ``snap_mask`` marks the coordinates that are set exactly to 0 when within
    ``snap`` of it and that does not raise ``fun``.
    """
    if method not in ("newton", "bfgs"):
        raise ValueError(f"method must be 'newton' or 'bfgs', not {method!r}")
    vg = jax.value_and_grad(fun)
    n = x0.shape[0]
    running = jnp.asarray(-1, jnp.int32)

    def body(s: _State) -> _State:
        d, predicted = _direction(s.g, s.H)
        search = predicted > ftol * (1.0 + jnp.abs(s.f))

        def ls_cond(c):
            alpha, f_new, g_new, k = c
            armijo = f_new <= s.f + 1e-4 * alpha * jnp.dot(s.g, d)
            return search & ~(armijo & _finite(f_new, g_new)) & (k < max_halvings)

        def ls_body(c):
            alpha, _, _, k = c
            alpha = jnp.where(k == 0, alpha, 0.5 * alpha)
            f_new, g_new = vg(s.x + alpha * d)
            return alpha, f_new, g_new, k + 1

        alpha, f_new, g_new, k = lax.while_loop(
            ls_cond, ls_body, (jnp.asarray(1.0, s.x.dtype), jnp.asarray(jnp.inf, s.x.dtype),
                               jnp.zeros_like(s.x), 0))
        accepted = search & _finite(f_new, g_new) & (f_new <= s.f)
        x_new = s.x + alpha * d
        if method == "newton":
            H_new = _fd_hessian(vg, x_new, g_new)
            extra = n
        else:
            H_new = _bfgs_update(s.H, alpha * d, g_new - s.g)
            extra = 0
        finite = _finite(H_new)
        status = jnp.where(
            ~search, Status.CONVERGED,
            jnp.where(~accepted, Status.LINE_SEARCH_FAILED,
                      jnp.where(~finite, Status.NONFINITE,
                                jnp.where(s.iteration + 1 >= max_iter, Status.MAX_ITERATIONS,
                                          running))))
        keep = accepted & finite
        return _State(jnp.where(keep, x_new, s.x), jnp.where(keep, f_new, s.f),
                      jnp.where(keep, g_new, s.g), jnp.where(keep, H_new, s.H),
                      s.iteration + jnp.where(search, 1, 0),
                      s.evaluations + k + jnp.where(accepted, extra, 0),
                      status.astype(jnp.int32))

    f0, g0 = vg(x0)
    H0 = _fd_hessian(vg, x0, g0)
    if method == "bfgs":  # BFGS keeps a positive definite model: start from one
        H0 = _positive(H0)
    status0 = jnp.where(_finite(f0, g0, H0), running, Status.NONFINITE).astype(jnp.int32)
    state = _State(x0, f0, g0, H0, jnp.asarray(0, jnp.int32), jnp.asarray(n + 1, jnp.int32), status0)
    s = lax.while_loop(lambda s: s.status < 0, body, state)
    # A line search that fails where the gradient is negligible is a minimum reached
    # to rounding: call it converged.
    rounding = jnp.max(jnp.abs(s.g)) <= 1e-6 * (1.0 + jnp.abs(s.f))
    status = jnp.where((s.status == Status.LINE_SEARCH_FAILED) & rounding, Status.CONVERGED, s.status)

    x = canonical(s.x)
    mask = jnp.zeros(n, bool) if snap_mask is None else jnp.asarray(snap_mask)

    def snap_one(i, c):
        x, f = c
        near = mask[i] & (x[i] != 0) & (jnp.abs(x[i]) < snap)
        x_try = x.at[i].set(0.0)
        f_try = jnp.where(near, fun(x_try), jnp.inf)
        take = near & (f_try <= f + 1e-10 * (1.0 + jnp.abs(f)))
        return jnp.where(take, x_try, x), jnp.where(take, f_try, f)

    x, f = lax.fori_loop(0, n, snap_one, (x, s.f))
    f, g = vg(x)
    return Minimum(x, f, g, s.iteration, s.evaluations + n + 1, status.astype(jnp.int32))
