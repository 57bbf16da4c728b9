"""Starting values: Henderson's moment estimates (jaxhlm.start).

For balanced designs the ANOVA estimators equal the REML estimates when they are
positive (Searle, Casella and McCulloch 1992, section 6.7), so the start is lme4's REML
optimum itself, to lme4's own accuracy (its theta is good to about 1e-7).
"""

import numpy as np
import pytest
from conftest import load_reference

import jaxhlm
from jaxhlm.fitting import fit_blocks


@pytest.mark.parametrize("name", ["dyestuff_reml", "penicillin_reml", "pastes_reml"])
def test_balanced_start_is_the_reml_estimate(name):
    ref = load_reference(name)
    model = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"]))
    np.testing.assert_allclose(model.theta_start, ref["theta"], rtol=1e-6)


def test_unbalanced_start_is_near_and_slopes_start_as_lme4(sleepstudy):
    ref = load_reference("insteval_ml")
    model = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"]))
    np.testing.assert_allclose(model.theta_start, ref["theta"], rtol=0.1, atol=0.01)
    slopes = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).theta_start
    assert slopes.tolist() == [1.0, 0.0, 1.0]  # vector-valued terms start as lme4 starts
    both = jaxhlm.LMM("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleepstudy).theta_start
    assert both[1] == 1.0 and 0.5 < both[0] < 2.0  # the intercept term moves, the slope term does not


def test_batch_starts_equal_single_starts(sleepstudy):
    """fit_many's per-response starts are the single fits' starts (to rounding: BLAS sums a
    batch in another order); a response with a missing value starts as lme4 starts."""
    from jaxhlm.start import moment_starts

    ref = load_reference("penicillin_reml")
    df = jaxhlm.datasets.load(ref["dataset"])
    model = jaxhlm.LMM(ref["formula"], df)
    Y = np.asarray(model.fit().simulate(5, seed=2))
    Y = Y if Y.shape[0] == 5 else Y.T
    Y[4, 0] = np.nan
    starts = moment_starts(model.frame, model.structure, Y)
    for i in range(4):
        single = jaxhlm.LMM(ref["formula"], df.assign(diameter=Y[i])).theta_start
        np.testing.assert_allclose(starts[i], single, rtol=1e-12)
    assert starts[4].tolist() == [1.0, 1.0]


def test_weighted_and_singular_starts(sleepstudy):
    w = np.linspace(0.5, 2.0, len(sleepstudy))
    weighted = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", sleepstudy, weights=w)
    assert weighted.theta_start.tolist() == [1.0]
    dyestuff2 = jaxhlm.LMM("Yield ~ 1 + (1 | Batch)", jaxhlm.datasets.load("Dyestuff2"))
    assert dyestuff2.theta_start.tolist() == [jaxhlm.start.FLOOR]  # the estimate is negative


@pytest.mark.parametrize("name", ["penicillin_reml", "pastes_reml", "sleepstudy_uncorr_reml", "dyestuff2_reml"])
def test_the_optimum_does_not_depend_on_the_start(name):
    ref = load_reference(name)
    model = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"]))
    ours = model.fit(reml=ref["reml"])
    lme4_start = fit_blocks(model.blocks, model.structure, ref["reml"])
    assert abs(ours.objective - float(lme4_start.opt.fun)) <= 1e-9 * abs(ours.objective)
    np.testing.assert_allclose(ours.theta, np.asarray(lme4_start.opt.x), rtol=1e-4, atol=1e-6)
    assert ours.singular == ref["singular"]
