"""fit_datasets: many data sets of one formula in one padded, vmapped batch.

Padding (jaxhlm.stacking) must be exact: each data set's fit in the batch equals its
own ``LMM(formula, df).fit()``, for data sets with different numbers of observations,
of levels of term 1 and of levels of the later ("rest") terms.
"""

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.blocks import Blocks
from jaxhlm.families.gaussian import objective
from jaxhlm.stacking import stack

SLEEP = "Reaction ~ Days + (Days | Subject)"
CROSSED = "y ~ x + (1 | a) + (x | b)"
NESTED = "strength ~ 1 + (1 | batch/cask)"


def sleep_sets(sleepstudy, n=4, seed=1):
    """sleepstudy subsets of 8-17 subjects and 6-10 days, responses jittered."""
    rng = np.random.default_rng(seed)
    subjects = sleepstudy.Subject.unique()
    out = []
    for _ in range(n):
        keep = rng.choice(subjects, size=rng.integers(8, 18), replace=False)
        d = sleepstudy[sleepstudy.Subject.isin(keep) & (sleepstudy.Days < rng.integers(6, 11))]
        out.append(d.assign(Reaction=d.Reaction + rng.normal(0, 10, len(d))))
    return out


def crossed_set(na, nb, seed):
    """Crossed factors a (na levels) and b (nb levels), 1-2 rows per cell, a random
    intercept for a and a random intercept and slope for b."""
    rng = np.random.default_rng(seed)
    a, b = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    a, b = a.ravel(), b.ravel()
    reps = rng.integers(1, 3, a.size)
    a, b = np.repeat(a, reps), np.repeat(b, reps)
    x = rng.normal(size=a.size)
    ua, ub, sb = rng.normal(0, 1, na), rng.normal(0, 0.7, nb), rng.normal(0, 0.5, nb)
    y = 1 + 0.5 * x + ua[a] + ub[b] + sb[b] * x + rng.normal(0, 0.8, a.size)
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i:02d}" for i in a], "b": [f"b{i:02d}" for i in b]})


def nested_sets():
    """Pastes subsets: 6, 8 or 10 batches, some without cask c (nested levels differ)."""
    pastes = jaxhlm.datasets.load("Pastes")
    batches = sorted(pastes.batch.unique())
    rng = np.random.default_rng(4)
    out = []
    for nb, drop_c in [(10, False), (6, True), (8, False), (7, True)]:
        d = pastes[pastes.batch.isin(batches[:nb])]
        if drop_c:
            d = d[~((d.cask == "c") & d.batch.isin(batches[:3]))]
        out.append(d.assign(strength=d.strength + rng.normal(0, 0.5, len(d))))
    return out


def theta_in_common_order(single, stacked):
    """A single fit's theta in the batch's term order (matched by name)."""
    names = single.theta_names
    return np.array([single.theta[names.index(n)] for n in stacked.theta_names])


