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

**Cost independent of n.**  When W is bidiagonal (AR(1)) or diagonal (a variance function
alone), whitened row i is alpha_i m_i + beta_i m_p (m_p the row before in its group;
beta = 0 without one), and alpha_i, beta_i depend on the parameters only through a
*class* of the row: its lag and its variance function's covariate at i and at p.  Every
block is linear in the rows' outer products, and by polarisation

    (alpha m_i + beta m_p)(alpha m_i + beta m_p)' = (alpha^2 - alpha beta) m_i m_i'
        + (beta^2 - alpha beta) m_p m_p' + alpha beta (m_i + m_p)(m_i + m_p)',

so the blocks at theta are a combination, with those three coefficients per class, of
blocks computed once (NumPy) from the rows of each class, from their predecessors and
from the sums (:class:`ClassSets`).  An evaluation then costs the size of the blocks
(levels and nonzeros), not n: 3,000 subjects x 8 visits with AR(1) residuals take
0.1 ms instead of 3 ms per criterion and gradient.  Compound symmetry is the same with
m_p the mean row of i's group (its whitening subtracts a share of the group's mean,
:meth:`~jaxhlm.residual.base.Correlation.exchangeable`), the class a group size, and
each row's share of the log-determinant its group's divided among its rows.  A
variance covariate with many distinct values (more than :data:`MAX_CLASSES` classes),
or one combined with compound symmetry (the group's mean would mix rows of different
scales), use the rows themselves, O(n) per evaluation.

**Buckets.**  A fit reads only the class sets and the pattern's entries and pairs, so
:func:`bucket` pads those as :mod:`jaxhlm.padding` pads a plain model's blocks (and pads
the number of sets and classes) and drops the rows: models of nearby sizes share one
program.  The simulator pads the rows and each structure's arrays
(:meth:`~jaxhlm.residual.base.Correlation.padded`).  A model whose blocks come from
its rows is not padded.

**Missing values.**  In a batch, a response with missing values is fitted on its
observed rows (:func:`with_missing`): its class sets are built from the design's rows
with weight 0 on the missing ones and the correlation's arrays of the rows kept
(:meth:`~jaxhlm.residual.base.Correlation.observed`), so every response keeps the
design's pattern and the batch one program.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from ..lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from .. import padding
from ..blocks import Blocks, LevelSums, Pattern, pattern, values
from ..errors import DataError, JaxhlmError
from .base import Correlation, Residual, VarianceFunction, codes_of, column, in_module


MAX_CLASSES = 64
"""The most row classes precomputed (module docstring); beyond, blocks come from the rows."""

SELF, PREV, SUM = 0, 1, 2
"""The three row sets of a class: its rows, their predecessors, and the sums."""


class ClassSets(NamedTuple):
    """The blocks of each (class, row set) pair, stacked on a leading axis K, and what
    sets their coefficients: per class its representative keys and its number of rows."""

    A11: np.ndarray       # (K, ell_1, p_1, p_1)
    coo_val: np.ndarray   # (K, nnz, p_1)
    zy1: np.ndarray       # (K, ell_1, p_1): depends on the response
    Arr: np.ndarray       # (K, m, m): its last row and column depend on the response
    set_class: np.ndarray  # (K,) int: the class of each set
    set_kind: np.ndarray  # (K,) int: SELF, PREV or SUM
    key: np.ndarray       # (C,) int: the correlation's key (AR(1)'s lag, 0 for no predecessor;
                          # compound symmetry's group size)
    var_at: tuple         # the variance function's arrays at each class's representative row
    var_prev: tuple       # ... at its partner (the predecessor)
    count: np.ndarray     # (C,) float: rows per class


class RowData(NamedTuple):
    """The rows of a model with a residual structure (a pytree, in place of its blocks)."""

    pattern: Pattern
    y: np.ndarray
    weights: np.ndarray        # 1 for a row used, 0 for a row left out
    sigma: np.ndarray          # the known residual SD (unused: sigma is estimated)
    correlation: tuple         # the correlation structure's arrays (empty without one)
    variance: tuple            # the variance function's arrays
    sets: ClassSets | None = None   # the precomputed class blocks (module docstring), or None


