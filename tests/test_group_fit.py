"""jaxhlm.group_fit: LMMs whose rows fall into small independent groups, fitted on the host.

Pinned three ways: the host's criterion equals the compiled objective at random points
(an exact identity, 1e-10); its conditional estimates at a given theta equal the
compiled ones (1e-8); and its fits equal the compiled fits to the optimisers' tolerance
(both stop at a predicted decrease of 1e-12 (1 + |f|), so theta agrees to about 1e-5
on flat criteria).  The lme4, nlme and lmerTest reference tests elsewhere in the suite
run through this path wherever a model qualifies.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import Options, group_fit, host_fit
from jaxhlm.fitting import trace_count

HERE = Path(__file__).parent
INFERENCE = HERE / "reference" / "inference"
COVARIANCE = HERE / "reference" / "covariance"


def _inference_data(name):
    df = pd.read_csv(INFERENCE / "data" / f"{name}.csv.gz")
    for col in ("Block", "Variety", "Worker", "Machine"):
        if col in df:
            df[col] = df[col].astype(str)
    return df


def _orthodont():
    d = pd.read_csv(COVARIANCE / "data" / "Orthodont.csv.gz")
    d["Subject"], d["Sex"] = pd.Categorical(d["Subject"]), pd.Categorical(d["Sex"])
    return d


def _ovary():
    d = pd.read_csv(COVARIANCE / "data" / "Ovary.csv.gz")
    d["Mare"] = pd.Categorical(d["Mare"], categories=d["Mare"].unique())
    d["sin2pi"], d["cos2pi"] = np.sin(2 * np.pi * d["Time"]), np.cos(2 * np.pi * d["Time"])
    return d


def _models():
    ss = jaxhlm.datasets.load("sleepstudy")
    yield "sleepstudy", lambda: jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", ss)
    yield "uncorrelated", lambda: jaxhlm.LMM("Reaction ~ Days + (Days || Subject)", ss)
    yield "diag", lambda: jaxhlm.LMM("Reaction ~ Days + diag(Days | Subject)", ss)
    yield "weights", lambda: jaxhlm.LMM("Reaction ~ Days + (Days | Subject)",
                                        ss.assign(w=1.0 + np.arange(len(ss)) % 3), weights="w")
    yield "oats", lambda: jaxhlm.LMM("yield ~ nitro + Variety + (1 | Block/Variety)", _inference_data("Oats"))
    yield "machines", lambda: jaxhlm.LMM("score ~ Machine + (1 | Worker/Machine)", _inference_data("Machines"))
    yield "penicillin", lambda: jaxhlm.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)",
                                           jaxhlm.datasets.load("Penicillin"))
    yield "ar1", lambda: jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", ss,
                                    correlation=jaxhlm.AR1("Subject", "Days"))
    yield "ar1_rows", lambda: jaxhlm.LMM("follicles ~ sin2pi + cos2pi + (1 | Mare)", _ovary(),
                                         correlation=jaxhlm.AR1())
    yield "ar1_power", lambda: jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", ss.assign(Days1=ss.Days + 1),
                                          correlation=jaxhlm.AR1("Subject", "Days"),
                                          variance=jaxhlm.VarPower("Days1"))
    yield "varident", lambda: jaxhlm.LMM("distance ~ age + Sex + (1 | Subject)", _orthodont(),
                                         variance=jaxhlm.VarIdent("Sex"))
    yield "cs", lambda: jaxhlm.LMM("distance ~ age + (1 | Subject)", _orthodont(),
                                   correlation=jaxhlm.CompoundSymmetry("Subject"))


MODELS = dict(_models())


@pytest.fixture
def compiled(monkeypatch):
    """Build a model whose fit runs the compiled program."""
    def build(make):
        monkeypatch.setattr(host_fit, "ENABLED", False)
        model = make()
        monkeypatch.setattr(host_fit, "ENABLED", True)
        return model
    return build


@pytest.mark.parametrize("name", list(MODELS))
def test_the_host_criterion_is_the_compiled_objective(name):
    model = MODELS[name]()
    host = model._group_fit
    assert host is not None
    rng = np.random.default_rng(3)
    lower = model.structure.theta_lower()
    scales = model.structure.scales()
    for reml in (True, False):
        for _ in range(3):
            theta = np.where(scales, rng.uniform(0.1, 1.5, lower.size), rng.normal(0, 0.5, lower.size))
            assert host.criterion(theta, reml) == pytest.approx(model.objective(theta, reml), rel=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_closed_form_gradient_equals_central_differences(name):
    """Central differences of the criterion, steps h = 1e-4: their truncation error is
    O(h^2) (1e-8 here) and their rounding error about 1e-13 |f| / h, so 1e-6 relative to
    1 + |g| is well above both (at h = 1e-6, Penicillin's rounding alone was 1e-4)."""
    model = MODELS[name]()
    host = model._group_fit
    rng = np.random.default_rng(4)
    lower = model.structure.theta_lower()
    scales = model.structure.scales()
    for reml in (True, False):
        theta = np.where(scales, rng.uniform(0.1, 1.5, lower.size), rng.normal(0, 0.5, lower.size))
        numeric = np.empty(theta.size)
        for i in range(theta.size):
            h = np.zeros(theta.size)
            h[i] = 1e-4
            numeric[i] = (host.criterion(theta + h, reml) - host.criterion(theta - h, reml)) / 2e-4
        got = host.gradient(theta, reml)
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-6 * (1 + np.abs(numeric).max()))


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_host_fits_equal_compiled_fits(name, reml, compiled, fits_agree):
    model = MODELS[name]()
    before = trace_count()
    host = model.fit(reml=reml)
    assert trace_count() == before          # nothing compiled
    ref = compiled(MODELS[name]).fit(reml=reml)
    fits_agree(host, ref)
    # the conditional estimates at the compiled fit's theta: an identity
    cond = model._group_fit.conditional(ref.theta, reml)
    np.testing.assert_allclose(cond.beta, ref.fixef.to_numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cond.vcov, ref.vcov.to_numpy(), rtol=1e-7, atol=1e-12)
    assert float(cond.sigma) == pytest.approx(ref.sigma, rel=1e-9)
    for a, b in zip(cond.b, ref._cond.b):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * max(np.abs(b).max(), 1.0))
    for a, b in zip(cond.b_var, ref._cond.b_var):
        if len(b):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)
    assert host._curvature.shape == (model.structure.ntheta,) * 2 and np.isfinite(host._curvature).all()


