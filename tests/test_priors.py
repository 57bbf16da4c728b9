"""Zero-avoiding penalized fits against blme, and the validation of priors.

The references (tests/reference/blme/, made by make_blme_refs.R with blme 1.0-5) are
blmer fits with blme's default covariance prior, wishart(df = dim + 2.5, scale = Inf),
and gamma(shape = 2.5, rate = 0), polished to the optimum (blmer's default optimizer
stops short on sleepstudy; NOTES.md).  The objective compared is the one minimised:
lme4's criterion plus the prior's -2 log-density.  Tolerances as for lme4: the
objective within 1e-6 relative; estimates within 1e-4 relative (acceptance 4).
"""

import json

import numpy as np
import numpyro.distributions as dist
import pytest

import jaxhlm
from conftest import REFERENCE

BLME = sorted(p.stem for p in (REFERENCE / "blme").glob("*.json"))


@pytest.mark.parametrize("name", BLME)
def test_matches_blme(name):
    ref = json.loads((REFERENCE / "blme" / f"{name}.json").read_text())
    df = jaxhlm.datasets.load(ref["dataset"])
    prior = jaxhlm.priors.gamma() if ref["prior_argument"].startswith("gamma") else jaxhlm.priors.zero_avoiding()
    res = jaxhlm.LMM(ref["formula"], df).fit(reml=ref["reml"], prior=prior)
    assert res.converged
    assert res.objective <= ref["objective"] * (1 + 1e-6)
    assert res.objective == pytest.approx(ref["objective"], rel=1e-6)
    np.testing.assert_allclose(res.fixef.to_numpy(), ref["fixef"], rtol=1e-5)
    np.testing.assert_allclose(res.fixef_se.to_numpy(), ref["fixef_se"], rtol=1e-4)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    sds = res.varcorr[res.varcorr.var2.isna()].sdcor.to_numpy()
    ref_sds = np.array([r["sdcor"] for r in ref["varcorr"] if r.get("var2") in (None, "NA")])
    np.testing.assert_allclose(sds, ref_sds, rtol=1e-4)
    assert not res.singular and res.singular == ref["singular"]


def test_dyestuff2_no_longer_singular():
    df = jaxhlm.datasets.load("Dyestuff2")
    model = jaxhlm.LMM("Yield ~ 1 + (1 | Batch)", df)
    assert model.fit().singular
    res = model.fit(prior=jaxhlm.priors.zero_avoiding())
    assert not res.singular and res.theta[0] > 0.4
    assert "wishart" in res.summary() and res.to_dict()["prior"].startswith("wishart")


def test_prior_errors():
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    with pytest.raises(jaxhlm.JaxhlmError, match=r"gamma\(\) is a prior on the SD of a scalar term"):
        model.fit(prior=jaxhlm.priors.gamma())
    with pytest.raises(jaxhlm.JaxhlmError, match="prior must be"):
        model.fit(prior="wishart")
    with pytest.raises(jaxhlm.JaxhlmError, match="'day', which is not one of: \\(Intercept\\), Days"):
        jaxhlm.Priors(fixef={"day": dist.Normal(0, 1)}).resolve(model)
    with pytest.raises(jaxhlm.JaxhlmError, match="lkj must be a positive concentration"):
        jaxhlm.Priors(lkj=-1.0).resolve(model)


def test_default_priors_are_scaled_to_the_data():
    """The documented defaults: Normal(0, 10 s_y / s_x), Normal(0, 10 (|ybar| + s_y)) for
    the intercept, HalfNormal(2 s_y) for sigma and HalfNormal(2 s_y / s_z) for SDs."""
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    r = jaxhlm.Priors().resolve(model)
    s_y, ybar, s_x = df.Reaction.std(), df.Reaction.mean(), df.Days.std(ddof=0)
    d0, d1 = r.fixef
    assert float(d0.scale) == pytest.approx(10 * (abs(ybar) + s_y))
    assert float(d1.scale) == pytest.approx(10 * s_y / s_x)
    assert float(r.sigma.scale) == pytest.approx(2 * s_y)
    assert float(r.sd[0][1].scale) == pytest.approx(2 * s_y / s_x)
    assert r.lkj == (2.0,)