def blocks_at(theta, data, st) -> Blocks:
    """The blocks at theta: ``data`` itself for a model without a residual structure, else
    those of the whitened rows (the module docstring)."""
    res = st.residual
    if res is None:
        return data
    pc, pv = res.split(theta[st.ntheta_random:])
    if data.sets is not None:
        return _blocks_of_classes(pc, pv, data, st)
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


def class_coefficients(pc, pv, sets, res, xp=jnp):
    """alpha, beta and log(g r) per class (module docstring), in the array module ``xp``;
    ``sets`` needs the fields ``key``, ``count``, ``var_at`` and ``var_prev`` of a
    :class:`ClassSets`."""
    dtype = sets.count.dtype
    a, root = (in_module(xp, res.correlation.coefficients, pc, sets.key) if res.correlation is not None
               else (xp.zeros_like(sets.count), xp.ones_like(sets.count)))
    log_root = (in_module(xp, res.correlation.row_log_root, pc, sets.key) if res.correlation is not None
                else xp.zeros(sets.count.shape, dtype))
    log_g = log_gp = xp.zeros(sets.count.shape, dtype)
    if res.variance is not None:
        log_g = in_module(xp, res.variance.log_sd, pv, sets.var_at)
        log_gp = in_module(xp, res.variance.log_sd, pv, sets.var_prev)
    alpha = xp.exp(-log_g) / root
    beta = -a * xp.exp(-log_gp) / root
    return alpha, beta, log_g + log_root


def set_coefficients(alpha, beta, set_class, set_kind, xp=jnp):
    """Each class set's coefficient in the blocks (the module docstring's polarisation):
    alpha^2 - alpha beta (SELF), beta^2 - alpha beta (PREV), alpha beta (SUM)."""
    a, b = alpha[set_class], beta[set_class]
    return xp.where(set_kind == SELF, a * a - a * b, xp.where(set_kind == PREV, b * b - a * b, a * b))


def _blocks_of_classes(pc, pv, data: RowData, st) -> Blocks:
    """The blocks at the parameters as a combination of the class sets' blocks."""
    sets, pat = data.sets, data.pattern
    alpha, beta, log_scale = class_coefficients(pc, pv, sets, st.residual)
    coef = set_coefficients(alpha, beta, sets.set_class, sets.set_kind)
    mix = lambda x: jnp.tensordot(coef, x, axes=1)  # noqa: E731
    coo_val = mix(sets.coo_val)
    return Blocks(
        A11=mix(sets.A11), coo_row=pat.coo_row, coo_level=pat.coo_level, coo_val=coo_val,
        zy1=mix(sets.zy1), pair_level=pat.pair_level, pair_out=pat.pair_out,
        pair_val=coo_val[pat.pair_a][:, :, None] * coo_val[pat.pair_b][:, None, :],
        pair_rand=pat.pair_rand, Arr=mix(sets.Arr), nobs=jnp.sum(sets.count),
        logw=-2.0 * jnp.sum(sets.count * log_scale), sigma=jnp.asarray(data.sigma, coef.dtype))


class _Predecessor(NamedTuple):
    """m_p of each row (module docstring): its predecessor's row (AR(1); itself for none)."""

    prev: np.ndarray

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return a[self.prev]

    def of_columns(self, a: np.ndarray) -> np.ndarray:
        """The same for rows on a's last axis, C-ordered (a's ``[:, prev]`` is not)."""
        return np.take(a, self.prev, axis=-1)


