"""Priors: NumPyro distributions for full posteriors, and zero-avoiding penalties for modes.

Two uses, two kinds of object:

- :class:`Priors` holds proper NumPyro distributions on every parameter, for
  :meth:`jaxhlm.LMM.sample` (NUTS).  Each argument is one distribution for all
  parameters of its kind, or a dict keyed by name (missing names get the default).
- :func:`wishart`, :func:`gamma` and :func:`zero_avoiding` are blme's covariance priors
  (Chung, Rabe-Hesketh, Dorie, Gelman and Liu 2013, "A nondegenerate penalized
  likelihood estimator for variance parameters in multilevel models", Psychometrika
  78(4)) for :meth:`jaxhlm.LMM.fit` (``prior=``): the fit is then the posterior mode,
  the objective plus the prior's -2 log-density, as ``blme::blmer`` computes it.

The penalties are blme's defaults and their family, with blme's improper limits
(``scale = Inf``, ``rate = 0``) and its ``common.scale = TRUE``: the prior is on
lambda_k lambda_k' = Sigma_k / sigma^2, so sigma is profiled as without it, and
-2 log p is, up to a constant that blme drops too,

- ``wishart(df)``: -(df - d - 1) log|lambda_k lambda_k'| = -2 (df - d - 1) sum_i log lambda_k,ii
  (d = p_k, the term's dimension; blme's default df = d + 2.5, so -3 sum_i log lambda_ii);
- ``gamma(shape)`` on a scalar term: -2 (shape - 1) log lambda_k (blme's default shape
  2.5: the same as the default Wishart when d = 1).

Both go to +infinity as lambda_ii -> 0, so the mode is never on the boundary.  The
objective reported for such a fit is the penalized one (blme's ``REMLcrit(m) +
m@devcomp$cmp[["penalty"]]``), the value minimised.  The exact form, read from
blme 1.0-5's source and checked numerically, is in ``tests/reference/blme/NOTES.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

from .. import lazy_jax
from ..lazy_jax import jax, jnp
import numpy as np

from ..errors import JaxhlmError


# ---------------------------------------------------------------- penalties (modes)
@dataclasses.dataclass(frozen=True)
class Wishart:
    """blme's ``wishart(df, scale = Inf)`` on each term's covariance; df None: d + 2.5."""

    df: float | None = None

    def __str__(self) -> str:
        return f"wishart(df = {'dim + 2.5' if self.df is None else self.df}, scale = Inf)"


@dataclasses.dataclass(frozen=True)
class Gamma:
    """blme's ``gamma(shape, rate = 0)`` on the SD of each scalar term."""

    shape: float = 2.5

    def __str__(self) -> str:
        return f"gamma(shape = {self.shape}, rate = 0)"


def wishart(df: float | None = None) -> Wishart:
    """A Wishart(df, scale = Inf) prior on every term's relative covariance (blme's
    default: df = dim + 2.5); zero-avoiding when df > dim + 1."""
    if df is not None and not df > 0:
        raise JaxhlmError(f"wishart df must be positive; got {df!r}")
    return Wishart(None if df is None else float(df))


def gamma(shape: float = 2.5) -> Gamma:
    """A gamma(shape, rate = 0) prior on every scalar term's SD (blme's default shape 2.5)."""
    if not shape > 1:
        raise JaxhlmError(f"gamma shape must be > 1 for a zero-avoiding prior; got {shape!r}")
    return Gamma(float(shape))


