"""Exact padding: blocks laid out for larger shapes, so that nearby models share one program.

A compiled fit is specialised to its shapes: each term's number of levels ell_k (in the
static :class:`~jaxhlm.structure.Structure`), the COO entries' and pairs' counts (the
blocks' array shapes; :mod:`jaxhlm.blocks`).  Sleepstudy with 17 subjects and with 18
would compile twice.  Padding lays a model's blocks out for a larger *common* structure
and larger counts, without changing its objective at any theta:

- term 1: levels ell_1(own)..ell_1 - 1 get ``A11 = 0`` and ``zy1 = 0`` and no COO entry
  or pair.  Their factor is C_j = chol(lambda_1' 0 lambda_1 + I) = I: log|C_j| = 0, and
  they enter the Schur complement only through entries, of which they have none;
- a later term k: its padded levels are all-zero rows and columns of ``Arr`` (placed
  after the term's own levels; the columns after them, X's and y's, move along, and
  ``coo_row`` and ``pair_out`` are remapped with them, an increasing map, so
  ``pair_out`` stays sorted).  The kernel adds 1 to the diagonal of every random
  column, so each padded column is a unit row and column of the rest's matrix: its
  Cholesky factor has 1 there and nothing else changes (log 1 = 0);
- the COO entries and pairs (where the blocks have any) are padded with zero values
  pointing at level 0, row 0 (COO) and the last segment (pairs, so the sorted order kept
  for the segment sum holds): adding 0 changes no sum;
- ``nobs`` stays the model's own.

So the padded model has the same objective and the same estimates as its own: padding
is exact, not an approximation; the conditional modes of padded levels are 0 and are
cut off (:func:`unpad`).  A GLMM forms its blocks inside jit at each PIRLS step, so its
design's pattern and rows are padded instead (:func:`bucket_glmm`).
:mod:`jaxhlm.stacking` pads many data sets to their largest
shapes; :func:`bucket` pads one model to the next size on a *ladder*
(:func:`ladder`), so that every model whose sizes fall in the same rungs shares one
compiled program, in this process and, stored on disk (:mod:`jaxhlm.precompiled`), in
the next; :mod:`jaxhlm.bucket_choice` picks a rung with headroom, or a larger bucket
already used, so that data sets 10% apart share too.

The ladder has 4 sizes per doubling (8, 10, 12, 14, 16, 20, 24, ..., 56, then 72, 88,
104, ...: from 64 on, k * 2**s + 8, so that no padded count is a multiple of a large
power of 2, which made batched programs 3x slower, :func:`ladder`), so padding adds
at most 25% to a count (26% between 57 and 72).  Work linear in a count (term 1's levels, the entries, the
pairs, a batch's fits) grows by at most that.  The rest's dense Cholesky costs m^3 in
its size m, so when m is large (above ``FINE_ABOVE``) the later terms' levels use a
ladder of 16 sizes per doubling (at most 6.25% more levels, 20% more work) instead, and
so does every count above :data:`FINE_FROM` (a million pairs: linear work, but large).
Counts up to 8 are not padded.  ``benchmarks/README.md`` ("Buckets") has measured costs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .blocks import Blocks, Pattern
from .errors import DataError
from .structure import Structure

COARSE_BITS = 2
"""Sizes per doubling = 2 ** COARSE_BITS: the ladder of counts whose cost is linear."""

FINE_BITS = 4
"""Sizes per doubling = 2 ** FINE_BITS: the later terms' levels of a large dense block."""

FINE_ABOVE = 500
"""The rest's size m above which its terms' levels use the fine ladder: there the m^3
work (a Cholesky factor and an inverse per gradient, tens of milliseconds) dominates;
below, a fit's fixed costs do, and the coarse ladder lets more data sets share a program."""

FINE_FROM = 1 << 20
"""Counts above this (a million pairs, entries or rows) take the fine ladder as well: a
fit's work is linear in them and large, and 6.25% of padding costs less than 25%.
InstEval's 2,014,778 pairs padded to 2,621,448 (30%, with headroom) made each evaluation
of its criterion and gradient 13-16 ms (15%) slower than the unpadded model's
(``/tmp`` probe, 2026-12-04; the fine ladder's 2,228,232 pads 11%).  Headroom and reach
(:mod:`jaxhlm.bucket_choice`) still apply to these counts."""

ENABLED = True
"""Whether :func:`bucket` pads (a switch for measurements; results are the same)."""