class _GroupMean(NamedTuple):
    """m_p of each row: the mean row of its group (compound symmetry), over the rows kept."""

    groups: np.ndarray
    kept: np.ndarray        # (n,) float: 1 for a row kept, 0 for one left out

    def __call__(self, a: np.ndarray) -> np.ndarray:
        sizes = np.bincount(self.groups, weights=self.kept)
        kept = self.kept.reshape((-1,) + (1,) * (a.ndim - 1))
        sums = np.zeros((sizes.size,) + a.shape[1:])
        np.add.at(sums, self.groups, a * kept)
        return (sums / np.maximum(sizes, 1.0).reshape((-1,) + (1,) * (a.ndim - 1)))[self.groups]

    def of_columns(self, a: np.ndarray) -> np.ndarray:
        """The same for rows on a's last axis (a 2-d ``a``), C-ordered."""
        return np.ascontiguousarray(self(np.ascontiguousarray(a.T)).T)


def class_rows(res: Residual, arrays: dict, n: int, kept: np.ndarray | None = None):
    """Each row's class and the row sets (module docstring): (partner, key, classes (n,),
    representatives (C,)), ``partner(a)`` the rows m_p of a row array a, or None where
    the classes cannot be used.  ``kept``: the rows used (a response's observed rows),
    the others in no class (-1)."""
    kept = np.ones(n, dtype=bool) if kept is None else kept
    corr = res.correlation
    partner, key = _Predecessor(np.arange(n)), np.zeros(n, dtype=np.int64)
    if corr is not None:
        markov = corr.markov(arrays["correlation"])
        exchangeable = None if markov is not None else corr.exchangeable(arrays["correlation"])
        if markov is not None:
            partner, key = _Predecessor(np.asarray(markov[0])), markov[1]
        elif exchangeable is not None and res.variance is None:
            partner, key = _GroupMean(np.asarray(exchangeable[0]), kept.astype(float)), exchangeable[1]
        else:
            return None
    columns = [np.asarray(key, dtype=float)]
    for a in arrays.get("variance", ()):
        a = np.asarray(a, dtype=float)
        columns += [a, np.where(key > 0, partner(a), 0.0)]
    used = np.flatnonzero(kept)
    _, first, found = np.unique(np.column_stack(columns)[used], axis=0, return_index=True, return_inverse=True)
    if first.size > MAX_CLASSES:
        return None
    classes = np.full(n, -1, dtype=np.int64)
    classes[used] = found.reshape(-1)
    return partner, np.asarray(key), classes, used[first]


def _class_sets(rows: RowData, res: Residual, st, arrays: dict, kept: np.ndarray | None = None) -> ClassSets | None:
    """The :class:`ClassSets` of the model's rows (NumPy, once), or None (module
    docstring); ``kept`` as :func:`class_rows`'."""
    n = rows.y.shape[0]
    found = class_rows(res, arrays, n, kept)
    if found is None:
        return None
    partner, key, classes, first = found
    pat = rows.pattern
    sets, set_class, set_kind = [], [], []
    for c, rep in enumerate(first):
        kinds = (SELF, PREV, SUM) if key[rep] > 0 else (SELF,)
        for kind in kinds:
            Z1, vals, y = (kind_rows(pat.Z1, partner, kind), kind_rows(pat.vals, partner, kind),
                           kind_rows(rows.y, partner, kind))
            w = (classes == c).astype(float)
            sets.append(values(pat._replace(Z1=Z1, vals=vals), st, w, y))
            set_class.append(c)
            set_kind.append(kind)
    var = arrays.get("variance", ())
    return ClassSets(
        A11=np.stack([b.A11 for b in sets]), coo_val=np.stack([b.coo_val for b in sets]),
        zy1=np.stack([b.zy1 for b in sets]), Arr=np.stack([b.Arr for b in sets]),
        set_class=np.asarray(set_class, np.int32), set_kind=np.asarray(set_kind, np.int32),
        key=key[first].astype(np.int32), var_at=tuple(np.asarray(a)[first] for a in var),
        var_prev=tuple(partner(np.asarray(a))[first] for a in var),
        count=np.bincount(classes[classes >= 0], minlength=first.size).astype(float))


def kind_rows(a: np.ndarray, partner, kind: int) -> np.ndarray:
    """The rows themselves (SELF), their partners m_p (PREV: the predecessors, or the
    group means) or the sums (SUM); rows on a's first axis."""
    return a if kind == SELF else partner(a) if kind == PREV else a + partner(a)


