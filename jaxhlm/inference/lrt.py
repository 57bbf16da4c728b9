"""Likelihood-ratio tests between nested fits: lme4's ``anova(m0, m)``.

As lme4 does, REML fits are refitted by maximum likelihood first (REML criteria of
models with different fixed effects are not comparable), then

    Chisq = deviance(reduced) - deviance(full),   Df = npar(full) - npar(reduced),
    Pr(>Chisq) = P(chi^2_Df > Chisq),

with npar, AIC, BIC, logLik and deviance per model as lme4's table has them.  The two
fits must be on the same rows (same response, same observations) and the reduced one
nested in the full one: its fixed-effect columns among the full one's, each of its
random terms covered by a full term on the same grouping factor with at least its
columns, and fewer parameters.  Anything else is an error that names what differs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..errors import JaxhlmError


def _ml(result):
    return result._model.fit(reml=False) if result.reml else result


def _check(reduced, full) -> None:
    fr, ff = reduced._model.frame, full._model.frame
    if fr.nobs != ff.nobs or not np.array_equal(fr.y, ff.y):
        raise JaxhlmError(f"the models are fitted to different rows: {fr.nobs} and {ff.nobs} "
                          "observations" + ("" if fr.nobs != ff.nobs else " with different responses")
                          + "; a likelihood-ratio test needs both on the same data")
    extra = [c for c in fr.fixef_names if c not in ff.fixef_names]
    if extra:
        raise JaxhlmError(f"the reduced model {reduced.formula!r} is not nested in {full.formula!r}: "
                          f"its fixed-effect column(s) {extra} are not in the full model")
    for spec in fr.specs:
        cover = [s for s in ff.specs if s.group == spec.group and set(spec.columns) <= set(s.columns)]
        if not cover:
            cols = " + ".join("1" if c == "(Intercept)" else c for c in spec.columns)
            raise JaxhlmError(f"the reduced model {reduced.formula!r} is not nested in {full.formula!r}: "
                              f"its random term ({cols} | {spec.group}) has no term of the full model "
                              f"on {spec.group} with those columns")
    if reduced.npar >= full.npar:
        raise JaxhlmError(f"the reduced model {reduced.formula!r} has {reduced.npar} parameters, the full "
                          f"model {full.formula!r} {full.npar}: the reduced one must have fewer")


def anova(reduced, full) -> pd.DataFrame:
    """lme4's ``anova(reduced, full)``: one row per model (indexed by formula, fewer
    parameters first), columns npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)."""
    if reduced.npar > full.npar:
        reduced, full = full, reduced
    _check(reduced, full)
    fits = [_ml(reduced), _ml(full)]
    dev = np.array([f.objective for f in fits])
    chisq = dev[0] - dev[1]
    df = full.npar - reduced.npar
    return pd.DataFrame({
        "npar": [f.npar for f in fits], "AIC": [f.aic for f in fits], "BIC": [f.bic for f in fits],
        "logLik": [f.loglik for f in fits], "deviance": dev,
        "Chisq": [np.nan, chisq], "Df": [np.nan, df],
        "Pr(>Chisq)": [np.nan, special.chdtrc(df, max(chisq, 0.0))]},
        index=pd.Index([reduced.formula, full.formula], name="model"))
