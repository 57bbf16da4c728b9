"""Confidence intervals for a fit's parameters: lme4's ``confint(m, method, level,
oldNames = FALSE)``.

Rows as lme4 names them: per random-effects term its SDs and correlations in the order
of its covariance's lower triangle, column by column (``sd_(Intercept)|Subject``,
``cor_Days.(Intercept)|Subject``, ``sd_Days|Subject``), then ``sigma``, then a residual
structure's parameters on nlme's scale (``Phi``, ``Rho``, variance ratios, ``power``), then
the fixed effects; columns the two probabilities as R prints them (``2.5 %``, ``97.5 %``).

- ``"wald"``: beta-hat +- z SE for the fixed effects; none (NaN) for the variance
  parameters, as lme4 (their sampling distributions are far from normal);
- ``"bootstrap"``: percentile intervals of a parametric bootstrap (lme4's ``bootMer``,
  ``boot.type = "perc"``), :meth:`jaxhlm.LMMResult.bootstrap` with ``nsim`` and ``seed``;
- ``"profile"``: where the likelihood profile's zeta crosses -+ z (lme4's default;
  :mod:`.profile`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..errors import JaxhlmError
from ..tables import lme4_variance_names as variance_names

METHODS = ("wald", "bootstrap", "profile")


def _labels(level: float) -> list[str]:
    a = (1.0 - level) / 2.0
    return [f"{100 * p:.3g} %" for p in (a, 1.0 - a)]


def confint(result, method: str = "wald", level: float = 0.95, nsim: int = 500,
            seed: int = 0) -> pd.DataFrame:
    """lme4's ``confint`` (the module docstring)."""
    key = str(method).lower()
    if key not in METHODS:
        raise JaxhlmError(f"method={method!r} is not available; use one of "
                          + ", ".join(repr(m) for m in METHODS))
    if not 0.0 < level < 1.0:
        raise JaxhlmError(f"level must be between 0 and 1, not {level!r}")
    st = result._model.structure
    names = variance_names(result._model.frame.specs)
    residual = [] if st.residual is None else st.residual.param_names()
    index = [n for n, _ in names] + residual + list(result.fixef.index)
    if key == "wald":
        z = special.ndtri(1.0 - (1.0 - level) / 2.0)
        se = result.fixef_se.to_numpy()
        est = result.fixef.to_numpy()
        lower = np.concatenate([np.full(len(names) + len(residual), np.nan), est - z * se])
        upper = np.concatenate([np.full(len(names) + len(residual), np.nan), est + z * se])
    elif key == "profile":
        from .profile import confint as profile_confint

        lower, upper = profile_confint(result, level)
    else:
        boot = result.bootstrap(nsim, seed)
        table = boot.confint(level)
        rows = [b for _, b in names]
        fixed = list(result.fixef.index)
        ends = []
        if residual:   # percentiles of the refits' natural residual parameters
            natural = np.array([st.residual.natural(t[st.ntheta_random:]) for t in boot.theta])
            a = 50.0 * (1.0 - level)
            ends = np.percentile(natural, [a, 100.0 - a], axis=0)
        lower = np.concatenate([table.loc[rows, "percentile_lower"].to_numpy(), ends[0] if residual else [],
                                table.loc[fixed, "percentile_lower"].to_numpy()])
        upper = np.concatenate([table.loc[rows, "percentile_upper"].to_numpy(), ends[1] if residual else [],
                                table.loc[fixed, "percentile_upper"].to_numpy()])
    lo, hi = _labels(level)
    return pd.DataFrame({lo: lower, hi: upper}, index=pd.Index(index, name="parameter"))
