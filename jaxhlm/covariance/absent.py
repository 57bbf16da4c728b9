"""No random effects: lambda = 0 with no parameters (the placeholder term of a GLS model).

The blocked kernel (:mod:`jaxhlm.kernel`) always has a first term.  A model without
random effects (nlme's ``gls``, :class:`jaxhlm.GLS`) gets one term of a single level
whose lambda is 0: Lambda'Z'Z Lambda + I = I, so it adds nothing to the criterion or to
any estimate, and the kernel is the generalised least-squares fit of the whitened rows.
Tables leave it out.  It has no formula keyword.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ..lazy_jax import jnp
import numpy as np

from .base import Covariance, SampleSite


@dataclasses.dataclass(frozen=True)
class Absent(Covariance):
    """lambda = 0 (p x p), no parameters."""

    reports_correlations = False

    @property
    def nparams(self) -> int:
        return 0

    def lam(self, par):
        return jnp.zeros((self.p, self.p), par.dtype)

    def lower(self) -> np.ndarray:
        return np.zeros(0)

    def param_names(self, group: str, columns: Sequence[str]) -> list[str]:
        return []

    def sites(self, term: str, columns: Sequence[str]) -> list[str]:
        return []

    def sample(self, get: SampleSite, term: str, columns: Sequence[str], sd_priors: Sequence,
               lkj: float, sigma):
        return jnp.zeros(jnp.shape(sigma) + (0,), jnp.result_type(sigma, float))

    def inverse_mass(self, term: str, columns: Sequence[str], nlevels: int) -> dict:
        return {}
