"""``AR1(group, time)``: nlme's ``corAR1(form = ~ time | group)``, corr(e_i, e_j) = phi^|t_i - t_j|.

Within a group, rows sorted by their integer time t (``time=None``: the rows' order, as
``corAR1(form = ~ 1 | group)``).  nlme uses the time differences, so a missing visit
leaves a lag of 2 (checked in R: Orthodont's ``form = ~ age`` with age 8, 10, ... is not
``~ I(age / 2)``).  An AR(1) process is Markov, so R^{-1/2} is bidiagonal (the
innovations form): with d_i = t_i - t_{i-1} the lag to the row before,

    (W e)_1 = e_1,   (W e)_i = (e_i - phi^{d_i} e_{i-1}) / sqrt(1 - phi^{2 d_i}),
    log|det W| = -1/2 sum_{i > 1} log(1 - phi^{2 d_i}),

O(n) per evaluation.  Simulation runs the recursion forwards,
x_i = phi^{d_i} x_{i-1} + sqrt(1 - phi^{2 d_i}) e_i (a = 0 at a group's first row): for
groups of at most :data:`RECURSION_STEPS` rows as that many sweeps x <- a x[prev] + c over
all rows at once (after k sweeps the first k rows of every group are exact), else as an
associative scan of the affine maps x -> a x + c over the rows in (group, time) order
(3,000 groups x 8 rows: the first ``bootstrap(200)`` on an empty compilation cache took
5.6-6.1 s with the sweeps against 6.8 s with the scan, most of it the scan's compilation;
the simulation itself runs as fast either way).
The parameter is z with phi = tanh z (nlme: log((1+phi)/(1-phi)) = 2z);
powers phi^d are XLA's integer powers (repeated squaring; its derivative d phi^(d-1)),
so negative phi and phi = 0 are exact, and no static size depends on the lags: a
response with missing rows (longer lags) runs the same program.
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from ..errors import DataError
from .base import Correlation, column, integer_power


RECURSION_STEPS = 64
"""Groups of at most this many rows are simulated by sweeps of the recursion over all rows
(O(n) each), longer ones by an associative scan (O(n log n) in all)."""


@dataclasses.dataclass(frozen=True)
class AR1(Correlation):
    """Residual AR(1) within groups (nlme's ``corAR1``): ``AR1(group="Subject", time="Days")``."""

    time: str | None = None
    longest: int = 1        # the most rows in a group (static: the simulator's sweeps)
    nlme = "corAR1"

    @property
    def nparams(self) -> int:
        return 1

    def columns(self) -> list[str]:
        return super().columns() + ([] if self.time is None else [self.time])

    def param_names(self) -> list[str]:
        return ["Phi"]

    def natural(self, par):
        return np.tanh(np.asarray(par, dtype=float))

    def prior(self):
        import numpyro.distributions as dist

        return dist.Uniform(-1.0, 1.0)

    def unbounded(self, natural):
        return jnp.arctanh(natural)

    def natural_bounds(self):
        return np.array([-1.0]), np.array([1.0])

    def bind(self, data: pd.DataFrame, groups):
        n = len(data)
        if self.time is None:
            t = np.zeros(n)
            for g in np.unique(groups):
                rows = np.flatnonzero(groups == g)
                t[rows] = np.arange(rows.size)
        else:
            raw = column(data, self.time, "AR1's time")
            if not pd.api.types.is_numeric_dtype(raw):
                raise DataError(f"AR1's time column {self.time!r} is not numeric")
            t = raw.to_numpy(dtype=float)
            bad = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
            if bad.size:
                raise DataError(f"AR1's time column {self.time!r} must hold integers (nlme's corAR1); "
                                f"row {data.index[bad[0]]!r} has {t[bad[0]]!r}")
        order = np.lexsort((t, groups))
        same = groups[order][1:] == groups[order][:-1]
        dt = np.diff(t[order])
        if np.any(same & (dt == 0)):
            k = np.flatnonzero(same & (dt == 0))[0]
            a, b = order[k], order[k + 1]
            raise DataError(f"AR1's time {self.time!r} repeats within a group: {t[a]:g} in rows "
                            f"{data.index[a]!r} and {data.index[b]!r} (same {self.group})")
        prev = np.arange(n)
        lag = np.zeros(n, dtype=np.int64)
        prev[order[1:][same]] = order[:-1][same]
        lag[order[1:][same]] = dt[same].astype(np.int64)
        bound = dataclasses.replace(self, longest=int(np.bincount(groups).max(initial=1)))
        return bound, (prev.astype(np.int32), lag.astype(np.int32), order.astype(np.int32))

    def bucketed(self, ladder):
        """More sweeps of the simulator change nothing."""
        return dataclasses.replace(self, longest=ladder(self.longest))

    def observed(self, arrays, mask):
        """Each observed row's predecessor is the observed row before it in its group, at
        their time difference (``time=None``: lag 1, the positions of the observed rows,
        as nlme numbers them after leaving out missing values)."""
        prev, lag, order = arrays
        n = prev.shape[0]
        start = prev[order] == order                         # a group's first row
        group = np.cumsum(start)
        clock = np.cumsum(np.where(start, 0, lag[order]))    # time differences add up within a group
        seen = mask[order]
        rows, g, t = order[seen], group[seen], clock[seen]
        same = g[1:] == g[:-1]
        new_prev, new_lag = np.arange(n, dtype=prev.dtype), np.zeros(n, dtype=lag.dtype)
        new_prev[rows[1:][same]] = rows[:-1][same]
        new_lag[rows[1:][same]] = (t[1:] - t[:-1])[same] if self.time is not None else 1
        return new_prev, new_lag, order

    def padded(self, arrays, n, ladder):
        """Extra rows are each the first of its own group (no predecessor, lag 0)."""
        prev, lag, order = arrays
        extra = np.arange(prev.shape[0], n, dtype=prev.dtype)
        return (np.concatenate([prev, extra]), np.concatenate([lag, np.zeros_like(extra)]),
                np.concatenate([order, extra]))

    def markov(self, arrays):
        prev, lag, _ = arrays
        return prev, lag

    def coefficients(self, par, key, xp=jnp):
        """a_i = phi^{d_i} (0 for a group's first row, d_i = 0) and sqrt(1 - a_i^2)."""
        phi = xp.tanh(par[0])
        a = xp.where(key > 0, integer_power(phi, key, xp), 0.0)
        return a, xp.sqrt(1.0 - a * a)

    def whiten(self, par, arrays, M):
        prev, lag, _ = arrays
        a, root = self.coefficients(par, lag)
        out = (M - a[:, None] * M[prev]) / root[:, None]
        return out, -jnp.sum(jnp.log(root))

    def color(self, par, arrays, e):
        prev, lag, order = arrays
        a, root = self.coefficients(par, lag)
        if self.longest <= RECURSION_STEPS:   # sweeps over all rows (module docstring)
            c = root * e
            return jax.lax.fori_loop(1, self.longest, lambda _, x: a * x[prev] + c, c)
        a, c = a[order], (root * e)[order]

        def compose(first, second):          # x -> a2 (a1 x + c1) + c2
            a1, c1 = first
            a2, c2 = second
            return a1 * a2, a2 * c1 + c2

        _, x = jax.lax.associative_scan(compose, (a, c))
        return jnp.zeros_like(e).at[order].set(x)
