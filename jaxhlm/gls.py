"""``GLS``: generalised least squares with a structured residual covariance (nlme's ``gls``).

    y = X beta + e,   Var e = sigma^2 D R D

with R a within-group correlation and D a variance function (:mod:`jaxhlm.residual`).
It is a linear mixed model without random effects: the kernel's first term is a
placeholder whose lambda is 0 (:class:`jaxhlm.covariance.Absent`), so the blocked factor
is the least-squares fit of the whitened rows, and ML and REML are nlme's (which equal
lme4's definitions).  This is the marginal view of a mixed model: with rho >= 0,
``GLS("y ~ x", df, correlation=CompoundSymmetry("g"))`` is ``LMM("y ~ x + (1 | g)", df)``,
since a random intercept's marginal covariance sigma_b^2 11' + sigma^2 I is compound
symmetry with rho = sigma_b^2 / (sigma_b^2 + sigma^2).
"""

from __future__ import annotations

import pandas as pd

from . import frame as _frame
from .errors import DataError, FormulaError
from .model import LMM

PLACEHOLDER = "gls_no_random_effects_"
"""The grouping column of the placeholder term (added to a copy of the data)."""


class GLS(LMM):
    """nlme's ``gls(formula, data, correlation =, weights =)``: ``GLS(formula, data,
    correlation=jaxhlm.AR1("Subject", "Days"), variance=jaxhlm.VarIdent("Sex"))``.
    Without either it is ordinary least squares.  Fit, results and tables as :class:`LMM`'s."""

    def __init__(self, formula: str, data: pd.DataFrame, *, correlation=None, variance=None):
        if not isinstance(formula, str) or "|" in formula:
            raise FormulaError(f"GLS takes a formula without random-effects terms; got {formula!r} "
                               "(use LMM for a mixed model)")
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
        frame = _frame.build(f"{formula} + (1 | {PLACEHOLDER})", data.assign(**{PLACEHOLDER: 0}),
                             placeholder=PLACEHOLDER)
        self._setup(formula, frame, correlation, variance)
