"""Tests of the fixed effects of one fit: lmerTest's ``summary`` table and type III
``anova`` table, with the denominator df of a method (:mod:`.satterthwaite`,
:mod:`.kenward_roger`) or none (``"asymptotic"``: z tests, as lme4's ``summary`` without
lmerTest gives t values and R users read them as z).

A method is a class built from a fit (its derivatives computed once) with two tests of
contrasts of beta: ``t_test(l) -> (variance of l'beta, df)`` and
``f_test(L) -> (F unscaled, NumDF, DenDF, scaling)``.

Type III hypotheses: lmerTest's ``get_contrasts_type3`` with treatment contrasts (R's
and formulaic's default) tests, for each term, that its columns of X are all zero; the
table's columns are lmerTest's: Sum Sq = Mean Sq x NumDF, Mean Sq = F unscaled x sigma^2,
F value = scaling x F unscaled, Pr(>F) on (NumDF, DenDF).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..errors import JaxhlmError
from ..frame import fixed_terms
from .kenward_roger import KenwardRoger
from .satterthwaite import Satterthwaite

METHODS = {"satterthwaite": Satterthwaite, "kenward-roger": KenwardRoger}


def _method(ddf: str, allowed) -> str:
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    key = {"kr": "kenward-roger", "kenwardroger": "kenward-roger"}.get(key, key)
    if key not in allowed:
        known = ", ".join(repr(d) for d in allowed)
        raise JaxhlmError(f"ddf={ddf!r} is not available; use one of {known}")
    return key


def _tester(result, key: str):
    """The fit's tester for method ``key``, built once per fit."""
    cache = result.__dict__.setdefault("_testers", {})
    if key not in cache:
        cache[key] = METHODS[key](result)
    return cache[key]


def coef_table(result, ddf: str = "satterthwaite") -> pd.DataFrame:
    """The fixed effects' t tests (:meth:`jaxhlm.LMMResult.coef_table`)."""
    key = _method(ddf, (*METHODS, "asymptotic"))
    estimate = result.fixef
    if key == "asymptotic":
        se = result.fixef_se
        stat = estimate / se
        return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "z value": stat,
                             "Pr(>|z|)": 2.0 * special.ndtr(-np.abs(stat))})
    tester = _tester(result, key)
    var, df = np.array([tester.t_test(l) for l in np.eye(len(estimate))]).T
    se = pd.Series(np.sqrt(var), index=estimate.index)
    stat = estimate / se
    return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "df": df, "t value": stat,
                         "Pr(>|t|)": 2.0 * special.stdtr(df, -np.abs(stat))})


def anova(result, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Type III F tests of each fixed-effect term (:meth:`jaxhlm.LMMResult.anova`)."""
    tester = _tester(result, _method(ddf, tuple(METHODS)))
    p = len(result.fixef)
    rows, names = [], []
    for term, cols in fixed_terms(result._model.frame).items():
        F, ndf, ddf_, scale = tester.f_test(np.eye(p)[cols])
        mean_sq = F * result.sigma ** 2
        rows.append((mean_sq * ndf, mean_sq, ndf, ddf_, scale * F,
                     special.fdtrc(ndf, ddf_, scale * F)))
        names.append(term)
    table = pd.DataFrame(rows, index=pd.Index(names, name="term"),
                         columns=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"])
    table.attrs["heading"] = f"Type III Analysis of Variance Table with {tester.name}'s method"
    return table
