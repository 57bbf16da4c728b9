"""BFGS on the host (NumPy), for many fits at once: for criteria that cost a millisecond
and should not wait for a compiler.

The compiled strategies (:mod:`jaxhlm.optimize.loop`) differentiate the criterion by
autodiff inside one XLA program. :mod:`jaxhlm.group_fit` evaluates lme4's criterion and
its gradient group by group in NumPy instead, so nothing is compiled, for one response or
for a batch of them (``fit_many``, the bootstrap). Every step here is taken by all the
fits still running at once, as the compiled fits step together under vmap, and each fit
keeps its own state. This optimiser follows the compiled BFGS (:mod:`jaxhlm.optimize.bfgs`)
closely:

- unconstrained steps, then the end point folded by ``canonical``: lme4's criterion is
  even in each scale of theta, so the compiled loop's argument holds (its docstring,
  :mod:`jaxhlm.optimize.loop`), and no coordinate is stuck at a bound of 0 where its
  gradient is 0 (a projection onto lme4's bounds stopped an uncorrelated sleepstudy
  fit there, 27 above the optimum);
- the gradient given (``grad``), or else central differences with steps
  h_i = ``STEP`` max(1, |x_i|). The error of these is O(h^2 f''' + eps |f| / h): for
  f ~ 6e4 and curvatures ~ 1e4 (24,000 rows), about 1e-6 in g and 1e-10 in x at the
  optimum;
- a probed starting Hessian: forward differences of the gradient, symmetrised, its
  eigenvalues replaced by their absolute values and floored at ``1e-8`` of the largest
  (as the compiled ``probe``), or one that is given (a refit's);
- backtracking by halves to Armijo's condition (c = 1e-4); BFGS updates when s'y > 0;
- the stopping rule: the predicted decrease g'H^{-1}g / 2 is below ftol (1 + |f|), as
  ``Options.ftol``;
- MixedModels.jl's snap: a coordinate of ``snap_mask`` within ``snap`` of 0 is set to
  exactly 0 where that does not raise f.

lme4's equivalent is ``optimizeLmer`` (BOBYQA: no gradients, bounds at 0).
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
    """What :func:`minimize_many` found (the fields of :class:`jaxhlm.optimize.Minimum`),
    the fits on the first axis; :func:`minimize`'s for one fit, without it."""

    x: np.ndarray
    fun: np.ndarray
    grad: np.ndarray
    iterations: np.ndarray
    evaluations: np.ndarray
    status: np.ndarray
    curvature: np.ndarray


class _Counted:
    """f(X, fits) of the fits at the rows of X, counting each fit's evaluations, +inf where
    a value is not finite; ``grad`` likewise, or central differences of f."""

    def __init__(self, fun, grad, B: int):
        self.fun, self.grad = fun, grad
        self.count = np.zeros(B, dtype=np.int64)

    def __call__(self, X, fits) -> np.ndarray:
        if not len(fits):
            return np.empty(0)
        self.count[fits] += 1
        value = np.asarray(self.fun(X, fits), dtype=float)
        return np.where(np.isfinite(value), value, np.inf)

    def gradient(self, X, fits) -> np.ndarray:
        """The gradients at the rows of X."""
        if not len(fits):
            return np.empty(X.shape)
        if self.grad is not None:
            self.count[fits] += 1
            return np.asarray(self.grad(X, fits), dtype=float)
        h = _steps(X)
        G = np.empty(X.shape)
        for i in range(X.shape[1]):
            E = np.zeros(X.shape)
            E[:, i] = h[:, i]
            G[:, i] = (self(X + E, fits) - self(X - E, fits)) / (2.0 * h[:, i])
        return G


def _steps(X):
    return STEP * np.maximum(1.0, np.abs(X))


def hessian(f: _Counted, X, fits, G) -> np.ndarray:
    """Forward differences of the gradient, symmetrised (m, k, k)."""
    h = _steps(X)
    H = np.empty(X.shape + X.shape[1:])
    for i in range(X.shape[1]):
        E = np.zeros(X.shape)
        E[:, i] = h[:, i]
        H[:, :, i] = (f.gradient(X + E, fits) - G) / h[:, i, None]
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def positive(H) -> np.ndarray:
    """Each H (m, k, k) with its eigenvalues replaced by their absolute values, floored at
    ``FLOOR`` of the largest (:func:`jaxhlm.optimize.base.positive`)."""
    w, V = np.linalg.eigh(H)
    w = np.abs(w)
    w = np.maximum(w, FLOOR * np.maximum(w.max(axis=1, keepdims=True), 1.0))
    return (V * w[:, None, :]) @ np.swapaxes(V, 1, 2)


def minimize(fun, x0, *, grad=None, max_iter: int = 200, ftol: float = 1e-12, canonical=None,
             snap_mask=None, snap: float = 1e-3, hessian0=None) -> HostMinimum:
    """Minimise ``fun`` (a NumPy vector in, a float out) from ``x0``; ``grad(x)``: its
    gradient, where known (else finite differences); ``canonical(x)``: the fold of x.
    :func:`minimize_many` with one fit."""
    out = minimize_many(lambda X, fits: [fun(X[0])], np.asarray(x0, dtype=float)[None],
                        grad=None if grad is None else (lambda X, fits: grad(X[0])[None]),
                        max_iter=max_iter, ftol=ftol, snap_mask=snap_mask, snap=snap, hessian0=hessian0,
                        canonical=None if canonical is None else (lambda X: canonical(X[0])[None]))
    return HostMinimum(*(a[0] for a in out))


