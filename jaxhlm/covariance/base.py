"""The protocol of a random-effects term's covariance: how a few parameters give lambda.

A term ``(x | g)`` with p covariates has b_j ~ N(0, Sigma) for each level j of g, and
lme4 writes Sigma = sigma^2 lambda lambda' with a p x p *relative covariance factor*
lambda (Bates et al. 2015, J. Stat. Softw. 67(1), section 2.2).  A covariance
structure says how lambda depends on the term's parameters (the term's part of theta):

- ``nparams``: how many;
- ``lam(par)``: the p x p factor, a jnp function defined for *every* real ``par``
  (the optimiser runs unconstrained; see :mod:`jaxhlm.optimize`).  It need not be
  triangular: the kernel uses lambda only through products;
- ``lower()``: lme4's lower bounds.  A parameter with lower bound 0 is a *scale*: the
  objective must be even in it once :meth:`canonical` has folded signs, the optimiser
  snaps it to exactly 0 when that does not raise the objective (a boundary fit), and
  a value below 1e-4 makes the fit singular (lme4's ``isSingular``);
- ``start()``: where lme4 starts (lambda = I for lme4's own structures);
- ``canonical(par)``: the equivalent parameters in lme4's half-space (same lambda lambda');
- ``param_names(group, columns)``: lme4's names of the parameters (``getME(m, "theta")``);
- ``reports_correlations``: whether VarCorr lists the term's correlations;
- ``separates_residual``: whether the structure's correlations tell its variances from
  the residual variance even with a random effect per observation (lme4's
  ``check.nobs.vs.nRE`` is skipped for such a term: ``ar1(0 + time | g)`` with a level
  of time per row);
- ``linear_entries()``: for a structure whose covariance sigma^2 lambda lambda' is a
  linear combination of known matrices, the (row, column) entries that are its free
  elements (pbkrtest's parameters, which Kenward-Roger's adjustment differentiates in,
  :mod:`jaxhlm.inference.kenward_roger`); others need not define it;
- for NUTS (:mod:`jaxhlm.bayes.posterior`): :meth:`sample` builds the parameters from
  sampled sites (by default an SD per column, :func:`jaxhlm.tables.sd_name`), and
  :meth:`sites` and :meth:`inverse_mass` name those sites and scale them.

A structure is a frozen dataclass whose fields are static (its ``repr`` names it in the
key of compiled programs).  To add one, subclass :class:`Covariance` in a new file,
give it a formula keyword and register it (:func:`jaxhlm.covariance.register`): then
``keyword(x | g)`` in a formula uses it.  ``tests/test_architecture.py`` does exactly
that with a structure defined in the test.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, ClassVar, Sequence

from ..lazy_jax import jnp
import numpy as np

from ..errors import FormulaError, JaxhlmError
from ..tables import sd_name

SampleSite = Callable[[str, object], "jnp.ndarray"]
"""``get(site, distribution)``: ``numpyro.sample`` inside a model, or a lookup of draws."""


@dataclasses.dataclass(frozen=True)
class Covariance(abc.ABC):
    """One random-effects term's covariance structure (see the module docstring)."""

    p: int
    keyword: ClassVar[str] = ""
    reports_correlations: ClassVar[bool] = True

    @property
    @abc.abstractmethod
    def nparams(self) -> int:
        """Number of parameters (the term's length of theta)."""

    @abc.abstractmethod
    def lam(self, par: jnp.ndarray) -> jnp.ndarray:
        """The relative covariance factor lambda (p, p) at ``par`` (nparams,)."""

    @abc.abstractmethod
    def lower(self) -> np.ndarray:
        """lme4's lower bounds of the parameters (0: a scale; -inf: unbounded)."""

    @abc.abstractmethod
    def param_names(self, group: str, columns: Sequence[str]) -> list[str]:
        """The parameters' names, as lme4 names theta."""

    @property
    def separates_residual(self) -> bool:
        """See the module docstring (default: no, as for lme4's own structures)."""
        return False

    def require_columns(self, least: int, example: str) -> None:
        """A structure that needs at least ``least`` columns says so, naming the keyword."""
        if self.p < least:
            words = {2: "two", 3: "three"}
            raise FormulaError(f"{self.keyword}(...) needs at least {words.get(least, least)} columns ({example}); "
                               f"this term has {self.p}")

    def start(self) -> np.ndarray:
        """lme4's start: 1 for scales, 0 for the rest."""
        return np.where(self.lower() == 0, 1.0, 0.0)

    def scales(self) -> np.ndarray:
        """Which parameters are scales (lower bound 0): folded, snapped, tested for singularity."""
        return self.lower() == 0

    def linear_entries(self) -> tuple[tuple[int, int], ...]:
        """The free (row, column) elements, row >= column, of a covariance that is linear in
        them (see the module docstring); by default the structure is not linear."""
        raise JaxhlmError(
            f"covariance structure {type(self).__name__} is not linear in its parameters, which "
            "Kenward-Roger's adjustment needs (as pbkrtest); use ddf='satterthwaite'")

    def canonical(self, par: jnp.ndarray) -> jnp.ndarray:
        """The same lambda lambda' with lme4's signs (default: scales made non-negative)."""
        return jnp.where(jnp.asarray(self.scales()), jnp.abs(par), par)

    # ------------------------------------------------------------------ NUTS
    def sites(self, term: str, columns: Sequence[str]) -> list[str]:
        """The sampled sites of :meth:`sample` (default: one SD per column)."""
        return [sd_name(term, c) for c in columns]

    def sample(self, get: SampleSite, term: str, columns: Sequence[str], sd_priors: Sequence,
               lkj: float, sigma: jnp.ndarray) -> jnp.ndarray:
        """The parameters from sampled sites; ``get(site, prior)`` samples or reads a site
        (arrays may carry leading axes).  Structures whose parameters are not SDs
        override this."""
        raise JaxhlmError(
            f"covariance structure {type(self).__name__} defines no prior sites for NUTS "
            "(override Covariance.sample, sites and inverse_mass)")

    def inverse_mass(self, term: str, columns: Sequence[str], nlevels: int) -> dict:
        """A diagonal starting metric per site: Var(log s) ~ 1 / (2 ell) for an SD."""
        return {(site,): jnp.asarray([1.0 / (2 * nlevels)]) for site in self.sites(term, columns)}