SKEW = 8
"""Rungs from :data:`SKEW_FROM` up are k * 2**s + SKEW, not k * 2**s (:func:`ladder`)."""

SKEW_FROM = 64
"""The smallest rung k * 2**s that is skewed by :data:`SKEW`."""


def _rung(x: int, bits: int) -> int:
    """The smallest k * 2**s >= x with 2**bits <= k < 2**(bits + 1) (x > 2**(bits + 1))."""
    shift = (x - 1).bit_length() - (bits + 1)
    return -(-x >> shift) << shift


def ladder(x: int, bits: int = COARSE_BITS) -> int:
    """The smallest size >= x of the form k * 2**s with 2**bits <= k < 2**(bits + 1)
    (x itself when x <= 2**(bits + 1)): 8, 10, 12, 14, 16, 20, ... for bits = 2, and
    from 64 on k * 2**s + 8 (72, 88, 104, 120, 136, 168, ...).

    Why the skew: a vmapped fit's arrays are laid out fit by fit, so an array of n
    levels puts consecutive fits' copies of one element n x 8 bytes (times its inner
    size) apart.  With n a multiple of a large power of 2 those addresses share a few
    cache sets, and a batched scatter or segment sum over the levels ran 3-4x slower on
    this machine's CPU (128 fits: 3,072 levels 20 ms, 3,080 levels 6 ms, 2,900 levels
    7 ms; ``benchmarks/README.md``, "Buckets").

    Above :data:`FINE_FROM` every count takes the fine ladder (a power of 2 is a rung of
    both, so the ladder stays monotone)."""
    x = int(x)
    if x <= 2 << bits:
        return max(x, 0)
    if x > FINE_FROM:
        bits = max(bits, FINE_BITS)
    rung = _rung(x, bits)
    if rung < SKEW_FROM:
        return rung
    return _rung(max(x - SKEW, SKEW_FROM), bits) + SKEW


def bucket_structure(st: Structure) -> Structure:
    """``st`` with every term's number of levels moved up its ladder (the module
    docstring), and a residual structure's static sizes
    (:meth:`jaxhlm.residual.base.ResidualPart.bucketed`)."""
    return with_levels(st, rungs([t.nlevels for t in st.terms], fine_levels(st)))


def column_map(own: Structure, common: Structure) -> np.ndarray:
    """New index of each of the own ``m`` columns of the rest in the common layout."""
    parts, new = [], 0
    for t, c in zip(own.rest_terms, common.rest_terms):
        parts.append(new + np.arange(t.q))
        new += c.q
    parts.append(new + np.arange(own.p + 1))
    return np.concatenate(parts).astype(np.int64)


def grow(a: np.ndarray, n: int, axis: int = 0, fill=0) -> np.ndarray:
    """``a`` with its ``axis`` extended to n entries, the new ones ``fill`` (each element
    written once: a's, then the fill)."""
    shape = list(a.shape)
    shape[axis] = n
    out = np.empty(shape, dtype=a.dtype)
    lead = (slice(None),) * axis
    out[lead + (slice(0, a.shape[axis]),)] = a
    out[lead + (slice(a.shape[axis], None),)] = fill
    return out


def grow_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with n rows, the new ones copies of its row 0 (a GLMM's padded rows,
    :func:`bucket_glmm`)."""
    return np.concatenate([a, np.repeat(a[:1], n - a.shape[0], axis=0)])


def spread(Arr: np.ndarray, cmap: np.ndarray, m: int) -> np.ndarray:
    """The rest's matrices (..., m_own, m_own) placed at ``cmap`` in zeros (..., m, m)."""
    out = np.zeros(Arr.shape[:-2] + (m, m), dtype=Arr.dtype)
    out[..., cmap[:, None], cmap[None, :]] = Arr
    return out


