"""BFGS on the host (NumPy), for many fits at once: for criteria that cost a millisecond
and should not wait for a compiler.

The compiled strategies (:mod:`jaxhlm.optimize.loop`) differentiate the criterion by
autodiff inside one XLA program. :mod:`jaxhlm.group_fit` evaluates lme4's criterion and
its gradient group by group in NumPy instead, so nothing is compiled, for one response or
for a batch of them (``fit_many``, the bootstrap), and :mod:`jaxhlm.blocked_fit` by the
blocked factor of a crossed design. Every step here is taken by all the
fits still running at once, as the compiled fits step together under vmap, and each fit
keeps its own state. This optimiser follows the compiled BFGS (:mod:`jaxhlm.optimize.bfgs`)
closely:

- unconstrained steps, then the end point folded by ``canonical``: lme4's criterion is
  even in each scale of theta, so the compiled loop's argument holds (its docstring,
  :mod:`jaxhlm.optimize.loop`), and no coordinate is stuck at a bound of 0 where its
  gradient is 0 (a projection onto lme4's bounds stopped an uncorrelated sleepstudy
  fit there, 27 above the optimum);
- each point's value and gradient from one call (``evaluate``), as the compiled loop
  evaluates every trial point;
- a probed starting Hessian: forward differences of the gradient, symmetrised, its
  eigenvalues replaced by their absolute values and floored at ``1e-8`` of the largest
  (as the compiled ``probe``), or one that is given (a refit's);
- backtracking by halves to Armijo's condition (c = 1e-4); a search stalls when out of
  halvings or when the next trial's first-order decrease is below f's rounding, and
  ends the fit as converged where the gradient is at rounding level, as the compiled
  loop's; BFGS updates when s'y > 0;
- the stopping rule: the predicted decrease g'H^{-1}g / 2 is below ftol (1 + |f|), as
  ``Options.ftol``;
- MixedModels.jl's snap: a coordinate of ``snap_mask`` within ``snap`` of 0 is set to
  exactly 0 where that does not raise f beyond its rounding (1e-10 (1 + |f|)), as the
  compiled loop's.

lme4's equivalent is ``optimizeLmer`` (BOBYQA: no gradients, bounds at 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .loop import Status

STEP = 1e-5
"""The probe's finite-difference step, relative to max(1, |x_i|)."""

ARMIJO = 1e-4
HALVINGS = 40
FLOOR = 1e-8
ROUNDING = 1e-14
"""A trial step whose first-order decrease is below this of 1 + |f| (about 50 ulps) is lost
in f's rounding: the search stalls there."""


class HostMinimum(NamedTuple):
    """What :func:`minimize_many` found (the fields of :class:`jaxhlm.optimize.Minimum`),
    the fits on the first axis."""

    x: np.ndarray
    fun: np.ndarray
    grad: np.ndarray
    iterations: np.ndarray
    evaluations: np.ndarray
    status: np.ndarray
    curvature: np.ndarray


class _Counted:
    """``evaluate(X, fits)`` of the fits numbered ``fits`` at the rows of X: (values (m,),
    gradients (m, k)), counting each fit's evaluations; +inf where a value is not finite."""

    def __init__(self, evaluate, B: int):
        self.evaluate = evaluate
        self.count = np.zeros(B, dtype=np.int64)

    def __call__(self, X, fits):
        if not len(fits):
            return np.empty(0), np.empty(X.shape)
        self.count[fits] += 1
        value, grad = self.evaluate(X, fits)
        value = np.asarray(value, dtype=float)
        return np.where(np.isfinite(value), value, np.inf), np.asarray(grad, dtype=float)


def hessian(f: _Counted, X, fits, G) -> np.ndarray:
    """Forward differences of the gradient, steps ``STEP`` max(1, |x_i|), symmetrised
    (m, k, k)."""
    h = STEP * np.maximum(1.0, np.abs(X))
    H = np.empty(X.shape + X.shape[1:])
    for i in range(X.shape[1]):
        E = np.zeros(X.shape)
        E[:, i] = h[:, i]
        H[:, :, i] = (f(X + E, fits)[1] - G) / h[:, i, None]
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def positive(H) -> np.ndarray:
    """Each H (m, k, k) with its eigenvalues replaced by their absolute values, floored at
    ``FLOOR`` of the largest (:func:`jaxhlm.optimize.base.positive`)."""
    w, V = np.linalg.eigh(H)
    w = np.abs(w)
    w = np.maximum(w, FLOOR * np.maximum(w.max(axis=1, keepdims=True), 1.0))
    return (V * w[:, None, :]) @ np.swapaxes(V, 1, 2)