def minimize_many(fun, x0, *, grad=None, max_iter: int = 200, ftol: float = 1e-12, canonical=None,
                  snap_mask=None, snap: float = 1e-3, hessian0=None) -> HostMinimum:
    """Minimise B criteria from the rows of ``x0`` (B, k) (the module docstring).
    ``fun(X, fits)``: the values (m,) of the fits numbered ``fits`` (m,) at the rows of X
    (m, k); ``grad(X, fits)``: their gradients (m, k), where known; ``canonical(X)``: the
    same points of the model folded into the optimiser's half-space (lme4's), rows of X
    alike. ``hessian0``: every fit's starting Hessian (k, k) instead of probing one. Values
    that are not finite end in a status, without warnings."""
    x = np.array(x0, dtype=float)
    f = _Counted(fun, grad, x.shape[0])
    with np.errstate(all="ignore"):
        return _minimize(f, x, max_iter, ftol, canonical, snap_mask, snap, hessian0)


def _minimize(f: _Counted, x, max_iter, ftol, canonical, snap_mask, snap, hessian0) -> HostMinimum:
    B, k = x.shape
    everyone = np.arange(B)
    fx = f(x, everyone)
    g = np.full((B, k), np.nan)
    H = np.full((B, k, k), np.nan)
    status = np.full(B, int(Status.NONFINITE))
    iterations = np.zeros(B, dtype=np.int64)
    run = everyone[np.isfinite(fx)]
    g[run] = f.gradient(x[run], run)
    H[run] = hessian(f, x[run], run, g[run]) if hessian0 is None else np.asarray(hessian0, dtype=float)
    run = run[np.isfinite(g[run]).all(axis=1) & np.isfinite(H[run]).all(axis=(1, 2))]
    status[run] = int(Status.MAX_ITERATIONS)
    H[run] = positive(H[run])
    for it in range(1, max_iter + 1):
        if not run.size:
            break
        iterations[run] = it
        xa, fa, ga, Ha = x[run], fx[run], g[run], H[run]
        d = -np.linalg.solve(Ha, ga[:, :, None])[:, :, 0]
        done = -0.5 * (ga * d).sum(1) <= ftol * (1.0 + np.abs(fa))
        status[run[done]] = int(Status.CONVERGED)
        go = ~done
        run, xa, fa, ga, Ha, d = run[go], xa[go], fa[go], ga[go], Ha[go], d[go]
        # backtracking by halves to Armijo's condition, each fit its own step
        t = np.ones(run.size)
        xn, fn = xa.copy(), np.full(run.size, np.inf)
        pending = np.arange(run.size)
        slope = (ga * d).sum(1)
        for _ in range(HALVINGS):
            if not pending.size:
                break
            xt = xa[pending] + t[pending, None] * d[pending]
            ft = f(xt, run[pending])
            ok = ft <= fa[pending] + ARMIJO * t[pending] * slope[pending]
            xn[pending[ok]], fn[pending[ok]] = xt[ok], ft[ok]
            t[pending[~ok]] *= 0.5
            pending = pending[~ok]
        found = np.isfinite(fn)
        status[run[~found]] = int(Status.LINE_SEARCH_FAILED)
        run, xa, ga, Ha, xn, fn = run[found], xa[found], ga[found], Ha[found], xn[found], fn[found]
        gn = f.gradient(xn, run)
        x[run], fx[run], g[run] = xn, fn, gn
        finite = np.isfinite(gn).all(axis=1)
        status[run[~finite]] = int(Status.NONFINITE)
        run, s, y, Ha = run[finite], (xn - xa)[finite], (gn - ga)[finite], Ha[finite]
        sy = (s * y).sum(1)
        update = sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)
        Hs = np.einsum("mij,mj->mi", Ha, s)
        sHs = (s * Hs).sum(1)
        change = (y[:, :, None] * y[:, None, :] / sy[:, None, None]
                  - Hs[:, :, None] * Hs[:, None, :] / sHs[:, None, None])
        H[run] = Ha + np.where(update[:, None, None], change, 0.0)
    if canonical is not None:   # (a coordinate negated: its row and column of H too)
        folded = canonical(x)
        sign = np.where(x != 0, np.sign(folded) * np.sign(x), 1.0)
        moved = everyone[np.isfinite(fx) & (sign < 0).any(axis=1)]
        x, H = folded, H * sign[:, :, None] * sign[:, None, :]
        g[moved] = f.gradient(x[moved], moved)
    if snap_mask is not None:
        for i in np.flatnonzero(snap_mask):
            near = everyone[np.isfinite(fx) & (x[:, i] != 0) & (np.abs(x[:, i]) < snap)]
            if not near.size:
                continue
            xs = x[near].copy()
            xs[:, i] = 0.0
            fs = f(xs, near)
            better = fs <= fx[near]
            near, xs, fs = near[better], xs[better], fs[better]
            if near.size:
                x[near], fx[near] = xs, fs
                g[near] = f.gradient(xs, near)
    return HostMinimum(x, fx, g, iterations, f.count, status, H)
