"""Cross-product blocks of ``[Z X y]``, computed once per model so that evaluating the
objective costs nothing in n.

Write the random-effects terms in lme4's order, term 1 (the one with most levels)
first.  Term k has ell_k levels and p_k covariates, so q_k = ell_k p_k columns of Z.
Split the columns of ``[Z X y]`` into

- term 1's columns, in ell_1 blocks of p_1 (one block per level), and
- the *rest*: the columns of terms 2..K (level-major, then covariate, as lme4
  orders Z), then X's p columns, then y: m = sum_{k>=2} q_k + p + 1 columns.

The blocks (MixedModels.jl's ``A``, arranged for that split) are

- ``A11`` (ell_1, p_1, p_1): Z_1'Z_1, block diagonal because each row has one level;
- ``coo_*``: [Z_rest X]'Z_1 as a sparse list of nonzeros, each a row of the rest
  (``row`` < m - 1), a level j of term 1 (``level``) and a p_1-vector (``val``); X's
  columns are (dense) entries for every level;
- ``zy1`` (ell_1, p_1): Z_1'y, the response's part of the same cross-product;
- ``pair_*``: every pair (a, b) of those nonzeros that share a level j with
  row_a <= row_b, with ``out = row_a * (m - 1) + row_b`` (sorted) and
  ``val = a_a a_b'`` (p_1 x p_1).  Eliminating term 1 subtracts
  sum_j a_a' W_j a_b from entry (row_a, row_b) of the rest's matrix, which is linear
  in the small per-level matrices W_j: these pairs turn that Schur complement into
  one segment sum, with no q_1 x q_1 (or n x q) matrix;
- ``Arr`` (m, m): the rest's own cross-products [Z_rest X y]'[Z_rest X y], dense.

The pairs cost about ``sum_j nnz_j^2 / 2`` per evaluation: few when term 1's levels
touch few columns of the rest (InstEval: a student rates ~24 of 1,128 instructors),
many in a crossed design where each level meets a large share of the rest (500
subjects each seeing 120 of 240 items: 3.75 million pairs for 61,000 entries).  There
the kernel forms the Schur complement densely instead, as B'B with B_j = T_j A_1r^(j)
scattered from the COO entries into an (ell_1 p_1) x m matrix (one matrix product; no
q_1 x q_1 matrix either), and the pair arrays are empty (:func:`by_pairs` decides).

The pairs and the COO depend on the design alone; a new response changes only
``zy1``, the last row and column of ``Arr`` and ``nobs``.

``nobs`` is an array (not static) so that responses with different numbers of
observed rows can share a batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .frame import ModelFrame
from .structure import Structure


DENSE_SCHUR_RATIO = 16
"""The Schur complement of term 1 is formed by the pairs when a dense product would take
more than this many times their multiply-adds (ell_1 p_1 m^2 against npairs p_1^2); a
dense matrix product does that much more per second than the pairs' gather and segment
sum (``benchmarks/README.md``, "Dense Schur complements")."""

DENSE_SCHUR_MAX = 2 ** 24
"""The largest dense B (ell_1 p_1 x m entries, 128 MB in float64) formed per fit."""


def by_pairs(st: Structure, npairs: int) -> bool:
    """Whether term 1's Schur complement is formed by the pairs (else densely, from the
    COO entries; module docstring) for a structure with ``npairs`` pairs."""
    t1 = st.terms[0]
    dense = t1.nlevels * t1.p * st.m
    return dense > DENSE_SCHUR_MAX or dense * st.m > DENSE_SCHUR_RATIO * npairs * t1.p ** 2


class Blocks(NamedTuple):
    """The arrays of the cross-product blocks (see the module docstring for their meaning)."""

    A11: np.ndarray        # (ell_1, p_1, p_1)
    coo_row: np.ndarray    # (nnz,) int32: row of the rest (< m - 1)
    coo_level: np.ndarray  # (nnz,) int32: level of term 1
    coo_val: np.ndarray    # (nnz, p_1)
    zy1: np.ndarray        # (ell_1, p_1): Z_1'y
    pair_level: np.ndarray  # (npairs,) int32: the level j the pair shares (npairs = 0: dense)
    pair_out: np.ndarray   # (npairs,) int32: row_a * (m - 1) + row_b, row_a <= row_b, sorted
    pair_val: np.ndarray   # (npairs, p_1, p_1): a_a a_b'
    pair_rand: np.ndarray  # (npairs,) bool: both rows belong to random terms
    Arr: np.ndarray        # (m, m)
    nobs: np.ndarray       # () float: observations with a positive weight
    logw: np.ndarray       # () float: sum of log w_i over them (0 without prior weights)
    sigma: np.ndarray      # () float: the known residual SD (Structure.known_sigma); else unused


def _rest_columns(frame: ModelFrame, st: Structure, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per observation, the rest columns it touches and its values there: (n, w) each.

    Term k >= 2 contributes its p_k columns at level code_k(i); X and y contribute all
    of theirs.  w = sum_{k>=2} p_k + p + 1.
    """
    n = frame.nobs
    idx, val, offset = [], [], 0
    for term in frame.terms[1:]:
        p = term.spec.p
        idx.append(offset + term.codes[:, None].astype(np.int64) * p + np.arange(p)[None, :])
        val.append(term.Z)
        offset += term.spec.q
    idx.append(np.broadcast_to(offset + np.arange(st.p + 1), (n, st.p + 1)))
    val.append(np.column_stack([frame.X, frame.y if y is None else y]))
    return np.concatenate(idx, axis=1), np.concatenate(val, axis=1)


