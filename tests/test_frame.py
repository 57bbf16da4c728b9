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


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)", "Reaction ~ 1 + (1 | Subject)",
                                     "Reaction ~ 0 + Days + x + (1 | Subject)", "Reaction ~ Days * g + (1 | Subject)",
                                     "Reaction ~ g + (1 | Subject)", "Reaction ~ Days + I(Days ** 2) + (1 | Subject)"])
def test_fixed_effects_match_formulaic(formula):
    """The fixed part's direct path (numeric columns only) and formulaic give the same y, X and names."""
    from formulaic import model_matrix

    from jaxhlm import formula as _formula
    from jaxhlm.frame import _fixed_effects

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"Reaction": rng.normal(size=12), "Days": np.arange(12) % 5, "x": rng.normal(size=12),
                       "g": list("abc") * 4, "Subject": list("pq") * 6})
    parsed = _formula.parse(formula)
    y, X, names = _fixed_effects(parsed, df, formula)
    mm = model_matrix(parsed.fixed, df)
    np.testing.assert_array_equal(y, np.asarray(mm.lhs, dtype=float).reshape(-1))
    np.testing.assert_array_equal(X, np.asarray(mm.rhs, dtype=float))
    assert names == _rename_intercept(mm.rhs.columns)
