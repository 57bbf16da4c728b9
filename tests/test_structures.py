"""Structured covariances (issue 15) against nlme 3.1-162 and glmmTMB 1.1.5.

References: ``tests/reference/covariance/*.json``, made by ``make_covariance.R`` there
(which also wrote the data under ``data/``).  Tolerances, from the issue: the -2
log-likelihood never worse than the reference's by 1e-6 relative (ours may be lower:
a better optimum), fixed effects within 1e-3 of the largest, sigma, SDs and
correlation parameters within 2e-3 relative.  nlme's and glmmTMB's optimisers stop
at 1e-6-1e-8 relative in the parameters, so their values carry that error.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.errors import FormulaError

REF = Path(__file__).parent / "reference" / "covariance"


def ref(name):
    return json.loads((REF / f"{name}.json").read_text())


def data(name):
    d = pd.read_csv(REF / "data" / f"{name}.csv.gz")
    for c in ("Subject", "Sex", "Worker", "Machine"):
        if c in d:
            d[c] = pd.Categorical(d[c])
    if name == "Orthodont":
        d["agef"] = pd.Categorical(d["age"], categories=[8, 10, 12, 14])
    if name == "Ovary":
        d["Mare"] = pd.Categorical(d["Mare"], categories=d["Mare"].unique())
        d["sin2pi"], d["cos2pi"] = np.sin(2 * np.pi * d["Time"]), np.cos(2 * np.pi * d["Time"])
    return d


def check_common(res, r):
    assert res.objective <= r["minus2loglik"] * (1 + 1e-6) + 1e-6
    assert res.objective == pytest.approx(r["minus2loglik"], rel=1e-6)
    fe = res.fixef.to_numpy()
    np.testing.assert_allclose(fe, r["fixef"], atol=1e-3 * np.max(np.abs(r["fixef"])))
    np.testing.assert_allclose(res.fixef_se.to_numpy(), r["fixef_se"], rtol=2e-3)
    assert res.sigma == pytest.approx(r["sigma"], rel=2e-3)


def varcorr_matrix(res, group):
    vc = res.varcorr
    vc = vc[vc.grp == group]
    cols = list(dict.fromkeys(vc.var1))
    S = np.zeros((len(cols), len(cols)))
    for _, row in vc.iterrows():
        i = cols.index(row.var1)
        if row.var2 is None or pd.isna(row.var2):
            S[i, i] = row.vcov
        else:
            j = cols.index(row.var2)
            S[i, j] = S[j, i] = row.vcov
    return S


RANDOM = [
    ("machines_tmb_cs", "Machines", "score ~ Machine + cs(0 + Machine | Worker)", "Worker"),
    ("machines_lme_pdcs", "Machines", "score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", "Worker"),
    ("orthodont_tmb_ar1", "Orthodont", "distance ~ age + ar1(0 + agef | Subject)", "Subject"),
    ("sleepstudy_tmb_diag", "sleepstudy", "Reaction ~ Days + diag(Days | Subject)", "Subject"),
]


@pytest.mark.parametrize("method", ["reml", "ml"])
@pytest.mark.parametrize("name,dataset,formula,group", RANDOM)
def test_random_effect_structures_match_references(name, dataset, formula, group, method):
    r = ref(f"{name}_{method}")
    res = jaxhlm.LMM(formula, data(dataset)).fit(reml=method == "reml")
    check_common(res, r)
    S = varcorr_matrix(res, group)
    if "vc_sd" in r:
        sd = np.asarray(r["vc_sd"][group])
        np.testing.assert_allclose(np.sqrt(np.diag(S)), sd, rtol=2e-3)
        if r["vc_cor"][group] is not None and len(sd) > 1 and "diag" not in name:
            cor = np.asarray(r["vc_cor"][group])
            np.testing.assert_allclose(S / np.outer(sd, sd), cor, atol=2e-3)
    else:  # nlme's getVarCov
        np.testing.assert_allclose(S, np.asarray(r["random_cov"]), rtol=2e-3)


def test_structured_terms_have_few_parameters_and_names():
    d = data("Machines")
    for formula, names in [
        ("score ~ Machine + cs(0 + Machine | Worker)", ["Worker.Machine[A]", "Worker.Machine[B]",
                                                         "Worker.Machine[C]", "Worker.rho"]),
        ("score ~ Machine + homcs(0 + Machine | Worker)", ["Worker.sd", "Worker.rho"]),
        ("score ~ Machine + ar1(0 + Machine | Worker)", ["Worker.sd", "Worker.rho"]),
    ]:
        res = jaxhlm.LMM(formula, d).fit()
        assert res.theta_names == names and res.theta.size == len(names)
    homcs = jaxhlm.LMM("score ~ Machine + homcs(0 + Machine | Worker)", d).fit()
    hom = jaxhlm.LMM("score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", d).fit()
    assert homcs.objective == hom.objective


@pytest.mark.parametrize("formula,message", [
    ("score ~ Machine + cs(1 | Worker)", "at least two columns"),
    ("score ~ Machine + ar1(1 | Worker)", "at least two columns"),
    ("score ~ Machine + cs(0 + Machine | Worker, het = TRUE)", "does not take the options het"),
    ("score ~ Machine + cs(0 + Machine | Worker, hom)", "name = value"),
    ("score ~ Machine + cs(0 + Machine | Worker, hom = yes)", "TRUE, FALSE or a number"),
    ("score ~ Machine + (0 + Machine | Worker, hom = TRUE)", "need a covariance structure"),
    ("score ~ Machine + toeplitz(0 + Machine | Worker)", "unknown covariance structure 'toeplitz'"),
])
def test_structure_errors_name_the_term(formula, message):
    with pytest.raises(FormulaError, match=message):
        jaxhlm.LMM(formula, data("Machines"))


def test_structured_batches_equal_single_fits():
    """fit_many of a cs term (one vmapped program) == one fit per response: the optimum's
    value to 1e-10; its location to 1e-4 (the batch runs BFGS, the single fit Newton, both
    stopping at a gradient of ~1e-6, and the criterion is flat in rho to that order)."""
    d = data("Machines")
    model = jaxhlm.LMM("score ~ Machine + cs(0 + Machine | Worker)", d)
    rng = np.random.default_rng(3)
    Y = d["score"].to_numpy() + rng.normal(0, 1, (3, len(d)))
    many = model.fit_many(Y)
    for k in range(3):
        single = jaxhlm.LMM("score ~ Machine + cs(0 + Machine | Worker)", d.assign(score=Y[k])).fit()
        assert many.objective[k] == pytest.approx(single.objective, rel=1e-10)
        np.testing.assert_allclose(many.theta[k], single.theta, rtol=1e-4)
        np.testing.assert_allclose(many.fixef[k], single.fixef.to_numpy(), rtol=1e-6)


# ---------------------------------------------------------------- residual structures
def _ovary():
    return data("Ovary")


RESIDUAL = [
    ("sleepstudy_lme_ar1", jaxhlm.LMM, "sleepstudy", "Reaction ~ Days + (1 | Subject)",
     lambda: dict(correlation=jaxhlm.AR1("Subject", "Days"))),
    ("ovary_lme_ar1", jaxhlm.LMM, "Ovary", "follicles ~ sin2pi + cos2pi + (1 | Mare)",
     lambda: dict(correlation=jaxhlm.AR1())),          # nlme's corAR1(): row order in Mare
    ("sleepstudy_lme_ar1_power", jaxhlm.LMM, "sleepstudy", "Reaction ~ Days + (Days | Subject)",
     lambda: dict(correlation=jaxhlm.AR1("Subject", "Days"), variance=jaxhlm.VarPower("Days1"))),
    ("orthodont_lme_varident", jaxhlm.LMM, "Orthodont", "distance ~ age + Sex + (1 | Subject)",
     lambda: dict(variance=jaxhlm.VarIdent("Sex"))),
    ("orthodont_gls_cs", jaxhlm.GLS, "Orthodont", "distance ~ age + Sex",
     lambda: dict(correlation=jaxhlm.CompoundSymmetry("Subject"))),
    ("sleepstudy_gls_ar1", jaxhlm.GLS, "sleepstudy", "Reaction ~ Days",
     lambda: dict(correlation=jaxhlm.AR1("Subject", "Days"))),
    ("orthodont_gls_ar1_gaps", jaxhlm.GLS, "Orthodont", "distance ~ age",
     lambda: dict(correlation=jaxhlm.AR1("Subject", "visit"), variance=jaxhlm.VarIdent("Sex"))),
]


@pytest.mark.parametrize("method", ["reml", "ml"])
@pytest.mark.parametrize("name,cls,dataset,formula,kwargs", RESIDUAL)
def test_residual_structures_match_nlme(name, cls, dataset, formula, kwargs, method):
    r = ref(f"{name}_{method}")
    d = data(dataset)
    if "gaps" in name:
        d = d.drop(index=[1, 6, 14])    # R's rows 2, 7 and 15: lags of 2 within Subject
    res = cls(formula, d, **kwargs()).fit(reml=method == "reml")
    if cls is jaxhlm.GLS and method == "ml":
        # nlme's gls reports ML standard errors with sigma^2 = RSS/(n - p); jaxhlm's (as lme4's
        # and nlme's lme) use the ML estimate RSS/n
        n, p = res.nobs, res.fixef.size
        r = dict(r, fixef_se=list(np.asarray(r["fixef_se"]) * np.sqrt((n - p) / n)))
    check_common(res, r)
    if r["corStruct"] is not None:
        assert res.correlation_parameter == pytest.approx(r["corStruct"][0], rel=2e-3)
    if r["varStruct"] is not None:
        got = res.variance_parameters
        np.testing.assert_allclose(got[r["varStruct_names"]].to_numpy(), r["varStruct"], rtol=2e-3)
    if r.get("random_cov") is not None:
        np.testing.assert_allclose(varcorr_matrix(res, res.varcorr.grp.iloc[0]),
                                   np.atleast_2d(r["random_cov"]), rtol=2e-3)


@pytest.mark.parametrize("reml", [True, False])
def test_gls_compound_symmetry_is_a_random_intercept(reml):
    """The seed question: Var y = sigma_b^2 11' + sigma^2 I is compound symmetry with
    rho = sigma_b^2 / (sigma_b^2 + sigma^2), so GLS with it and the LMM with (1 | g) are
    one model whenever rho >= 0: same optimum, coefficients and total variance."""
    d = data("Orthodont")
    gls = jaxhlm.GLS("distance ~ age + Sex", d, correlation=jaxhlm.CompoundSymmetry("Subject")).fit(reml=reml)
    lmm = jaxhlm.LMM("distance ~ age + Sex + (1 | Subject)", d).fit(reml=reml)
    assert gls.objective == pytest.approx(lmm.objective, rel=1e-9)
    np.testing.assert_allclose(gls.fixef.to_numpy(), lmm.fixef.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(gls.fixef_se.to_numpy(), lmm.fixef_se.to_numpy(), rtol=1e-5)
    var_b = float(lmm.varcorr.vcov.iloc[0])
    total = var_b + lmm.sigma ** 2
    assert gls.sigma ** 2 == pytest.approx(total, rel=1e-5)
    assert gls.correlation_parameter == pytest.approx(var_b / total, rel=1e-5)


def _dense_residual_criterion(model, theta, reml):
    """The criterion with V = Z Lambda Lambda' Z' + D R D formed densely from the
    structures' definitions (not from the whitening)."""
    from test_kernel import dense_parts

    st = model.structure
    Z, Lam, X, y = dense_parts(model, theta[:st.ntheta_random])
    res = st.residual
    pc, pv = res.split(np.asarray(theta[st.ntheta_random:]))
    d = model.frame.data
    n = len(y)
    g = np.ones(n)
    if isinstance(res.variance, jaxhlm.VarIdent):
        levels = list(res.variance.levels)
        ratio = np.concatenate([[1.0], np.exp(pv)])
        g = ratio[[levels.index(v) for v in d[res.variance.column]]]
    elif isinstance(res.variance, jaxhlm.VarPower):
        g = np.abs(d[res.variance.column].to_numpy(float)) ** pv[0]
    R = np.eye(n)
    if res.correlation is not None:
        grp = d[res.correlation.group].astype(str).to_numpy()
        same = grp[:, None] == grp[None, :]
        if isinstance(res.correlation, jaxhlm.AR1):
            t = d[res.correlation.time].to_numpy(float)
            R = np.where(same, np.tanh(pc[0]) ** np.abs(t[:, None] - t[None, :]), 0.0)
        else:
            rho = res.correlation.natural(pc)[0]
            R = np.where(same, rho, 0.0) + (1 - rho) * np.eye(n)
    V = Z @ Lam @ Lam.T @ Z.T + g[:, None] * R * g[None, :]
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    q = r @ Vi @ r
    _, ld_v = np.linalg.slogdet(V)
    p = X.shape[1]
    if not reml:
        return ld_v + n * (1 + np.log(2 * np.pi * q / n))
    _, ld_x = np.linalg.slogdet(X.T @ Vi @ X)
    return ld_v + ld_x + (n - p) * (1 + np.log(2 * np.pi * q / (n - p)))


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,kwargs", [
    ("distance ~ age + (age | Subject)", lambda: dict(correlation=jaxhlm.AR1("Subject", "visit"),
                                                       variance=jaxhlm.VarIdent("Sex"))),
    ("distance ~ age + (1 | Subject)", lambda: dict(correlation=jaxhlm.CompoundSymmetry("Subject"),
                                                     variance=jaxhlm.VarPower("age"))),
    ("distance ~ age + Sex", lambda: dict(correlation=jaxhlm.AR1("Subject", "age"))),   # lags of 2 and 4
])
def test_residual_objective_equals_dense_density(formula, kwargs, reml):
    d = data("Orthodont").drop(index=[1, 6, 14, 40]).reset_index(drop=True)
    cls = jaxhlm.LMM if "|" in formula else jaxhlm.GLS
    model = cls(formula, d, **kwargs())
    rng = np.random.default_rng(5)
    lower = model.structure.theta_lower()
    for _ in range(3):
        theta = np.where(lower == 0, rng.uniform(0.2, 1.5, lower.size), rng.normal(0, 0.6, lower.size))
        assert model.objective(theta, reml=reml) == pytest.approx(
            _dense_residual_criterion(model, theta, reml), rel=1e-10)


