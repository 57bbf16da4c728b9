"""Fitting a residual structure by whitening the rows, and the blocks at theta.

For Var e = sigma^2 D R D (:mod:`jaxhlm.residual.base`) and W = R^{-1/2} D^{-1},

    W y = W X beta + W Z b + W e,   W e ~ N(0, sigma^2 I),

an ordinary mixed model in the rows of W [Z X y].  Its cross-product blocks are
:func:`jaxhlm.blocks.values` of the whitened rows: the model carries its rows
(:class:`RowData`: the design's :class:`~jaxhlm.blocks.Pattern`, y, and the structure's
arrays) instead of fixed blocks, and :func:`blocks_at` recomputes the blocks from them
inside jit at each theta (O(n) segment sums).  Their ``logw`` field, -log|Lambda_e| =
2 log|det W| = 2 log|det R^{-1/2}| - 2 sum log g_i, carries the Jacobian, so the
Gaussian criterion (:mod:`jaxhlm.families.gaussian`) is unchanged: ML and REML as nlme
and lme4 define them (nlme's ``lme``/``gls`` and lme4 agree on both).

W keeps the pattern of Z (each whitened row mixes rows of one correlation group, which
share their levels of every random term) only when the groups lie within the levels of
every random term; :func:`bind` checks that.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..blocks import Blocks, Pattern, pattern, values
from ..errors import DataError, JaxhlmError
from .base import Correlation, Residual, VarianceFunction, codes_of, column


class RowData(NamedTuple):
    """The rows of a model with a residual structure (a pytree, in place of its blocks)."""

    pattern: Pattern
    y: np.ndarray
    weights: np.ndarray        # 1 for a row used, 0 for a row left out
    sigma: np.ndarray          # the known residual SD (unused: sigma is estimated)
    correlation: tuple         # the correlation structure's arrays (empty without one)
    variance: tuple            # the variance function's arrays


def blocks_at(theta, data, st) -> Blocks:
    """The blocks at theta: ``data`` itself for a model without a residual structure, else
    those of the whitened rows (the module docstring)."""
    res = st.residual
    if res is None:
        return data
    pc, pv = res.split(theta[st.ntheta_random:])
    pat = data.pattern
    p1 = pat.Z1.shape[1]
    M = jnp.concatenate([pat.Z1, pat.vals, data.y[:, None]], axis=1)
    log_g = jnp.zeros(M.shape[0], M.dtype)
    if res.variance is not None:
        log_g = res.variance.log_sd(pv, data.variance)
        M = M * jnp.exp(-log_g)[:, None]
    logdet = jnp.zeros((), M.dtype)
    if res.correlation is not None:
        M, logdet = res.correlation.whiten(pc, data.correlation, M)
    used = data.weights > 0
    pat = pat._replace(Z1=M[:, :p1], vals=M[:, p1:-1])
    blocks = values(pat, st, data.weights, M[:, -1], data.sigma, xp=jnp)
    return blocks._replace(logw=2.0 * logdet - 2.0 * jnp.sum(jnp.where(used, log_g, 0.0)))


def residual_noise(theta, data: RowData, st, e):
    """D R^{1/2} e: standard normal e (n,) made residuals of relative covariance D R D
    (times sigma, a simulated model's e); e itself without a residual structure."""
    res = st.residual
    if res is None:
        return e
    pc, pv = res.split(theta[st.ntheta_random:])
    if res.correlation is not None:
        e = res.correlation.color(pc, data.correlation, e)
    if res.variance is not None:
        e = e * jnp.exp(res.variance.log_sd(pv, data.variance))
    return e


def response_axes(data: RowData) -> RowData:
    """``in_axes`` for vmapping over rows whose ``y`` has a leading batch axis."""
    return RowData(None, 0, None, None, None, None)


def bind(frame, correlation: Correlation | None, variance: VarianceFunction | None):
    """The :class:`~jaxhlm.residual.base.Residual` and :class:`RowData` of a model frame's
    rows (NumPy, once), with the checks that name a bad column, row or term."""
    if correlation is not None and not isinstance(correlation, Correlation):
        raise JaxhlmError(f"correlation= takes a residual correlation structure "
                          f"(jaxhlm.AR1, jaxhlm.CompoundSymmetry); got {correlation!r}")
    if variance is not None and not isinstance(variance, VarianceFunction):
        raise JaxhlmError(f"variance= takes a variance function (jaxhlm.VarIdent, jaxhlm.VarPower); "
                          f"got {variance!r}")
    if frame.weights is not None or frame.sigma is not None:
        raise JaxhlmError("prior weights or known residual variances cannot be combined with a "
                          "residual structure; express them as a variance function")
    data = frame.data
    out = {}
    groups = None
    if correlation is not None:
        if correlation.group is None:
            real = [t for t in frame.terms if t.spec.covariance.nparams]
            if not real:
                raise JaxhlmError(f"{type(correlation).__name__} needs group= in a model without "
                                  "random effects")
            innermost = real[0]      # the most levels: nlme's innermost grouping
            codes, group_name = innermost.codes.astype(np.int64), innermost.spec.group
            from dataclasses import replace
            correlation = replace(correlation, group=group_name)
        else:
            codes, _ = codes_of(column(data, correlation.group, type(correlation).__name__))
            group_name = correlation.group
        for t in frame.terms:
            if not t.spec.covariance.nparams:
                continue
            mixed = pd.Series(t.codes).groupby(codes).nunique().to_numpy() > 1
            if mixed.any():
                raise DataError(
                    f"the residual correlation's groups ({group_name}) must lie within the levels of "
                    f"every random term (nlme's rule), but a group of {group_name} spans several "
                    f"levels of {t.spec.group} in term ({' + '.join(t.spec.columns)} | {t.spec.group})")
        groups = codes
        correlation, out["correlation"] = correlation.bind(data, groups)
    if variance is not None:
        variance, out["variance"] = variance.bind(data, groups)
    res = Residual(correlation, variance)
    rows = RowData(pattern(frame), frame.y, np.ones(frame.nobs), np.asarray(1.0),
                   out.get("correlation", ()), out.get("variance", ()))
    return res, rows
