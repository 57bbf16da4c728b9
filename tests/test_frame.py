"""The model frame: the direct path for simple random-term covariates equals formulaic's."""

import numpy as np
import pandas as pd
import pytest

from jaxhlm.frame import _rename_intercept, _simple_covariates


@pytest.mark.parametrize("expr", ["1", "Days", "0 + Days", "Days - 1", "-1 + Days", "1 + Days + x",
                                  "Days + 0", "x + Days"])
def test_simple_covariates_match_formulaic(expr):
    from formulaic import model_matrix

    df = pd.DataFrame({"Days": np.arange(6.0), "x": np.arange(6) % 2, "g": list("aabbcc")})
    Z, columns = _simple_covariates(expr, df)
    mm = model_matrix("~ " + expr, df)
    assert columns == _rename_intercept(mm.columns)
    np.testing.assert_array_equal(Z, np.asarray(mm, dtype=float))


@pytest.mark.parametrize("expr", ["g", "0 + g", "Days:x", "I(Days ** 2)", "Days + Days", "flag"])
def test_other_expressions_go_to_formulaic(expr):
    df = pd.DataFrame({"Days": np.arange(6.0), "x": np.arange(6) % 2, "g": list("aabbcc"),
                       "flag": [True, False] * 3})
    assert _simple_covariates(expr, df) is None
