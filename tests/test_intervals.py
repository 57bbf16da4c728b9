"""Confidence intervals and likelihood profiles against lme4 1.1-31 (``confint(m, method,
oldNames = FALSE)``, ``profile(m)``): references in ``tests/reference/inference/*.json``.

Tolerance: 2e-3 of each interval's width.  lme4 inverts a spline through a grid of zeta
values; here each end is a root of zeta found to 1e-10, so the two differ by lme4's
interpolation and the optimisers' tolerances (3e-5 of the width on these models).
"""

import numpy as np
import pandas as pd
import pytest
from scipy import special

import jaxhlm
from test_inference import _fitted


def _compare(got, want_records):
    want = pd.DataFrame(want_records).set_index("name").astype(float)
    assert [n.replace("[T.", "").replace("]", "") for n in got.index] == list(want.index)
    assert list(got.columns) == ["2.5 %", "97.5 %"]
    np.testing.assert_array_equal(np.isnan(got.to_numpy()), np.isnan(want.to_numpy()))
    ok = ~np.isnan(want.to_numpy())
    width = np.broadcast_to((want["97.5 %"] - want["2.5 %"]).to_numpy()[:, None], ok.shape)
    err = np.abs(got.to_numpy() - want.to_numpy())
    assert np.all(err[ok] <= 2e-3 * width[ok]), (err / width)


@pytest.mark.parametrize("name", ["sleepstudy_inference", "oats"])
def test_wald_intervals_match_lme4(name):
    """Wald: NaN for the variance parameters (as lme4), beta +- 1.96 SE."""
    ref, res = _fitted(name)
    _compare(res.confint("wald"), ref["confint_wald"])
    assert list(res.confint("wald", level=0.9).columns) == ["5 %", "95 %"]


@pytest.mark.parametrize("name", ["sleepstudy_inference", "oats", "penicillin"])
def test_profile_intervals_match_lme4(name):
    """Profile intervals of every parameter: a correlation (sleepstudy), nested terms
    (Oats), crossed terms and an intercept-only fixed part (Penicillin)."""
    ref, res = _fitted(name)
    _compare(res.confint("profile"), ref["confint_profile"])


def test_profile_traces_zeta_through_the_interval_ends():
    """The profile's zeta is 0 at the ML estimates, increasing, and crosses +-1.96 exactly at
    the profile interval's ends (zeta re-evaluated there)."""
    from jaxhlm.inference.profile import Profiler

    _ref, res = _fitted("sleepstudy_inference")
    prof = res.profile()
    for name, rows in prof.table.groupby("parameter", sort=False):
        assert np.all(np.diff(rows["zeta"].to_numpy()) > -1e-8), name   # points 1e-10 apart near the roots
        assert rows["zeta"].min() < -2 and rows["zeta"].max() > 2, name
    ci = res.confint("profile")
    profiler = Profiler(res)
    z = special.ndtri(0.975)
    for name in ("sd_Days|Subject", "sigma", "Days"):
        par = profiler.parameters[name]
        assert par.zeta(ci.loc[name, "2.5 %"]) == pytest.approx(-z, abs=1e-6)
        assert par.zeta(ci.loc[name, "97.5 %"]) == pytest.approx(z, abs=1e-6)
        assert par.zeta(par.estimate) == pytest.approx(0.0, abs=1e-4)


def test_an_sd_at_zero_has_its_interval_start_at_zero(tmp_path):
    """A boundary fit: equal group means give a between-group SD of 0; its profile
    interval starts at the bound 0, as lme4's confint gives it."""
    df = jaxhlm.datasets.load("sleepstudy")
    flat = df.assign(g=np.arange(len(df)) % 7, e=np.random.default_rng(0).standard_normal(len(df)))
    flat["y"] = flat["e"] - flat.groupby("g")["e"].transform("mean")
    res = jaxhlm.LMM("y ~ Days + (1 | g)", flat).fit()
    ci = res.confint("profile")
    assert ci.loc["sd_(Intercept)|g", "2.5 %"] == 0.0 and ci.loc["sd_(Intercept)|g", "97.5 %"] > 0
    fig = res.profile().plot(tmp_path / "profile.png")
    assert (tmp_path / "profile.png").stat().st_size > 0 and len(fig.axes) == 4


