"""Predictions of a fitted model: lme4's ``predict``, ``fitted`` and ``residuals``.

For a row with fixed-effect covariates x (the model's columns, built with the fit's
factor levels and contrasts) and, for term k, covariates z_k and level j_k,

    predict = x' beta-hat + sum_{k in re_form} z_k' b-hat_k[j_k],

b-hat the conditional modes (lme4's ``ranef``).  ``re_form=None`` includes every random
term, ``"~0"`` (or ``"NA"``) none: the population level, lme4's ``re.form = NA``; a formula
of random terms (``"~(1 | Block)"``) includes the model's terms on those grouping factors
with those columns.  A level the fit has not seen is an error unless
``allow_new_levels=True``, when its effects are 0 (the mean of b), as lme4's.  A row with
a missing value in a column the prediction uses predicts NaN (lme4's ``na.pass``).

``fitted()`` is the prediction at the model's own rows with every term, and
``residuals()`` is y - fitted (lme4's response residuals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import formula as _formula
from . import frame as _frame
from .errors import DataError, FormulaError, explain_formulaic

POPULATION = {"~0", "~-1", "na", "nan", "0"}


def _columns(expr: str, fit_data: pd.DataFrame, newdata: pd.DataFrame, what: str) -> tuple[np.ndarray, list[str]]:
    """The model matrix of ``~ expr`` on ``newdata``, with the columns (levels, contrasts) it
    has on the fit's data, and the columns' names."""
    simple = _frame._simple_covariates(expr, newdata)
    if simple is not None and _frame._simple_covariates(expr, fit_data) is not None:
        return simple[:2]
    spec = _frame._matrix("~ " + expr, fit_data, expr, what).model_spec
    try:
        mm = spec.get_model_matrix(newdata, na_action="ignore")
    except Exception as err:   # formulaic's errors on data the spec cannot take
        raise DataError(f"cannot build {what} for newdata: {explain_formulaic(err)}") from None
    return np.asarray(mm, dtype=float), _frame._rename_intercept(mm.columns)


def _selected(frame, re_form) -> list[bool]:
    """Which of the model's random terms ``re_form`` includes (the module docstring)."""
    specs = frame.specs
    if re_form is None:
        return [True] * len(specs)
    if isinstance(re_form, float) and np.isnan(re_form):
        return [False] * len(specs)
    text = str(re_form).replace(" ", "")
    if text.lower() in POPULATION:
        return [False] * len(specs)
    if not text.startswith("~"):
        raise FormulaError(f"re_form={re_form!r} must be None, '~0' or a formula of random terms "
                           "such as '~(1 | Subject)'")
    parsed = _formula.parse("y " + str(re_form).strip())
    if parsed.fixed_rhs.strip() not in ("", "0", "1"):
        raise FormulaError(f"re_form={re_form!r} has fixed terms ({parsed.fixed_rhs}); it takes only "
                           "random terms, such as '~(1 | Subject)'")
    chosen = [False] * len(specs)
    for term in parsed.random:
        cols = set(_columns(term.expr, frame.data, frame.data.head(1), f"({term.expr} | {term.group})")[1])
        hits = [k for k, s in enumerate(specs) if s.group == term.group and set(s.columns) <= cols]
        if not hits:
            have = ", ".join(f"({' + '.join(s.columns)} | {s.group})" for s in specs)
            raise FormulaError(f"re_form's term ({term.expr} | {term.group}) is not a random term of "
                               f"the model; its terms are {have}")
        for k in hits:
            chosen[k] = True
    return chosen


def _codes(term, newdata: pd.DataFrame, allow_new_levels: bool) -> np.ndarray:
    """Each row's level of the term's grouping factor (-1: a level the fit has not seen)."""
    factors = term.spec.group.split(":")
    labels = newdata[factors[0]].astype(str)
    for name in factors[1:]:
        labels = labels + ":" + newdata[name].astype(str)
    index = {level: j for j, level in enumerate(term.levels)}
    codes = np.array([index.get(v, -1) for v in labels], dtype=np.int64)
    missing = newdata[factors].isna().any(axis=1).to_numpy()
    new = (codes < 0) & ~missing
    if new.any() and not allow_new_levels:
        first = labels[new].iloc[0]
        raise DataError(f"newdata has a level of {term.spec.group} that the fit has not seen: "
                        f"{first!r} (row {newdata.index[np.argmax(new)]!r}); pass "
                        "allow_new_levels=True to predict it at the population level (b = 0)")
    return codes


def predict(result, newdata: pd.DataFrame | None = None, re_form=None,
            allow_new_levels: bool = False) -> pd.Series:
    """lme4's ``predict(m, newdata, re.form, allow.new.levels)`` (the module docstring):
    a Series indexed as ``newdata`` (the model's rows when it is None)."""
    return linear_predictor(result._model.frame, result.fixef.to_numpy(), result._cond.b, newdata,
                            re_form, allow_new_levels)


def linear_predictor(frame, beta, b, newdata: pd.DataFrame | None = None, re_form=None,
                     allow_new_levels: bool = False) -> pd.Series:
    """x' beta + the chosen terms' z' b on ``newdata`` (the frame's rows when it is None),
    with the fit's fixed effects ``beta`` and conditional modes ``b`` (per term (ell_k, p_k))."""
    chosen = _selected(frame, re_form)
    if newdata is None:
        newdata = frame.data
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
    needed = _needed(frame, chosen)
    absent = sorted(needed - set(newdata.columns))
    if absent:
        raise DataError(f"newdata has no column {', '.join(repr(c) for c in absent)}, which the "
                        f"prediction needs; its columns are: {', '.join(map(str, newdata.columns))}")
    X, names = _columns(frame.formula.fixed_rhs, frame.data, newdata, "the fixed-effects matrix")
    position = {n: k for k, n in enumerate(names)}
    eta = X[:, [position[n] for n in frame.fixef_names]] @ np.asarray(beta)
    for term, bk, use in zip(frame.terms, b, chosen):
        if not use:
            continue
        Z, cols = _columns(term.expr, frame.data, newdata, f"the random-effects term of {term.spec.group}")
        Z = Z[:, [cols.index(c) for c in term.spec.columns]]
        codes = _codes(term, newdata, allow_new_levels)
        bk = np.asarray(bk)[np.maximum(codes, 0)] * (codes >= 0)[:, None]
        eta = eta + np.where(newdata[term.spec.group.split(":")].isna().any(axis=1).to_numpy(),
                             np.nan, np.sum(Z * bk, axis=1))
    return pd.Series(eta, index=newdata.index, name="predict")


def _needed(frame, chosen: list[bool]) -> set[str]:
    """The data columns a prediction reads: the fixed part's and the chosen terms'."""
    text = frame.formula.text
    needed = _frame._required("~ " + frame.formula.fixed_rhs, "fixed part", text)
    for term, use in zip(frame.terms, chosen):
        if use:
            needed |= _frame._required("~ " + term.expr, "random-effects term", text)
            needed |= set(term.spec.group.split(":"))
    return needed