def test_which_fits_run_on_the_host(sleepstudy):
    def host(formula, data=sleepstudy, **kw):
        return jaxhlm.LMM(formula, data, **kw)._group_fit is not None

    assert host("Reaction ~ Days + (Days | Subject)")
    assert not host("Reaction ~ Days + cs(1 + Days | Subject)")        # not lme4's lambda
    rng = np.random.default_rng(0)
    crossed = pd.DataFrame({"a": rng.integers(0, 60, 2000).astype(str), "b": rng.integers(0, 60, 2000).astype(str),
                            "y": rng.normal(size=2000)})
    assert not host("y ~ 1 + (1 | a) + (1 | b)", crossed)              # one group of 120 columns
    assert not host("Reaction ~ Days + (1 | Subject)", sleepstudy.assign(v=20.0), residual_variance="v")  # sigma known
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)
    assert "optimizer: bfgs on the host" in model.fit().summary(ddf=None)
    before = trace_count()
    assert "optimizer: bfgs," in model.fit(options=Options(method="bfgs")).summary(ddf=None)   # a strategy asked for
    assert trace_count() == before + 1
    model.fit(prior=jaxhlm.priors.zero_avoiding())                      # a posterior mode
    assert trace_count() == before + 2


def test_a_host_fit_and_a_host_batch_import_no_jax():
    script = (
        "import sys, json, numpy as np, jaxhlm\n"
        "d = jaxhlm.datasets.load('sleepstudy')\n"
        "r = jaxhlm.LMM('Reaction ~ Days + (1 | Subject)', d, correlation=jaxhlm.AR1('Subject', 'Days')).fit()\n"
        "r.ranef, r.varcorr, r.fixef_se\n"
        "m = jaxhlm.LMM('Reaction ~ Days + (Days | Subject)', d)\n"
        "m.fit().summary()   # Satterthwaite's table on the host too\n"
        "many = m.fit_many(m.frame.y + np.random.default_rng(0).normal(size=(300, m.nobs)) * 20)\n"
        "print(json.dumps({'jax': 'jax' in sys.modules, 'objective': r.objective,\n"
        "                  'converged': float(many.converged.mean())}))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["jax"] is False and out["converged"] == 1.0
    ref = json.loads((COVARIANCE / "sleepstudy_lme_ar1_reml.json").read_text())
    assert out["objective"] == pytest.approx(ref["minus2loglik"], rel=1e-6)


def test_a_users_residual_structure_keeps_the_protocols_signature(sleepstudy, compiled):
    """A structure of another module, written to the protocol without ``xp``, is fitted by
    the compiled program (its functions are called as before) to AR(1)'s optimum."""
    import dataclasses

    from jaxhlm.lazy_jax import jax, jnp

    @dataclasses.dataclass(frozen=True)
    class MyAR1(jaxhlm.AR1):
        def coefficients(self, par, key):
            phi = jnp.tanh(par[0])
            a = jnp.where(key > 0, jax.lax.pow(phi, key.astype(jnp.int32)), 0.0)
            return a, jnp.sqrt(1.0 - a * a)

    mine = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", sleepstudy, correlation=MyAR1("Subject", "Days"))
    assert mine._group_fit is None
    ours = compiled(lambda: jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", sleepstudy,
                                       correlation=jaxhlm.AR1("Subject", "Days")))
    assert mine.fit().objective == pytest.approx(ours.fit().objective, rel=1e-10)


