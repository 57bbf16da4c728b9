"""The static part of a compiled fit: shapes and code paths, nothing else.

A compiled fit is a function of arrays (the blocks, the start, the known residual SD)
and of a hashable :class:`Structure`, its static argument: per random-effects term
its covariance structure (:mod:`jaxhlm.covariance`, which holds the term's dimension
p) and its number of levels, then the number of fixed effects and whether sigma is
known.  Names (of terms, columns, coefficients, levels) are not part of it: they live
in the model frame (:mod:`jaxhlm.frame`), so models of identical shapes but other
names share one compiled program.

theta concatenates the terms' parameters in lme4's order of terms, then those of a
residual structure (:mod:`jaxhlm.residual`) if the model has one; the functions here
split it and map it to the terms' relative covariance factors lambda_k.
"""

from __future__ import annotations

import dataclasses

from .lazy_jax import jnp
import numpy as np

from .covariance import Covariance
from .residual.base import Residual


@dataclasses.dataclass(frozen=True)
class TermShape:
    """A random-effects term as the compiled program sees it: its covariance and ell_k."""

    covariance: Covariance
    nlevels: int

    @property
    def p(self) -> int:
        return self.covariance.p

    @property
    def q(self) -> int:
        return self.p * self.nlevels

    @property
    def ntheta(self) -> int:
        return self.covariance.nparams


@dataclasses.dataclass(frozen=True)
class Structure:
    """The static shape of a model (hashable: a static argument of jit).

    ``terms``: the random-effects terms in lme4's order (most levels first); ``p``: the
    number of fixed effects; ``known_sigma``: the residual SD is given (its value is in
    the blocks), not estimated; ``residual``: the residual structure (None: independent
    rows of equal variance), whose model carries rows instead of blocks
    (:mod:`jaxhlm.residual.whiten`).
    """

    terms: tuple[TermShape, ...]
    p: int
    known_sigma: bool = False
    residual: Residual | None = None

    @property
    def rest_terms(self) -> tuple[TermShape, ...]:
        return self.terms[1:]

    @property
    def m_rand(self) -> int:
        """Number of random-effect columns after term 1."""
        return sum(t.q for t in self.rest_terms)

    @property
    def m(self) -> int:
        """Size of the rest's dense block: m_rand + p + 1."""
        return self.m_rand + self.p + 1

    @property
    def ntheta_random(self) -> int:
        """The random terms' share of theta."""
        return sum(t.ntheta for t in self.terms)

    @property
    def ntheta(self) -> int:
        return self.ntheta_random + (0 if self.residual is None else self.residual.nparams)

    def _concat(self, part, residual) -> np.ndarray:
        tail = [] if self.residual is None else [np.asarray(residual(self.residual), dtype=float)]
        return np.concatenate([np.asarray(part(t.covariance), dtype=float) for t in self.terms] + tail)

    def theta_lower(self) -> np.ndarray:
        """lme4's lower bounds of theta (0 for scales, -inf for the rest)."""
        return self._concat(lambda c: c.lower(), lambda r: np.full(r.nparams, -np.inf))

    def theta_start(self) -> np.ndarray:
        """lme4's starting value (lambda_k = I for lme4's structures)."""
        return self._concat(lambda c: c.start(), lambda r: r.start())

    def scales(self) -> np.ndarray:
        """Which elements of theta are scales: snapped to 0 at a boundary, tested for
        singularity, floored away from 0 at a start (:mod:`jaxhlm.covariance.base`)."""
        return self._concat(lambda c: c.scales(), lambda r: np.zeros(r.nparams)).astype(bool)

    def split(self, theta):
        """theta (..., ntheta) as one array per term."""
        ends = np.cumsum([t.ntheta for t in self.terms])
        return [theta[..., e - t.ntheta:e] for t, e in zip(self.terms, ends)]

    def lambdas(self, theta: jnp.ndarray) -> list[jnp.ndarray]:
        """The relative covariance factor lambda_k (p_k, p_k) of each term at theta."""
        return [t.covariance.lam(par) for t, par in zip(self.terms, self.split(theta))]

    def canonical(self, theta: jnp.ndarray) -> jnp.ndarray:
        """theta in lme4's half-space (same lambda_k lambda_k'), term by term."""
        tail = [theta[self.ntheta_random:]] if self.residual is not None else []
        return jnp.concatenate([t.covariance.canonical(par) for t, par in zip(self.terms, self.split(theta))]
                               + tail)

    @property
    def builtin(self) -> bool:
        """Whether every covariance and residual structure is jaxhlm's own (whose source
        keys stored programs; a user's class may change without changing its ``repr``)."""
        parts = [] if self.residual is None else self.residual.parts
        return all(type(x).__module__.startswith("jaxhlm.") for x in
                   [t.covariance for t in self.terms] + parts)
