"""Many data sets of one formula as one batch: each data set's blocks padded to common shapes.

``fit_datasets`` (:mod:`jaxhlm.batch`) fits D data sets with the same columns, e.g. the
replicates of a simulation study, with one compiled, vmapped program.  Each data set
gets its own model frame and blocks (:func:`jaxhlm.frame.build`,
:func:`jaxhlm.blocks.build`) as a single fit would; they differ in their numbers of
levels (ell_k), nonzeros and pairs, so each is *padded* (:mod:`jaxhlm.padding`, exactly:
padded levels, entries and pairs add 0 to every sum) to the largest, moved up the
padding ladder, giving one common :class:`~jaxhlm.blocks.Structure` and one set of
array shapes; ``nobs`` stays each data set's own.

So every padded data set has, for every theta, the same objective as its own model, and
the same estimates: padding is exact, not an approximation (the tests compare each
fit with the data set's own ``LMM(formula, df).fit()``).  It costs the work of the
largest data set for every data set; :func:`stack` can split the data sets into
size buckets (one compilation each) when sizes vary widely.

Terms are matched across data sets by grouping factor, name and covariates.  lme4
orders the terms by decreasing number of levels, which can differ between data sets
(crossed factors ``(1|a) + (1|b)`` where a has more levels in one data set and b in
another); the batch uses one *common* order, by decreasing largest number of levels
(ties: data set 0's order).  The objective does not depend on the order of the terms
(it is a determinant and a residual sum of squares of the whole model); theta, the SDs
and correlations are reported in the common order (``Stacked.theta_names``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from . import blocks as _blocks
from . import frame as _frame
from .blocks import Blocks
from .padding import pad, sizes
from .errors import DataError, JaxhlmError
from .structure import Structure


class Bucket(NamedTuple):
    """Data sets padded to one set of shapes: their positions, common structure and blocks
    (every field with a leading axis, one entry per data set)."""

    index: np.ndarray
    structure: Structure
    blocks: Blocks


@dataclasses.dataclass
class Stacked:
    """D data sets of one formula, their blocks padded and stacked in size buckets.

    ``structure``: the common structure over all data sets (each term's largest number
    of levels), which names theta and the SDs; ``structures`` and ``frames``: each data
    set's own (its true numbers of levels; terms in the common order); ``buckets``: the
    padded blocks (see :func:`stack`).
    """

    formula: str
    structure: Structure
    frames: list[_frame.ModelFrame]
    structures: list[Structure]
    buckets: list[Bucket]

    @property
    def fixef_names(self) -> list[str]:
        return list(self.frames[0].fixef_names)

    @property
    def specs(self) -> tuple[_frame.TermSpec, ...]:
        """The terms with their names, in the common order, each with its largest number of levels."""
        return tuple(dataclasses.replace(s, nlevels=t.nlevels)
                     for s, t in zip(self.frames[0].specs, self.structure.terms))

    @property
    def theta_names(self) -> list[str]:
        """lme4's names of theta in the common order of terms."""
        return [name for s in self.specs for name in s.param_names()]

    @property
    def nobs(self) -> np.ndarray:
        return np.array([f.nobs for f in self.frames])

    def __len__(self) -> int:
        return len(self.frames)


def _term_key(spec: _frame.TermSpec) -> tuple:
    return (spec.group, spec.name, spec.columns)


def _describe(keys) -> str:
    return ", ".join(f"({' + '.join(c)} | {g})" for g, _, c in keys)