def zero_avoiding() -> Wishart:
    """blme's default covariance prior, ``wishart(df = dim + 2.5, scale = Inf)``: for a
    scalar term, gamma(shape = 2.5, rate = 0) on its SD."""
    return Wishart()


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A covariance prior resolved for a model's terms: -2 log p = sum_k a_k sum_i log|lambda_k,ii|
    (hashable: static under jit)."""

    prior: Any
    a: tuple[float, ...]

    def deviance(self, theta: jnp.ndarray, st) -> jnp.ndarray:
        """The prior's -2 log-density at theta: sum_k a_k log|det lambda_k|, which is
        sum_k a_k sum_i log|lambda_k,ii| for a triangular lambda_k.

        ``|.|``: the optimiser iterates unconstrained and folds signs at the end; the
        objective is even in each column's sign, and so is the penalty.
        """
        return sum(a_k * jnp.linalg.slogdet(lam)[1] for lam, a_k in zip(st.lambdas(theta), self.a))

    def __str__(self) -> str:
        return str(self.prior)


def penalty(prior, model) -> Penalty | None:
    """Resolve ``prior`` (None, :func:`wishart`, :func:`gamma`) for the model's terms."""
    if prior is None:
        return None
    a = []
    for t in model.frame.specs:
        if isinstance(prior, Wishart):
            df = t.p + 2.5 if prior.df is None else prior.df
            a.append(-2.0 * (df - t.p - 1))
        elif isinstance(prior, Gamma):
            if t.p != 1:
                raise JaxhlmError(f"gamma() is a prior on the SD of a scalar term; term "
                                  f"({' + '.join(t.columns)} | {t.group}) has {t.p} columns: "
                                  "use wishart()")
            a.append(-2.0 * (prior.shape - 1))
        else:
            raise JaxhlmError(f"prior must be jaxhlm.priors.wishart(), gamma() or "
                              f"zero_avoiding(); got {prior!r}")
    return Penalty(prior, tuple(a))


# ---------------------------------------------------------------- priors (NUTS)
@dataclasses.dataclass
class Priors:
    """Priors for :meth:`jaxhlm.LMM.sample`: NumPyro distributions, or dicts of them by name.

    ``fixef``: on each fixed effect (dict keys: coefficient names, e.g. ``"Days"``);
    ``sigma``: on the residual SD; ``sd``: on each random-effect SD (dict keys: a term's
    name, e.g. ``"Subject"``, for all its SDs, or ``"Subject:Days"`` for one);
    ``lkj``: the LKJ concentration of each correlation matrix (a number, or a dict by
    term name).  Anything not given gets the default, proper and weakly informative,
    scaled to the data (s_y: the response's SD, ybar its mean, s_x a column's SD):

    - fixed effect of a non-constant column x: Normal(0, 10 s_y / s_x); of a constant
      (intercept) column: Normal(0, 10 (|ybar| + s_y));
    - sigma: HalfNormal(2 s_y);
    - SD of the random effect of a column z: HalfNormal(2 s_y / s_z), s_z = 1 for a
      constant column;
    - correlations: LKJ(2), which shrinks mildly towards 0.

    For a GLMM (:meth:`jaxhlm.GLMM.sample`) the same rules on the link scale, with s_y = 1
    and ybar = 0 (no sigma): Normal(0, 10 / s_x) for a slope, Normal(0, 10) for the
    intercept, HalfNormal(2 / s_z) for an SD.
    """

    fixef: Any = None
    sigma: Any = None
    sd: Any = None
    lkj: Any = None

    def resolve(self, model) -> "ResolvedPriors":
        import numpyro.distributions as dist

        frame = model.frame
        y = frame.y
        s_y = float(np.std(y, ddof=1)) if y.size > 1 else 1.0
        s_y = s_y if s_y > 0 else 1.0
        link_scale = getattr(model, "family", None) is not None    # a GLMM: eta's unit scale
        if link_scale:
            y, s_y = np.zeros(1), 1.0

        def scale_of(col: np.ndarray) -> float | None:
            s = float(np.std(col))
            return s if s > 1e-12 * (1 + abs(float(np.mean(col)))) else None

        fixef = []
        for j, name in enumerate(frame.fixef_names):
            s_x = scale_of(frame.X[:, j])
            default = (dist.Normal(0.0, 10.0 * s_y / s_x) if s_x is not None
                       else dist.Normal(0.0, 10.0 * (abs(float(np.mean(y))) + s_y)))
            fixef.append(_pick(self.fixef, name, default, "fixef", frame.fixef_names))
        sigma = None if model.structure.known_sigma or link_scale else _pick(
            self.sigma, "sigma", dist.HalfNormal(2.0 * s_y), "sigma", ["sigma"])
        term_names = [t.spec.name for t in frame.terms]
        sd_keys = term_names + [f"{t.spec.name}:{c}" for t in frame.terms for c in t.spec.columns]
        sds, lkj = [], []
        for term in frame.terms:
            row = []
            for a, col in enumerate(term.spec.columns):
                s_z = scale_of(term.Z[:, a]) or 1.0
                default = dist.HalfNormal(2.0 * s_y / s_z)
                one = _pick(self.sd, f"{term.spec.name}:{col}", None, "sd", sd_keys)
                row.append(one if one is not None else _pick(self.sd, term.spec.name, default, "sd", sd_keys))
            sds.append(tuple(row))
            conc = _pick(self.lkj, term.spec.name, 2.0, "lkj", term_names)
            if not (isinstance(conc, (int, float)) and conc > 0):
                raise JaxhlmError(f"lkj must be a positive concentration; got {conc!r} for term {term.spec.name}")
            lkj.append(float(conc))
        return ResolvedPriors(tuple(fixef), sigma, tuple(sds), tuple(lkj))


