"""Vmapped fits of many responses on one design: the jaxlib hazard check and batched == looped.

DEVELOPERS.md records jaxlib 0.10.2 hanging for good on a vmapped batch of 1,000 small
fits on a 2-core CPU; jaxhlm pins jaxlib 0.9.2.  This test keeps a batch of 1,000
sleepstudy refits in the suite under a timeout, so a hang fails instead of stalling.
"""

import numpy as np
import pytest

import jaxhlm
from jaxhlm import batch

F = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.timeout(300)
def test_thousand_vmapped_fits_complete_and_match_looped(sleepstudy, compiled_fits):
    model = jaxhlm.LMM(F, sleepstudy)
    rng = np.random.default_rng(0)
    Y = model.frame.y[None] + rng.normal(0, 30, (1000, model.nobs))
    out = model.fit_many(Y)
    assert out.converged.all()
    for i in (0, 1, 999):
        single = jaxhlm.LMM(F, sleepstudy.assign(Reaction=Y[i])).fit()  # both from Y[i]'s moment start
        assert out.objective[i] == pytest.approx(single.objective, rel=1e-8)
        np.testing.assert_allclose(out.fixef[i], single.fixef, rtol=1e-7)
        np.testing.assert_allclose(out.fixef_se[i], single.fixef_se, rtol=1e-6)
        np.testing.assert_allclose(out.sigma[i], single.sigma, rtol=1e-7)


@pytest.mark.parametrize("formula,dataset", [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
    ("strength ~ 1 + (1 | batch/cask)", "Pastes"),
])
def test_batched_equals_looped_and_chunking_does_not_matter(formula, dataset, compiled_fits):
    """Every field of a batch equals a single fit; chunk size changes nothing but rounding
    (chunks of 16 and of 5 are two compiled programs, and XLA's CPU code may vectorise
    their batch axes differently: sleepstudy's objectives differed by 1.3e-14 relative)."""
    df = jaxhlm.datasets.load(dataset)
    res = jaxhlm.LMM(formula, df).fit()
    Y = res.simulate(12, seed=3)
    whole = res._model.fit_many(Y)
    chunked = res._model.fit_many(Y, batch_size=5)
    np.testing.assert_allclose(whole.objective, chunked.objective, rtol=1e-12)
    response = formula.split("~")[0].strip()
    for i in range(len(Y)):
        single = jaxhlm.LMM(formula, df.assign(**{response: Y[i]})).fit()
        assert whole.objective[i] == pytest.approx(single.objective, rel=1e-8)
        np.testing.assert_allclose(whole.theta[i], single.theta, rtol=1e-4, atol=1e-6)
        assert whole.singular[i] == single.singular
        np.testing.assert_allclose(whole.sd[i], single.varcorr["sdcor"][single.varcorr["var2"].isna()].to_numpy()[:-1],
                                   rtol=1e-4, atol=1e-8)


def test_simulation_is_reproducible_and_moments_match(sleepstudy):
    res = jaxhlm.LMM(F, sleepstudy).fit()
    a, b = res.simulate(4000, seed=7), res.simulate(4000, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, res.simulate(4000, seed=8))
    np.testing.assert_array_equal(a[:10], res.simulate(10, seed=7))
    # Var(y_i) = sigma^2 (1 + z_i' lambda lambda' z_i): at Days = 0, sd^2 = sigma^2 + sd(Intercept)^2.
    day0 = (sleepstudy.Days == 0).to_numpy()
    expected = res.sigma ** 2 + res.varcorr.loc[0, "vcov"]
    assert a[:, day0].var() == pytest.approx(expected, rel=0.05)
    np.testing.assert_allclose(a.mean(axis=0)[day0], res.fixef["(Intercept)"], rtol=0.02)


def test_bootstrap_intervals(sleepstudy):
    res = jaxhlm.LMM(F, sleepstudy).fit()
    boot = res.bootstrap(300, seed=1)
    ci = boot.confint(0.95)
    lo, hi = ci.loc["Days", ["percentile_lower", "percentile_upper"]]
    assert lo < res.fixef["Days"] < hi
    assert (ci["shortest_upper"] - ci["shortest_lower"] <= ci["percentile_upper"] - ci["percentile_lower"] + 1e-12).all()
    assert boot.converged.mean() > 0.99
    assert "300 fits" in boot.summary()


def test_missing_values_fit_on_observed_rows_without_failing_the_batch(sleepstudy):
    model = jaxhlm.LMM(F, sleepstudy)
    Y = model.fit().simulate(4, seed=5)
    Y[1, [3, 50, 100]] = np.nan
    Y[2, :] = np.nan                  # nothing observed: a status, not an exception
    out = model.fit_many(Y)
    assert out.converged[[0, 1, 3]].all() and not out.converged[2]
    with pytest.warns(UserWarning, match="dropped 3 of 180 rows"):
        single = jaxhlm.LMM(F, sleepstudy.assign(Reaction=Y[1])).fit()
    assert out.objective[1] == pytest.approx(single.objective, rel=1e-8)
    np.testing.assert_allclose(out.fixef[1], single.fixef, rtol=1e-7)
    full = jaxhlm.LMM(F, sleepstudy.assign(Reaction=Y[0])).fit()
    assert out.objective[0] == pytest.approx(full.objective, rel=1e-8)