def frames(formula: str, datasets: Sequence[pd.DataFrame]) -> list[_frame.ModelFrame]:
    """Each data set's model frame; errors and warnings name the data set's index, and
    every data set must give the same fixed-effect columns and random terms."""
    out = []
    for i, data in enumerate(datasets):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out.append(_frame.build(formula, data))
            except JaxhlmError as err:
                raise type(err)(f"data set {i}: {err}") from None
        for w in caught:
            warnings.warn(f"data set {i}: {w.message}", w.category, stacklevel=3)
    if not out:
        raise DataError("no data sets to fit")
    first = out[0]
    keys0 = sorted(_term_key(t.spec) for t in first.terms)
    for i, fr in enumerate(out[1:], start=1):
        if fr.fixef_names != first.fixef_names:
            extra = [n for n in fr.fixef_names if n not in first.fixef_names]
            lack = [n for n in first.fixef_names if n not in fr.fixef_names]
            raise DataError(
                f"data set {i} has fixed-effect columns {fr.fixef_names}, data set 0 has "
                f"{first.fixef_names} (only in data set {i}: {extra}; missing: {lack}); a "
                "batch needs the same columns in every data set (check categorical "
                "predictors for absent levels, and the aliased columns dropped)")
        keys = sorted(_term_key(t.spec) for t in fr.terms)
        if keys != keys0:
            raise DataError(f"data set {i} has random-effects terms {_describe(keys)}, data set 0 "
                            f"has {_describe(keys0)}; a batch needs the same terms in every data set")
    return out


def common_order(frames: list[_frame.ModelFrame]) -> list[tuple]:
    """Term keys by decreasing largest number of levels, ties in data set 0's order
    (which is every data set's own lme4 order when they all agree)."""
    most: dict[tuple, int] = {}
    for fr in frames:
        for t in fr.terms:
            key = _term_key(t.spec)
            most[key] = max(most.get(key, 0), t.spec.nlevels)
    first = [_term_key(t.spec) for t in frames[0].terms]
    return sorted(first, key=lambda k: (-most[k], first.index(k)))


def _common(structures: list[Structure]) -> Structure:
    """The structure whose every term has its largest number of levels over ``structures``."""
    first = structures[0]
    terms = tuple(dataclasses.replace(t, nlevels=max(s.terms[k].nlevels for s in structures))
                  for k, t in enumerate(first.terms))
    return dataclasses.replace(first, terms=terms)


def _bucket(index: np.ndarray, structures: list[Structure], built: list[Blocks]) -> Bucket:
    """The data sets at ``index``, padded to their largest shapes and stacked."""
    structures = [structures[i] for i in index]
    common, nnz, npairs = sizes(_common(structures), max(built[i].coo_row.shape[0] for i in index),
                                max(built[i].pair_out.shape[0] for i in index))
    if not _blocks.by_pairs(common, npairs):  # one choice per bucket: all dense
        built = {i: _blocks.without_pairs(built[i]) for i in index}
        npairs = 0
    padded = [pad(built[i], s, common, nnz, npairs) for i, s in zip(index, structures)]
    return Bucket(index, common, Blocks(*[np.stack(f) for f in zip(*padded)]))


def stack(formula: str, datasets: Sequence[pd.DataFrame], buckets: int = 1) -> Stacked:
    """Frames and blocks of every data set, padded and stacked.

    ``buckets`` > 1 sorts the data sets by size (the dense block's m, then term 1's
    levels) and cuts them into that many groups of (nearly) equal count, each padded
    to its own largest: less padding when sizes vary widely, at one compilation per
    bucket.  Every bucket's structure has the same terms in the same order (only the
    numbers of levels differ), so their results line up column for column.
    """
    frs = frames(formula, datasets)
    order = common_order(frs)
    structures, built = [], []
    for i, fr in enumerate(frs):
        by_key = {_term_key(t.spec): t for t in fr.terms}
        frs[i] = dataclasses.replace(fr, terms=[by_key[k] for k in order])
        st, b = _blocks.build(frs[i], pairs=True)  # the bucket decides (_bucket)
        structures.append(st)
        built.append(b)
    D = len(frs)
    if buckets <= 1:
        groups = [np.arange(D)]
    else:
        size = np.array([(s.m, s.terms[0].nlevels) for s in structures])
        by_size = np.lexsort((size[:, 1], size[:, 0]))
        groups = [np.sort(g) for g in np.array_split(by_size, min(int(buckets), D))]
    return Stacked(formula, _common(structures), frs, structures,
                   [_bucket(g, structures, built) for g in groups])
