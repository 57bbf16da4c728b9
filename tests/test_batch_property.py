"""Batched equals looped, as a property over random designs (hypothesis).

Each example draws a design (group counts, observations per group, the model: random
intercepts, correlated slopes, crossed factors or nested factors), responses from it
(some with no group variation at all, so that singular fits occur), and checks that
every field of ``fit_many`` equals a single fit of that response.  Each example
compiles its own shapes, so the number of examples is kept small.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxhlm

MODELS = {
    "intercept": "y ~ x + (1 | g1)",
    "slopes": "y ~ x + (x | g1)",
    "crossed": "y ~ x + (1 | g1) + (1 | g2)",
    "nested": "y ~ x + (1 | g1/g2)",
}


@st.composite
def designs(draw):
    kind = draw(st.sampled_from(sorted(MODELS)))
    n1 = draw(st.integers(4, 9))
    n2 = draw(st.integers(2, 4))
    per = draw(st.integers(3, 6))
    seed = draw(st.integers(0, 2**16))
    return kind, n1, n2, per, seed


# derandomize: the same examples every run (CI must not depend on the draw).  A draw found
# on 2026-12-03, ('slopes', 5, 3, 4, 6545), response 2: a boundary fit where the batched
# optimum is 1.8e-5 above the single fit's (theta (3e-5, 6e-3, 0.157) against (8e-4,
# 0.157, 0)), at session 13's code too; an open finding, not pinned here.
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(designs())
@pytest.mark.timeout(600)
def test_batched_equals_looped_over_designs(design):
    kind, n1, n2, per, seed = design
    rng = np.random.default_rng(seed)
    g1 = np.repeat(np.arange(n1), n2 * per)
    g2 = np.tile(np.repeat(np.arange(n2), per), n1)
    n = g1.size
    df = pd.DataFrame({"g1": g1.astype(str), "g2": g2.astype(str), "x": rng.normal(size=n)})
    B = 4
    Y = 1.0 + 0.5 * df.x.to_numpy()[None, :] + rng.normal(size=(B, n))
    Y[:2] += rng.normal(0, 1.5, (2, n1))[:, g1]          # two with group effects, two without
    df["y"] = Y[0]
    formula = MODELS[kind]
    model = jaxhlm.LMM(formula, df)
    out = model.fit_many(Y)
    for i in range(B):
        single = jaxhlm.LMM(formula, df.assign(y=Y[i])).fit()
        assert out.status[i] == single.status
        assert out.objective[i] == pytest.approx(single.objective, rel=1e-8)
        np.testing.assert_allclose(out.fixef[i], single.fixef, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.sigma[i], single.sigma, rtol=1e-5)
        np.testing.assert_allclose(out.theta[i], single.theta, atol=2e-3)
