"""``VarPower(column)``: nlme's ``varPower(form = ~ column)``, g_i = |v_i|^delta.

The parameter is the power delta itself (unbounded, 0 at the start); log g_i =
delta log|v_i|.  nlme's default covariate, the fitted values, is not offered: it makes
the variance depend on beta, which nlme handles by alternating; name a column instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..errors import DataError
from .base import VarianceFunction, column


@dataclasses.dataclass(frozen=True)
class VarPower(VarianceFunction):
    """Residual SD proportional to a power of a covariate (nlme's ``varPower``): ``VarPower("Days1")``."""

    column: str = ""
    nlme = "varPower"

    @property
    def nparams(self) -> int:
        return 1

    def columns(self) -> list[str]:
        return [self.column]

    def param_names(self) -> list[str]:
        return ["power"]

    def natural(self, par):
        return np.asarray(par, dtype=float)

    def prior(self):
        import numpyro.distributions as dist

        return dist.Normal(0.0, 1.0)

    def unbounded(self, natural):
        return natural

    def bind(self, data: pd.DataFrame, groups):
        raw = column(data, self.column, "VarPower")
        if not pd.api.types.is_numeric_dtype(raw):
            raise DataError(f"VarPower's column {self.column!r} is not numeric")
        v = np.abs(raw.to_numpy(dtype=float))
        bad = np.flatnonzero(~np.isfinite(v) | (v == 0))
        if bad.size:
            raise DataError(f"VarPower's column {self.column!r} is {raw.iloc[bad[0]]!r} in row "
                            f"{data.index[bad[0]]!r}: |v|^power needs non-zero finite values")
        return self, (np.log(v),)

    def log_sd(self, par, arrays, xp=None):
        (logv,) = arrays
        return par[0] * logv