def with_responses(rows: RowData, st, Y: np.ndarray) -> RowData:
    """Rows for B responses (Y (B, n)) on one design: ``y`` gains a leading axis, and so do
    the class sets' response fields (Z_1'y and Arr's last row and column per set, O(n) per
    response and set).  The responses are taken in term 1's level order once, and their
    partners' (:func:`kind_rows`) formed once, each C-ordered; then per set Z_1'y sums
    each level's consecutive rows (:class:`jaxhlm.blocks.LevelSums`), the rest's products are one
    matrix product (:func:`_rest_design`) and y'Wy one matrix-vector product.  128
    responses of a 3,000-subject AR(1) design (``/tmp`` probe, 2026-12-04): the first call
    in a process 0.18-0.23 -> 0.10 s (scipy.sparse, 0.07 s to import, is no longer needed
    for a narrow rest), later calls 0.095-0.10 -> 0.088-0.093 s.  Vmap with
    :func:`response_axes`."""
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    B, n = Y.shape
    sets = rows.sets
    if sets is None:
        return rows._replace(y=Y)
    pat = rows.pattern
    p1, ell1, m = pat.Z1.shape[1], sets.zy1.shape[1], st.m
    partner, _, classes, first = class_rows(st.residual, {"correlation": rows.correlation,
                                                           "variance": rows.variance}, n)
    by_level = LevelSums(pat.codes1, ell1)
    order = by_level.order
    kinds = {SELF: np.take(Y, order, axis=1), PREV: np.take(partner.of_columns(Y), order, axis=1)}   # C-ordered
    cols = pat.cols[order, :-1]
    zy1 = np.empty((B,) + sets.zy1.shape)
    Arr = np.broadcast_to(sets.Arr, (B,) + sets.Arr.shape).copy()
    for k, (c, kind) in enumerate(zip(sets.set_class, sets.set_kind)):
        w = (classes[order] == c).astype(float)
        Z1 = kind_rows(pat.Z1, partner, kind)[order] * w[:, None]
        vals = kind_rows(pat.vals, partner, kind)[order] * w[:, None]
        Yk = kinds[kind] if kind in kinds else kinds[SELF] + kinds[PREV]
        for a in range(p1):
            zy1[:, k, :, a] = by_level.sums_in_order(Yk * Z1[:, a])
        ry = Yk @ _rest_design(vals, cols, m - 1)
        Arr[:, k, -1, :-1] = ry
        Arr[:, k, :-1, -1] = ry
        Arr[:, k, -1, -1] = (Yk * Yk) @ w
    return rows._replace(y=Y, sets=sets._replace(zy1=zy1, Arr=Arr))


DENSE_REST_COLUMNS = 64
"""Up to this many columns after term 1, :func:`with_responses` multiplies by the rest's
design as a dense matrix (one BLAS product for all responses); above, as a sparse one."""


def _rest_design(vals: np.ndarray, cols: np.ndarray, k: int):
    """The (n, k) matrix with ``vals[i, c]`` at (i, ``cols[i, c]``), entries sharing a place
    summed: dense up to :data:`DENSE_REST_COLUMNS` columns, else scipy's CSR."""
    n = vals.shape[0]
    rows = np.repeat(np.arange(n), vals.shape[1])
    if k <= DENSE_REST_COLUMNS:
        return np.bincount(rows * k + cols.reshape(-1), weights=vals.reshape(-1), minlength=n * k).reshape(n, k)
    from scipy import sparse

    return sparse.csr_matrix((vals.reshape(-1), (rows, cols.reshape(-1))), shape=(n, k))


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


