"""BFGS on the host (NumPy) within lower bounds: for a criterion that costs a millisecond
and should not wait for a compiler.

The compiled strategies (:mod:`jaxhlm.optimize.loop`) differentiate the criterion by
autodiff inside one XLA program. :mod:`jaxhlm.group_fit` evaluates lme4's criterion and
its gradient group by group in NumPy instead, so nothing is compiled. This optimiser
follows the compiled BFGS (:mod:`jaxhlm.optimize.bfgs`) closely:

- the gradient given (``grad``), or else central differences with steps
  h_i = ``STEP`` max(1, |x_i|), forward ones where x_i - h_i would cross its lower
  bound. The error of these is O(h^2 f''' + eps |f| / h): for f ~ 6e4 and curvatures
  ~ 1e4 (24,000 rows), about 1e-6 in g and 1e-10 in x at the optimum;
- a probed starting Hessian: forward differences of the gradient, symmetrised, its
  eigenvalues replaced by their absolute values and floored at ``1e-8`` of the largest
  (as the compiled ``probe``), or one that is given (a refit's);
- steps projected onto the bounds, with the bound constraints whose gradient pushes
  outwards held (an active set); backtracking by halves to Armijo's condition
  (c = 1e-4); BFGS updates when s'y > 0;
- the stopping rule: the predicted decrease g'H^{-1}g / 2 (over the free coordinates) is
  below ftol (1 + |f|), as ``Options.ftol``;
- MixedModels.jl's snap: a coordinate of ``snap_mask`` within ``snap`` of 0 is set to
  exactly 0 where that does not raise f.

lme4's equivalent is ``optimizeLmer`` (BOBYQA: no gradients, bounds).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .loop import Status

STEP = 1e-5
"""Finite-difference step, relative to max(1, |x_i|)."""

ARMIJO = 1e-4
HALVINGS = 40
FLOOR = 1e-8


class HostMinimum(NamedTuple):
    """What :func:`minimize` found (the fields of :class:`jaxhlm.optimize.Minimum`)."""

    x: np.ndarray
    fun: float
    grad: np.ndarray
    iterations: int
    evaluations: int
    status: int
    curvature: np.ndarray


class _Counted:
    """f, counting its evaluations, with +inf where it is not finite."""

    def __init__(self, fun):
        self.fun, self.count = fun, 0

    def __call__(self, x) -> float:
        self.count += 1
        value = float(self.fun(x))
        return value if np.isfinite(value) else np.inf


def _steps(x):
    return STEP * np.maximum(1.0, np.abs(x))


def gradient(f, x, fx: float, lower) -> np.ndarray:
    """Central differences, forward ones at a lower bound (module docstring)."""
    h = _steps(x)
    g = np.empty(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h[i]
        if x[i] - h[i] < lower[i]:
            g[i] = (f(x + e) - fx) / h[i]
        else:
            g[i] = (f(x + e) - f(x - e)) / (2.0 * h[i])
    return g


def hessian(grad, x, g) -> np.ndarray:
    """Forward differences of the gradient ``grad(x)``, symmetrised."""
    h = _steps(x)
    H = np.empty((x.size, x.size))
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h[i]
        H[:, i] = (grad(x + e) - g) / h[i]
    return 0.5 * (H + H.T)


def positive(H) -> np.ndarray:
    """H with its eigenvalues replaced by their absolute values, floored at ``FLOOR`` of the
    largest (:func:`jaxhlm.optimize.base.positive`)."""
    w, V = np.linalg.eigh(H)
    w = np.maximum(np.abs(w), FLOOR * max(float(np.max(np.abs(w))), 1.0))
    return (V * w) @ V.T


def minimize(fun, x0, lower, *, grad=None, max_iter: int = 200, ftol: float = 1e-12, snap_mask=None,
             snap: float = 1e-3, hessian0=None) -> HostMinimum:
    """Minimise ``fun`` (NumPy in, a float out) from ``x0`` subject to x >= ``lower``
    (the module docstring); ``grad(x)``: its gradient, where known (else finite
    differences).  Values that are not finite end in a status, without warnings."""
    f = _Counted(fun)
    gradients = [0]

    def g_of(x, fx=None):
        if grad is None:
            return gradient(f, x, f(x) if fx is None else fx, lower)
        gradients[0] += 1
        return np.asarray(grad(x), dtype=float)

    with np.errstate(all="ignore"):
        out = _minimize(f, g_of, x0, lower, max_iter, ftol, snap_mask, snap, hessian0)
    return out._replace(evaluations=out.evaluations + gradients[0])


def _minimize(f, g_of, x0, lower, max_iter, ftol, snap_mask, snap, hessian0) -> HostMinimum:
    lower = np.asarray(lower, dtype=float)
    x = np.maximum(np.asarray(x0, dtype=float), lower)
    fx = f(x)
    if not np.isfinite(fx):
        return HostMinimum(x, fx, np.full(x.size, np.nan), 0, f.count, int(Status.NONFINITE),
                           np.full((x.size, x.size), np.nan))
    g = g_of(x, fx)
    H = hessian(g_of, x, g) if hessian0 is None else np.asarray(hessian0, dtype=float)
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
        return HostMinimum(x, fx, g, 0, f.count, int(Status.NONFINITE), np.full((x.size, x.size), np.nan))
    H = positive(H)
    status, iterations = Status.MAX_ITERATIONS, 0
    for iterations in range(1, max_iter + 1):
        free = ~((x <= lower) & (g > 0))
        d = np.zeros(x.size)
        if free.any():
            d[free] = -np.linalg.solve(H[np.ix_(free, free)], g[free])
        if -0.5 * (g @ d) <= ftol * (1.0 + abs(fx)):
            status = Status.CONVERGED
            break
        t = 1.0
        for _ in range(HALVINGS):
            xn = np.maximum(x + t * d, lower)
            fn = f(xn)
            if fn <= fx + ARMIJO * min(g @ (xn - x), 0.0):   # (a projection may cut the decrease)
                break
            t *= 0.5
        else:
            status = Status.LINE_SEARCH_FAILED
            break
        gn = g_of(xn, fn)
        if not np.all(np.isfinite(gn)):
            x, fx, g, status = xn, fn, gn, Status.NONFINITE
            break
        s, y = xn - x, gn - g
        sy = s @ y
        if sy > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            Hs = H @ s
            H = H - np.outer(Hs, Hs) / (s @ Hs) + np.outer(y, y) / sy
        x, fx, g = xn, fn, gn
    if snap_mask is not None:
        for i in np.flatnonzero(np.asarray(snap_mask) & (x != 0) & (np.abs(x) < snap)):
            xs = x.copy()
            xs[i] = 0.0
            fs = f(xs)
            if fs <= fx:
                x, fx = xs, fs
                g = g_of(x, fx)
    return HostMinimum(x, fx, g, iterations, f.count, int(status), H)
