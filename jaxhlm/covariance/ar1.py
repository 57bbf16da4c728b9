"""``ar1(0 + f | g)``: first-order autoregressive effects, corr(b_i, b_j) = rho^|i - j|.

glmmTMB's ``ar1``: the p effects (usually the levels of a time factor f, in its level
order: a pandas Categorical's order) share one SD, and effects i and j correlate
rho^|i-j|.  Parameters: the relative SD s (a scale, lower bound 0) and an unbounded
z with rho = tanh z (z = 0: rho = 0, lme4's start lambda = I).  lambda = s L with L
the Cholesky factor of the AR(1) correlation matrix, in closed form:

    L[i, 0] = rho^i,   L[i, j] = rho^(i-j) sqrt(1 - rho^2) = rho^(i-j) / cosh z   (1 <= j <= i),

the innovations form x_i = rho x_{i-1} + sqrt(1 - rho^2) e_i.  1 / cosh z is smooth
where sqrt(1 - tanh^2 z) is not (at |rho| -> 1).  For NUTS: one SD site and a site
``rho(term)`` with a uniform prior on (-1, 1).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

from ..lazy_jax import jnp
import numpy as np

from ..tables import sd_name
from .base import Covariance, SampleSite
from .compound_symmetry import rho_site


@dataclasses.dataclass(frozen=True)
class AR1(Covariance):
    """One SD; effects i and j correlate rho^|i-j| (glmmTMB's ``ar1``)."""

    keyword: ClassVar[str] = "ar1"

    def __post_init__(self):
        self.require_columns(2, "the levels of a time factor, as in ar1(0 + time | g)")

    @property
    def nparams(self) -> int:
        return 2

    @property
    def separates_residual(self) -> bool:
        """s^2 rho^|i-j| + sigma^2 [i = j]: the lags 1 and 2 give s^2 and rho when p >= 3."""
        return self.p >= 3

    def lam(self, par):
        s, z = par[0], par[1]
        rho = jnp.tanh(z)
        powers = jnp.concatenate([jnp.ones(1, par.dtype), jnp.cumprod(jnp.full(self.p - 1, rho))])
        lag = np.subtract.outer(np.arange(self.p), np.arange(self.p))
        L = jnp.where(lag >= 0, powers[np.maximum(lag, 0)], 0.0)
        L = L * jnp.where(np.arange(self.p) == 0, 1.0, 1.0 / jnp.cosh(z))[None, :]
        return s * L

    def lower(self) -> np.ndarray:
        return np.array([0.0, -np.inf])

    def param_names(self, group: str, columns: Sequence[str]) -> list[str]:
        return [f"{group}.sd", f"{group}.rho"]

    # ------------------------------------------------------------------ NUTS
    def sites(self, term: str, columns: Sequence[str]) -> list[str]:
        return [sd_name(term, columns[0]), rho_site(term)]

    def sample(self, get: SampleSite, term: str, columns: Sequence[str], sd_priors: Sequence,
               lkj: float, sigma):
        import numpyro.distributions as dist

        s = get(sd_name(term, columns[0]), sd_priors[0])
        rho = get(rho_site(term), dist.Uniform(-1.0, 1.0))
        return jnp.stack([s / sigma, jnp.arctanh(rho)], axis=-1)

    def inverse_mass(self, term: str, columns: Sequence[str], nlevels: int) -> dict:
        return {(sd_name(term, columns[0]),): jnp.asarray([1.0 / (2 * nlevels)]),
                (rho_site(term),): jnp.asarray([1.0 / nlevels])}