def noise_rows(rows: RowData, res: Residual, n: int, ladder=padding.count) -> RowData | None:
    """What :func:`residual_noise` reads (the structure's arrays) for ``n`` rows, the
    model's own first (:meth:`~jaxhlm.residual.base.Correlation.padded`), or None where a
    part cannot pad them; a count the part pads (compound symmetry's groups) moves to
    ``ladder`` of it (the simulator's: with headroom and reach, :mod:`jaxhlm.bucket_choice`)."""
    own = rows.y.shape[-1]

    def arrays(part, a):
        return a if part is None or n == own else part.padded(a, n, ladder)

    correlation, variance = arrays(res.correlation, rows.correlation), arrays(res.variance, rows.variance)
    if correlation is None or variance is None:
        return None
    return RowData(None, None, None, None, correlation, variance)


def response_axes(data: RowData) -> RowData:
    """``in_axes`` for vmapping over the output of :func:`with_responses` (or of
    :func:`padded_responses`, which keeps no rows)."""
    sets = None if data.sets is None else ClassSets(
        None, None, 0, 0, None, None, None, None, None, None)
    return RowData(None, None if data.y is None else 0, None, None, None, None, sets)


def bucket(own, rows: RowData, choose=padding.rungs) -> padding.Bucketed:
    """A model's class sets laid out for its bucket, so that models of nearby sizes share
    one compiled fit: ``choose(counts, fine)`` gives the bucket's counts (each term's
    levels, the entries, pairs, sets and classes) as for :func:`jaxhlm.padding.bucket`
    (default: each count's rung), and the structure's static sizes move up the ladder
    (:func:`jaxhlm.padding.with_levels`).  The rows themselves are dropped,
    since the blocks at theta need only the class sets (module docstring).

    Each set's blocks are padded as :func:`jaxhlm.padding.pad` pads a model's blocks
    (padded levels and entries add exactly 0); the entries get at least one padded,
    zero entry, where the padded pairs point (a pair's value is the product of its two
    entries').  Padded sets are zero blocks of class 0, and padded classes copy class
    0's keys with no rows: neither changes a block nor the log-determinant.  A model
    whose blocks come from the rows (no class sets) is not padded."""
    sets, pat = rows.sets, rows.pattern
    if sets is None:
        return padding.Bucketed(own, own, rows)
    counts = tuple(t.nlevels for t in own.terms) + (pat.coo_row.shape[0] + 1, pat.pair_out.shape[0],
                                                    sets.set_class.size, sets.count.size)
    *levels, nnz, npairs, nsets, nclasses = choose(counts, padding.fine_levels(own) + (False,) * 4)
    common = padding.with_levels(own, levels)
    first = Blocks(sets.A11[0], pat.coo_row, pat.coo_level, sets.coo_val[0], sets.zy1[0], pat.pair_level,
                   pat.pair_out, np.zeros(pat.pair_out.shape + sets.A11.shape[-2:]), pat.pair_rand,
                   sets.Arr[0], np.float64(0.0), np.float64(0.0), np.float64(1.0))
    index = padding.pad(first, own, common, nnz, npairs)
    compact = RowData(
        Pattern(None, None, None, None, None, index.coo_row, index.coo_level,
                padding.grow(pat.pair_a, npairs, fill=pat.coo_row.shape[0]),
                padding.grow(pat.pair_b, npairs, fill=pat.coo_row.shape[0]),
                index.pair_level, index.pair_out, index.pair_rand),
        None, None, rows.sigma, (), (), None)
    out = padding.Bucketed(own, common, compact)
    laid = _laid_out(sets, out, nsets, nclasses)
    return dataclasses.replace(out, blocks=compact._replace(sets=laid))


