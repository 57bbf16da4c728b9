"""``CompoundSymmetry(group)``: nlme's ``corCompSymm(form = ~ 1 | group)``, one correlation rho.

Within a group of n_g rows R = (1 - rho) I + rho 11', positive definite for
-1/(n_max - 1) < rho < 1.  Its inverse square root is

    R^{-1/2} = (1 - rho)^{-1/2} [I - c_g 11' / n_g],   c_g = 1 - sqrt((1 - rho) / (1 + (n_g - 1) rho)),

so whitening subtracts a share c_g of each group's mean, and
log|det R^{-1/2}| = -1/2 sum_g [(n_g - 1) log(1 - rho) + log(1 + (n_g - 1) rho)].  Both
depend on a row only through its group's size, so with no variance function the blocks
are combined from blocks precomputed per group size (:meth:`exchangeable`,
:mod:`jaxhlm.residual.whiten`): an evaluation costs nothing in n.
The parameter z maps to rho as :mod:`jaxhlm.covariance.compound_symmetry`'s does with
a = 1/(n_max - 1) (z = 0: rho = 0).

With rho >= 0 this is the marginal covariance of a random intercept per group,
sigma_b^2 11' + sigma^2 I: ``GLS("y ~ x", correlation=CompoundSymmetry("g"))`` and
``LMM("y ~ x + (1 | g)")`` give the same fit (``tests/test_structures.py``).
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from ..errors import DataError
from .base import Correlation, sigmoid


@dataclasses.dataclass(frozen=True)
class CompoundSymmetry(Correlation):
    """One residual correlation within groups (nlme's ``corCompSymm``): ``CompoundSymmetry("Subject")``."""

    max_size: int = 2
    nlme = "corCompSymm"

    @property
    def nparams(self) -> int:
        return 1

    def param_names(self) -> list[str]:
        return ["Rho"]

    def _a(self) -> float:
        return 1.0 / (self.max_size - 1)

    def natural(self, par):
        a = self._a()
        w = np.asarray(par, dtype=float) + np.log(a)
        return -a + (1 + a) / (1 + np.exp(-w))

    def prior(self):
        import numpyro.distributions as dist

        return dist.Uniform(-self._a(), 1.0)

    def natural_bounds(self):
        return np.array([-self._a()]), np.array([1.0])

    def unbounded(self, natural):
        a = self._a()
        return jax.scipy.special.logit((natural + a) / (1 + a)) - np.log(a)

    def bind(self, data: pd.DataFrame, groups):
        sizes = np.bincount(groups)
        if sizes.max() < 2:
            raise DataError(f"CompoundSymmetry: every group of {self.group!r} has one row, so there "
                            "is no correlation to estimate")
        return dataclasses.replace(self, max_size=int(sizes.max())), (groups.astype(np.int32),
                                                                        sizes.astype(float))

    def padded(self, arrays, n, ladder):
        """Extra rows form one more group; the groups' count moves up ``ladder``, the
        groups it adds empty."""
        groups, sizes = arrays
        extra = np.full(n - groups.shape[0], sizes.shape[0], groups.dtype)
        return (np.concatenate([groups, extra]),
                np.concatenate([sizes, [float(extra.size)], np.zeros(ladder(sizes.shape[0] + 1) - sizes.shape[0] - 1)]))

    def observed(self, arrays, mask):
        """The groups' sizes count the rows kept."""
        groups, sizes = arrays
        return groups, np.bincount(groups[mask], minlength=sizes.shape[0]).astype(float)

    def exchangeable(self, arrays):
        groups, sizes = arrays
        return groups, sizes[groups].astype(np.int64)

    def coefficients(self, par, key, xp=jnp):
        """c_g and sqrt(1 - rho) for groups of ``key`` rows (the module docstring)."""
        within, big = self._eigenvalues(par, key, xp)
        return 1.0 - xp.sqrt(within / big), xp.sqrt(within)

    def row_log_root(self, par, key, xp=jnp):
        """A row's share of its group's -log|det R^{-1/2}|: [(n_g - 1) log(1 - rho)
        + log(1 + (n_g - 1) rho)] / (2 n_g)."""
        within, big = self._eigenvalues(par, key, xp)
        return ((key - 1.0) * xp.log(within) + xp.log(big)) / (2.0 * key)

    def _eigenvalues(self, par, sizes, xp=jnp):
        """1 - rho, and 1 + (n_g - 1) rho per group (1 for an empty group)."""
        a = self._a()
        w = par[0] + np.log(a)
        within = (1 + a) * sigmoid(-w, xp)
        rho = -a + (1 + a) * sigmoid(w, xp)
        return within, xp.where(sizes > 0, 1.0 + (sizes - 1.0) * rho, 1.0)

    def color(self, par, arrays, e):
        """R^{1/2} e = sqrt(1 - rho) e + (sqrt(1 + (n_g-1) rho) - sqrt(1 - rho)) / n_g * sum_g e."""
        groups, sizes = arrays
        within, big = self._eigenvalues(par, sizes)
        share = (jnp.sqrt(big) - jnp.sqrt(within)) / jnp.maximum(sizes, 1.0)
        sums = jax.ops.segment_sum(e, groups, num_segments=sizes.shape[0])
        return jnp.sqrt(within) * e + (share * sums)[groups]

    def whiten(self, par, arrays, M):
        groups, sizes = arrays
        within, big = self._eigenvalues(par, sizes)
        present = sizes > 0
        c = 1.0 - jnp.sqrt(within / big)
        means = jax.ops.segment_sum(M, groups, num_segments=sizes.shape[0]) / jnp.maximum(sizes, 1.0)[:, None]
        out = (M - (c[:, None] * means)[groups]) / jnp.sqrt(within)
        logdet = -0.5 * jnp.sum(jnp.where(present, (sizes - 1.0) * jnp.log(within) + jnp.log(big), 0.0))
        return out, logdet