def _pick(given, key: str, default, what: str, known: list[str]):
    """``given[key]`` for a dict (checking its keys), ``given`` itself, or ``default``."""
    if given is None:
        return default
    if isinstance(given, Mapping):
        unknown = [k for k in given if k not in known]
        if unknown:
            raise JaxhlmError(f"Priors({what}=...) names {unknown[0]!r}, which is not one of: "
                              f"{', '.join(known)}")
        return given.get(key, default)
    return given


class ResolvedPriors(NamedTuple):
    """Priors per parameter: ``fixef`` one distribution per fixed effect (in the model's
    order), ``sigma`` (None when known), ``sd`` per term a tuple (one per column), ``lkj`` per
    term its LKJ concentration.  A pytree, so that a compiled sampler can take them as an
    argument in their :meth:`arrays` form."""

    fixef: tuple
    sigma: Any
    sd: tuple
    lkj: tuple

    def _map(self, f) -> "ResolvedPriors":
        return ResolvedPriors(tuple(map(f, self.fixef)), None if self.sigma is None else f(self.sigma),
                              tuple(tuple(map(f, row)) for row in self.sd), self.lkj)

    def arrays(self) -> "ResolvedPriors | None":
        """The priors with each distribution as a :class:`Parameters` (its class and its
        parameters' values), or None if one of them is not a NumPyro distribution rebuilt
        exactly from its ``arg_constraints``: a pytree whose structure is the same in every
        process (NumPyro's own flattening orders fields by a set), so that a stored program
        can be keyed by it (:mod:`jaxhlm.bayes.chains`)."""
        try:
            return self._map(Parameters.of)
        except ValueError:
            return None

    def distributions(self) -> "ResolvedPriors":
        """The priors with :meth:`arrays`' parameters made distributions again."""
        return self._map(lambda d: d.distribution() if isinstance(d, Parameters) else d)


@dataclasses.dataclass(frozen=True)
class Parameters:
    """A NumPyro distribution as its class, its parameters' names (sorted) and their values
    (the pytree's leaves)."""

    cls: type
    names: tuple[str, ...]
    values: tuple

    @classmethod
    def of(cls, d) -> "Parameters":
        """``d``'s parameters; ValueError unless ``type(d)(**parameters)`` is ``d`` again."""
        kind = type(d)
        names = tuple(sorted(getattr(kind, "arg_constraints", {})))
        if not kind.__module__.startswith("numpyro.distributions") or not names:
            raise ValueError(kind)
        out = cls(kind, names, tuple(jnp.asarray(getattr(d, n)) for n in names))
        try:
            again = out.distribution()
        except Exception as err:  # noqa: BLE001 - a constructor that wants other arguments
            raise ValueError(kind) from err
        if not (again.batch_shape == d.batch_shape and again.event_shape == d.event_shape
                and jax.tree.structure(again) == jax.tree.structure(d)
                and all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(d)))):
            raise ValueError(kind)
        return out

    def distribution(self):
        return self.cls(**dict(zip(self.names, self.values)))

    def tree_flatten(self):
        return self.values, (self.cls, self.names)

    @classmethod
    def tree_unflatten(cls, aux, values):
        return cls(*aux, tuple(values))


lazy_jax.after_import(lambda: jax.tree_util.register_pytree_node_class(Parameters))
