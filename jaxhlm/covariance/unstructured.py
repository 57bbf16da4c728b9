"""``(x | g)``: an unstructured p x p covariance, lme4's default (``us(x | g)`` in lme4 2.0).

theta is lambda's lower triangle, column by column (lme4's order): p (p + 1) / 2
parameters, the diagonal ones bounded below by 0.  Negating a column of lambda leaves
lambda lambda' unchanged, so :meth:`canonical` negates every column whose diagonal
element is negative.  lme4 names the parameters ``g.x`` on the diagonal and
``g.x_i.x_j`` below it.  For NUTS the term has an SD per column and, for p > 1, an LKJ
Cholesky factor ``L_corr(term)`` of its correlation matrix: lambda = diag(s) L / sigma.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, Sequence

from ..lazy_jax import jnp
import numpy as np

from ..tables import sd_name
from .base import Covariance, SampleSite


@functools.lru_cache(maxsize=None)
def _placement(p: int) -> np.ndarray:
    """The 0/1 matrix (p (p + 1) / 2, p^2) that puts theta into lambda's lower triangle."""
    place = np.zeros((p * (p + 1) // 2, p * p))
    for k, (r, c) in enumerate((r, c) for c in range(p) for r in range(c, p)):
        place[k, r * p + c] = 1.0
    place.flags.writeable = False
    return place


def corr_site(term: str) -> str:
    """The NUTS site of a term's LKJ Cholesky factor: ``L_corr(Subject)``."""
    return f"L_corr({term})"


@dataclasses.dataclass(frozen=True)
class Unstructured(Covariance):
    """lambda lower triangular with free entries (lme4's ``(x | g)``)."""

    keyword: ClassVar[str] = "us"

    @property
    def tri_indices(self) -> tuple[tuple[int, int], ...]:
        """(row, column) of each parameter in lambda: the lower triangle, column by column."""
        return tuple((r, c) for c in range(self.p) for r in range(c, self.p))

    @property
    def nparams(self) -> int:
        return self.p * (self.p + 1) // 2

    def linear_entries(self):
        """Every variance and covariance: the lower triangle, column by column (pbkrtest's order)."""
        return self.tri_indices

    def lam(self, par):
        # A product with a constant 0/1 matrix: one dot, which XLA compiles (and
        # differentiates) more cheaply than a scatter into zeros.
        return (par @ _placement(self.p).astype(par.dtype)).reshape(self.p, self.p)

    def lower(self) -> np.ndarray:
        return np.array([0.0 if r == c else -np.inf for r, c in self.tri_indices])

    def canonical(self, par):
        cols = np.array([c for _, c in self.tri_indices])
        diag = np.array([k for k, (r, c) in enumerate(self.tri_indices) if r == c])
        sign = jnp.where(par[diag] < 0, -1.0, 1.0)
        return par * sign[cols]

    def param_names(self, group: str, columns: Sequence[str]) -> list[str]:
        return [f"{group}.{columns[r]}" if r == c else f"{group}.{columns[r]}.{columns[c]}"
                for r, c in self.tri_indices]

    def sites(self, term: str, columns: Sequence[str]) -> list[str]:
        return super().sites(term, columns) + ([corr_site(term)] if self.p > 1 else [])

    def sample(self, get: SampleSite, term: str, columns: Sequence[str], sd_priors: Sequence,
               lkj: float, sigma):
        s = jnp.stack([get(sd_name(term, c), d) for c, d in zip(columns, sd_priors)], axis=-1)
        if self.p > 1:
            import numpyro.distributions as dist

            L = get(corr_site(term), dist.LKJCholesky(self.p, lkj))
            lam = s[..., :, None] * L / sigma[..., None, None]
        else:
            lam = (s / sigma[..., None])[..., None]
        rows, cols = zip(*self.tri_indices)
        return lam[..., jnp.asarray(rows), jnp.asarray(cols)]

    def inverse_mass(self, term: str, columns: Sequence[str], nlevels: int) -> dict:
        out = super().inverse_mass(term, columns, nlevels)
        if self.p > 1:
            out[(corr_site(term),)] = jnp.full(self.p * (self.p - 1) // 2, 1.0 / nlevels)
        return out
