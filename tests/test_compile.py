"""Acceptance 3: a second fit of a model with the same shapes does not recompile."""

import numpy as np

import jaxhlm
from jaxhlm.fitting import trace_count

F = "Reaction ~ Days + (Days | Subject)"


def test_second_fit_of_same_shapes_does_not_retrace(sleepstudy):
    jaxhlm.LMM(F, sleepstudy).fit()
    before = trace_count()
    rng = np.random.default_rng(0)
    other = sleepstudy.assign(Reaction=sleepstudy.Reaction + rng.normal(0, 10, len(sleepstudy)))
    res = jaxhlm.LMM(F, other).fit()          # new data, same shapes: a new model object
    jaxhlm.LMM(F, sleepstudy).fit()
    assert trace_count() == before
    assert res.converged


def test_reml_and_ml_fits_share_one_compilation(sleepstudy, compiled_fits):
    """REML is an argument of the fit's program, not part of its key: the ML refit of a
    REML fit (a profile's, a likelihood-ratio test's) compiles nothing new, and each
    criterion is still its own (lme4's REML criterion and deviance)."""
    model = jaxhlm.LMM(F, sleepstudy)
    reml = model.fit(reml=True)
    before = trace_count()
    ml = model.fit(reml=False)
    assert trace_count() == before
    assert abs(reml.objective - 1743.6282719585) < 1e-6 and abs(ml.objective - 1751.9393444647) < 1e-6
    Y = reml.simulate(5, seed=1)
    many_reml = model.fit_many(Y, reml=True)
    before = trace_count()
    many_ml = model.fit_many(Y, reml=False)
    assert trace_count() == before
    for i, y in enumerate(Y[:2]):   # each criterion its own: as the single fits of each response
        one = jaxhlm.LMM(F, sleepstudy.assign(Reaction=y))
        assert abs(many_ml.objective[i] - one.fit(reml=False).objective) < 1e-6
        assert abs(many_reml.objective[i] - one.fit(reml=True).objective) < 1e-6


def test_keyword_and_positional_calls_share_one_compilation(sleepstudy):
    from jaxhlm.fitting import Options, fit_blocks

    model = jaxhlm.LMM(F, sleepstudy)
    fit_blocks(model.blocks, model.structure, True)
    before = trace_count()
    fit_blocks(model.blocks, model.structure, reml=True)
    fit_blocks(model.blocks, model.structure, True, Options())
    fit_blocks(model.blocks, st=model.structure, reml=1)
    assert trace_count() == before
