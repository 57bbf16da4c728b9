"""``cs(x | g)``: compound symmetry, one correlation rho between every pair of the p effects.

Sigma = sigma^2 lambda lambda' = D R D with R = (1 - rho) I + rho 11' and D the SDs:
glmmTMB's ``cs`` (heterogeneous: one SD per column) or, with ``cs(x | g, hom = TRUE)``
(also written ``homcs(x | g)``, glmmTMB's later keyword), nlme's ``pdCompSymm`` (one SD).
R is positive definite for -1/(p-1) < rho < 1.

Parameters: the relative SDs s (scales, lower bound 0; p of them, or 1 if homogeneous),
then an unbounded z with

    rho = -a + (1 + a) sigmoid(z + log a),   a = 1 / (p - 1),

so z = 0 is rho = 0 (lme4's start, lambda = I) and every real z a valid rho.  lambda is
D's relative part times R's symmetric square root,

    R^{1/2} = sqrt(1 - rho) I + (sqrt(1 + (p-1) rho) - sqrt(1 - rho)) / p 11',

whose two eigenvalues are the square roots of 1 - rho = (1 + a) sigmoid(-w) and
1 + (p-1) rho = p sigmoid(w) (w = z + log a): smooth in z, never a square root of 0.
For NUTS the term has its SD sites (:func:`jaxhlm.tables.sd_name`) and a site
``rho(term)`` with a uniform prior on (-1/(p-1), 1).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

from ..lazy_jax import jax, jnp
import numpy as np

from ..tables import sd_name
from .base import Covariance, SampleSite


def rho_site(term: str) -> str:
    """The NUTS site of a structured term's correlation parameter: ``rho(Worker)``."""
    return f"rho({term})"


@dataclasses.dataclass(frozen=True)
class CompoundSymmetry(Covariance):
    """One correlation between all p effects; an SD per effect, or one (``hom``)."""

    hom: bool = False
    keyword: ClassVar[str] = "cs"

    def __post_init__(self):
        self.require_columns(2, "one correlation between them")

    @property
    def nsd(self) -> int:
        return 1 if self.hom else self.p

    @property
    def nparams(self) -> int:
        return self.nsd + 1

    @property
    def separates_residual(self) -> bool:
        """s_i s_j rho (i != j) give every s_i when p >= 3 and the SDs are free; a single SD
        confounds s^2 (1 - rho) with sigma^2."""
        return not self.hom and self.p >= 3

    def _w(self, z):
        return z + np.log(1.0 / (self.p - 1))

    def rho(self, z):
        """The correlation at the unbounded parameter z."""
        a = 1.0 / (self.p - 1)
        return -a + (1 + a) * jax.nn.sigmoid(self._w(z))

    def z(self, rho):
        """The inverse of :meth:`rho`."""
        a = 1.0 / (self.p - 1)
        return jax.scipy.special.logit((rho + a) / (1 + a)) - np.log(a)

    def lam(self, par):
        s, z = par[:self.nsd], par[self.nsd]
        w = self._w(z)
        root_within = jnp.sqrt((1 + 1.0 / (self.p - 1)) * jax.nn.sigmoid(-w))  # sqrt(1 - rho)
        root_mean = jnp.sqrt(self.p * jax.nn.sigmoid(w))                      # sqrt(1 + (p-1) rho)
        eye = jnp.eye(self.p, dtype=par.dtype)
        root = root_within * eye + (root_mean - root_within) / self.p * jnp.ones_like(eye)
        return jnp.broadcast_to(s, (self.p,))[:, None] * root

    def lower(self) -> np.ndarray:
        return np.concatenate([np.zeros(self.nsd), [-np.inf]])

    def param_names(self, group: str, columns: Sequence[str]) -> list[str]:
        sds = [f"{group}.sd"] if self.hom else [f"{group}.{c}" for c in columns]
        return sds + [f"{group}.rho"]

    # ------------------------------------------------------------------ NUTS
    def sites(self, term: str, columns: Sequence[str]) -> list[str]:
        return super().sites(term, columns)[:self.nsd] + [rho_site(term)]

    def sample(self, get: SampleSite, term: str, columns: Sequence[str], sd_priors: Sequence,
               lkj: float, sigma):
        import numpyro.distributions as dist

        s = jnp.stack([get(sd_name(term, c), d) for c, d in
                       zip(columns[:self.nsd], sd_priors[:self.nsd])], axis=-1)
        rho = get(rho_site(term), dist.Uniform(-1.0 / (self.p - 1), 1.0))
        return jnp.concatenate([s / sigma[..., None], self.z(rho)[..., None]], axis=-1)

    def inverse_mass(self, term: str, columns: Sequence[str], nlevels: int) -> dict:
        out = {(site,): v for (site,), v in super().inverse_mass(term, columns, nlevels).items()
               if site in self.sites(term, columns)}
        out[(rho_site(term),)] = jnp.asarray([1.0 / nlevels])
        return out


@dataclasses.dataclass(frozen=True)
class HomogeneousCompoundSymmetry(CompoundSymmetry):
    """``homcs(x | g)`` = ``cs(x | g, hom = TRUE)``: one SD and one correlation (nlme's pdCompSymm)."""

    hom: bool = True
    keyword: ClassVar[str] = "homcs"