def assert_each_equals_own_fit(formula, datasets, reml=True, **kw):
    out = jaxhlm.fit_datasets(formula, datasets, reml, **kw)
    assert len(out) == len(datasets)
    assert out.converged.all()
    for i, d in enumerate(datasets):
        single = jaxhlm.LMM(formula, d).fit(reml)
        assert out.objective[i] == pytest.approx(single.objective, rel=1e-8), i
        np.testing.assert_allclose(out.fixef[i], single.fixef.to_numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(out.fixef_se[i], single.fixef_se.to_numpy(), rtol=1e-5)
        np.testing.assert_allclose(out.theta[i], theta_in_common_order(single, out.model),
                                   rtol=1e-4, atol=1e-6)
        assert out.sigma[i] == pytest.approx(single.sigma, rel=1e-5)
        assert out.singular[i] == single.singular
    return out


def test_padded_objective_is_exact_at_any_theta(sleepstudy):
    """At fixed theta (no optimiser involved) the padded blocks give each data set's own
    objective to rounding, for padded term-1 levels and padded rest-term levels."""
    for formula, datasets in [(SLEEP, sleep_sets(sleepstudy)),
                              (CROSSED, [crossed_set(9, 5, 0), crossed_set(6, 8, 1), crossed_set(7, 4, 2)]),
                              (NESTED, nested_sets())]:
        stacked = stack(formula, datasets)
        (bucket,) = stacked.buckets
        rng = np.random.default_rng(0)
        for i, d in enumerate(datasets):
            model = jaxhlm.LMM(formula, d)
            blocks = Blocks(*[np.asarray(f)[i] for f in bucket.blocks])
            reml = i % 2 == 0
            theta = model.structure.theta_start() + rng.uniform(0, 0.5, model.structure.ntheta)
            own_names = model.theta_names
            padded_theta = np.array([theta[own_names.index(n)] for n in stacked.theta_names])
            padded = float(objective(padded_theta, blocks, bucket.structure, reml))
            assert padded == pytest.approx(model.objective(theta, reml), rel=1e-12), (formula, i)


@pytest.mark.timeout(300)
def test_sleepstudy_subsets_of_different_sizes(sleepstudy):
    out = assert_each_equals_own_fit(SLEEP, sleep_sets(sleepstudy))
    assert list(out.to_frame().columns[:3]) == ["objective", "(Intercept)", "Days"]
    assert "4 fits by REML" in out.summary()
    np.testing.assert_array_equal(out.model.nobs, [len(d) for d in sleep_sets(sleepstudy)])


@pytest.mark.timeout(300)
def test_crossed_terms_whose_level_counts_swap_rank():
    """a has more levels than b in some data sets and fewer in others: lme4 orders the
    terms differently per data set; the batch uses one order (theta matched by name)."""
    datasets = [crossed_set(9, 5, 0), crossed_set(5, 8, 1), crossed_set(7, 6, 2)]
    out = assert_each_equals_own_fit(CROSSED, datasets, reml=False)
    assert [t.name for t in out.model.specs] == ["a", "b"]
    assert [t.nlevels for t in out.model.structure.terms] == [9, 8]


@pytest.mark.timeout(300)
def test_nested_terms_with_different_level_counts():
    out = assert_each_equals_own_fit(NESTED, nested_sets())
    assert [t.nlevels for t in out.model.structure.terms] == [30, 10]


@pytest.mark.timeout(300)
def test_chunking_and_buckets_do_not_change_fits(sleepstudy):
    datasets = sleep_sets(sleepstudy, n=6, seed=2)
    whole = jaxhlm.fit_datasets(SLEEP, datasets)
    chunked = jaxhlm.fit_datasets(SLEEP, datasets, batch_size=4)
    np.testing.assert_array_equal(whole.objective, chunked.objective)
    np.testing.assert_array_equal(whole.theta, chunked.theta)
    bucketed = jaxhlm.fit_datasets(SLEEP, datasets, buckets=2)
    assert len(stack(SLEEP, datasets, buckets=2).buckets) == 2
    np.testing.assert_allclose(bucketed.objective, whole.objective, rtol=1e-10)
    np.testing.assert_allclose(bucketed.theta, whole.theta, rtol=1e-5, atol=1e-8)


def test_data_sets_that_do_not_match_raise_naming_the_data_set(sleepstudy):
    d = sleepstudy.assign(group=np.where(sleepstudy.Days < 5, "lo", "hi"))
    only_lo = d[d.Days < 5]
    with pytest.raises(jaxhlm.DataError, match=r"data set 1 has fixed-effect columns"):
        jaxhlm.fit_datasets("Reaction ~ Days + group + (1 | Subject)", [d, only_lo])
    with pytest.raises(jaxhlm.DataError, match=r"data set 1 has random-effects terms"):
        jaxhlm.fit_datasets("Reaction ~ Days + (0 + group | Subject)", [d, only_lo])
    with pytest.raises(jaxhlm.FormulaError, match=r"^data set 2: .*'Days'"):
        jaxhlm.fit_datasets(SLEEP, [sleepstudy, sleepstudy, sleepstudy.drop(columns="Days")])
    with pytest.raises(jaxhlm.DataError, match="no data sets"):
        jaxhlm.fit_datasets(SLEEP, [])


def test_missing_values_warn_with_the_data_set_and_a_failed_fit_gets_a_status(sleepstudy):
    d = sleepstudy.copy()
    d.loc[[3, 7], "Reaction"] = np.nan
    exact = sleepstudy.assign(Reaction=250.0 + 10.0 * sleepstudy.Days)  # no residual: no fit
    with pytest.warns(UserWarning, match=r"data set 1: dropped 2 of 180 rows"):
        out = jaxhlm.fit_datasets(SLEEP, [sleepstudy, d, exact])
    assert out.converged[:2].all()
    # An exact fit has a residual sum of squares of rounding noise (0 or +-1e-10): which
    # failure it ends in (non-finite start, or a line search that cannot descend) depends
    # on that noise, so the batch and the single fit need only both report a failure.
    failed = {jaxhlm.Status.NONFINITE, jaxhlm.Status.LINE_SEARCH_FAILED}
    assert out.status[2] in failed and jaxhlm.LMM(SLEEP, exact).fit().status in failed
    assert out.model.nobs.tolist() == [180, 178, 180]
    infinite = sleepstudy.assign(Reaction=np.where(sleepstudy.Days == 0, np.inf, sleepstudy.Reaction))
    with pytest.raises(jaxhlm.DataError, match="data set 1: the response has infinite values"):
        jaxhlm.fit_datasets(SLEEP, [sleepstudy, infinite])


SHARDED = """
import json, sys
import jax, numpy as np, jaxhlm
sys.path.insert(0, sys.argv[1])
from test_fit_datasets import sleep_sets
assert len(jax.devices()) == 4, jax.devices()
out = jaxhlm.fit_datasets("Reaction ~ Days + (Days | Subject)",
                          sleep_sets(jaxhlm.datasets.load("sleepstudy"), n=6), batch_size=4)
print(json.dumps({"objective": out.objective.tolist(), "theta": out.theta.tolist()}))
"""


@pytest.mark.timeout(600)
def test_sharded_on_four_cpu_devices_equals_single_device(sleepstudy):
    from pathlib import Path

    from conftest import run_on_cpu_devices

    sharded = run_on_cpu_devices(SHARDED, str(Path(__file__).parent))
    single = jaxhlm.fit_datasets(SLEEP, sleep_sets(sleepstudy, n=6), batch_size=4)
    np.testing.assert_allclose(sharded["objective"], single.objective, rtol=1e-10)
    np.testing.assert_allclose(sharded["theta"], single.theta, rtol=1e-6, atol=1e-8)