def _laid_out(sets: ClassSets, bucketed: padding.Bucketed, nsets: int, nclasses: int) -> ClassSets:
    """Class sets (the response fields zy1 and Arr may carry a leading batch axis) laid
    out for ``bucketed``'s structure and entries, with ``nsets`` sets and ``nclasses``
    classes (:func:`bucket`)."""
    own, common = bucketed.own, bucketed.structure
    ell1, nnz = common.terms[0].nlevels, bucketed.blocks.pattern.coo_row.shape[0]
    lead = sets.zy1.ndim - 3                      # 1 with a batch axis
    grow_classes = lambda a: padding.grow(a, nclasses, fill=a[0])   # noqa: E731
    return ClassSets(
        A11=padding.grow(padding.grow(sets.A11, ell1, axis=1), nsets),
        coo_val=padding.grow(padding.grow(sets.coo_val, nnz, axis=1), nsets),
        zy1=padding.grow(padding.grow(sets.zy1, ell1, axis=lead + 1), nsets, axis=lead),
        Arr=padding.grow(padding.spread(sets.Arr, padding.column_map(own, common), common.m), nsets, axis=lead),
        set_class=padding.grow(sets.set_class, nsets), set_kind=padding.grow(sets.set_kind, nsets, fill=SELF),
        key=grow_classes(sets.key), var_at=tuple(map(grow_classes, sets.var_at)),
        var_prev=tuple(map(grow_classes, sets.var_prev)), count=padding.grow(sets.count, nclasses))


def padded_responses(bucketed: padding.Bucketed, many: RowData) -> RowData:
    """The class sets' response fields of ``many`` (:func:`with_responses`' output, with a
    leading batch axis) laid out as ``bucketed``'s (:func:`bucket`), on its padded design."""
    design = bucketed.blocks.sets
    laid = _laid_out(many.sets, bucketed, design.set_class.size, design.count.size)
    return bucketed.blocks._replace(sets=design._replace(zy1=laid.zy1, Arr=laid.Arr))


def with_missing(bucketed: padding.Bucketed, rows: RowData, Y: np.ndarray):
    """For responses Y (B, n) with missing values (NaN): ``take(index)``, the rows of the
    responses ``index``, each with its own class sets built on its observed rows alone
    (the correlation's arrays from :meth:`~jaxhlm.residual.base.Correlation.observed`:
    nlme's fit after leaving out the missing values), all laid out as ``bucketed`` with
    the batch's largest numbers of sets and classes (one program), and their ``in_axes``.
    A response with no observed row gets the design's sets with zero blocks (a
    non-finite fit, its status says so).  Raises
    ``ValueError`` where the structure cannot (blocks from the rows, or a correlation
    without :meth:`observed`)."""
    res = bucketed.own.residual
    observed = np.isfinite(Y)
    n = Y.shape[1]

    def arrays(kept):
        corr = rows.correlation
        if res.correlation is not None and not kept.all():
            corr = res.correlation.observed(corr, kept)
        return {"correlation": corr, "variance": rows.variance}

    sizes = [(rows.sets.count.size, rows.sets.set_class.size)] if rows.sets is not None else []
    for kept in observed:
        found = None
        if rows.sets is not None and (bound := arrays(kept))["correlation"] is not None:
            found = class_rows(res, bound, n, kept)
        if found is None:
            raise ValueError("responses with missing values (NaN) cannot be fitted in a batch with this "
                             "residual structure (its blocks come from the rows); drop those rows from "
                             "the model")
        _, key, _, first = found
        sizes.append((first.size, int(np.sum(np.where(key[first] > 0, 3, 1)))))
    nclasses = padding.count(max(max(c for c, _ in sizes), 1))
    nsets = padding.count(max(max(k for _, k in sizes), 1))

    def one(y, kept):
        if not kept.any():
            return rows.sets._replace(**{f: np.zeros_like(getattr(rows.sets, f))
                                         for f in ("A11", "coo_val", "zy1", "Arr", "count")})
        return _class_sets(rows._replace(y=np.where(kept, y, 0.0)), res, bucketed.own, arrays(kept), kept)

    def take(index):
        per = [_laid_out(one(Y[b], observed[b]), bucketed, nsets, nclasses) for b in index]
        sets = jax.tree.map(lambda *a: np.stack(a), *per)
        many = bucketed.blocks._replace(sets=sets)
        return many, RowData(None, None, None, None, None, None, jax.tree.map(lambda _: 0, sets))

    return take


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
            correlation = dataclasses.replace(correlation, group=group_name)
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
    st = dataclasses.replace(frame.structure, residual=res)
    return res, rows._replace(sets=_class_sets(rows, res, st, out))