class Pattern(NamedTuple):
    """Where the blocks' nonzeros are: the design alone (NumPy, computed once per design).

    Per row i: term 1's level ``codes1`` and covariates ``Z1`` (n, p_1); the rest
    columns it touches ``cols`` (n, w; the last is y's, m - 1) and the design's values
    there ``vals`` (n, w - 1; y's comes with the response); ``coo_index`` (n, w - 1):
    the COO entry that each product with term 1 adds to.  Then the COO entries
    (``coo_row``, ``coo_level``) and the pairs of entries that share a level
    (``pair_a``, ``pair_b`` into the entries; ``pair_level``, ``pair_out``,
    ``pair_rand`` as in :class:`Blocks`).
    """

    codes1: np.ndarray
    Z1: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    coo_index: np.ndarray
    coo_row: np.ndarray
    coo_level: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    pair_level: np.ndarray
    pair_out: np.ndarray
    pair_rand: np.ndarray


def pattern(frame: ModelFrame, pairs: bool | None = None) -> Pattern:
    """The design's :class:`Pattern` (NumPy, once): the COO entries of [Z_rest X]'Z_1 and
    the pairs of entries sharing a level of term 1 (the Schur complement's sparsity);
    no pairs where :func:`by_pairs` says a dense product is cheaper (``pairs`` forces
    the choice)."""
    st = frame.structure
    first = frame.terms[0]
    ell1, m = first.spec.nlevels, st.m
    codes1 = first.codes.astype(np.int64)
    cols, vals = _rest_columns(frame, st)
    w = cols.shape[1]
    key = np.repeat(codes1, w - 1) * m + cols[:, :-1].reshape(-1)
    ukey, inv = np.unique(key, return_inverse=True)
    coo_level, coo_row = ukey // m, ukey % m
    if pairs is None:
        per_level = np.bincount(coo_level, minlength=ell1)
        pairs = by_pairs(st, int(np.sum(per_level * (per_level + 1) // 2)))
    i32 = np.int32
    row, level = coo_row.astype(i32), coo_level.astype(i32)
    if pairs:
        pair_a, pair_b = _ordered_pairs_sharing_level(coo_level, ell1)
    else:
        pair_a = pair_b = np.zeros(0, dtype=i32)
    order, pair_out = _stable_order(row[pair_a], row[pair_b], m - 1)
    pair_a, pair_b = pair_a[order], pair_b[order]
    return Pattern(codes1.astype(i32), first.Z, cols.astype(i32), vals[:, :-1],
                   inv.reshape(frame.nobs, w - 1).astype(i32), row, level,
                   pair_a, pair_b, level[pair_a], pair_out.astype(i32), row[pair_b] < st.m_rand)


def _segment_sum(xp, data, ids, n: int):
    """sum of ``data`` rows by ``ids`` into n segments: NumPy (``np.bincount`` per trailing
    element) or JAX (``jax.ops.segment_sum``), so one :func:`values` serves both."""
    if xp is np:
        flat = data.reshape(data.shape[0], int(np.prod(data.shape[1:])))   # (no -1: data may be empty)
        out = np.stack([np.bincount(ids, weights=flat[:, k], minlength=n) for k in range(flat.shape[1])], -1)
        out = out.astype(np.result_type(data, np.float64), copy=False)   # (empty weights: bincount gives int64)
        return out.reshape((n,) + data.shape[1:])
    import jax

    return jax.ops.segment_sum(data, ids, num_segments=n)


def values(pat: Pattern, st: Structure, weights, y, sigma=1.0, xp=np) -> Blocks:
    """The blocks of a pattern for row weights w_i (0 leaves a row out) and response y.

    Every cross-product is weighted, [Z X y]' W [Z X y] (lme4's ``weights =``): term 1's
    A11_j = sum_i w_i z_1i z_1i', Z_1'Wy, the rest's dense Arr, and the COO values
    sum_i w_i v_ia z_1i, whose pairwise products make the pairs' values.  Pure in its
    array arguments: with ``xp=jax.numpy`` it runs inside jit and vmap, so weights that
    change per iteration (PIRLS) or a response per fit need no trip to the host; with
    NumPy (``xp=np``) it is :func:`build`'s precomputed path.
    """
    ell1, p1, m = st.terms[0].nlevels, st.terms[0].p, st.m
    w = weights
    Zw = pat.Z1 * w[:, None]
    A11 = _segment_sum(xp, Zw[:, :, None] * pat.Z1[:, None, :], pat.codes1, ell1)
    zy1 = _segment_sum(xp, Zw * y[:, None], pat.codes1, ell1)
    full = xp.concatenate([pat.vals, y[:, None]], axis=1)
    flat = (pat.cols[:, :, None] * m + pat.cols[:, None, :]).reshape(-1)
    prod = (full[:, :, None] * (full * w[:, None])[:, None, :]).reshape(-1)
    Arr = _segment_sum(xp, prod, flat, m * m).reshape(m, m)
    contrib = (pat.vals[:, :, None] * Zw[:, None, :]).reshape(-1, p1)
    coo_val = _segment_sum(xp, contrib, pat.coo_index.reshape(-1), pat.coo_row.shape[0])
    positive = w > 0
    return Blocks(
        A11=A11, coo_row=pat.coo_row, coo_level=pat.coo_level, coo_val=coo_val, zy1=zy1,
        pair_level=pat.pair_level, pair_out=pat.pair_out,
        pair_val=coo_val[pat.pair_a][:, :, None] * coo_val[pat.pair_b][:, None, :],
        pair_rand=pat.pair_rand, Arr=Arr, nobs=xp.sum(positive) * 1.0,
        logw=xp.sum(xp.where(positive, xp.log(xp.where(positive, w, 1.0)), 0.0)),
        sigma=xp.asarray(sigma, dtype=float))


def build(frame: ModelFrame, y: np.ndarray | None = None,
          observed: np.ndarray | None = None, pairs: bool | None = None) -> tuple[Structure, Blocks]:
    """Compute the structure and the cross-product blocks of a model frame (NumPy, once):
    :func:`values` of the design's :func:`pattern`.

    ``y`` replaces the frame's response; ``observed`` (a boolean mask) leaves rows out of
    every cross-product (a response's missing values) without changing the structure:
    the COO entries and pairs come from all rows, so blocks of one design with different
    missing rows share their shapes and index arrays.  Prior weights w_i (the frame's
    ``weights``: row i has residual variance sigma^2 / w_i) weight every cross-product,
    [Z X y]' W [Z X y], as lme4's ``weights =`` does.  ``pairs``: as :func:`pattern`'s.
    """
    st = frame.structure
    w_row = np.ones(frame.nobs) if frame.weights is None else frame.weights.copy()
    if observed is not None:
        w_row = np.where(observed, w_row, 0.0)
    blocks = values(pattern(frame, pairs), st, w_row, frame.y if y is None else y,
                    1.0 if frame.sigma is None else float(frame.sigma))
    return st, blocks


def without_pairs(blocks: Blocks) -> Blocks:
    """The same blocks with no pairs: the kernel forms their Schur complement densely."""
    return blocks._replace(pair_level=blocks.pair_level[:0], pair_out=blocks.pair_out[:0],
                           pair_val=blocks.pair_val[:0], pair_rand=blocks.pair_rand[:0])


def _stable_order(high: np.ndarray, low: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """The stable argsort of the keys ``high * base + low`` (0 <= low < base), and the keys
    in that order: the keys with each position in their low bits, sorted by value (NumPy
    sorts 64-bit integers with SIMD instructions; the positions make the keys distinct, so
    the order is the stable one), then the positions and keys read back.  InstEval's 2
    million pairs: 21 ms, against 44 ms by two 16-bit radix sorts and 0.19 s by a stable
    argsort (timsort) of the keys."""
    n = high.size
    shift = max(int(n - 1).bit_length(), 1)
    key = high.astype(np.int64)
    key *= base
    key += low
    if n and int(key.max()) >= 1 << (63 - shift):   # no room for the positions: the plain way
        order = np.argsort(key, kind="stable")
        return order, key[order]
    key <<= shift
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    return key & ((1 << shift) - 1), key >> shift


def _ordered_pairs_sharing_level(level: np.ndarray, nlevels: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b), a <= b, of entries with ``level[a] == level[b]``, for entries
    sorted by level (the COO entries, sorted by level, then row: so row[a] <= row[b]),
    in order of a, then b (vectorised; 32-bit, as the blocks keep them)."""
    i32 = np.int32
    ends = np.cumsum(np.bincount(level, minlength=nlevels))
    c = ends[level] - np.arange(level.size)       # partners b >= a in a's level
    a = np.repeat(np.arange(level.size, dtype=i32), c)
    b = np.arange(a.size, dtype=i32)
    b -= np.repeat((np.cumsum(c) - c).astype(i32), c)
    b += a
    return a, b


RESPONSE_FIELDS = ("zy1", "Arr", "nobs")
"""The fields of :class:`Blocks` that depend on the response (the rest is the design's)."""


def with_responses(frame: ModelFrame, st: Structure, blocks: Blocks, Y: np.ndarray) -> Blocks:
    """Blocks for B responses on one design: the response fields gain a leading axis B.

    Only Z_1'y, the last row and column of Arr ([Z_rest X y]'y) and nobs change, each
    one sparse product per response (O(n)); the pairs and the COO are shared.  Vmap
    over the result with ``in_axes=response_axes(blocks)``.  When any response has
    missing values (NaN), each response gets its own full blocks, built on its observed
    rows (same shapes), and every field gains the leading axis.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    B, n = Y.shape
    if n != frame.nobs:
        raise ValueError(f"responses have {n} rows; the model has {frame.nobs} observations")
    observed = np.isfinite(Y)
    if not observed.all():  # rows missing in some response: full blocks per response
        per = [build(frame, np.where(o, yb, 0.0), o)[1] for yb, o in zip(Y, observed)]
        return Blocks(*[np.stack(f) for f in zip(*per)])
    return with_products(blocks, response_products(frame, st, Y))


class ResponseProducts(NamedTuple):
    """What a response adds to a design's blocks, for B responses (no missing values):
    Z_1'Wy (B, ell_1, p_1), [Z_rest X]'Wy (B, m - 1), y'Wy (B,), and the rows n."""

    zy1: np.ndarray
    ry: np.ndarray
    yy: np.ndarray
    nobs: int


class LevelSums:
    """Sums of many rows' values by a code per row (a level, a column): the rows sorted by
    code once, then ``np.add.reduceat`` for B responses at a time.  (scipy.sparse's
    indicator products did the same, but importing scipy.sparse was 0.12 s of a short
    process, 2026-12-03.)"""

    def __init__(self, codes: np.ndarray, n: int):
        counts = np.bincount(codes, minlength=n)
        self.order = np.argsort(codes, kind="stable")
        self.used = np.flatnonzero(counts)
        self.starts = (np.cumsum(counts) - counts)[self.used]
        self.n = n

    def sums(self, R: np.ndarray) -> np.ndarray:
        """sum_{i: code_i = j} R[b, i]: (n, B) from R (B, rows)."""
        return self.sums_in_order(R[:, self.order]).T

    def sums_in_order(self, R: np.ndarray) -> np.ndarray:
        """The same, (B, n), from R's rows already in code order (``R[:, order]``)."""
        out = np.zeros((R.shape[0], self.n))
        if self.used.size:
            out[:, self.used] = np.add.reduceat(R, self.starts, axis=1)
        return out


def response_products(frame: ModelFrame, st: Structure, Y: np.ndarray) -> ResponseProducts:
    """The cross-products of B complete responses Y (B, n) with the design, for all of them
    at once, O(n B) (:func:`with_products` makes blocks of them)."""
    B, n = Y.shape
    first = frame.terms[0]
    p1, ell1 = first.spec.p, first.spec.nlevels
    Yw = Y if frame.weights is None else Y * frame.weights   # W y
    by_level = LevelSums(first.codes, ell1)
    zy1 = np.stack([by_level.sums(Yw * first.Z[:, k]).T for k in range(p1)], axis=-1)
    cols, vals = _rest_columns(frame, st)
    ry = np.zeros((B, st.m - 1))
    for j in range(cols.shape[1] - 1):   # each slot of the rest's columns, without y itself
        ry += LevelSums(cols[:, j], st.m - 1).sums(Yw * vals[:, j]).T
    return ResponseProducts(zy1, ry, np.einsum("bi,bi->b", Yw, Y), n)


def with_products(blocks: Blocks, products: ResponseProducts, index=slice(None)) -> Blocks:
    """The design's blocks with the responses' products at ``index`` (:func:`with_responses`
    without missing values): the response fields gain a leading batch axis."""
    zy1, ry, yy = products.zy1[index], products.ry[index], products.yy[index]
    B = yy.shape[0]
    Arr = np.broadcast_to(np.asarray(blocks.Arr), (B,) + blocks.Arr.shape).copy()
    Arr[:, -1, :-1] = ry
    Arr[:, :-1, -1] = ry
    Arr[:, -1, -1] = yy
    return blocks._replace(zy1=zy1, Arr=Arr, nobs=np.full(B, float(products.nobs)))


def response_axes(many: Blocks) -> Blocks:
    """``in_axes`` for vmapping over the output of :func:`with_responses`."""
    full = many.A11.ndim == 4  # per-response blocks (missing values)
    return Blocks(*[0 if full or f in RESPONSE_FIELDS else None for f in Blocks._fields])
