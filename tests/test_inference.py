"""Satterthwaite t tests of fixed effects against lmerTest 3.1-3 (lme4 1.1-31, bobyqa), and
the identities behind them.

References: ``tests/reference/inference/*.json``, made by ``../shared/tools/inference.R``
from ``manifest.tsv`` (Oats and Machines from nlme, Exam from mlmRev, saved under
``data/``; sleepstudy and Penicillin are bundled datasets).  Tolerances: estimates, SEs and
t values to 1e-4 relative (two optimisers' optima of the same criterion), df to 2e-3
relative (lmerTest differentiates numerically, numDeriv's Richardson extrapolation).
"""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.inference import deviance, satterthwaite_df, varpar, vcov_beta

REF = Path(__file__).parent / "reference" / "inference"
CASES = ["sleepstudy_inference", "oats", "machines", "exam", "penicillin"]


def _data(name):
    bundled = {"sleepstudy": "sleepstudy", "Penicillin": "Penicillin"}
    if name in bundled:
        return jaxhlm.datasets.load(bundled[name])
    df = pd.read_csv(REF / "data" / f"{name}.csv.gz")
    for col in ("Block", "Variety", "Worker", "Machine", "school", "student", "schgend", "sex"):
        if col in df:
            df[col] = df[col].astype(str)
    return df


@functools.cache
def _fitted(name):
    ref = json.loads((REF / f"{name}.json").read_text())
    return ref, jaxhlm.LMM(ref["formula"], _data(ref["dataset"])).fit()


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return _fitted(request.param)


def test_satterthwaite_table_matches_lmertest(case):
    ref, res = case
    table = res.coef_table(ddf="satterthwaite")
    want = pd.DataFrame(ref["satterthwaite"]).set_index("name")
    # R's treatment-contrast names (VarietyVictory) for formulaic's (Variety[T.Victory])
    assert [n.replace("[T.", "").replace("]", "") for n in table.index] == list(want.index)
    want.index = table.index
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    for col in ("Estimate", "Std. Error", "t value"):
        np.testing.assert_allclose(table[col], want[col], rtol=1e-4, err_msg=col)
    np.testing.assert_allclose(table["df"], want["df"], rtol=2e-3, err_msg="df")
    # p-values follow from t and df; where df is large they barely move with it
    np.testing.assert_allclose(table["Pr(>|t|)"], want["Pr(>|t|)"], rtol=2e-2, atol=1e-300)


@pytest.mark.parametrize("name", ["sleepstudy_inference", "exam"])
def test_unprofiled_deviance_at_the_estimates_is_the_criterion(name):
    """-2 log L(theta-hat, sigma-hat) is the profiled criterion at the optimum, REML and ML."""
    _ref, res = _fitted(name)
    model = res._model
    both = jax.jit(lambda p, b, reml: (deviance(p, b, model.structure, reml), vcov_beta(p, b, model.structure)),
                   static_argnums=2)
    for fit in (res, model.fit(reml=False)):
        value, vcov = both(varpar(fit.theta, fit.sigma, model.structure), model.blocks, fit.reml)
        assert float(value) == pytest.approx(fit.objective, rel=1e-11)
        np.testing.assert_allclose(vcov, fit.vcov, rtol=1e-9, atol=1e-12)


