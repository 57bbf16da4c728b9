"""Likelihood profiles and profile confidence intervals: lme4's ``profile(m)`` and
``confint(m, method = "profile")``.

As lme4 (``devfun2``), a REML fit is refitted by maximum likelihood first, and every
parameter is profiled on the ML deviance with base value d-hat, its minimum:

    zeta(x) = sign(x - x-hat) sqrt(d_x - d-hat),

d_x the deviance minimised over the other parameters with this one held at x.  The
parameters are lme4's: per random-effects term its SDs and correlations (the free
elements of its covariance, :meth:`jaxhlm.covariance.Covariance.linear_entries`), then
sigma, then a residual structure's parameters on nlme's scale (AR(1)'s Phi, compound
symmetry's Rho, variance ratios and powers; :mod:`jaxhlm.residual`), then the fixed
effects.  (nlme's ``intervals`` gives Wald intervals on an unconstrained scale for these;
lme4 has none.)

- A variance parameter: the deviance at v = (SDs, correlations, sigma) with beta at its
  conditional estimate (lme4's ``devfun2``), -2 log L = log|L_theta|^2 - sum log w_i
  + n log(2 pi sigma^2) + r^2 / sigma^2, where each term's lambda = diag(SD) chol(R) /
  sigma (R its correlation matrix): SDs enter linearly, so the deviance is smooth up
  to an SD of 0.  It is minimised over the other elements of v (L-BFGS-B within lme4's
  bounds: SDs and sigma >= 0, correlations in [-1, 1]) with the gradient by autodiff.
- A fixed effect beta_j: held at f by moving x_j f into the response (as lme4 does with
  an offset), which maps the rest's matrix after eliminating term 1
  (:func:`jaxhlm.kernel.rest_matrix`) to a matrix without x_j's row and column whose
  last column is y - f x_j; the ML deviance profiled over sigma is minimised over theta.

Where the model's rows fall into small independent groups, both deviances and their
gradients are computed on the host in closed form instead
(:mod:`jaxhlm.independent_groups`; nothing to compile), and a fixed effect's
profile, held in the data's cross-products, is minimised over all of v: the same
profiled deviance, reached by another inner optimisation (intervals equal to 1e-7 of
their widths, tested).

lme4 traces zeta on a grid and inverts a spline through it; here each interval end is
the root of zeta(x) = -+ z_{(1+level)/2} (secant steps to a bracket, then Brent's method),
each zeta an inner optimisation started at the optimum predicted from the two nearest
points already evaluated (:class:`_Starts`).  Where the
profile does not reach the level before a bound (an SD's 0, a correlation's +-1), the
bound is the interval's end, as lme4's ``confint`` gives it.  :func:`profile` traces
zeta up to lme4's cutoff for plots (lme4's ``xyplot(profile(m))``).
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jnp, value_and_grad
import numpy as np
import pandas as pd
from scipy import optimize, special

from ..errors import JaxhlmError
from ..families.gaussian import LOG_2PI
from ..kernel import dense_parts, factorize_at, rest_matrix
from ..linalg import log_diag_sum
from ..precompiled import OLDER_EMITTERS, Precompiled, by_size, prepare_together
from ..residual.whiten import blocks_at
from ..structure import Structure
from ..tables import lme4_variance_names as variance_names

CORR_BOUND = 1.0 - 1e-10
"""Correlations are kept inside (-1, 1) in the inner optimisation (a correlation matrix
at +-1 has no Cholesky factor); a profile that reaches this bound ends at +-1."""


# ---------------------------------------------------------------- the two deviances
def _layout(st: Structure):
    """Per term: the (row, column) of each element of v (diagonal: an SD; else a correlation)."""
    return [t.covariance.linear_entries() for t in st.terms]


def _lambdas(v, st: Structure):
    lams, k = [], 0
    sigma = v[-1]
    for t, entries in zip(st.terms, _layout(st)):
        sd = jnp.zeros(t.p, v.dtype)
        R = jnp.eye(t.p, dtype=v.dtype)
        for (r, c), x in zip(entries, v[k:k + len(entries)]):
            if r == c:
                sd = sd.at[r].set(x)
            else:
                R = R.at[r, c].set(x).at[c, r].set(x)
        k += len(entries)
        lams.append(sd[:, None] * jnp.linalg.cholesky(R) / sigma)
    return lams


def _host_deviance(groups, st: Structure, v, K=None):
    """(ML deviance, its gradient in v) by the host's independent groups
    (:meth:`jaxhlm.independent_groups.Groups.deviance`, in gamma = each term's
    covariance elements, sd_r^2 and rho_rc sd_r sd_c, then sigma^2; chained to v here)."""
    gamma, J = np.empty(v.size), np.zeros((v.size, v.size))   # J[e, i] = d gamma_e / d v_i
    k = 0
    for entries in _layout(st):
        at = {rc: k + e for e, rc in enumerate(entries)}
        for e, (r, c) in enumerate(entries, start=k):
            if r == c:
                gamma[e], J[e, e] = v[e] ** 2, 2.0 * v[e]
            else:
                a, b = at[r, r], at[c, c]
                gamma[e] = v[e] * v[a] * v[b]
                J[e, e], J[e, a], J[e, b] = v[a] * v[b], v[e] * v[b], v[e] * v[a]
        k += len(entries)
    gamma[k], J[k, k] = v[k] ** 2, 2.0 * v[k]
    value, grad = groups.deviance(gamma, K)
    return value, grad @ J


def _n_random(st: Structure) -> int:
    """The number of SDs and correlations of the random terms (sigma follows them in v)."""
    return sum(len(entries) for entries in _layout(st))


def variance_deviance(v, blocks, st: Structure):
    """-2 log L at v = (SDs and correlations per term, sigma, the residual structure's
    natural parameters), beta at its conditional estimate (lme4's ``devfun2``)."""
    k = _n_random(st)
    if st.residual is not None:   # the whitened rows' blocks at the residual parameters
        theta = jnp.concatenate([jnp.zeros(st.ntheta_random, v.dtype), st.residual.unbounded(v[k + 1:])])
        blocks = blocks_at(theta, blocks, st)
    f = factorize_at(_lambdas(v[:k + 1], st), blocks, st)
    sigma2 = v[k] ** 2
    return (f.logdet_theta - blocks.logw + blocks.nobs * (LOG_2PI + jnp.log(sigma2))
            + f.pwrss / sigma2)


def fixed_deviance(theta, blocks, st: Structure, keep, j, f):
    """The ML deviance at theta, profiled over sigma and the other fixed effects, with
    beta_j held at f (the module docstring); ``keep``: the rest's rows but x_j's, y last."""
    blocks = blocks_at(theta, blocks, st)     # a residual structure's, at theta's last elements
    C, _, M = rest_matrix(theta, blocks, st)
    y, xj = st.m - 1, st.m_rand + j
    col = M[keep, y] - f * M[keep, xj]
    corner = M[y, y] - 2.0 * f * M[y, xj] + f * f * M[xj, xj]
    Mk = M[keep][:, keep].at[:, -1].set(col).at[-1, :].set(col).at[-1, -1].set(corner)
    _, logdet_r, _, pwrss = dense_parts(Mk, st.m_rand, st.p - 1)
    n = blocks.nobs
    return (2.0 * jnp.sum(log_diag_sum(C)) + logdet_r - blocks.logw
            + n * (1.0 + LOG_2PI + jnp.log(pwrss / n)))


_VARIANCE = Precompiled(value_and_grad(variance_deviance), (2,), "profile_variance",
                        cpu_options=OLDER_EMITTERS, level=by_size, without_jax=True)
_FIXED = Precompiled(value_and_grad(fixed_deviance), (2,), "profile_fixed", cpu_options=OLDER_EMITTERS,
                     level=by_size, without_jax=True)
"""The profile's two programs: value and gradient of each deviance, stored, compiled
together when a :class:`Profiler` starts (:func:`jaxhlm.precompiled.prepare_together`),
small ones without LLVM's optimisations (:func:`jaxhlm.precompiled.by_size`).  Exam's
profile intervals (``benchmarks/inference.py``'s model, ``/tmp`` probe, fresh processes,
2026-12-04): on an empty cache 1.27-1.40 s at XLA's default level, 1.10-1.25 s at level 0
(XLA 0.19-0.24 s per program instead of 0.31-0.50 s); their evaluations after
compilation 0.35-0.39 s at the default level and 0.55-0.62 s at level 0 (1,513 calls)."""


# ---------------------------------------------------------------- the profiler
SIGMA_FLOOR = 1e-3
"""sigma's lower bound in the inner optimisations, relative to its estimate (far below any
profile's reach; at 0 every lambda = SD / sigma would overflow)."""

SD_START_FLOOR = 1e-2
"""An inner optimisation starts each SD at least this far from 0, relative to its estimate
(an SD of 0 has a zero gradient: sleepstudy with AR(1) residuals, whose random intercept's
SD reaches 0 as Phi grows, stayed there when Phi's profile came back, 2.44 instead of 0.84)."""

INNER = {"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500}
"""L-BFGS-B's settings for the inner optimisations (deviances to about 1e-10)."""


def _inside(bound: np.ndarray, sign: float) -> np.ndarray:
    """Finite bounds of an open range moved inside by 1e-10 of their size (at least 1e-10)."""
    finite = np.isfinite(bound)
    safe = np.where(finite, bound, 0.0)
    return np.where(finite, safe + sign * (1.0 - CORR_BOUND) * np.maximum(np.abs(safe), 1.0), bound)


def _finite(value, grad, keep=None, scale=None):
    """(value, gradient) for the optimiser, of the free elements ``keep`` and scaled; a
    non-finite deviance (a trial step too far) becomes a large one, so that the line
    search steps back."""
    value, grad = float(value), np.asarray(grad, dtype=float)
    if keep is not None:
        grad = grad[keep] * scale
    if not np.isfinite(value) or not np.all(np.isfinite(grad)):
        return 1e300, np.zeros_like(grad)
    return value, grad



class _Starts:
    """Starting points of a profile's inner optimisations: the optimum at x predicted
    linearly from the two evaluated points nearest to x (the estimate is the first), so
    that each inner optimisation starts near its end (Exam's profile intervals by the
    compiled programs: 1,037 evaluations of the deviances instead of 1,105 from the last
    point's optimum)."""

    def __init__(self, x: float, optimum: np.ndarray):
        self.xs, self.optima = [float(x)], [np.asarray(optimum, dtype=float)]

    def at(self, x: float, lower, upper) -> np.ndarray:
        near = np.argsort(np.abs(np.array(self.xs) - x), kind="stable")[:2]
        start = self.optima[near[0]]
        if near.size == 2 and self.xs[near[1]] != self.xs[near[0]]:
            (x0, x1), (z0, z1) = (self.xs[i] for i in near), (self.optima[i] for i in near)
            start = z0 + (x - x0) * (z1 - z0) / (x1 - x0)
        return np.clip(start, lower, upper)

    def add(self, x: float, optimum: np.ndarray) -> None:
        self.xs.append(float(x))
        self.optima.append(np.asarray(optimum, dtype=float))


@dataclasses.dataclass
class _Parameter:
    name: str
    estimate: float
    lower: float
    upper: float
    step: float            # a first step away from the estimate
    zeta: object           # x -> zeta(x)
    points: list = dataclasses.field(default_factory=list)
    known: dict = dataclasses.field(default_factory=dict)   # x -> zeta(x), of the points


class Profiler:
    """zeta of each parameter of a fit (see the module docstring), evaluated on demand."""

    def __init__(self, result):
        model = result._model
        st = model.structure
        if st.known_sigma:
            raise JaxhlmError("profiles need sigma estimated; this model's residual variances "
                              "are known (residual_variance=)")
        for t in st.terms:
            t.covariance.linear_entries()   # raises for a structure that has no SDs and correlations
        self.ml = model.fit(reml=False) if result.reml else result
        self.base = self.ml.objective
        self._groups = model.independent_groups   # small independent groups: on the host
        self._blocks, self._st = None, st
        if self._groups is None:
            bucketed = model.bucketed
            self._blocks, self._st = bucketed.blocks, bucketed.structure
            self._vg = _VARIANCE.for_structure(self._st)
            self._fg = _FIXED.for_structure(self._st)
        self.v_hat = self._v_hat()
        names = [n for n, _ in variance_names(model.frame.specs)]
        self._sigma_at = _n_random(self._st)
        if st.residual is not None:
            names += st.residual.param_names()
        self.parameters: dict[str, _Parameter] = {}
        lower, upper = self._v_bounds()
        for w, name in enumerate(names):
            x = self.v_hat[w]
            step = 0.01 * abs(x) if abs(x) > 1e-8 else 1e-3
            self.parameters[name] = _Parameter(name, x, lower[w], upper[w], step, self._variance_zeta(w))
        beta, se = self.ml.fixef.to_numpy(), self.ml.fixef_se.to_numpy()
        if beta.size and self._groups is None:   # both programs compiled at once, before their first calls
            keep = np.array([k for k in range(self._st.m) if k != self._st.m_rand])
            prepare_together([(self._vg, (self.v_hat, self._blocks, self._st)),
                              (self._fg, (np.asarray(self.ml.theta, dtype=float), self._blocks, self._st,
                                          keep, 0, float(beta[0])))])
        for j, name in enumerate(self.ml.fixef.index):
            self.parameters[name] = _Parameter(name, beta[j], -np.inf, np.inf, 0.1 * se[j],
                                               self._fixed_zeta(j))

    # v: SDs and correlations per term, then sigma
    def _v_hat(self) -> np.ndarray:
        out = []
        for t, lam, entries in zip(self._st.terms, self.ml._lams, _layout(self._st)):
            cov = self.ml.sigma ** 2 * lam @ lam.T
            sd = np.sqrt(np.diag(cov))
            for r, c in entries:
                out.append(sd[r] if r == c else (cov[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0))
        residual = [] if self._st.residual is None else list(self.ml.residual_parameters.to_numpy())
        return np.array(out + [self.ml.sigma] + residual)

    def _v_bounds(self):
        lower, upper = [], []
        for entries in _layout(self._st):
            for r, c in entries:
                lower.append(0.0 if r == c else -1.0)
                upper.append(np.inf if r == c else 1.0)
        res_lower, res_upper = (np.zeros(0), np.zeros(0)) if self._st.residual is None else \
            self._st.residual.natural_bounds()
        return np.concatenate([lower, [0.0], res_lower]), np.concatenate([upper, [np.inf], res_upper])

    def _zeta(self, x: float, estimate: float, deviance: float) -> float:
        return float(np.sign(x - estimate) * np.sqrt(max(deviance - self.base, 0.0)))

    def _variance_zeta(self, w: int):
        if self._groups is None:
            def deviance(v, x):
                return self._vg(v, self._blocks, self._st)
        else:
            def deviance(v, x):
                return _host_deviance(self._groups, self._st, v)
        return self._v_zeta(deviance, w)

    def _v_zeta(self, deviance, w: int | None, estimate: float | None = None):
        """x -> zeta(x) of v's element ``w`` held at x, deviance(v, x) -> (value, gradient in
        v) minimised over v's other elements; with ``w`` None, over all of v (a fixed effect
        held at x by the host's deviance; ``estimate``: its estimate)."""
        lower, upper = self._v_bounds()
        k = self._sigma_at
        lower = np.where(lower == -1.0, -CORR_BOUND, lower)
        upper = np.where(upper == 1.0, CORR_BOUND, upper)
        # a residual parameter's open range, kept inside as the correlations' is
        lower[k + 1:], upper[k + 1:] = _inside(lower[k + 1:], 1.0), _inside(upper[k + 1:], -1.0)
        lower[k] = SIGMA_FLOOR * self.ml.sigma
        others = np.arange(self.v_hat.size) != (-1 if w is None else w)
        # the optimiser works on v / scale: SDs and sigma relative to their estimates
        scale = np.where(lower == 0.0, np.maximum(np.abs(self.v_hat), 1e-3 * self.ml.sigma), 1.0)
        scale[k] = self.ml.sigma
        s = scale[others]
        sd = lower[others] == 0.0          # the SDs (sigma's bound is above 0)
        estimate = self.v_hat[w] if w is not None else estimate
        starts = _Starts(estimate, self.v_hat[others] / s)

        def fun(z, x):
            v = self.v_hat.copy()
            v[others] = z * s
            if w is not None:
                v[w] = x
            return _finite(*deviance(v, x), others, s)

        def zeta(x: float) -> float:
            x = float(np.clip(x, lower[w], upper[w])) if w is not None else float(x)
            if not others.any():
                dev = fun(np.zeros(0), x)[0]
            else:
                # An SD at 0 is a stationary point of the deviance (even in each SD): a start
                # there (the last point's optimum on the boundary) would stay.
                start = starts.at(x, lower[others] / s, upper[others] / s)
                start = np.where(sd, np.maximum(start, SD_START_FLOOR), start)
                res = optimize.minimize(fun, start, args=(x,), jac=True, method="L-BFGS-B",
                                        bounds=list(zip(lower[others] / s, upper[others] / s)),
                                        options=INNER)
                starts.add(x, res.x)
                dev = float(res.fun)
            return self._zeta(x, estimate, dev)

        return zeta

    def _fixed_zeta(self, j: int):
        if self._groups is not None:   # beta_j held in the data's cross-products; v optimised
            held = {}

            def deviance(v, f):
                if f not in held:
                    held.clear()
                    held[f] = self._groups.holding(j, f)
                return _host_deviance(self._groups, self._st, v, held[f])

            return self._v_zeta(deviance, None, float(self.ml.fixef.to_numpy()[j]))
        st = self._st
        xj = st.m_rand + j
        keep = np.array([k for k in range(st.m) if k != xj])
        lower = st.theta_lower()
        beta = self.ml.fixef.to_numpy()
        starts = _Starts(beta[j], np.asarray(self.ml.theta, dtype=float))

        def fun(theta, f):
            return _finite(*self._fg(theta, self._blocks, st, keep, j, f))

        def zeta(f: float) -> float:
            start = starts.at(f, lower, np.inf)
            res = optimize.minimize(fun, start, args=(float(f),), jac=True, method="L-BFGS-B",
                                    bounds=[(lo, None) if np.isfinite(lo) else (None, None) for lo in lower],
                                    options=INNER)
            starts.add(f, res.x)
            return self._zeta(f, beta[j], float(res.fun))

        return zeta

    # ------------------------------------------------------------ roots
    def _eval(self, par: _Parameter, x: float) -> float:
        """zeta(x), each x evaluated once (Brent's method starts by evaluating its bracket's
        ends, which the search has just evaluated: 4 of Exam's 18 evaluations per parameter)."""
        x = float(x)
        if x not in par.known:
            par.known[x] = par.zeta(x)
            par.points.append((x, par.known[x]))
        return par.known[x]

    def end(self, name: str, target: float) -> float:
        """The x on ``name``'s side sign(target) where zeta(x) = target, or the bound it
        reaches first."""
        par = self.parameters[name]
        side = np.sign(target)
        bound = par.upper if side > 0 else par.lower
        x0, z0 = par.estimate, 0.0
        x1 = par.estimate + side * par.step
        if np.isfinite(bound) and side * (x1 - bound) > 0:
            x1 = 0.5 * (par.estimate + bound)
        z1 = self._eval(par, x1)
        for _ in range(60):
            if side * (z1 - target) >= 0:    # bracketed between x0 and x1
                return optimize.brentq(lambda x: self._eval(par, x) - target, x0, x1,
                                       xtol=1e-10 * (1.0 + abs(x1)), rtol=1e-12)
            if z1 == z0:
                x2 = x1 + 2.0 * (x1 - x0)
            else:   # secant on zeta, which is nearly linear in x; overshoot a little
                x2 = x1 + 1.1 * (target - z1) * (x1 - x0) / (z1 - z0)
                x2 = x1 + np.clip(x2 - x1, 0.0 if side > 0 else -10 * abs(x1 - x0) - abs(par.step),
                                  10 * abs(x1 - x0) + abs(par.step) if side > 0 else 0.0)
            if np.isfinite(bound) and side * (x2 - bound) >= 0:
                zb = self._eval(par, bound)
                if side * (zb - target) < 0:   # the profile stops short of the level at the bound
                    return float(bound)
                x2, z2 = bound, zb
            else:
                z2 = self._eval(par, x2)
            x0, z0, x1, z1 = x1, z1, x2, z2
        raise JaxhlmError(f"the profile of {name} did not reach zeta = {target:g}")


TRACE_POINTS = 6
"""Evenly spaced points per side of a traced profile, besides those the roots visit."""


@dataclasses.dataclass
class Profile:
    """A fit's likelihood profiles (lme4's ``profile(m)``, a ``thpr``): ``table`` has one
    row per evaluated point, columns ``parameter``, ``value``, ``zeta``, sorted;
    ``estimates``: each parameter's ML estimate (zeta = 0); ``cutoff``: how far zeta was
    traced on each side."""

    table: pd.DataFrame
    estimates: pd.Series
    cutoff: float

    def plot(self, path=None, levels=(0.5, 0.8, 0.9, 0.95, 0.99)):
        """zeta against each parameter, one panel each, with the +-z of ``levels`` as
        dotted lines (lme4's ``xyplot(profile(m))``); written as PNG to ``path`` if given.
        Returns the matplotlib Figure (drawn on the Agg canvas; no pyplot state)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = list(self.estimates.index)
        ncols = min(len(names), 3)
        nrows = -(-len(names) // ncols)
        fig = Figure(figsize=(4.5 * ncols, 3.5 * nrows), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(names):]:
            ax.remove()
        cuts = special.ndtri(0.5 + np.asarray(levels) / 2.0)
        for ax, name in zip(axes, names):
            rows = self.table[self.table["parameter"] == name]
            ax.plot(rows["value"], rows["zeta"], "-", color="C0")
            for z in np.concatenate([cuts, -cuts]):
                ax.axhline(z, ls=":", color="grey", lw=0.8)
            ax.axvline(self.estimates[name], ls="--", color="grey", lw=0.8)
            ax.set(xlabel=name, ylabel="zeta")
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig


def profile(result, cutoff: float | None = None) -> Profile:
    """Trace every parameter's zeta out to +-``cutoff`` (default lme4's:
    sqrt(qchisq(0.99, number of parameters))) or the parameter's bound."""
    prof = Profiler(result)
    if cutoff is None:
        cutoff = float(np.sqrt(special.chdtri(len(prof.parameters), 0.01)))
    rows = []
    for name, par in prof.parameters.items():
        ends = [prof.end(name, -cutoff), prof.end(name, cutoff)]
        for end in ends:
            for x in np.linspace(par.estimate, end, TRACE_POINTS + 1)[1:-1]:
                prof._eval(par, x)
        rows += [(name, x, z) for x, z in par.points] + [(name, par.estimate, 0.0)]
    table = pd.DataFrame(rows, columns=["parameter", "value", "zeta"]).drop_duplicates(["parameter", "value"])
    order = {n: k for k, n in enumerate(prof.parameters)}
    table = table.sort_values(["parameter", "value"], key=lambda c: c.map(order) if c.name == "parameter" else c)
    estimates = pd.Series({n: p.estimate for n, p in prof.parameters.items()}, name="estimate")
    return Profile(table.reset_index(drop=True), estimates, cutoff)


def confint(result, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Profile intervals of every parameter, in :func:`.intervals.variance_names` order, then
    the fixed effects."""
    prof = Profiler(result)
    z = special.ndtri(0.5 + level / 2.0)
    names = list(prof.parameters)
    lower = np.array([prof.end(n, -z) for n in names])
    upper = np.array([prof.end(n, z) for n in names])
    return lower, upper