# ---------------------------------------------------------------- many responses on the host
BATCHED = ["sleepstudy", "uncorrelated", "weights", "oats", "penicillin"]


def _responses(model, count=5, seed=3):
    rng = np.random.default_rng(seed)
    y = model.frame.y
    return y + rng.normal(size=(count, y.size)) * y.std() * 0.4


@pytest.mark.parametrize("name", BATCHED)
def test_the_responses_products_are_the_models_own(name):
    """The model's own response through ``responses`` gives the design's K exactly."""
    host = MODELS[name]()._group_fit
    y = host.responses(np.zeros((1, host.rows[0].size))).K   # (another response first: nothing kept)
    assert y.shape == host.K.shape
    np.testing.assert_allclose(host.responses(MODELS[name]().frame.y[None]).K, host.K, rtol=1e-13, atol=1e-9)


@pytest.mark.parametrize("name", BATCHED)
@pytest.mark.parametrize("reml", [True, False])
def test_a_host_batch_equals_its_fits_one_by_one(name, reml):
    """Batched == looped on the host: every fit steps with the others as it would alone.
    The batch's arrays have other shapes, so NumPy's sums round differently (1e-16), and
    BFGS carries that along flat directions: the objective agrees to 1e-12, theta within
    the stopping rule's reach (a predicted decrease of 1e-12 (1 + |f|): about 1e-5)."""
    model = MODELS[name]()
    Y = _responses(model)
    before = trace_count()
    many = model.fit_many(Y, reml)
    assert trace_count() == before   # nothing compiled
    for i, y in enumerate(Y):
        one = model._group_fit.responses(y[None]).fit_all(reml, Options(), many_starts(model, y))
        assert many.status[i] == one.opt.status[0]
        assert many.objective[i] == pytest.approx(one.opt.fun[0], rel=1e-12)
        np.testing.assert_allclose(many.theta[i], one.opt.x[0], atol=1e-5)
        np.testing.assert_allclose(many.fixef[i], one.cond.beta[0], rtol=1e-6)
        np.testing.assert_allclose(many.sigma[i], one.cond.sigma[0], rtol=1e-6)


