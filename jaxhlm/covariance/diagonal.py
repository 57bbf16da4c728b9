"""``diag(x | g)``: independent effects with their own variances (lme4 2.0's ``diag()``).

lambda = diag(theta), p parameters bounded below by 0, named as lme4 names the
diagonal of an unstructured term (``g.x``).  The fit equals ``(x || g)``, which lme4
expands into p scalar terms instead; VarCorr lists no correlations.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

from ..lazy_jax import jnp
import numpy as np

from ..tables import sd_name
from .base import Covariance, SampleSite


@dataclasses.dataclass(frozen=True)
class Diagonal(Covariance):
    """lambda = diag(theta) (lme4 2.0's ``diag(x | g)``)."""

    keyword: ClassVar[str] = "diag"
    reports_correlations: ClassVar[bool] = False

    @property
    def nparams(self) -> int:
        return self.p

    def lam(self, par):
        return par[..., :, None] * np.eye(self.p)   # NumPy or jnp alike (a host fit's, jaxhlm.group_fit)

    def linear_entries(self):
        """The variances."""
        return tuple((a, a) for a in range(self.p))

    def lower(self) -> np.ndarray:
        return np.zeros(self.p)

    def param_names(self, group: str, columns: Sequence[str]) -> list[str]:
        return [f"{group}.{c}" for c in columns]

    def sample(self, get: SampleSite, term: str, columns: Sequence[str], sd_priors: Sequence,
               lkj: float, sigma):
        s = jnp.stack([get(sd_name(term, c), d) for c, d in zip(columns, sd_priors)], axis=-1)
        return s / sigma[..., None]