def pad(blocks: Blocks, own: Structure, common: Structure, nnz: int, npairs: int) -> Blocks:
    """One model's blocks laid out for the common structure, with ``nnz`` COO entries
    and ``npairs`` pairs (see the module docstring)."""
    ell1 = common.terms[0].nlevels
    mm_own, mm = own.m - 1, common.m - 1
    if common.m ** 2 >= 2 ** 31:
        raise DataError(f"the padded model has {mm} columns after term 1; the pair indices "
                        "would overflow int32")
    cmap = column_map(own, common)
    cmap32 = cmap.astype(np.int32)   # 32 bits: mm * mm < 2**31
    ra, rb = np.divmod(blocks.pair_out.astype(np.int32, copy=False), np.int32(mm_own))
    pair_out = cmap32[ra]
    pair_out *= mm
    pair_out += cmap32[rb]
    return blocks._replace(   # the scalar fields (nobs, ...) as they are
        A11=grow(blocks.A11, ell1), coo_row=grow(cmap32[blocks.coo_row], nnz),
        coo_level=grow(blocks.coo_level, nnz), coo_val=grow(blocks.coo_val, nnz),
        zy1=grow(blocks.zy1, ell1), pair_level=grow(blocks.pair_level, npairs),
        pair_out=grow(pair_out, npairs, fill=mm * mm - 1),
        pair_val=grow(blocks.pair_val, npairs), pair_rand=grow(blocks.pair_rand, npairs, fill=False),
        Arr=spread(blocks.Arr, cmap, common.m))


def pad_pattern(pat: Pattern, own: Structure, common: Structure, rows: int, nnz: int,
                npairs: int) -> Pattern:
    """A design's :class:`~jaxhlm.blocks.Pattern` laid out for the common structure, with
    ``rows`` rows, ``nnz`` COO entries and ``npairs`` pairs, for blocks formed from it inside
    jit (a GLMM's PIRLS, :func:`jaxhlm.blocks.values`): padded rows are copies of row 0
    (:func:`grow_rows`) and must carry weight 0 (a GLMM's zero trials), so that what they
    add to row 0's entries is 0; padded entries have no rows, so their values are 0, and
    padded pairs join the last entry, a padded one (``nnz`` must exceed the own count when
    pairs are padded), into the last segment: every sum gets only zeros."""
    mm_own, mm = own.m - 1, common.m - 1
    cmap = column_map(own, common)
    ra, rb = np.divmod(pat.pair_out.astype(np.int64), mm_own)
    i32 = np.int32
    return Pattern(
        codes1=grow_rows(pat.codes1, rows), Z1=grow_rows(pat.Z1, rows),
        cols=grow_rows(cmap[pat.cols].astype(i32), rows), vals=grow_rows(pat.vals, rows),
        coo_index=grow_rows(pat.coo_index, rows),
        coo_row=grow(cmap[pat.coo_row].astype(i32), nnz), coo_level=grow(pat.coo_level, nnz),
        pair_a=grow(pat.pair_a, npairs, fill=nnz - 1), pair_b=grow(pat.pair_b, npairs, fill=nnz - 1),
        pair_level=grow(pat.pair_level, npairs),
        pair_out=grow((cmap[ra] * mm + cmap[rb]).astype(i32), npairs, fill=mm * mm - 1),
        pair_rand=grow(pat.pair_rand, npairs, fill=False))


@dataclasses.dataclass(frozen=True)
class Bucketed:
    """A model's own structure, the common one it is padded to, and the padded blocks."""

    own: Structure
    structure: Structure
    blocks: Blocks

    def responses(self, many: Blocks) -> Blocks:
        """:func:`jaxhlm.blocks.with_responses`' output for the own structure, padded:
        the response fields (a leading batch axis) laid out as :attr:`blocks`, the
        design's fields taken from :attr:`blocks`.  Per-response full blocks (responses
        with missing values) are padded one by one."""
        if many.A11.ndim == 4:
            per = [pad(Blocks(*f), self.own, self.structure, self.blocks.coo_row.shape[0],
                       self.blocks.pair_out.shape[0]) for f in zip(*many)]
            return Blocks(*[np.stack(f) for f in zip(*per)])
        cmap = column_map(self.own, self.structure)
        return self.blocks._replace(zy1=grow(many.zy1, self.structure.terms[0].nlevels, axis=1),
                                    Arr=spread(many.Arr, cmap, self.structure.m), nobs=many.nobs)


def count(x: int) -> int:
    """A count (entries, pairs, rows) moved up the coarse ladder; as it is when
    :data:`ENABLED` is off."""
    return ladder(x) if ENABLED else x


def sizes(st: Structure, nnz: int, npairs: int) -> tuple[Structure, int, int]:
    """The bucket of a structure and of counts of COO entries and pairs: each moved up its
    ladder (:func:`bucket_structure`, :func:`count`), or as they are when :data:`ENABLED`
    is off."""
    return (bucket_structure(st) if ENABLED else st), count(nnz), count(npairs)


def fine_levels(st: Structure) -> tuple[bool, ...]:
    """Which terms' level counts are on the fine ladder (the later terms of a large rest)."""
    return tuple(st.m > FINE_ABOVE and k > 0 for k in range(len(st.terms)))


