"""``VarIdent(column)``: nlme's ``varIdent(form = ~ 1 | column)``, an SD per stratum.

g_i = delta_{s(i)} for row i in stratum s(i), with delta = 1 for the first level (a
Categorical's first, else the first sorted) and free ratios for the others: the
parameters are log delta_s (unbounded, 0 at the start).  nlme's ``coef(...,
unconstrained = FALSE)`` gives the ratios, named by level; nlme takes the first level
in the data's order as the reference, so its ratios may be the inverses of these.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from ..lazy_jax import jnp

from ..errors import DataError
from .base import VarianceFunction, codes_of, column


@dataclasses.dataclass(frozen=True)
class VarIdent(VarianceFunction):
    """An SD ratio per level of a column (nlme's ``varIdent``): ``VarIdent("Sex")``."""

    column: str = ""
    levels: tuple = ()
    nlme = "varIdent"

    @property
    def nparams(self) -> int:
        return max(len(self.levels) - 1, 0)

    def columns(self) -> list[str]:
        return [self.column]

    def param_names(self) -> list[str]:
        return [str(level) for level in self.levels[1:]]

    def natural(self, par):
        return np.exp(np.asarray(par, dtype=float))

    def prior(self):
        import numpyro.distributions as dist

        return dist.LogNormal(0.0, 1.0)

    def unbounded(self, natural):
        return jnp.log(natural)

    def natural_bounds(self):
        return np.zeros(self.nparams), np.full(self.nparams, np.inf)

    def bind(self, data: pd.DataFrame, groups):
        codes, levels = codes_of(column(data, self.column, "VarIdent"))
        if len(levels) < 2:
            raise DataError(f"VarIdent's column {self.column!r} has one level ({levels[0]!r}) in the "
                            "rows used: there is no second variance to estimate")
        return dataclasses.replace(self, levels=tuple(levels)), (codes.astype(np.int32),)

    def log_sd(self, par, arrays, xp=jnp):
        (codes,) = arrays
        return xp.concatenate([xp.zeros(1, par.dtype), par])[codes]