def test_least_squares_without_structures():
    """GLS without a structure is ordinary least squares: numpy's coefficients, and
    Satterthwaite's df are exactly n - p."""
    d = data("Orthodont")
    res = jaxhlm.GLS("distance ~ age", d).fit()
    X = np.column_stack([np.ones(len(d)), d.age])
    beta, rss, *_ = np.linalg.lstsq(X, d.distance, rcond=None)
    np.testing.assert_allclose(res.fixef.to_numpy(), beta, rtol=1e-10)
    assert res.sigma ** 2 == pytest.approx(rss[0] / (len(d) - 2), rel=1e-10)
    np.testing.assert_allclose(res.coef_table()["df"], len(d) - 2, rtol=1e-8)


def test_residual_summary_and_parameters():
    d = data("Orthodont")
    res = jaxhlm.LMM("distance ~ age + (1 | Subject)", d, correlation=jaxhlm.AR1("Subject", "age"),
                     variance=jaxhlm.VarIdent("Sex")).fit()
    assert list(res.theta_names) == ["Subject.(Intercept)", "Phi", "Male"]
    assert list(res.residual_parameters.index) == ["Phi", "Male"]
    text = res.summary()
    assert "Correlation structure: corAR1" in text and "Variance function: varIdent" in text
    gls = jaxhlm.GLS("distance ~ age", d, correlation=jaxhlm.CompoundSymmetry("Subject")).fit()
    assert gls.summary().startswith("Generalized least squares fit by REML")
    assert "Degrees of freedom: 108 total; 106 residual" in gls.summary()
    assert gls.varcorr.grp.tolist() == ["Residual"] and gls.ranef.empty


