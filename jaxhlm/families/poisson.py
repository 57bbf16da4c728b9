"""The Poisson family (lme4's ``glmer(..., family = poisson)``): counts y_i with mean mu_i.

Var(y_i) = mu_i; log link (canonical); an offset (``offset(log(t))`` in the formula)
enters eta.  log p(y | mu) = y log mu - mu - log y!.
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp, scipy_special
import numpy as np

from ..errors import DataError
from .binomial import BOUND_EPS
from .links import Log


@dataclasses.dataclass(frozen=True)
class Poisson:
    """Poisson counts with a link (default log)."""

    link: object = Log()
    name = "poisson"

    @property
    def canonical(self) -> bool:
        """Whether the link is the canonical one (PIRLS is then Newton's method)."""
        return isinstance(self.link, Log)

    def variance(self, mu):
        return mu

    def loglik_kernel(self, y, mu, trials):
        """The terms of log p(y | mu) with mu (times the prior weight): y log mu - mu."""
        return trials * (y * jnp.log(mu) - mu)

    def log_normalizer(self, y, trials):
        """The rest: -log y!."""
        return -trials * scipy_special.gammaln(y + 1)

    def start(self, y, trials):
        """R's ``poisson()$initialize``: mustart = y + 0.1."""
        return y + 0.1

    def sample(self, key, mu, trials):
        """Counts ~ Poisson(mu) (``trials``, the prior weights, do not enter)."""
        return jax.random.poisson(key, mu, dtype=jnp.int32).astype(mu.dtype)

    def at_bound(self, mu):
        """Any fitted rate numerically 0 (R's ``glm.fit``: below 10 eps)."""
        return jnp.any(mu < BOUND_EPS)

    def check(self, y: np.ndarray, trials: np.ndarray, name: str, rows) -> None:
        bad = np.flatnonzero(y < 0)
        if bad.size:
            raise DataError(f"Poisson response {name} must be non-negative counts; row "
                            f"{rows[bad[0]]!r} has {y[bad[0]]:g}")
        bad = np.flatnonzero(y != np.round(y))
        if bad.size:
            raise DataError(f"Poisson response {name} must be whole counts; row {rows[bad[0]]!r} "
                            f"has {y[bad[0]]:g}")
