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


def method_name(ddf: str) -> str | None:
    """The name of ``ddf``'s method (``Satterthwaite``, ``Kenward-Roger``); None for z tests."""
    key = _method(ddf, (*METHODS, "asymptotic"))
    return METHODS[key].name if key in METHODS else None


def _tester(result, key: str):
    """The fit's tester for method ``key``, built once per fit."""
    cache = result.__dict__.setdefault("_testers", {})
    if key not in cache:
        cache[key] = METHODS[key].of(result)
    return cache[key]


def coef_table(result, ddf: str = "satterthwaite") -> pd.DataFrame:
    """The fixed effects' t tests (:meth:`jaxhlm.LMMResult.coef_table`)."""
    key = _method(ddf, (*METHODS, "asymptotic"))
    estimate = result.fixef
    if key == "asymptotic":
        return _z_table(estimate.to_numpy(), result.fixef_se.to_numpy(), estimate.index)
    tester = _tester(result, key)
    var, df = np.array([tester.t_test(l) for l in np.eye(len(estimate))]).T
    return _t_table(estimate.to_numpy(), np.sqrt(var), df, estimate.index)


def _z_table(estimate, se, index) -> pd.DataFrame:
    stat = estimate / se
    return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "z value": stat,
                         "Pr(>|z|)": 2.0 * special.ndtr(-np.abs(stat))}, index=index)


def _t_table(estimate, se, df, index) -> pd.DataFrame:
    stat = estimate / se
    return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "df": df, "t value": stat,
                         "Pr(>|t|)": 2.0 * special.stdtr(df, -np.abs(stat))}, index=index)


def coef_table_many(batch, ddf: str, chunk_size) -> pd.DataFrame:
    """Every fit's t tests (:meth:`jaxhlm.batch.BatchResult.coef_table`): each method's
    arrays of a chunk of fits (``chunk_size(n)`` of n) in one vmapped program, then the
    tests per fit on the host.  A fit whose tests do not exist (a Kenward-Roger boundary
    fit) has NaN rows, counted in a warning."""
    key = _method(ddf, (*METHODS, "asymptotic"))
    B, p = batch.fixef.shape
    index = pd.MultiIndex.from_product([range(B), batch.fixef_names], names=["fit", "coefficient"])
    estimate = batch.fixef.reshape(-1)
    if key == "asymptotic":
        return _z_table(estimate, batch.fixef_se.reshape(-1), index)
    method = METHODS[key]
    var, df = np.full((B, p), np.nan), np.full((B, p), np.nan)
    failed = 0
    for positions, take, st in batch.sources:
        n = positions.size
        size = chunk_size(n)
        for lo in range(0, n, size):
            rows = np.minimum(np.arange(lo, lo + size), n - 1)
            fits = positions[rows]
            blocks, axes = take(rows)
            arrays = method.arrays_many(batch.theta[fits], batch.sigma[fits],
                                        [lam[fits] for lam in batch.lams], blocks, st, axes, batch.reml)
            for k in range(min(size, n - lo)):
                try:
                    tester = method(*[a[k] for a in arrays], batch.fixef[fits[k]])
                except JaxhlmError:
                    failed += 1
                    continue
                var[fits[k]], df[fits[k]] = np.array([tester.t_test(l) for l in np.eye(p)]).T
    if failed:
        import warnings

        warnings.warn(f"{failed} of {B} fits have no {method.name} tests (boundary fits); their "
                      "rows are NaN", stacklevel=3)
    return _t_table(estimate, np.sqrt(var).reshape(-1), df.reshape(-1), index)


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
