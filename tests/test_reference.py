"""Acceptance 1: every lme4 reference fit is reproduced.

Tolerances (from the issue, each justified by what lme4 itself reaches): objective
within 1e-6 relative and never worse by more than that (BOBYQA stops near, not at,
the optimum; a better optimum is allowed and reported); fixed effects 1e-5 relative;
standard errors, sigma and random-effect SDs 1e-4 relative; correlations 1e-4
absolute; conditional modes and SDs within 1e-4 of their scale (the largest |value|
of that term); singularity equal.
"""

import numpy as np
import pytest

import jaxhlm
from conftest import lme4_name, load_reference, reference_names

FAST = [n for n in reference_names() if n != "insteval_ml"]

# lme4's refs.R made factors only of listed columns, so InstEval's 0/1 column `service`
# entered lme4 as a number (coefficient "service"); jaxhlm's bundled data keep lme4's
# factor (coefficient "service[T.1]").  Same column of X, same fit; only the name differs.
NAME_IN_REFERENCE = {"insteval_ml": {"service[T.1]": "service"}}


def _fit(name):
    ref = load_reference(name)
    res = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"])).fit(reml=ref["reml"])
    return ref, res


def check_against_lme4(ref, res):
    rel = (res.objective - ref["objective"]) / abs(ref["objective"])
    assert rel <= 1e-6, f"objective {res.objective} worse than lme4's {ref['objective']}"
    assert abs(rel) <= 1e-6
    if rel < -1e-9:
        print(f"{ref['name']}: better optimum than lme4 by {-rel:.2e} relative")
    assert res.converged
    assert res.nobs == ref["nobs"]
    rename = NAME_IN_REFERENCE.get(ref["name"], {})
    assert [rename.get(n, lme4_name(n)) for n in res.fixef.index] == ref["fixef_names"]
    np.testing.assert_allclose(res.fixef.to_numpy(), ref["fixef"], rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(res.fixef_se.to_numpy(), ref["fixef_se"], rtol=1e-4)
    np.testing.assert_allclose(res.sigma, ref["sigma"], rtol=1e-4)
    assert res.theta_names == ref["theta_names"]
    np.testing.assert_allclose(res.loglik, ref["loglik"], rtol=1e-6)
    np.testing.assert_allclose([res.aic, res.bic], [ref["aic"], ref["bic"]], rtol=1e-6)
    assert res.ngroups == ref["ngroups"]
    assert res.singular == ref["singular"]

    vc = ref["varcorr"]
    assert list(res.varcorr["grp"]) == [r["grp"] for r in vc]
    for (_, mine), theirs in zip(res.varcorr.iterrows(), vc):
        assert mine["var1"] == theirs["var1"] and mine["var2"] == theirs["var2"]
        if theirs["var2"] is None:  # a standard deviation
            np.testing.assert_allclose(mine["sdcor"], theirs["sdcor"], rtol=1e-4, atol=1e-8)
        else:  # a correlation
            assert abs(mine["sdcor"] - theirs["sdcor"]) <= 1e-4

    ours = res.ranef.set_index(["grpvar", "term", "grp"])
    theirs = {(r["grpvar"], r["term"], r["grp"]): r for r in ref["ranef"]}
    assert set(ours.index) == set(theirs)
    for (grpvar, term), block in ours.groupby(level=["grpvar", "term"]):
        rows = [theirs[k] for k in block.index]
        val = np.array([r["condval"] for r in rows])
        sd = np.array([r["condsd"] for r in rows])
        scale_v = max(np.max(np.abs(val)), 1e-12)
        scale_s = max(np.max(np.abs(sd)), 1e-12)
        assert np.max(np.abs(block["condval"].to_numpy() - val)) <= 1e-4 * scale_v, (grpvar, term)
        assert np.max(np.abs(block["condsd"].to_numpy() - sd)) <= 1e-4 * scale_s, (grpvar, term)


@pytest.mark.parametrize("name", FAST)
def test_matches_lme4(name):
    check_against_lme4(*_fit(name))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_insteval_matches_lme4():
    check_against_lme4(*_fit("insteval_ml"))


def test_boundary_fit_is_exactly_zero():
    """Dyestuff2: theta reaches exactly 0, as lme4's bounded optimiser does."""
    ref, res = _fit("dyestuff2_reml")
    assert res.theta[0] == 0.0
    assert res.singular
    assert (res.ranef["condval"] == 0.0).all()


def test_uncorrelated_double_bar_equals_split_terms(sleepstudy):
    """``(Days || Subject)`` is lme4's ``(1 | Subject) + (0 + Days | Subject)``."""
    ref = load_reference("sleepstudy_uncorr_reml")
    res = jaxhlm.LMM("Reaction ~ Days + (Days || Subject)", sleepstudy).fit()
    check_against_lme4(ref, res)


def test_nested_slash_equals_explicit_interaction():
    """``(1 | batch/cask)`` is ``(1 | batch) + (1 | cask:batch)``."""
    df = jaxhlm.datasets.load("Pastes")
    a = jaxhlm.LMM("strength ~ 1 + (1 | batch/cask)", df).fit()
    b = jaxhlm.LMM("strength ~ 1 + (1 | batch) + (1 | cask:batch)", df).fit()
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-7)
    assert a.theta_names == b.theta_names


def test_summary_and_json(sleepstudy):
    res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    text = res.summary()
    assert "REML criterion at convergence: 1743.6283" in text
    assert "Subject" in text and "Residual" in text
    assert "t-tests use Satterthwaite's method" in text and "Pr(>|t|)" in text   # lmerTest's layout
    assert "Pr(>|t|)" not in res.summary(ddf=None)                                # lme4's
    d = res.to_dict()
    import json

    back = json.loads(res.to_json())
    assert back["objective"] == pytest.approx(1743.62827195849, rel=1e-9)
    assert set(d) >= {"objective", "loglik", "aic", "bic", "nobs", "fixef", "fixef_se", "vcov",
                      "theta", "sigma", "varcorr", "ranef", "singular", "converged", "iterations",
                      "gradient"}