def test_bootstrap_intervals_are_named_as_lme4s():
    ref, res = _fitted("sleepstudy_inference")
    got = res.confint("bootstrap", nsim=40, seed=2)
    assert list(got.index) == [r["name"] for r in ref["confint_wald"]]
    assert np.all(got["2.5 %"] < got["97.5 %"])
    assert got.loc["sigma", "2.5 %"] < res.sigma < got.loc["sigma", "97.5 %"]


def test_bad_methods_and_levels_are_named():
    _ref, res = _fitted("sleepstudy_inference")
    with pytest.raises(jaxhlm.JaxhlmError, match="method='boot'.*'profile'"):
        res.confint("boot")
    with pytest.raises(jaxhlm.JaxhlmError, match="level must be between 0 and 1"):
        res.confint("wald", level=95)


def test_a_profiles_two_programs_compile_together_before_its_first_evaluation(sleepstudy, monkeypatch):
    """The variance and fixed-effect deviances compile at once, in threads, when the
    profiler starts (:func:`jaxhlm.precompiled.prepare_together`); the root searches then
    compile nothing.  (A formula no other test fits, so that both are new here; the
    compiled path, not the host's independent groups.)"""
    import jax

    from jaxhlm import independent_groups
    from jaxhlm.inference.profile import Profiler

    monkeypatch.setattr(independent_groups, "MAX_BLOCK", 0)

    data = sleepstudy.assign(noise=np.random.default_rng(3).normal(size=len(sleepstudy)))
    res = jaxhlm.LMM("Reaction ~ Days + noise + (1 | Subject)", data).fit()
    compiled = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        prof = Profiler(res)
        at_start = len(compiled)
        lower, upper = prof.end("noise", -1.96), prof.end("sigma", 1.96)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert at_start == 2 and len(compiled) == 2
    assert lower < res.fixef["noise"] and upper > res.sigma


@pytest.mark.parametrize("name", ["sleepstudy_inference", "oats", "penicillin"])
def test_the_hosts_profile_equals_the_compiled_one(name, monkeypatch):
    """The profile on the host's independent groups (:mod:`jaxhlm.independent_groups`:
    the ML deviance and its gradient in closed form; a fixed effect held in the data's
    cross-products while all of v is optimised) against the compiled programs (a fixed
    effect held with theta optimised, sigma profiled): the deviance and its gradient at
    points around the estimates to 1e-9, the intervals to 1e-7 of their widths."""
    from jaxhlm import independent_groups
    from jaxhlm.inference import profile

    _ref, res = _fitted(name)
    host = profile.Profiler(res)
    assert host._groups is not None
    bucketed = res._model.bucketed
    compiled = profile._VARIANCE.for_structure(bucketed.structure)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = host.v_hat * (1.0 + 0.2 * rng.uniform(-1.0, 1.0, host.v_hat.size))
        value, grad = profile._host_deviance(host._groups, host._st, v)
        want_value, want_grad = (np.asarray(a) for a in compiled(v, bucketed.blocks, bucketed.structure))
        assert value == pytest.approx(float(want_value), rel=1e-9)
        np.testing.assert_allclose(grad, want_grad, rtol=0, atol=1e-9 * np.abs(want_grad).max())
    on_host = res.confint("profile")
    monkeypatch.setattr(independent_groups, "MAX_BLOCK", 0)
    res._model.__dict__.pop("independent_groups", None)
    by_programs = res.confint("profile")
    res._model.__dict__.pop("independent_groups", None)
    width = (by_programs["97.5 %"] - by_programs["2.5 %"]).to_numpy()[:, None]
    assert np.nanmax(np.abs(on_host.to_numpy() - by_programs.to_numpy()) / width) < 1e-7