def many_starts(model, y):
    from jaxhlm.start import moment_starts

    return moment_starts(model.frame, model.structure, y[None])


@pytest.mark.parametrize("name", BATCHED)
def test_a_host_batch_equals_the_compiled_batch(name, compiled):
    """The optimisers' tolerances, as :func:`test_host_fits_equal_compiled_fits`."""
    host = MODELS[name]()
    Y = _responses(host, 8)
    a = host.fit_many(Y)
    b = compiled(MODELS[name]).fit_many(Y)
    assert (a.status == b.status).all() and a.converged.all()
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-9)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-4)
    np.testing.assert_allclose(a.fixef, b.fixef, atol=1e-4 * np.abs(b.fixef_se).max())
    np.testing.assert_allclose(a.fixef_se, b.fixef_se, rtol=1e-4)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-4)


def test_the_host_hands_over_to_the_compiled_batch(monkeypatch, sleepstudy):
    """Ski rental: once the host has spent its budget on a program, the rest of the batch,
    and later batches of that program in this process, run the compiled program; the
    fields join in order."""
    from jaxhlm import batch

    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)
    Y = _responses(model, 7)
    monkeypatch.setattr(batch, "HOST_BUDGET", 1e-9)     # one chunk, then the compiled program
    monkeypatch.setattr(batch, "HOST_CHUNK", 3 * model._group_fit.K[0, 0].size)
    before = trace_count()
    mixed = model.fit_many(Y)
    assert trace_count() == before + 1
    assert batch._HOST_SECONDS[model.bucketed.structure] == np.inf
    starts = np.concatenate([many_starts(model, y) for y in Y[:3]])
    host = model._group_fit.responses(Y[:3]).fit_all(True, Options(), starts)
    np.testing.assert_allclose(mixed.objective[:3], host.opt.fun, rtol=1e-12)
    monkeypatch.setattr(group_fit.GroupFit, "fit_all", None)   # all compiled now
    again = model.fit_many(Y)
    np.testing.assert_allclose(again.objective[3:], mixed.objective[3:], rtol=1e-12)
    np.testing.assert_allclose(again.objective, mixed.objective, rtol=1e-9)
    assert mixed.converged.all() and len(mixed.lams[0]) == 7


def test_a_response_without_a_criterion_gets_a_status_in_a_host_batch(sleepstudy):
    """A constant response (r^2 = 0: the criterion is not finite) fails alone, without
    warnings, and its neighbours fit."""
    import warnings

    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)
    Y = _responses(model, 3)
    Y[1] = 250.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.fit_many(Y)
    assert list(out.converged) == [True, False, True]
    assert np.isnan(out.fixef[1]).all() and np.isnan(out.sigma[1])


def test_a_host_batch_fits_responses_with_missing_values_on_their_rows(sleepstudy):
    """Each response with NaN is fitted as lme4 fits the data without those rows (its own
    products, n and log|W|); one with too few rows fails alone, without warnings."""
    import warnings

    f = "Reaction ~ Days + (Days | Subject)"
    model = jaxhlm.LMM(f, sleepstudy)
    Y = _responses(model, 4)
    Y[1, [3, 40, 41, 100]] = np.nan
    Y[2, 1:] = np.nan              # one row left: no fit
    Y[3, ::7] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        many = model.fit_many(Y)
    for i in (0, 1, 3):
        seen = ~np.isnan(Y[i])
        one = jaxhlm.LMM(f, sleepstudy[seen].assign(Reaction=Y[i, seen])).fit()
        assert many.status[i] == one.status == 0
        assert many.objective[i] == pytest.approx(one.objective, rel=1e-9)
        np.testing.assert_allclose(many.theta[i], one.theta, atol=1e-4)
        np.testing.assert_allclose(many.fixef[i], one.fixef, rtol=1e-5)
        np.testing.assert_allclose(many.sigma[i], one.sigma, rtol=1e-5)
    assert many.status[2] != 0 and np.isnan(many.fixef[2]).all()
