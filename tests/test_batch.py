"""Vmapped fits of many responses on one design: the jaxlib hazard check and batched == looped.

DEVELOPERS.md records jaxlib 0.10.2 hanging for good on a vmapped batch of 1,000 small
fits on a 2-core CPU; jaxhlm pins jaxlib 0.9.2.  This test keeps a batch of 1,000
sleepstudy refits in the suite under a timeout, so a hang fails instead of stalling.
"""

import numpy as np
import pytest

import jaxhlm
from jaxhlm.model import _fit_many_arrays

F = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.timeout(300)
def test_thousand_vmapped_fits_complete_and_match_looped(sleepstudy):
    model = jaxhlm.LMM(F, sleepstudy)
    rng = np.random.default_rng(0)
    Y = model.frame.y[None] + rng.normal(0, 30, (1000, model.nobs))
    out = _fit_many_arrays(model, Y, True)
    status = np.asarray(out.opt.status)
    assert (status == 0).all()
    for i in (0, 1, 999):
        single = jaxhlm.LMM(F, sleepstudy.assign(Reaction=Y[i])).fit()
        assert float(out.opt.fun[i]) == pytest.approx(single.objective, rel=1e-8)
        np.testing.assert_allclose(np.asarray(out.cond.beta[i]), single.fixef, rtol=1e-7)
