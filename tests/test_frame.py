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
    Z, columns, _ = _simple_covariates(expr, df)
    mm = model_matrix("~ " + expr, df)
    assert columns == _rename_intercept(mm.columns)
    np.testing.assert_array_equal(Z, np.asarray(mm, dtype=float))


CATEGORICAL = pd.DataFrame({
    "Days": np.arange(8.0), "g": ["b", "a", "B", "10", "9", "a", "b", "B"],
    "c": pd.Categorical(list("qrqrqrqr"), categories=["r", "q", "unused"]),
    "k": pd.Categorical([3, 1, 2, 3, 1, 2, 3, 1]),
    "o": pd.Series(["b", "a", "B", "10", "9", "a", "b", "B"], dtype=object)})


@pytest.mark.parametrize("expr", ["g", "1 + g", "0 + g", "g - 1", "Days + g", "0 + Days + g", "g + c",
                                  "0 + c + g", "k", "0 + k + Days", "o", "0 + o + g"])
def test_categorical_columns_match_formulaic(expr):
    """Strings (pandas' str and object dtypes, sorted as formulaic sorts them) and
    Categoricals (their categories, unused ones too): the same columns, names and order as
    formulaic's."""
    from formulaic import model_matrix

    Z, columns, terms = _simple_covariates(expr, CATEGORICAL, categorical=True)
    mm = model_matrix("~ " + expr, CATEGORICAL)
    assert columns == _rename_intercept(mm.columns)
    np.testing.assert_array_equal(Z, np.asarray(mm, dtype=float))
    assert [c for cols in terms.values() for c in cols] == [c for c in columns if c != "(Intercept)"]
    assert _simple_covariates(expr, CATEGORICAL) is None   # prediction's: levels are the fit's


@pytest.mark.parametrize("expr", ["Days:x", "I(Days ** 2)", "Days + Days", "flag", "mixed", "s + g"])
def test_other_expressions_go_to_formulaic(expr):
    df = pd.DataFrame({"Days": np.arange(6.0), "x": np.arange(6) % 2, "g": list("aabbcc"),
                       "flag": [True, False] * 3, "mixed": ["a", 1, "b", 2, "a", 1],
                       "s": pd.Series(list("xyxyxy"), dtype="string")})
    assert _simple_covariates(expr, df, categorical=True) is None


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)", "Reaction ~ 1 + (1 | Subject)",
                                     "Reaction ~ 0 + Days + x + (1 | Subject)", "Reaction ~ Days * g + (1 | Subject)",
                                     "Reaction ~ g + (1 | Subject)", "Reaction ~ Days + I(Days ** 2) + (1 | Subject)",
                                     "Reaction ~ 0 + g + Days + (1 | Subject)"])
def test_fixed_effects_match_formulaic(formula):
    """The fixed part's direct path (numeric and categorical columns) and formulaic give the same
    y, X and names."""
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


def test_interaction_levels_are_the_sorted_combinations_that_occur():
    """A grouping interaction's codes and labels (one integer key per combination) are
    np.unique(axis=0)'s of the factors' codes: lexicographic, first variable slowest."""
    from jaxhlm.frame import _grouping

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.choice(["x", "y", "z", "w"], 500), "b": rng.integers(0, 7, 500),
                       "c": rng.choice(["p", "q"], 500)})
    for factors in [("a", "b"), ("b", "a", "c"), ("c", "b")]:
        codes, labels = _grouping(df, factors)
        cats = [pd.Categorical(df[f]) for f in factors]
        rows, inverse = np.unique(np.stack([c.codes for c in cats], axis=1), axis=0, return_inverse=True)
        np.testing.assert_array_equal(codes, inverse.reshape(-1))
        assert labels == [":".join(str(cats[i].categories[k]) for i, k in enumerate(r)) for r in rows]