@pytest.mark.parametrize("make,message", [
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d.assign(t=d.age // 4),
                          correlation=jaxhlm.AR1("Subject", "t")), "repeats within a group"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d.assign(t=d.age / 3),
                          correlation=jaxhlm.AR1("Subject", "t")), "must hold integers"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d, variance=jaxhlm.VarIdent("one")),
     "has one level"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d, variance=jaxhlm.VarIdent("nope")),
     "no column 'nope'"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d,
                          correlation=jaxhlm.CompoundSymmetry("Sex")), "must lie within the levels"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d, weights="age",
                          correlation=jaxhlm.AR1()), "prior weights"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d, correlation="ar1"), "correlation= takes"),
    (lambda d: jaxhlm.GLS("distance ~ age + (1 | Subject)", d), "without random-effects terms"),
    (lambda d: jaxhlm.GLS("distance ~ age", d, correlation=jaxhlm.AR1()), "needs group="),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d, variance=jaxhlm.VarPower("zero")),
     "non-zero"),
    (lambda d: jaxhlm.LMM("distance ~ age + (1 | Subject)", d,
                          correlation=jaxhlm.AR1()).fit().coef_table("kenward-roger"), "linear in its"),
])
def test_residual_structure_errors_name_the_column(make, message):
    d = data("Orthodont").assign(one="a", zero=0.0)
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        make(d)


