"""Acceptance 4: bad input gets a clear error (or a counted warning), never a JAX traceback."""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError

F = "Reaction ~ Days + (Days | Subject)"


def test_missing_column_is_named_and_columns_listed(sleepstudy):
    with pytest.raises(FormulaError) as e:
        jaxhlm.LMM("Reaction ~ Dayz + (Days | Subject)", sleepstudy)
    assert "'Dayz'" in str(e.value) and "Reaction, Days, Subject" in str(e.value)
    with pytest.raises(FormulaError, match="'Subjct'"):
        jaxhlm.LMM("Reaction ~ Days + (Days | Subjct)", sleepstudy)


@pytest.mark.parametrize("formula,where", [
    ("Reaction ~ Days + (Days | Subject", "unclosed '('"),
    ("Reaction ~ Days + (Days | Subject) +", "^"),
    ("Reaction Days + (1 | Subject)", "no '~'"),
    ("Reaction ~ Days + ( | Subject)", "nothing before '|'"),
    ("Reaction ~ Days + (1 | )", "no grouping factor"),
    ("Reaction ~ Days", "no random effects terms"),
])
def test_malformed_formula_shows_where(sleepstudy, formula, where):
    with pytest.raises(FormulaError) as e:
        jaxhlm.LMM(formula, sleepstudy)
    assert where in str(e.value)


def test_caret_points_at_the_fault(sleepstudy):
    with pytest.raises(FormulaError) as e:
        jaxhlm.LMM("Reaction ~ Days + (Days | Subject", sleepstudy)
    shown, marker = str(e.value).splitlines()[-2:]
    assert shown[marker.index("^")] == "("


def test_non_numeric_response(sleepstudy):
    df = sleepstudy.assign(Reaction=sleepstudy.Reaction.astype(str))
    with pytest.raises(DataError, match="response 'Reaction' is not numeric"):
        jaxhlm.LMM(F, df)


def test_missing_values_dropped_with_counted_warning(sleepstudy):
    df = sleepstudy.copy()
    df.loc[[3, 10, 50], "Reaction"] = np.nan
    df.loc[7, "Days"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 4 of 180 rows with missing values in Reaction, Days"):
        model = jaxhlm.LMM(F, df)
    assert model.nobs == 176
    ref = jaxhlm.LMM(F, df.dropna().reset_index(drop=True)).fit()
    assert model.fit().objective == pytest.approx(ref.objective, rel=1e-12)


def test_unused_columns_with_missing_values_are_ignored(sleepstudy):
    df = sleepstudy.assign(other=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jaxhlm.LMM(F, df).nobs == 180


def test_grouping_factor_with_a_level_per_observation(sleepstudy):
    df = sleepstudy.assign(row=np.arange(len(sleepstudy)))
    with pytest.raises(DataError, match=r"number of levels of each grouping factor must be < "
                                        r"number of observations \(problems: row"):
        jaxhlm.LMM("Reaction ~ Days + (1 | row)", df)


def test_grouping_factor_with_one_level(sleepstudy):
    df = sleepstudy.assign(one="a")
    with pytest.raises(DataError, match=r"grouping factors must have > 1 sampled level \(problems: one\)"):
        jaxhlm.LMM("Reaction ~ Days + (1 | one)", df)


def test_more_random_effects_than_observations():
    df = pd.DataFrame({"y": np.arange(12.0), "x": np.tile([0.0, 1.0], 6),
                       "g": np.repeat(list("abcdef"), 2)})
    with pytest.raises(DataError, match=r"number of observations \(=12\) <= number of random effects \(=12\)"):
        jaxhlm.LMM("y ~ x + (x | g)", df)


def test_rank_deficient_fixed_effects_dropped_with_warning(sleepstudy):
    df = sleepstudy.assign(Days2=2 * sleepstudy.Days)
    with pytest.warns(UserWarning, match=r"rank deficient so dropping 1 column / coefficient: Days2"):
        model = jaxhlm.LMM("Reaction ~ Days + Days2 + (Days | Subject)", df)
    res = model.fit()
    assert list(res.fixef.index) == ["(Intercept)", "Days"]
    assert res.dropped_columns == ["Days2"]
    assert res.objective == pytest.approx(1743.62827195849, rel=1e-9)


def test_empty_data(sleepstudy):
    with pytest.raises(DataError, match="no rows"):
        jaxhlm.LMM(F, sleepstudy.iloc[:0])


def test_all_rows_missing(sleepstudy):
    with pytest.raises(DataError, match="every row has a missing value"):
        jaxhlm.LMM(F, sleepstudy.assign(Reaction=np.nan))


def test_not_a_dataframe():
    with pytest.raises(DataError, match="pandas DataFrame"):
        jaxhlm.LMM(F, {"Reaction": [1.0]})


def test_unknown_dataset():
    with pytest.raises(DataError, match="available: .*sleepstudy"):
        jaxhlm.datasets.load("sleepstudyy")


def test_numeric_grouping_variable_is_categorical(sleepstudy):
    """Grouping variables are categorical whatever their dtype (lme4 coerces to factor)."""
    df = sleepstudy.assign(Subject=sleepstudy.Subject.astype(int))
    assert jaxhlm.LMM(F, df).fit().objective == pytest.approx(1743.62827195849, rel=1e-9)


@pytest.mark.parametrize("formula", [
    "Reaction ~ __import__('os').system('x') + (1 | Subject)",
    "Reaction ~ Days + (__import__('os').system('x') | Subject)",
])
def test_python_expression_in_a_formula_is_a_formula_error_with_a_caret(sleepstudy, formula):
    with pytest.raises(FormulaError) as e:
        jaxhlm.LMM(formula, sleepstudy)
    shown, marker = str(e.value).splitlines()[-2:]
    assert shown.strip() == formula
    assert shown[marker.index("^"):].startswith(".system")


@pytest.mark.parametrize("column,value", [("Reaction", np.inf), ("Days", -np.inf)])
def test_infinite_values_are_named_by_column_and_row(sleepstudy, column, value):
    df = sleepstudy.astype({"Days": float})
    df.loc[7, column] = value
    with pytest.raises(DataError, match=f"infinite values: '{column}' is {value} in row 7 of the data"):
        jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    with pytest.raises(DataError, match=f"data set 1: .* infinite values: '{column}'"):
        jaxhlm.fit_datasets("Reaction ~ Days + (Days | Subject)", [sleepstudy, df])


def test_aliased_and_one_level_columns_are_named(sleepstudy):
    df = sleepstudy.assign(k=1.0, level="a")
    with pytest.warns(UserWarning, match="dropping 1 column / coefficient: k$"):
        model = jaxhlm.LMM("Reaction ~ Days + k + (1 | Subject)", df)
    assert model.fixef_names == ["(Intercept)", "Days"]
    with pytest.warns(UserWarning, match="'level' has one level \\('a'\\) in the rows used, so it gives no"):
        model = jaxhlm.LMM("Reaction ~ Days + level + (1 | Subject)", df)
    assert model.fixef_names == ["(Intercept)", "Days"]


@pytest.mark.parametrize("formula,message", [
    ("Reaction ~ Days + foo(Days | Subject)", "unknown covariance structure 'foo'"),
    ("Reaction ~ Days + diag(Days || Subject)", "takes '|', not '||'"),
])
def test_covariance_keywords_are_checked(sleepstudy, formula, message):
    with pytest.raises(FormulaError, match=message):
        jaxhlm.LMM(formula, sleepstudy)
