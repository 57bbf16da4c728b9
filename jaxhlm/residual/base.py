"""The protocol of residual structures: Var e = sigma^2 Lambda_e with Lambda_e = D R D.

nlme writes the residual covariance of a linear mixed model (``lme``) or a generalised
least-squares model (``gls``) as sigma^2 D R D: a *variance function* gives the SD
multipliers D = diag(g_i) (``weights = varIdent(...)``, ``varPower(...)``), and a
*correlation structure* the block-diagonal correlation R, one block per group
(``correlation = corAR1(...)``, ``corCompSymm(...)``; Pinheiro and Bates 2000, Mixed-
Effects Models in S and S-PLUS, section 5.2).

jaxhlm fits them by whitening (:mod:`jaxhlm.residual.whiten`): with W = R^{-1/2} D^{-1},
W e ~ N(0, sigma^2 I), so the rows of [Z X y] multiplied by W give an ordinary mixed
model whose cross-product blocks (:mod:`jaxhlm.blocks`) are recomputed at each value of
the structure's parameters, and -2 log L gains log|Lambda_e| = -2 log|det W|.  W keeps
Z's sparsity when each correlation group lies within one level of every random term
(nlme's rule: the correlation applies within the innermost grouping level).

A structure is a frozen dataclass (hashable: it is part of the compiled program's static
:class:`~jaxhlm.structure.Structure`).  It names the data columns it needs, and
:meth:`bind` reads them once (NumPy) into arrays and returns a copy holding the static
sizes those arrays need (e.g. AR(1)'s largest lag).  Its parameters are unbounded reals
(the optimiser's); :meth:`natural` gives nlme's values (phi, rho, variance ratios,
powers), and ``param_names`` their names.  NUTS samples the natural values under the
structure's :meth:`~ResidualPart.prior` (uniform on a correlation's range; log-normal(0, 1)
for an SD ratio; normal(0, 1) for a power).  To add one, subclass :class:`Correlation`
(define :meth:`Correlation.whiten` and its inverse :meth:`Correlation.color`) or :class:`VarianceFunction` (define
:meth:`VarianceFunction.log_sd`) in a new file of this package.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

from ..lazy_jax import jnp
import numpy as np
import pandas as pd

from ..errors import DataError


@dataclasses.dataclass(frozen=True)
class ResidualPart(abc.ABC):
    """What correlation structures and variance functions share."""

    nlme: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def nparams(self) -> int:
        """The number of (unbounded) parameters."""

    @abc.abstractmethod
    def columns(self) -> list[str]:
        """The data columns the structure reads."""

    @abc.abstractmethod
    def bind(self, data: pd.DataFrame, groups: np.ndarray | None) -> tuple["ResidualPart", tuple]:
        """The structure with its static sizes and its arrays (NumPy) for the model's rows
        ``data``; ``groups``: each row's correlation group (codes), for correlations."""

    @abc.abstractmethod
    def param_names(self) -> list[str]:
        """nlme's names of the natural parameters (:meth:`natural`)."""

    @abc.abstractmethod
    def natural(self, par: np.ndarray) -> np.ndarray:
        """The parameters on nlme's scale (``coef(..., unconstrained = FALSE)``)."""

    def start(self) -> np.ndarray:
        """The optimiser's start: independent rows with equal variances."""
        return np.zeros(self.nparams)

    def natural_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The open range of each natural parameter (:meth:`natural`): a profile's bounds."""
        return np.full(self.nparams, -np.inf), np.full(self.nparams, np.inf)

    def bucketed(self, ladder) -> "ResidualPart":
        """The structure with the static sizes that :meth:`bind` set moved up ``ladder``
        (:func:`jaxhlm.padding.count`) where a larger size changes no result (a longer
        table of powers), so that models of nearby sizes share a compiled program
        (:mod:`jaxhlm.padding`); itself where it has none."""
        return self

    # ------------------------------------------------------------------ NUTS
    def sites(self) -> list[str]:
        """The sampled sites (:meth:`sample`): nlme's class and parameter, ``corAR1:Phi``."""
        return [f"{self.nlme}:{name}" for name in self.param_names()]

    @abc.abstractmethod
    def prior(self):
        """The prior of each natural parameter (a NumPyro distribution, one for all)."""

    @abc.abstractmethod
    def unbounded(self, natural):
        """The inverse of :meth:`natural`, in jnp (arrays may carry leading axes)."""

    def sample(self, get) -> jnp.ndarray:
        """The parameters (..., nparams) from the sites, ``get(site, prior)`` as
        :meth:`jaxhlm.covariance.Covariance.sample`'s."""
        d = self.prior()
        return jnp.stack([self.unbounded(get(site, d)) for site in self.sites()], axis=-1)