@pytest.mark.parametrize("correlation", [lambda: jaxhlm.AR1("Subject", "age"),
                                         lambda: jaxhlm.CompoundSymmetry("Subject"), "scan"])
def test_coloring_is_a_square_root_of_R_and_whitening_undoes_it(correlation):
    """Simulation's R^{1/2} (``color``) times its transpose is R, formed densely from the
    definition, and ``whiten`` inverts it, with gaps in the times (lags 2 and 4).
    ``"scan"``: AR(1)'s coloring by the associative scan that groups longer than
    ``RECURSION_STEPS`` rows take, instead of the sweeps."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    d = data("Orthodont").drop(index=[1, 6, 14, 40]).reset_index(drop=True)
    scan = correlation == "scan"
    model = jaxhlm.LMM("distance ~ age + (1 | Subject)", d,
                       correlation=jaxhlm.AR1("Subject", "age") if scan else correlation())
    st, rows = model.structure, model._host_blocks
    corr = st.residual.correlation
    if scan:
        from jaxhlm.residual.ar1 import RECURSION_STEPS

        assert corr.longest == 4
        corr = dataclasses.replace(corr, longest=RECURSION_STEPS + 1)
    par = jnp.asarray([0.7])
    n = len(d)
    C = jax.vmap(lambda e: corr.color(par, rows.correlation, e), out_axes=1)(jnp.eye(n))
    grp = d.Subject.astype(str).to_numpy()
    same = grp[:, None] == grp[None, :]
    if isinstance(corr, jaxhlm.AR1):
        R = np.where(same, np.tanh(0.7) ** np.abs(d.age.to_numpy()[:, None] - d.age.to_numpy()[None, :]), 0.0)
    else:
        rho = corr.natural(np.array([0.7]))[0]
        R = np.where(same, rho, 0.0) + (1 - rho) * np.eye(n)
    np.testing.assert_allclose(np.asarray(C @ C.T), R, atol=1e-12)
    white, logdet = corr.whiten(par, rows.correlation, C)
    np.testing.assert_allclose(np.asarray(white), np.eye(n), atol=1e-12)
    assert float(logdet) == pytest.approx(-0.5 * np.linalg.slogdet(R)[1], rel=1e-10)


def test_residual_batches_equal_single_fits_and_bootstrap_runs():
    """fit_many with AR(1) residuals and a variance function == one fit per response
    (optimum to 1e-9; location to 1e-4, BFGS against Newton); a bootstrap refits all."""
    d = data("sleepstudy")
    kw = lambda: dict(correlation=jaxhlm.AR1("Subject", "Days"), variance=jaxhlm.VarPower("Days1"))  # noqa: E731
    model = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", d, **kw())
    res = model.fit()
    Y = res.simulate(3, seed=1)
    assert Y.shape == (3, len(d)) and np.all(np.isfinite(Y))
    many = model.fit_many(Y)
    for k in range(3):
        single = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", d.assign(Reaction=Y[k]), **kw()).fit()
        assert many.objective[k] == pytest.approx(single.objective, rel=1e-9)
        np.testing.assert_allclose(many.theta[k], single.theta, rtol=1e-4, atol=1e-5)
    boot = res.bootstrap(16, seed=2)
    assert np.all(boot.status == jaxhlm.Status.CONVERGED)


MISSING = {
    "ar1-time-varident": (jaxhlm.LMM, "Reaction ~ Days + (1 | Subject)",
                          lambda: dict(correlation=jaxhlm.AR1("Subject", "Days"), variance=jaxhlm.VarIdent("half"))),
    "ar1-positions": (jaxhlm.LMM, "Reaction ~ Days + (1 | Subject)", lambda: dict(correlation=jaxhlm.AR1("Subject"))),
    "gls-cs": (jaxhlm.GLS, "Reaction ~ Days", lambda: dict(correlation=jaxhlm.CompoundSymmetry("Subject"))),
}


@pytest.mark.parametrize("kind", list(MISSING))
def test_residual_batches_with_missing_values_equal_fits_of_their_observed_rows(kind, monkeypatch):
    """A response with missing values (NaN) in a batch == the model fitted to its observed
    rows alone, as nlme's ``na.omit`` does: AR(1) between the rows kept at their time
    differences (or, with time=None, their positions), compound symmetry within the rows
    kept.  Optimum 1e-9 relative, fixed effects 1e-5 (BFGS against the single fit's
    optimiser); theta is not compared for compound symmetry, whose scale depends on the
    largest group (-1 / (n_max - 1) < rho)."""
    from jaxhlm import host_fit

    monkeypatch.setattr(host_fit, "ENABLED", False)   # single fits by the batch's compiled optimiser
    cls, formula, kw = MISSING[kind]
    d = data("sleepstudy").assign(half=lambda x: np.where(x.Days < 5, "early", "late"))
    model = cls(formula, d, **kw())
    Y = model.fit().simulate(3, seed=3)
    rng = np.random.default_rng(0)
    for b, k in ((1, 25), (2, 60)):
        Y[b, rng.choice(Y.shape[1], k, replace=False)] = np.nan
    many = model.fit_many(Y)
    for b in range(3):
        kept = np.isfinite(Y[b])
        single = cls(formula, d[kept].assign(Reaction=Y[b, kept]), **kw()).fit()
        assert many.objective[b] == pytest.approx(single.objective, rel=1e-9)
        np.testing.assert_allclose(many.fixef[b], single.fixef, rtol=1e-5)
        if kind != "gls-cs":
            np.testing.assert_allclose(many.theta[b], single.theta, rtol=1e-4, atol=1e-5)


def test_a_residual_batch_with_missing_values_from_the_rows_is_refused():
    """Blocks from the rows (a variance covariate of more than MAX_CLASSES values) have no
    class sets to rebuild per response: a clear error, before anything is compiled."""
    d = data("sleepstudy").assign(v=lambda x: np.linspace(1.0, 2.0, len(x)))
    model = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", d, variance=jaxhlm.VarPower("v"))
    assert model._host_blocks.sets is None
    Y = np.tile(d.Reaction.to_numpy(), (2, 1))
    Y[1, 3] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        model.fit_many(Y)


def test_residual_marginal_likelihood_and_nuts():
    """NUTS's likelihood with a residual structure equals the ML fit's at its optimum
    (profiled = unprofiled at beta-hat, sigma-hat), and a short run samples phi and the
    power near the fit's values."""
    import jax.numpy as jnp

    from jaxhlm.families import GAUSSIAN

    d = data("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", d, correlation=jaxhlm.AR1("Subject", "Days"),
                       variance=jaxhlm.VarPower("Days1"))
    ml = model.fit(reml=False)
    ll = GAUSSIAN.marginal_loglik(jnp.asarray(ml.theta), jnp.asarray(ml.fixef.to_numpy()),
                                  jnp.asarray(ml.sigma), model.blocks, model.structure)
    assert -2 * float(ll) == pytest.approx(ml.objective, rel=1e-10)
    post = model.sample(num_warmup=150, num_samples=150, num_chains=1, seed=1)
    assert {"corAR1:Phi", "varPower:power", "sigma", "sd(Subject:(Intercept))"} <= set(post.names)
    fit = model.fit()
    assert abs(np.mean(post.samples["corAR1:Phi"]) - fit.correlation_parameter) < 0.2
    assert abs(np.mean(post.samples["varPower:power"]) - fit.variance_parameters["power"]) < 0.2