def minimize_many(evaluate, x0, *, max_iter: int = 200, ftol: float = 1e-12, canonical=None,
                  snap_mask=None, snap: float = 1e-3, hessian0=None) -> HostMinimum:
    """Minimise B criteria from the rows of ``x0`` (B, k) (the module docstring).
    ``evaluate(X, fits)``: the values (m,) and gradients (m, k) of the fits numbered
    ``fits`` (m,) at the rows of X (m, k); ``canonical(X)``: the same points of the model
    folded into the optimiser's half-space (lme4's), rows of X alike. ``hessian0``: every
    fit's starting Hessian (k, k) instead of probing one. Values that are not finite end
    in a status, without warnings."""
    x = np.array(x0, dtype=float)
    f = _Counted(evaluate, x.shape[0])
    with np.errstate(all="ignore"):
        return _minimize(f, x, max_iter, ftol, canonical, snap_mask, snap, hessian0)


def _minimize(f: _Counted, x, max_iter, ftol, canonical, snap_mask, snap, hessian0) -> HostMinimum:
    B, k = x.shape
    everyone = np.arange(B)
    fx, g = f(x, everyone)
    H = np.full((B, k, k), np.nan)
    status = np.full(B, int(Status.NONFINITE))
    iterations = np.zeros(B, dtype=np.int64)
    run = everyone[np.isfinite(fx)]
    H[run] = hessian(f, x[run], run, g[run]) if hessian0 is None else np.asarray(hessian0, dtype=float)
    run = run[np.isfinite(g[run]).all(axis=1) & np.isfinite(H[run]).all(axis=(1, 2))]
    status[run] = int(Status.MAX_ITERATIONS)
    H[run] = positive(H[run])
    for step in range(max_iter + 1):   # (iterations: each fit's accepted steps, as the compiled loop's)
        if not run.size:
            break
        xa, fa, ga, Ha = x[run], fx[run], g[run], H[run]
        d = -np.linalg.solve(Ha, ga[:, :, None])[:, :, 0]
        done = -0.5 * (ga * d).sum(1) <= ftol * (1.0 + np.abs(fa))
        status[run[done]] = int(Status.CONVERGED)
        go = ~done
        run, xa, fa, ga, Ha, d = run[go], xa[go], fa[go], ga[go], Ha[go], d[go]
        if step == max_iter:   # those left: MAX_ITERATIONS
            break
        # backtracking by halves to Armijo's condition, each fit its own step
        t = np.ones(run.size)
        xn, fn, gn = xa.copy(), np.full(run.size, np.inf), np.empty(xa.shape)
        pending = np.arange(run.size)
        slope = (ga * d).sum(1)
        for _ in range(HALVINGS):
            if not pending.size:
                break
            xt = xa[pending] + t[pending, None] * d[pending]
            ft, gt = f(xt, run[pending])
            ok = ft - fa[pending] <= ARMIJO * t[pending] * slope[pending]   # (as a difference: no null steps)
            xn[pending[ok]], fn[pending[ok]], gn[pending[ok]] = xt[ok], ft[ok], gt[ok]
            rest = pending[~ok]
            noise = 0.5 * t[rest] * np.abs(slope[rest]) <= ROUNDING * (1.0 + np.abs(fa[rest]))
            t[rest] *= 0.5
            pending = rest[~noise]
        found = np.isfinite(fn)
        flat = np.abs(ga).max(axis=1) <= 1e-6 * (1.0 + np.abs(fa))   # a stall at the optimum
        status[run[~found & flat]] = int(Status.CONVERGED)
        status[run[~found & ~flat]] = int(Status.LINE_SEARCH_FAILED)
        run, xa, ga, Ha, xn, fn, gn = run[found], xa[found], ga[found], Ha[found], xn[found], fn[found], gn[found]
        x[run], fx[run], g[run] = xn, fn, gn
        iterations[run] += 1
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
        g[moved] = f(x[moved], moved)[1]
    if snap_mask is not None:
        for i in np.flatnonzero(snap_mask):
            near = everyone[np.isfinite(fx) & (x[:, i] != 0) & (np.abs(x[:, i]) < snap)]
            if not near.size:
                continue
            xs = x[near].copy()
            xs[:, i] = 0.0
            fs, gs = f(xs, near)
            better = fs <= fx[near] + 1e-10 * (1.0 + np.abs(fx[near]))
            x[near[better]], fx[near[better]], g[near[better]] = xs[better], fs[better], gs[better]
    return HostMinimum(x, fx, g, iterations, f.count, status, H)