@dataclasses.dataclass(frozen=True)
class Correlation(ResidualPart):
    """A within-group residual correlation R (nlme's ``corStruct``).

    ``group``: the grouping column (None: the model's innermost grouping factor, as
    nlme's ``lme`` takes it)."""

    group: str | None = None

    def columns(self) -> list[str]:
        return [] if self.group is None else [self.group]

    @abc.abstractmethod
    def whiten(self, par: jnp.ndarray, arrays: tuple, M: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(R^{-1/2} M, log|det R^{-1/2}|) for the rows M (n, k) of the model."""

    def markov(self, arrays: tuple):
        """For a correlation whose whitening is bidiagonal, (W e)_i = (e_i - a_i e_prev(i)) / r_i
        with (a_i, r_i) set by an integer key of the row (AR(1): its lag; 0: no predecessor),
        the NumPy pair (prev, key); None otherwise.  It lets :mod:`jaxhlm.residual.whiten`
        precompute the cross-products per class of rows, so that an evaluation costs
        nothing in n."""
        return None

    def exchangeable(self, arrays: tuple):
        """For a correlation whose whitening subtracts a share of the group's mean,
        (W e)_i = (e_i - a_i mean_g(i)(e)) / r_i with (a_i, r_i) set by an integer key of
        the row (compound symmetry: its group's size), the NumPy pair (groups, key); None
        otherwise.  As :meth:`markov`, with the group's mean in place of the predecessor."""
        return None

    def coefficients(self, par: jnp.ndarray, key: jnp.ndarray, xp=jnp):
        """(a, r) at the keys of :meth:`markov` or :meth:`exchangeable` (a = 0, r = 1 for a
        markov key 0), in the array module ``xp``: ``jnp`` inside a compiled program, ``np``
        for a fit on the host (:mod:`jaxhlm.group_fit`)."""
        raise NotImplementedError

    def row_log_root(self, par: jnp.ndarray, key: jnp.ndarray, xp=jnp) -> jnp.ndarray:
        """Each row's share of -log|det R^{-1/2}| at the keys: log r for a bidiagonal
        whitening (its determinant is the product of the 1 / r_i)."""
        return xp.log(in_module(xp, self.coefficients, par, key)[1])

    @abc.abstractmethod
    def color(self, par: jnp.ndarray, arrays: tuple, e: jnp.ndarray) -> jnp.ndarray:
        """A square root of R times e (n,): R^{1/2} e has covariance R when e ~ N(0, I)
        (simulation), and :meth:`whiten` undoes it."""

    def observed(self, arrays: tuple, mask: np.ndarray) -> tuple | None:
        """The arrays (NumPy, in the model's rows) of the structure on the rows ``mask``
        alone, as nlme builds it after leaving out a response's missing values: a batch
        response with missing values (:func:`jaxhlm.batch.fit_many`) is fitted on its
        observed rows.  The rows left out get weight 0 and are never a partner of a row
        kept.  Static sizes keep the model's (compound symmetry's lower bound on rho
        stays -1 / (largest group - 1) of all rows).  None where the structure cannot."""
        return None

    def padded(self, arrays: tuple, n: int, ladder) -> tuple | None:
        """The arrays for ``n`` rows, the model's own first: the simulator of a design
        padded to its bucket (:func:`jaxhlm.batch.simulate_responses`) colors the extra
        rows' draws too and drops them, so they may correlate among themselves but not
        with the model's rows.  Sizes other than n (groups) move up ``ladder``.  None
        where the structure cannot: the simulator then keeps the model's own rows."""
        return None


@dataclasses.dataclass(frozen=True)
class VarianceFunction(ResidualPart):
    """Residual SD multipliers g_i (nlme's ``varFunc``): Var e_i = sigma^2 g_i^2."""

    @abc.abstractmethod
    def log_sd(self, par: jnp.ndarray, arrays: tuple, xp=jnp) -> jnp.ndarray:
        """log g_i (n,) at the parameters, in the array module ``xp`` (as
        :meth:`Correlation.coefficients`)."""

    def padded(self, arrays: tuple, n: int, ladder) -> tuple | None:
        """The arrays for ``n`` rows (as :meth:`Correlation.padded`): each array is one
        value per row, and the extra rows get 0, which must be a valid value (VarIdent's
        first level, VarPower's log |v| = 0); override where it is not."""
        return tuple(np.concatenate([a, np.zeros(n - a.shape[0], a.dtype)]) for a in arrays)


@dataclasses.dataclass(frozen=True)
class Residual:
    """A model's residual structure, bound to its rows: the static part of a compiled fit.

    Its parameters follow the random terms' in theta: the correlation's, then the
    variance function's."""

    correlation: Correlation | None = None
    variance: VarianceFunction | None = None

    @property
    def parts(self) -> list[ResidualPart]:
        return [p for p in (self.correlation, self.variance) if p is not None]

    @property
    def nparams(self) -> int:
        return sum(p.nparams for p in self.parts)

    def split(self, par):
        """The correlation's and the variance function's parameters (empty where absent)."""
        k = self.correlation.nparams if self.correlation is not None else 0
        return par[..., :k], par[..., k:]

    def start(self) -> np.ndarray:
        return np.concatenate([p.start() for p in self.parts] + [np.zeros(0)])

    def param_names(self) -> list[str]:
        return [n for p in self.parts for n in p.param_names()]

    def sites(self) -> list[str]:
        return [n for p in self.parts for n in p.sites()]

    def sample(self, get) -> jnp.ndarray:
        """The parameters (..., nparams) from their NUTS sites (:meth:`ResidualPart.sample`)."""
        return jnp.concatenate([p.sample(get) for p in self.parts], axis=-1)

    def bucketed(self, ladder) -> "Residual":
        """Each part's :meth:`ResidualPart.bucketed`."""
        return Residual(*(None if p is None else p.bucketed(ladder) for p in (self.correlation, self.variance)))

    def natural_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        bounds = [p.natural_bounds() for p in self.parts]
        return (np.concatenate([b[0] for b in bounds] + [np.zeros(0)]),
                np.concatenate([b[1] for b in bounds] + [np.zeros(0)]))

    def unbounded(self, natural):
        """The inverse of :meth:`natural`, in jnp."""
        pc, pv = self.split(natural)
        out = []
        if self.correlation is not None:
            out.append(self.correlation.unbounded(pc))
        if self.variance is not None:
            out.append(self.variance.unbounded(pv))
        return jnp.concatenate(out + [jnp.zeros(0, natural.dtype)])

    def natural(self, par) -> np.ndarray:
        pc, pv = self.split(np.asarray(par, dtype=float))
        out = []
        if self.correlation is not None:
            out.append(self.correlation.natural(pc))
        if self.variance is not None:
            out.append(self.variance.natural(pv))
        return np.concatenate(out + [np.zeros(0)])


def in_module(xp, method, *args):
    """``method(*args)`` in jnp, as the protocol states it (a user's structure may not take
    ``xp``), or ``method(*args, xp=np)`` on the host, where only jaxhlm's own structures
    are used (:mod:`jaxhlm.group_fit` requires them)."""
    return method(*args) if xp is not np else method(*args, xp=xp)


def integer_power(x, k, xp=jnp):
    """x ** k for integer k (>= 0), exact for negative x: XLA's integer power inside a
    compiled program (its derivative is k x^(k-1)), NumPy's on the host."""
    if xp is np:
        return np.power(x, k)
    from ..lazy_jax import lax

    return lax.pow(x, k.astype(jnp.int32))


def sigmoid(x, xp=jnp):
    """1 / (1 + exp(-x)), in ``xp`` (JAX's own inside a compiled program)."""
    if xp is np:
        return 0.5 * (1.0 + np.tanh(0.5 * x))
    from ..lazy_jax import jax

    return jax.nn.sigmoid(x)


def column(data: pd.DataFrame, name: str, what: str) -> pd.Series:
    """A column the structure reads, or an error naming it."""
    if not isinstance(name, str) or name not in data.columns:
        raise DataError(f"{what}: no column {name!r} in the data")
    return data[name]


def codes_of(values: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes and levels of a grouping column (a Categorical's order, else sorted)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat = values.cat.remove_unused_categories()
        return cat.cat.codes.to_numpy(np.int64), list(cat.cat.categories)
    levels, codes = np.unique(values.astype(str).to_numpy(), return_inverse=True)
    return codes.astype(np.int64), list(levels)