def test_autodiff_derivatives_equal_finite_differences():
    """The Hessian of the deviance and the Jacobian of vcov(beta) that Satterthwaite's df
    reads, by autodiff, against central differences of the functions themselves."""
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    res = model.fit()
    st, blocks = model.structure, model.blocks
    phi = np.asarray(varpar(res.theta, res.sigma, st))
    H = np.asarray(jax.jit(jax.hessian(deviance), static_argnums=(2, 3))(jnp.asarray(phi), blocks, st, True))
    J = np.asarray(jax.jit(jax.jacfwd(lambda p: jnp.diagonal(vcov_beta(p, blocks, st))))(jnp.asarray(phi)))
    h = 1e-4 * (1.0 + np.abs(phi))
    grad = jax.jit(jax.grad(deviance), static_argnums=(2, 3))
    variances = jax.jit(lambda p: jnp.diagonal(vcov_beta(p, blocks, st)))
    for a in range(phi.size):
        e = np.zeros_like(phi)
        e[a] = h[a]
        fd_h = (np.asarray(grad(phi + e, blocks, st, True)) - np.asarray(grad(phi - e, blocks, st, True))) / (2 * h[a])
        np.testing.assert_allclose(H[:, a], fd_h, rtol=1e-5, atol=1e-6 * np.abs(H).max())
        fd_j = (np.asarray(variances(phi + e)) - np.asarray(variances(phi - e))) / (2 * h[a])
        np.testing.assert_allclose(J[:, a], fd_j, rtol=1e-5, atol=1e-8 * np.abs(J).max())


def test_satterthwaite_vmaps_over_fits():
    """Batched == looped: the df of several responses' fits in one vmapped call."""
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    res = model.fit()
    st = model.structure
    fits = [jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df.assign(Reaction=y)).fit()
            for y in res.simulate(3, seed=4)]
    phis = jnp.stack([varpar(f.theta, f.sigma, st) for f in fits])
    blocks = [f._model.blocks for f in fits]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *blocks)
    batched = jax.jit(jax.vmap(lambda p, b: satterthwaite_df(p, b, st, True)[0]))(phis, stacked)
    for k, f in enumerate(fits):
        np.testing.assert_allclose(batched[k], f.coef_table()["df"].to_numpy(), rtol=1e-8)


def test_asymptotic_table_and_unknown_ddf():
    res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
    z = res.coef_table(ddf="asymptotic")
    assert list(z.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    np.testing.assert_allclose(z["z value"], res.fixef / res.fixef_se)
    with pytest.raises(jaxhlm.JaxhlmError, match="ddf='containment'.*'satterthwaite'"):
        res.coef_table(ddf="containment")


def test_likelihood_ratio_test_matches_lme4(case):
    """anova(reduced, full): REML fits refitted by ML, chi-square to 1e-5 (relative, or 1e-5
    absolute for a chi-square near 0), deviances to 1e-7 relative."""
    ref, res = case
    reduced = jaxhlm.LMM(ref["reduced_formula"], _data(ref["dataset"])).fit()
    table = jaxhlm.anova(reduced, res)
    want = ref["lrt"]
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
    assert table["deviance"].iloc[0] == pytest.approx(want["deviance_reduced_ml"], rel=1e-7)
    assert table["deviance"].iloc[1] == pytest.approx(want["deviance_full_ml"], rel=1e-7)
    assert table["Chisq"].iloc[1] == pytest.approx(want["chisq"], rel=1e-5, abs=1e-5)
    assert table["Df"].iloc[1] == want["df"]
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(want["p"], rel=1e-4, abs=1e-8)
    assert jaxhlm.anova(res, reduced).equals(table)          # either order


def test_likelihood_ratio_test_refuses_what_it_cannot_compare():
    df = jaxhlm.datasets.load("sleepstudy")
    full = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
    with pytest.raises(jaxhlm.JaxhlmError, match="different rows: 170 and 180"):
        jaxhlm.anova(jaxhlm.LMM("Reaction ~ 1 + (1 | Subject)", df.iloc[10:]).fit(), full)
    other = df.assign(x=np.arange(len(df)) % 3)
    with pytest.raises(jaxhlm.JaxhlmError, match=r"not nested.*\['x'\]"):
        jaxhlm.anova(jaxhlm.LMM("Reaction ~ x + (1 | Subject)", other).fit(), full)
    with pytest.raises(jaxhlm.JaxhlmError, match=r"not nested.*\(1 \| Days\)"):
        jaxhlm.anova(jaxhlm.LMM("Reaction ~ Days + (1 | Days)", df).fit(), full)
