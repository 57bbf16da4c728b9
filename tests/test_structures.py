"""Structured covariances (issue 15) against nlme 3.1-162 and glmmTMB 1.1.5.

References: ``tests/reference/covariance/*.json``, made by ``make_covariance.R`` there
(which also wrote the data under ``data/``).  Tolerances, from the issue: the -2
log-likelihood never worse than the reference's by 1e-6 relative (ours may be lower:
a better optimum), fixed effects within 1e-3 of the largest, sigma, SDs and
correlation parameters within 2e-3 relative.  nlme's and glmmTMB's optimisers stop
at 1e-6-1e-8 relative in the parameters, so their values carry that error.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.errors import FormulaError

REF = Path(__file__).parent / "reference" / "covariance"


def ref(name):
    return json.loads((REF / f"{name}.json").read_text())


def data(name):
    d = pd.read_csv(REF / "data" / f"{name}.csv.gz")
    for c in ("Subject", "Sex", "Worker", "Machine"):
        if c in d:
            d[c] = pd.Categorical(d[c])
    if name == "Orthodont":
        d["agef"] = pd.Categorical(d["age"], categories=[8, 10, 12, 14])
    if name == "Ovary":
        d["Mare"] = pd.Categorical(d["Mare"], categories=d["Mare"].unique())
        d["sin2pi"], d["cos2pi"] = np.sin(2 * np.pi * d["Time"]), np.cos(2 * np.pi * d["Time"])
    return d


def check_common(res, r):
    assert res.objective <= r["minus2loglik"] * (1 + 1e-6) + 1e-6
    assert res.objective == pytest.approx(r["minus2loglik"], rel=1e-6)
    fe = res.fixef.to_numpy()
    np.testing.assert_allclose(fe, r["fixef"], atol=1e-3 * np.max(np.abs(r["fixef"])))
    np.testing.assert_allclose(res.fixef_se.to_numpy(), r["fixef_se"], rtol=2e-3)
    assert res.sigma == pytest.approx(r["sigma"], rel=2e-3)


def varcorr_matrix(res, group):
    vc = res.varcorr
    vc = vc[vc.grp == group]
    cols = list(dict.fromkeys(vc.var1))
    S = np.zeros((len(cols), len(cols)))
    for _, row in vc.iterrows():
        i = cols.index(row.var1)
        if row.var2 is None or pd.isna(row.var2):
            S[i, i] = row.vcov
        else:
            j = cols.index(row.var2)
            S[i, j] = S[j, i] = row.vcov
    return S


RANDOM = [
    ("machines_tmb_cs", "Machines", "score ~ Machine + cs(0 + Machine | Worker)", "Worker"),
    ("machines_lme_pdcs", "Machines", "score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", "Worker"),
    ("orthodont_tmb_ar1", "Orthodont", "distance ~ age + ar1(0 + agef | Subject)", "Subject"),
    ("sleepstudy_tmb_diag", "sleepstudy", "Reaction ~ Days + diag(Days | Subject)", "Subject"),
]


@pytest.mark.parametrize("method", ["reml", "ml"])
@pytest.mark.parametrize("name,dataset,formula,group", RANDOM)
def test_random_effect_structures_match_references(name, dataset, formula, group, method):
    r = ref(f"{name}_{method}")
    res = jaxhlm.LMM(formula, data(dataset)).fit(reml=method == "reml")
    check_common(res, r)
    S = varcorr_matrix(res, group)
    if "vc_sd" in r:
        sd = np.asarray(r["vc_sd"][group])
        np.testing.assert_allclose(np.sqrt(np.diag(S)), sd, rtol=2e-3)
        if r["vc_cor"][group] is not None and len(sd) > 1 and "diag" not in name:
            cor = np.asarray(r["vc_cor"][group])
            np.testing.assert_allclose(S / np.outer(sd, sd), cor, atol=2e-3)
    else:  # nlme's getVarCov
        np.testing.assert_allclose(S, np.asarray(r["random_cov"]), rtol=2e-3)


def test_structured_terms_have_few_parameters_and_names():
    d = data("Machines")
    for formula, names in [
        ("score ~ Machine + cs(0 + Machine | Worker)", ["Worker.Machine[A]", "Worker.Machine[B]",
                                                         "Worker.Machine[C]", "Worker.rho"]),
        ("score ~ Machine + homcs(0 + Machine | Worker)", ["Worker.sd", "Worker.rho"]),
        ("score ~ Machine + ar1(0 + Machine | Worker)", ["Worker.sd", "Worker.rho"]),
    ]:
        res = jaxhlm.LMM(formula, d).fit()
        assert res.theta_names == names and res.theta.size == len(names)
    homcs = jaxhlm.LMM("score ~ Machine + homcs(0 + Machine | Worker)", d).fit()
    hom = jaxhlm.LMM("score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", d).fit()
    assert homcs.objective == hom.objective


@pytest.mark.parametrize("formula,message", [
    ("score ~ Machine + cs(1 | Worker)", "at least two columns"),
    ("score ~ Machine + ar1(1 | Worker)", "at least two columns"),
    ("score ~ Machine + cs(0 + Machine | Worker, het = TRUE)", "does not take the options het"),
    ("score ~ Machine + cs(0 + Machine | Worker, hom)", "name = value"),
    ("score ~ Machine + cs(0 + Machine | Worker, hom = yes)", "TRUE, FALSE or a number"),
    ("score ~ Machine + (0 + Machine | Worker, hom = TRUE)", "need a covariance structure"),
    ("score ~ Machine + toeplitz(0 + Machine | Worker)", "unknown covariance structure 'toeplitz'"),
])
def test_structure_errors_name_the_term(formula, message):
    with pytest.raises(FormulaError, match=message):
        jaxhlm.LMM(formula, data("Machines"))


def test_structured_batches_equal_single_fits():
    """fit_many of a cs term (one vmapped program) == one fit per response: the optimum's
    value to 1e-10; its location to 1e-4 (the batch runs BFGS, the single fit Newton, both
    stopping at a gradient of ~1e-6, and the criterion is flat in rho to that order)."""
    d = data("Machines")
    model = jaxhlm.LMM("score ~ Machine + cs(0 + Machine | Worker)", d)
    rng = np.random.default_rng(3)
    Y = d["score"].to_numpy() + rng.normal(0, 1, (3, len(d)))
    many = model.fit_many(Y)
    for k in range(3):
        single = jaxhlm.LMM("score ~ Machine + cs(0 + Machine | Worker)", d.assign(score=Y[k])).fit()
        assert many.objective[k] == pytest.approx(single.objective, rel=1e-10)
        np.testing.assert_allclose(many.theta[k], single.theta, rtol=1e-4)
        np.testing.assert_allclose(many.fixef[k], single.fixef.to_numpy(), rtol=1e-6)