def with_levels(st: Structure, levels) -> Structure:
    """``st`` with these level counts, one per term, and a residual structure's static
    sizes moved up the ladder (as :func:`bucket_structure`)."""
    terms = tuple(dataclasses.replace(t, nlevels=int(k)) for t, k in zip(st.terms, levels))
    residual = st.residual if st.residual is None or not ENABLED else st.residual.bucketed(ladder)
    return dataclasses.replace(st, terms=terms, residual=residual)


def rungs(counts, fine) -> tuple[int, ...]:
    """Each count moved up its ladder (fine where flagged): the default choice of a bucket
    (:mod:`jaxhlm.bucket_choice` picks one that may be larger)."""
    return tuple(ladder(c, FINE_BITS if f else COARSE_BITS) if ENABLED else int(c)
                 for c, f in zip(counts, fine))


def bucket(own: Structure, blocks: Blocks, choose=rungs) -> Bucketed:
    """One model's blocks padded to its bucket: ``choose(counts, fine)`` gives the bucket's
    counts (each term's levels, then the COO entries and pairs) from the model's own and
    which of them are on the fine ladder (default: each count's rung, :func:`rungs`)."""
    own_nnz, own_pairs = blocks.coo_row.shape[0], blocks.pair_out.shape[0]
    levels = tuple(t.nlevels for t in own.terms)
    *chosen, nnz, npairs = choose(levels + (own_nnz, own_pairs), fine_levels(own) + (False, False))
    common = with_levels(own, chosen)
    if common == own and (nnz, npairs) == (own_nnz, own_pairs):
        return Bucketed(own, own, blocks)
    return Bucketed(own, common, pad(blocks, own, common, nnz, npairs))


def bucket_glmm(own: Structure, data, choose=rungs):
    """A GLMM's :class:`~jaxhlm.pirls.GLMMData` padded to its bucket, and the bucket's
    structure: rows with zero trials, X, offset, response, Z and codes
    copied from row 0 (:func:`grow_rows`: each family's log-likelihood, its normalizer and
    the GLM weights are then exactly 0 there, and mu is row 0's, inside the family's
    range for every link), each term's levels (no rows: their modes are 0 and they add
    log 1 = 0), and both patterns (:func:`pad_pattern`; ``pattern0``, of Z alone, on the
    structure without X).  ``choose(counts, fine)`` gives the bucket's counts (each term's
    levels, the rows, and each pattern's entries and pairs) as for :func:`bucket`; a
    pattern with pairs counts one entry more, so that a padded pair can point at a padded
    entry.  As :func:`bucket`, the own data when nothing grows."""
    if not ENABLED:
        return own, data
    n = data.y.shape[0]
    pats = (data.pattern, data.pattern0)
    own_counts = [(p.coo_row.shape[0], p.pair_a.shape[0]) for p in pats]
    counts = tuple(t.nlevels for t in own.terms) + (n,) + tuple(
        c for nnz, npairs in own_counts for c in (nnz + (npairs > 0), npairs))
    *levels, rows, nnz, npairs, nnz0, npairs0 = choose(counts, fine_levels(own) + (False,) * 5)
    common = with_levels(own, levels)
    sizes0 = [(nnz, npairs), (nnz0, npairs0)]
    if common == own and rows == n and [tuple(s) for s in sizes0] == own_counts:
        return common, data
    without_x = [dataclasses.replace(s, p=0) for s in (own, common)]
    return common, data._replace(
        pattern=pad_pattern(data.pattern, own, common, rows, *sizes0[0]),
        pattern0=pad_pattern(data.pattern0, *without_x, rows, *sizes0[1]),
        X=grow_rows(data.X, rows), offset=grow_rows(data.offset, rows), y=grow_rows(data.y, rows),
        trials=grow(data.trials, rows), codes=tuple(grow_rows(c, rows) for c in data.codes),
        Z=tuple(grow_rows(z, rows) for z in data.Z))


def unpad(out, own: Structure):
    """A fit's :class:`~jaxhlm.fitting.FitArrays` of a padded model with the padded
    levels' conditional modes and covariances cut off (each term's own levels come first)."""
    cond = out.cond
    b = [bk[..., :t.nlevels, :] for bk, t in zip(cond.b, own.terms)]
    b_var = [v[..., :t.nlevels, :, :] for v, t in zip(cond.b_var, own.terms)]
    return out._replace(cond=cond._replace(b=b, b_var=b_var))