STORED = r"""
import json, sys
import jaxhlm
from jaxhlm.batch import simulate_trace_count
from jaxhlm.fitting import trace_count
d = jaxhlm.datasets.load("sleepstudy")
res = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", d, correlation=jaxhlm.AR1("Subject", "Days")).fit()
boot = res.bootstrap(8, seed=1)
print(json.dumps({"traces": trace_count(), "simulate": simulate_trace_count(),
                  "objective": res.objective, "boot": boot.objective.tolist()}))
"""


def test_a_second_process_loads_residual_structure_programs(tmp_path):
    """The fit, the simulator and the batched refits of a model with a residual structure
    are stored (:mod:`jaxhlm.precompiled`); a second process traces none of them."""
    import json
    import os
    import subprocess
    import sys

    def run():
        env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path), JAXHLM_HOST_FIT="0")
        out = subprocess.run([sys.executable, "-c", STORED], capture_output=True, text=True,
                             timeout=400, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run()
    assert first["traces"] >= 2 and first["simulate"] == 1
    second = run()
    assert second == {**first, "traces": 0, "simulate": 0}


def test_structured_terms_sample_and_bootstrap():
    """NUTS samples a cs term's SDs and rho (its sites) near the fit; its bootstrap refits all."""
    d = data("Machines")
    model = jaxhlm.LMM("score ~ Machine + homcs(0 + Machine | Worker)", d)
    fit = model.fit()
    post = model.sample(num_warmup=150, num_samples=150, num_chains=1, seed=2)
    assert {"sd(Worker:Machine[A])", "corr(Worker:Machine[A],Machine[B])"} <= set(post.names)
    rho = fit.varcorr.sdcor.iloc[3]
    assert abs(np.median(post.samples["corr(Worker:Machine[A],Machine[B])"]) - rho) < 0.3
    np.testing.assert_allclose(post.raw["rho(Worker)"], post.samples["corr(Worker:Machine[A],Machine[B])"],
                               atol=1e-10)
    boot = fit.bootstrap(16, seed=3)
    assert np.mean(boot.status == jaxhlm.Status.CONVERGED) >= 0.9


@pytest.mark.parametrize("kwargs", [
    lambda: dict(correlation=jaxhlm.AR1("Subject", "age"), variance=jaxhlm.VarIdent("Sex")),
    lambda: dict(correlation=jaxhlm.AR1("Subject", "visit"), variance=jaxhlm.VarPower("age")),
    lambda: dict(variance=jaxhlm.VarPower("age")),
    lambda: dict(correlation=jaxhlm.CompoundSymmetry("Subject")),
])
@pytest.mark.parametrize("dense_rest", [64, 0])
def test_class_blocks_equal_the_rows_blocks(kwargs, dense_rest, monkeypatch):
    """The blocks combined from precomputed row classes (jaxhlm.residual.whiten's module
    docstring) equal those of the whitened rows, field by field, at arbitrary parameters
    and for a batch of responses (with_responses, whose rest's design is dense or, with
    ``DENSE_REST_COLUMNS`` 0, sparse)."""
    import jax.numpy as jnp

    from jaxhlm.residual import whiten
    from jaxhlm.residual.whiten import blocks_at, with_responses

    monkeypatch.setattr(whiten, "DENSE_REST_COLUMNS", dense_rest)

    d = data("Orthodont").drop(index=[1, 6, 14, 40]).reset_index(drop=True)
    model = jaxhlm.LMM("distance ~ age + (age | Subject)", d, **kwargs())
    st, rows = model.structure, model._host_blocks
    assert rows.sets is not None
    plain = rows._replace(sets=None)
    rng = np.random.default_rng(7)
    Y = d.distance.to_numpy() + rng.normal(size=(2, len(d)))
    many = with_responses(rows, st, Y)
    for _ in range(2):
        theta = jnp.asarray(np.concatenate([[1.1, 0.2, 0.4], rng.normal(0, 0.5, st.ntheta - 3)]))
        for k in range(2):
            fast = blocks_at(theta, many._replace(y=Y[k], sets=many.sets._replace(
                zy1=many.sets.zy1[k], Arr=many.sets.Arr[k])), st)
            slow = blocks_at(theta, plain._replace(y=Y[k]), st)
            for f in ("A11", "coo_val", "zy1", "pair_val", "Arr", "nobs", "logw"):
                np.testing.assert_allclose(np.asarray(getattr(fast, f)), np.asarray(getattr(slow, f)),
                                           rtol=1e-10, atol=1e-10, err_msg=f)


def test_profile_intervals_with_a_residual_structure():
    """Profiles reach a residual structure's parameters (nlme's scale) and the fixed effects
    of a model with AR(1) residuals, and at each interval end the ML deviance has risen by
    z^2 when recomputed independently: Phi's by minimising the ML criterion over the
    random term's theta with Phi held; a fixed effect's by refitting with x_j f moved into
    the response.  A variance function's ratio is profiled too (an interval around it)."""
    import jax
    import jax.numpy as jnp
    from scipy import optimize, special

    from jaxhlm.families import gaussian

    d = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", d, correlation=jaxhlm.AR1("Subject", "Days"))
    res = model.fit()
    ci = res.confint(method="profile")
    assert list(ci.index) == ["sd_(Intercept)|Subject", "sigma", "Phi", "(Intercept)", "Days"]
    ml = model.fit(reml=False)
    z2 = special.ndtri(0.975) ** 2
    st, rows = model.structure, model._host_blocks
    vg = jax.jit(jax.value_and_grad(
        lambda th, tail: gaussian.objective(jnp.concatenate([th, tail]), rows, st, False)))
    for phi in ci.loc["Phi"]:
        tail = jnp.asarray([np.arctanh(phi)])
        out = optimize.minimize(lambda th: tuple(np.asarray(v, float) for v in vg(jnp.asarray(th), tail)),
                                ml.theta[:st.ntheta_random], jac=True, method="BFGS", options={"gtol": 1e-9})
        assert out.fun - ml.objective == pytest.approx(z2, abs=1e-6)
    for f in ci.loc["Days"]:
        held = jaxhlm.LMM("y ~ 1 + (1 | Subject)", d.assign(y=d.Reaction - f * d.Days),
                          correlation=jaxhlm.AR1("Subject", "Days")).fit(reml=False)
        assert held.objective - ml.objective == pytest.approx(z2, abs=1e-6)
    assert ci.loc["Phi", "2.5 %"] < res.correlation_parameter < ci.loc["Phi", "97.5 %"]
    boot = res.confint(method="bootstrap", nsim=64, seed=1)      # percentiles of the refits' Phi
    assert list(boot.index) == list(ci.index)
    assert 0.0 < boot.loc["Phi", "2.5 %"] < boot.loc["Phi", "97.5 %"] < 1.0
    assert np.isnan(res.confint().loc["Phi"]).all()               # Wald: none, as for the SDs
    ident = jaxhlm.LMM("distance ~ age + (1 | Subject)", data("Orthodont"), variance=jaxhlm.VarIdent("Sex"))
    fit = ident.fit()
    (name,) = ident.structure.residual.param_names()
    lo, hi = fit.confint(method="profile").loc[name]
    assert 0.0 < lo < fit.variance_parameters[name] < hi
