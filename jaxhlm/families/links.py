"""Link functions g (eta = g(mu)) for the GLMM families: the inverse and its derivative.

| class | g(mu) | mu = g^{-1}(eta) | R |
| --- | --- | --- | --- |
| :class:`Logit` | log(mu / (1 - mu)) | 1 / (1 + e^{-eta}) | ``binomial()`` |
| :class:`Probit` | Phi^{-1}(mu) | Phi(eta) | ``binomial("probit")`` |
| :class:`CLogLog` | log(-log(1 - mu)) | 1 - exp(-e^eta) | ``binomial("cloglog")`` |
| :class:`Log` | log(mu) | e^eta | ``poisson()`` |
| :class:`Identity` | mu | eta | ``gaussian()`` |

Each is a frozen dataclass (static in compiled programs) with ``inverse(eta)``,
``derivative(eta)`` = dmu/deta and ``link(mu)``; as R's ``make.link``, the inverses are
kept inside (0, 1) by a hair where the family needs it (``MU_EPS``).
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp, scipy_special

MU_EPS = 2.220446049250313e-16
"""R's ``.Machine$double.eps``: binomial means are kept in [eps, 1 - eps] (R's ``binomial()``)."""


@dataclasses.dataclass(frozen=True)
class Logit:
    name = "logit"

    def inverse(self, eta):
        return jnp.clip(jax.nn.sigmoid(eta), MU_EPS, 1 - MU_EPS)

    def derivative(self, eta):
        return jnp.maximum(jax.nn.sigmoid(eta) * jax.nn.sigmoid(-eta), MU_EPS)

    def link(self, mu):
        return jnp.log(mu) - jnp.log1p(-mu)


@dataclasses.dataclass(frozen=True)
class Probit:
    name = "probit"

    def inverse(self, eta):
        return jnp.clip(scipy_special.ndtr(eta), MU_EPS, 1 - MU_EPS)

    def derivative(self, eta):
        return jnp.maximum(jnp.exp(-0.5 * eta ** 2) / jnp.sqrt(2 * jnp.pi), MU_EPS)

    def link(self, mu):
        return scipy_special.ndtri(mu)


@dataclasses.dataclass(frozen=True)
class CLogLog:
    name = "cloglog"

    def inverse(self, eta):
        return jnp.clip(-jnp.expm1(-jnp.exp(eta)), MU_EPS, 1 - MU_EPS)

    def derivative(self, eta):
        eta = jnp.minimum(eta, 700.0)
        return jnp.maximum(jnp.exp(eta - jnp.exp(eta)), MU_EPS)

    def link(self, mu):
        return jnp.log(-jnp.log1p(-mu))


@dataclasses.dataclass(frozen=True)
class Log:
    name = "log"

    def inverse(self, eta):
        return jnp.maximum(jnp.exp(eta), MU_EPS)

    def derivative(self, eta):
        return jnp.maximum(jnp.exp(eta), MU_EPS)

    def link(self, mu):
        return jnp.log(mu)


@dataclasses.dataclass(frozen=True)
class Identity:
    name = "identity"

    def inverse(self, eta):
        return eta

    def derivative(self, eta):
        return jnp.ones_like(eta)

    def link(self, mu):
        return mu


LINKS = {c.name: c for c in (Logit, Probit, CLogLog, Log, Identity)}
"""Links by R's names."""
