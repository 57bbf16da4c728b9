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


def test_reml_and_ml_compile_once_each(sleepstudy):
    model = jaxhlm.LMM(F, sleepstudy)
    model.fit(reml=False)
    before = trace_count()
    for _ in range(3):
        model.fit(reml=False)
        model.fit(reml=True)
    assert trace_count() <= before + 1


def test_keyword_and_positional_calls_share_one_compilation(sleepstudy):
    from jaxhlm.fitting import Options, fit_blocks

    model = jaxhlm.LMM(F, sleepstudy)
    fit_blocks(model.blocks, model.structure, True)
    before = trace_count()
    fit_blocks(model.blocks, model.structure, reml=True)
    fit_blocks(model.blocks, model.structure, True, Options())
    fit_blocks(model.blocks, st=model.structure, reml=1)
    assert trace_count() == before