SHARDED = """
import json, sys
import jax, numpy as np, jaxhlm
assert len(jax.devices()) == 4, jax.devices()
from jaxhlm import host_fit
host_fit.ENABLED = False   # the compiled batch, whose axis is sharded
df = jaxhlm.datasets.load(sys.argv[1])
res = jaxhlm.LMM(sys.argv[2], df).fit()
out = res._model.fit_many(res.simulate(10, seed=11), batch_size=6)
print(json.dumps({"objective": out.objective.tolist(), "theta": out.theta.tolist()}))
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("dataset,formula", [("sleepstudy", F),
                                             ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")])
def test_sharded_on_four_cpu_devices_equals_single_device(dataset, formula, compiled_fits):
    """Acceptance: the batch axis sharded over 4 forced CPU devices gives the same fits."""
    from conftest import run_on_cpu_devices

    sharded = run_on_cpu_devices(SHARDED, dataset, formula)
    res = jaxhlm.LMM(formula, jaxhlm.datasets.load(dataset)).fit()
    single = res._model.fit_many(res.simulate(10, seed=11))
    np.testing.assert_allclose(sharded["objective"], single.objective, rtol=1e-10)
    np.testing.assert_allclose(sharded["theta"], single.theta, rtol=1e-6, atol=1e-8)


LME4_BATCH = ["sleepstudy_reml", "penicillin_reml", "pastes_reml", "sleepstudy_uncorr_ml"]


@pytest.mark.parametrize("name,refit", [(name, False) for name in LME4_BATCH]
                         + [("sleepstudy_reml", True), ("penicillin_reml", True)])
def test_batch_against_lme4_refits(name, refit):
    """Responses simulated by lme4 (simulate(), seed 20261121) and lme4's refits of each
    (tests/reference/make_batch_refs.R): jaxhlm's batch objective is never above lme4's by
    more than 1e-6 relative, and fixed effects match where lme4 converged.  The JSON
    carries 15 significant digits, so agreement is checked to 1e-9 relative, theta to
    1e-3 (BOBYQA's stopping rule), and singular flags only away from the 1e-4 cutoff.

    lme4 1.1-31's refit() of a REML fit with p > 1 fixed effects optimises the wrong
    criterion (it sets REML = 1 where lmer sets p); for sleepstudy REML the references
    are lmer() fits started at the original theta ("method": "lmer_start_theta").

    ``refit``: as the bootstrap refits, every fit starts at the original fit's theta with
    BFGS's starting Hessian its Hessian model (no probing phases in the program)."""
    import gzip
    import json
    from pathlib import Path

    import pandas as pd

    ref_dir = Path(__file__).parent / "reference" / "batch"
    ref = json.loads((ref_dir / f"{name}_fits.json").read_text())
    with gzip.open(ref_dir / f"{name}_responses.csv.gz", "rt") as fh:
        Y = pd.read_csv(fh)
    model = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"]))
    if refit:
        res = model.fit(reml=ref["reml"])
        out = batch.fit_many(model, Y, ref["reml"], theta0=res.theta, hessian0=res._curvature)
    else:
        out = model.fit_many(Y, reml=ref["reml"])
    lme4_obj = np.asarray(ref["objective"])
    rel = (out.objective - lme4_obj) / np.abs(lme4_obj)
    assert rel.max() <= 1e-6
    assert np.abs(rel).max() <= 1e-9
    assert out.converged.all()
    ok = np.asarray(ref["converged"], bool)
    np.testing.assert_allclose(out.fixef[ok], np.asarray(ref["fixef"])[ok], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(out.theta, np.asarray(ref["theta"]), atol=1e-3)
    theta_min = np.asarray(ref["theta"])[:, model.structure.theta_lower() == 0].min(axis=1)
    clear = (theta_min < 1e-5) | (theta_min > 1e-3)
    np.testing.assert_array_equal(out.singular[clear], np.asarray(ref["singular"], bool)[clear])


@pytest.mark.timeout(600)
def test_ten_thousand_bootstrap_refits(sleepstudy):
    """Acceptance: a batch of 10,000 sleepstudy bootstrap refits completes on this CPU."""
    res = jaxhlm.LMM(F, sleepstudy).fit()
    boot = res.bootstrap(10_000, seed=1)
    assert len(boot) == 10_000
    assert boot.converged.mean() > 0.999
    assert abs(np.median(boot.fixef[:, 1]) - res.fixef["Days"]) < 0.1


def test_bad_responses_get_clear_errors(sleepstudy):
    model = jaxhlm.LMM(F, sleepstudy)
    with pytest.raises(ValueError, match="each response needs 180 values"):
        model.fit_many(np.zeros((2, 179)))
    with pytest.raises(ValueError, match="infinite values; use NaN"):
        model.fit_many(np.full((2, 180), np.inf))
    with pytest.raises(ValueError, match="no responses to fit: Y has 0 rows"):
        model.fit_many(np.zeros((0, 180)))
