"""Predictions, fitted values and residuals against lme4 1.1-31 (``predict``, ``fitted``,
``residuals``), and the user's errors.

References: ``tests/reference/inference/predictions.json`` (made by
``make_predictions.R`` there) and ``sleepstudy_inference.json``.  Tolerance 1e-6 relative,
or 1e-6 of the response's SD near 0 (Exam's standardised scores): the conditional modes of
two optimisers' optima (theta agrees to about 1e-6).
"""

import json

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from test_inference import REF, _fitted

PREDICTIONS = json.loads((REF / "predictions.json").read_text())


def _newdata(records):
    nd = pd.DataFrame(records)
    return nd.astype({c: str for c in nd if nd[c].dtype == object})


@pytest.mark.parametrize("name", ["oats", "machines", "exam", "penicillin"])
def test_predictions_match_lme4(name):
    ref = PREDICTIONS[name]
    _, res = _fitted(name)
    nd = _newdata(ref["newdata"])   # each has a level the fit has not seen
    tol = dict(rtol=1e-6, atol=1e-6 * np.std(res._model.frame.y))
    np.testing.assert_allclose(res.predict(nd, allow_new_levels=True), ref["conditional"], **tol)
    np.testing.assert_allclose(res.predict(nd, re_form="~0"), ref["marginal"], **tol)
    if "partial" in ref:
        np.testing.assert_allclose(res.predict(nd, re_form=ref["partial_form"], allow_new_levels=True),
                                   ref["partial"], **tol)
    np.testing.assert_allclose(res.fitted()[:10], ref["fitted_head"], **tol)
    np.testing.assert_allclose(res.residuals()[:10], ref["residuals_head"], **tol)


def test_sleepstudy_predictions_and_identities():
    ref, res = _fitted("sleepstudy_inference")
    nd = pd.DataFrame(ref["predict"]["newdata"])
    np.testing.assert_allclose(res.predict(nd, allow_new_levels=True), ref["predict"]["conditional"], rtol=1e-6)
    np.testing.assert_allclose(res.predict(nd, re_form="~ 0"), ref["predict"]["marginal"], rtol=1e-6)
    data = jaxhlm.datasets.load("sleepstudy")
    # the model's own rows: predict == fitted; y == fitted + residuals; "~(Days | Subject)" is every term
    np.testing.assert_allclose(res.predict(data), res.fitted(), rtol=1e-12)
    np.testing.assert_allclose(res.predict(data, re_form="~(Days | Subject)"), res.fitted(), rtol=1e-12)
    np.testing.assert_allclose(res.fitted() + res.residuals(), data["Reaction"], rtol=1e-12)
    # population level: X beta
    np.testing.assert_allclose(res.predict(data, re_form="~0"),
                               res.fixef["(Intercept)"] + res.fixef["Days"] * data["Days"], rtol=1e-12)
    # a missing covariate predicts NaN, as lme4's na.pass
    assert np.isnan(res.predict(nd.assign(Days=[0.0, np.nan, 1.0, 2.0]), allow_new_levels=True)[1])


def test_prediction_errors_name_the_problem():
    ref, res = _fitted("sleepstudy_inference")
    nd = pd.DataFrame(ref["predict"]["newdata"])
    with pytest.raises(jaxhlm.DataError, match="level of Subject that the fit has not seen: '999'.*allow_new_levels"):
        res.predict(nd)
    with pytest.raises(jaxhlm.DataError, match="no column 'Days'"):
        res.predict(nd.drop(columns="Days"))
    res.predict(nd.drop(columns="Subject"), re_form="~0")   # the population level needs no Subject
    with pytest.raises(jaxhlm.FormulaError, match=r"\(1 \| Days\) is not a random term"):
        res.predict(nd, re_form="~(1 | Days)")
    with pytest.raises(jaxhlm.FormulaError, match="re_form='Subject' must be"):
        res.predict(nd, re_form="Subject")

