"""Acceptance 3: simulation-based calibration of NUTS on a small random-intercept model.

Talts et al. (2018): for data simulated from the prior, the rank of each true value
among L posterior draws is uniform on 0..L when the sampler (and the likelihood it
uses) is right.  60 replicates, L = 49 draws thinned 5 from one chain, ranks in 5
bins (12 expected per bin), Pearson's chi-square per parameter; the test fails at p < 0.001 (the seed is fixed,
so the outcome is reproducible; a wrong likelihood, e.g. a missing log-determinant,
gives p-values far below that).
"""

import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.bayes.posterior import calibrate


@pytest.mark.slow
def test_simulation_based_calibration():
    df = pd.DataFrame({"g": np.repeat(np.arange(10), 5).astype(str), "y": np.zeros(50)})
    model = jaxhlm.LMM("y ~ 1 + (1 | g)", df)
    priors = jaxhlm.Priors(fixef=dist.Normal(0, 2), sigma=dist.HalfNormal(1), sd=dist.HalfNormal(1))
    cal = calibrate(model, priors, reps=60, seed=0, num_warmup=200, draws=49, thin=5)
    assert list(cal.ranks.columns) == ["(Intercept)", "sigma", "sd(g:(Intercept))"]
    assert cal.ranks.to_numpy().min() >= 0 and cal.ranks.to_numpy().max() <= 49
    tests = cal.chi_square(bins=5)
    assert (tests["p_value"] > 1e-3).all(), tests
    assert cal.divergences <= 5   # out of 14,700 transitions


def test_calibration_detects_a_wrong_sampler():
    """The check has power: ranks piled at the ends (an over-confident posterior) fail."""
    ranks = pd.DataFrame({"x": np.r_[np.zeros(40, int), np.full(40, 99), np.arange(20)]})
    tests = jaxhlm.bayes.posterior.Calibration(ranks, 99, 0).chi_square()
    assert tests.loc["x", "p_value"] < 1e-6
