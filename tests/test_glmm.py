"""Generalized linear mixed models (issue 14): Laplace and adaptive Gauss-Hermite fits against lme4's glmer.

References: ``tests/reference/glmm/*.json``, made by ``../shared/tools/glmm.R`` from
``manifest.tsv`` there (data: ``export_data.R``; lme4 1.1-31, bobyqa then a Nelder-Mead
polish, the better kept).  Tolerances from the issue: the -2 log-likelihood never worse
than lme4's by 1e-6 relative (ours is lower where lme4's PIRLS stops early: its default
``tolPwrss = 1e-7`` leaves 5.7e-4 in cbpp's deviance, see
``test_cbpp_matches_lme4_with_a_tight_pirls_tolerance``), fixed effects within 2e-3 of the
largest, theta within 2e-3.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

import jaxhlm
from jaxhlm import pirls
from jaxhlm.glmm import GLMM

REF = Path(__file__).parent / "reference" / "glmm"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def ref(name):
    return json.loads((REF / f"{name}.json").read_text())


def data(name, factors):
    d = pd.read_csv(REF / "data" / f"{name}.csv.gz")
    for c in factors:
        d[c] = pd.Categorical(d[c].astype(str))
    return d


@pytest.fixture(scope="module")
def cbpp_model():
    return GLMM(CBPP, jaxhlm.datasets.load("cbpp"), family="binomial")


@pytest.fixture(scope="module")
def cbpp_fit(cbpp_model):
    return cbpp_model.fit()


def check(res, r):
    assert res.converged
    assert res.objective <= r["minus2loglik"] * (1 + 1e-6)
    fe = np.asarray(r["fixef"])
    np.testing.assert_allclose(res.fixef.to_numpy(), fe, atol=2e-3 * np.max(np.abs(fe)))
    np.testing.assert_allclose(res.theta, r["theta"], atol=2e-3)


def test_cbpp_laplace_matches_glmer(cbpp_fit):
    r = ref("cbpp_laplace")
    check(cbpp_fit, r)
    assert list(cbpp_fit.fixef.index) == ["(Intercept)", "period[T.2]", "period[T.3]", "period[T.4]"]
    # glmer's SEs come from a finite-difference Hessian of its deviance; ours from the exact one
    np.testing.assert_allclose(cbpp_fit.fixef_se.to_numpy(), r["fixef_se"], rtol=2e-2)
    text = cbpp_fit.summary()
    assert "Laplace Approximation" in text and "z value" in text


def test_cbpp_matches_lme4_with_a_tight_pirls_tolerance(cbpp_fit):
    """lme4 1.1-31 with ``glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa")`` (run here):
    -2 log L 184.052563743, theta 0.6422615, beta (-1.398532, -0.9923327, -1.128672,
    -1.580314): ours to the digits R printed."""
    assert cbpp_fit.objective == pytest.approx(184.052563743, abs=2e-8)
    assert cbpp_fit.theta[0] == pytest.approx(0.6422615, abs=2e-6)
    np.testing.assert_allclose(cbpp_fit.fixef.to_numpy(), [-1.398532, -0.9923327, -1.128672, -1.580314],
                               atol=2e-6)


def test_ranef_with_conditional_sds_matches_glmer(cbpp_fit):
    """``as.data.frame(ranef(m))`` of the tolPwrss = 1e-13 glmer fit, herds 1-3."""
    r = cbpp_fit.ranef.set_index("grp").loc[["1", "2", "3"]]
    np.testing.assert_allclose(r["condval"], [0.59002003, -0.29889722, 0.40625557], rtol=1e-4)
    np.testing.assert_allclose(r["condsd"], [0.34826506, 0.36555821, 0.29731849], rtol=1e-4)


def _laplace_by_hand(d, theta, beta):
    """Laplace's -2 log L of cbpp's model, herd by herd with scipy: the mode of
    log p(k | u) - u^2 / 2 in u, then -2 log p(k | u*) + u*^2 + log(1 + lambda^2 sum n mu (1 - mu))."""
    X = np.column_stack([np.ones(len(d))] + [(d.period == p).to_numpy(float) for p in ["2", "3", "4"]])
    k, n = d.incidence.to_numpy(float), d["size"].to_numpy(float)
    total = 0.0
    for h in d.herd.cat.categories:
        rows = (d.herd == h).to_numpy()
        xb, kk, nn = X[rows] @ beta, k[rows], n[rows]

        def nll(u):
            mu = special.expit(xb + theta * u)
            return -np.sum(special.gammaln(nn + 1) - special.gammaln(kk + 1) - special.gammaln(nn - kk + 1)
                           + kk * np.log(mu) + (nn - kk) * np.log1p(-mu)) + u ** 2 / 2

        u = optimize.minimize_scalar(nll, bounds=(-20, 20), method="bounded", options={"xatol": 1e-12}).x
        mu = special.expit(xb + theta * u)
        total += 2 * nll(u) + np.log(1 + theta ** 2 * np.sum(nn * mu * (1 - mu)))
    return total


def test_laplace_deviance_equals_a_computation_by_hand(cbpp_model):
    d = jaxhlm.datasets.load("cbpp")
    for theta, beta in [(0.6, [-1.4, -1.0, -1.1, -1.6]), (1.3, [-0.5, 0.2, -2.0, -0.1])]:
        ours = cbpp_model.objective([theta], beta)
        assert ours == pytest.approx(_laplace_by_hand(d, theta, np.asarray(beta)), rel=1e-9)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_gradient_through_pirls_equals_finite_differences(link):
    """The gradient (reverse mode through one Newton step from the undifferentiated mode:
    Fisher scoring's for the canonical logit, the observed information's for probit and
    cloglog) equals central differences of the deviance (h = 1e-5: error ~1e-9 relative);
    PIRLS started warm, from the modes at another point, gives the same value and
    gradient as from b = 0 (to rounding for logit, Newton's method; Fisher scoring with
    another link converges linearly and stops once the penalised deviance changes by
    < 1e-10 relative, which leaves ~1e-9 relative in the value and, now that the tangent
    does not come from the loop's last iterations, ~1e-7 in the gradient: it was 1e-4 to
    5e-3 before 2026-12-04)."""
    from jaxhlm.pirls import objective_fn

    model = GLMM(CBPP, jaxhlm.datasets.load("cbpp"), family="binomial", link=link)
    g, f = objective_fn(model.data, model.structure, model.family, False)
    x = jnp.asarray([0.8, -1.2, -0.9, -1.0, -1.5])
    vg = jax.jit(jax.value_and_grad(lambda x, b: g(x, b), has_aux=True))
    (value, _), grad = vg(x, [jnp.zeros((model.structure.terms[0].nlevels, 1))])
    fj = jax.jit(f)
    h = 1e-5
    fd = [(float(fj(x.at[i].add(h))) - float(fj(x.at[i].add(-h)))) / (2 * h) for i in range(x.size)]
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-6)
    (_, (b_near, _, _)), _ = vg(x + 0.3, [jnp.zeros((model.structure.terms[0].nlevels, 1))])
    (warm_value, _), warm_grad = vg(x, b_near)
    tol = 1e-12 if link == "logit" else 1e-8
    assert float(warm_value) == pytest.approx(float(value), rel=tol)
    np.testing.assert_allclose(np.asarray(warm_grad), np.asarray(grad), rtol=1e2 * tol, atol=1e2 * tol)


def test_links_that_are_not_canonical_converge_past_glmer():
    """A Poisson GLMM with the identity link and a log-binomial one (whose 6 rows of all
    successes have curvature 0) converge, with exact warm-started gradients, to -2 log L
    no worse than lme4 1.1-31's on these data (written to CSV and fitted in R,
    2026-12-04): ``glmer(c ~ x + (1 | s), d, family = poisson(link = "identity"))``
    1865.158951, ``glmer(cbind(k, n - k) ~ x + (1 | s), d, family = binomial(link =
    "log"))`` 687.4186673.  Before, their gradients were off by up to 5e-3 relative and
    both fits ended on ``line_search_failed``."""
    rng = np.random.default_rng(3)
    s = np.repeat(np.arange(37), 9)
    x, b = rng.uniform(size=s.size), rng.normal(size=37)[s]
    d = pd.DataFrame({"s": s.astype(str), "x": x, "n": 3, "c": rng.poisson(10 + 4 * x + 2 * b),
                      "k": rng.binomial(3, 0.15 * np.exp(0.5 * x + 0.3 * b))})
    for formula, family, link, glmer in [("c ~ x + (1 | s)", "poisson", "identity", 1865.158951),
                                         ("cbind(k, n - k) ~ x + (1 | s)", "binomial", "log", 687.4186673)]:
        res = GLMM(formula, d, family=family, link=link).fit()
        assert res.status == 0 and res.objective <= glmer * (1 + 1e-9)


def test_fit_from_a_negative_theta_folds_to_the_same_fit(cbpp_model, cbpp_fit):
    """Started at -theta (the same model: theta's sign is a symmetry), the fit folds theta
    into lme4's half-space; its warm-started modes b (which do not change sign with theta)
    give the same b, fitted values and objective as the fit from +theta, and the modes it
    settles on are PIRLS's from b = 0 at the optimum."""
    from jaxhlm.glmm_fit import fit_program

    m = cbpp_model
    run = jax.jit(lambda x0: fit_program(m.data, m.structure, m.family, 1, 200, x0))
    x = np.concatenate([cbpp_fit.theta + 0.1, cbpp_fit.fixef.to_numpy()])
    outs = [run(jnp.asarray(np.concatenate([[s * x[0]], x[1:]]))) for s in (1.0, -1.0)]
    (opt_p, mode_p, *_), (opt_n, mode_n, *_) = outs
    assert float(opt_n.x[0]) > 0
    assert float(opt_n.fun) == pytest.approx(float(opt_p.fun), rel=1e-10)
    np.testing.assert_allclose(np.asarray(mode_n.b[0]), np.asarray(mode_p.b[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(mode_n.eta), np.asarray(mode_p.eta), atol=1e-5)
    value, fresh = jax.jit(lambda x: pirls.laplace(x[:1], x[1:], m.data, m.structure, m.family, False))(opt_n.x)
    assert float(value) == pytest.approx(float(opt_n.fun), rel=1e-10)   # PIRLS from b = 0 there
    assert float(mode_n.pdev) == pytest.approx(float(fresh.pdev), rel=1e-10)


def test_nagq0_puts_beta_inside_pirls(cbpp_model, cbpp_fit):
    """nAGQ = 0: the deviance at (theta, beta-hat(theta)) over theta alone is no lower than
    Laplace's optimum over both, and close to it (glmer's nAGQ = 0 is a fast approximation)."""
    fast = cbpp_model.fit(nagq=0)
    assert fast.converged
    assert cbpp_fit.objective <= fast.objective < cbpp_fit.objective + 0.2
    np.testing.assert_allclose(fast.fixef.to_numpy(), cbpp_fit.fixef.to_numpy(), atol=0.05)


def saturated(model):
    """The saturated model's -2 log-likelihood (mu_i = y_i): lme4's nAGQ > 1 likelihoods
    leave it out (:mod:`jaxhlm.quadrature`)."""
    y, n = model.data.y, model.data.trials
    if model.family.name == "binomial":
        k = y * n
        ll = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
              + special.xlogy(k, y) + special.xlog1py(n - k, -y))
    else:
        ll = special.xlogy(y, y) - y - special.gammaln(y + 1)
    return -2 * np.sum(ll)


@pytest.mark.parametrize("name,factors", [("cbpp_agq25", ["herd", "period"]),
                                          ("grouseticks_agq7", ["BROOD", "YEAR"])])
def test_adaptive_quadrature_matches_glmer(name, factors):
    """nAGQ = 25 (binomial) and 7 (Poisson): theta and beta as glmer's; -2 log L equals
    lme4's plus the saturated term it leaves out, to 1e-8 relative (both optimise it)."""
    r = ref(name)
    model = GLMM(r["formula"], data(r["dataset"], factors), family=r["family"])
    res = model.fit(nagq=r["nAGQ"])
    assert res.converged and f"nAGQ = {r['nAGQ']}" in res.summary()
    assert res.objective == pytest.approx(r["minus2loglik"] + saturated(model), rel=1e-8)
    fe = np.asarray(r["fixef"])
    np.testing.assert_allclose(res.fixef.to_numpy(), fe, atol=2e-3 * np.max(np.abs(fe)))
    np.testing.assert_allclose(res.theta, r["theta"], atol=2e-3)
    np.testing.assert_allclose(res.fixef_se.to_numpy(), r["fixef_se"], rtol=2e-3)


def test_adaptive_quadrature_converges_to_the_integral(cbpp_model):
    """With many nodes, AGQ's -2 log L equals the herds' integrals over u computed by
    adaptive 1-D quadrature (scipy's quad, to 1e-12); one node is the Laplace value."""
    from scipy import integrate

    d = jaxhlm.datasets.load("cbpp")
    X = np.column_stack([np.ones(len(d))] + [(d.period == p).to_numpy(float) for p in ["2", "3", "4"]])
    k, n = d.incidence.to_numpy(float), d["size"].to_numpy(float)
    theta, beta = 1.1, np.asarray([-1.2, -0.8, -1.3, -1.9])
    total = 0.0
    for h in d.herd.cat.categories:
        rows = (d.herd == h).to_numpy()

        def integrand(u, xb=X[rows] @ beta, kk=k[rows], nn=n[rows]):
            mu = special.expit(xb + theta * u)
            return np.exp(np.sum(special.gammaln(nn + 1) - special.gammaln(kk + 1) - special.gammaln(nn - kk + 1)
                                 + kk * np.log(mu) + (nn - kk) * np.log1p(-mu)) - u ** 2 / 2) / np.sqrt(2 * np.pi)

        total += -2 * np.log(integrate.quad(integrand, -12, 12, epsabs=0, epsrel=1e-12, limit=200)[0])
    assert cbpp_model.objective([theta], beta, nagq=30) == pytest.approx(total, rel=1e-9)
    assert cbpp_model.objective([theta], beta, nagq=1) == pytest.approx(cbpp_model.objective([theta], beta))


def test_gaussian_family_reproduces_the_lmm():
    """Identity: with the Gaussian family (sigma given) PIRLS is exact and the Laplace
    deviance at theta_GLMM = sigma theta_LMM is the LMM's ML deviance; its fit, the LMM's."""
    from jaxhlm.families import Gaussian

    d = jaxhlm.datasets.load("sleepstudy")
    lmm = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", d).fit(reml=False)
    glmm = GLMM("Reaction ~ Days + (Days | Subject)", d, family=Gaussian(sigma=lmm.sigma))
    assert glmm.objective(lmm.theta * lmm.sigma, lmm.fixef.to_numpy()) == pytest.approx(lmm.objective, rel=1e-12)
    # away from the optimum too: the Laplace approximation is exact for any (theta, beta)
    # (the dense multivariate normal: Var y = sigma^2 I + Z Lambda Lambda' Z')
    from scipy import stats

    theta, beta = np.array([20.0, 3.0, 5.0]), np.array([240.0, 12.0])
    lam = np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    subjects = d.Subject.astype(str).to_numpy()
    Z = np.concatenate([np.column_stack([np.ones(len(d)), d.Days]) * (subjects == s)[:, None]
                        for s in pd.unique(subjects)], axis=1)
    G = np.kron(np.eye(Z.shape[1] // 2), lam @ lam.T)
    V = lmm.sigma ** 2 * np.eye(len(d)) + Z @ G @ Z.T
    dense = -2 * stats.multivariate_normal(beta[0] + beta[1] * d.Days.to_numpy(), V).logpdf(d.Reaction)
    assert glmm.objective(theta, beta) == pytest.approx(dense, rel=1e-10)


def test_random_slope_matches_glmer():
    """mlmRev's Contraception, (urban | district): a correlated random slope."""
    d = data("Contraception", ["urban", "livch", "district"])
    res = GLMM("use ~ age + urban + livch + (urban | district)", d, family="binomial").fit()
    check(res, ref("contraception_laplace"))


@pytest.mark.parametrize("make,message", [
    (lambda d: GLMM("incidence ~ period + (1 | herd)", d, family="binomial"), r"must be in \[0, 1\]"),
    (lambda d: GLMM("cbind(incidence, incidence - size) ~ period + (1 | herd)", d, family="binomial"),
     "negative successes or failures"),
    (lambda d: GLMM("neg ~ period + (1 | herd)", d.assign(neg=-d.incidence), family="poisson"),
     "non-negative counts"),
    (lambda d: GLMM("half ~ period + (1 | herd)", d.assign(half=d.incidence + 0.5), family="poisson"),
     "whole counts"),
    (lambda d: GLMM("p ~ period + (1 | herd)", d.assign(p=d.incidence / d["size"] + 0.01),
                    family="binomial", weights="size"), "successes must be whole numbers"),
    (lambda d: GLMM(CBPP, d, family="gamma"), "unknown family 'gamma'"),
    (lambda d: GLMM(CBPP, d, family="binomial", link="inverse"), "unknown link 'inverse'"),
    (lambda d: GLMM("incidence ~ period + offset(log(nope)) + (1 | herd)", d, family="poisson"),
     "'nope' is not defined"),
    (lambda d: GLMM("cbind(incidence, size - incidence) ~ (1 | period) + (1 | herd)", d).fit(nagq=5),
     "single scalar random-effects term"),
    (lambda d: GLMM(CBPP, d).fit(nagq=-1), "nagq must be a whole number"),
])
def test_glmm_errors_name_the_column_and_row(make, message):
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        make(jaxhlm.datasets.load("cbpp"))


def test_command_line_fits_a_glmm(capsys):
    from jaxhlm import cli

    assert cli.main(["fit", "cbpp", CBPP, "--family", "binomial"]) == 0
    out = capsys.readouterr().out
    assert "Family: binomial  ( logit )" in out and "period[T.4]" in out
    assert cli.main(["fit", "cbpp", "cbind(incidence, size - incidence) ~ (1 | period) + (1 | herd)",
                     "--family", "binomial", "--nagq", "5"]) == 2
    err = capsys.readouterr().err
    assert "single scalar random-effects term" in err and "Traceback" not in err


def test_predict_matches_glmer(cbpp_fit):
    """lme4 1.1-31's ``predict`` on new rows (tolPwrss = 1e-13 fit, as above): the mean with
    every term, and the population-level linear predictor (``re.form = NA``)."""
    nd = pd.DataFrame({"period": ["1", "2", "4"], "herd": ["1", "5", "15"]})
    np.testing.assert_allclose(cbpp_fit.predict(nd, type="response"), [0.3082076436, 0.0703791221, 0.0290481413],
                               rtol=1e-5)
    np.testing.assert_allclose(cbpp_fit.predict(nd, re_form="~0"), [-1.3985321508, -2.3908648317, -2.9788460525],
                               rtol=1e-5)
    np.testing.assert_allclose(cbpp_fit.fitted()[:3], [0.3082076436, 0.1417482584, 0.1259575323], rtol=1e-5)
    with pytest.raises(jaxhlm.JaxhlmError, match="level of herd"):
        cbpp_fit.predict(nd.assign(herd="99"))
    new = cbpp_fit.predict(nd.assign(herd="99"), allow_new_levels=True)
    np.testing.assert_allclose(new, cbpp_fit.predict(nd, re_form="~0"))


def test_predict_evaluates_offsets_on_newdata():
    d = jaxhlm.datasets.load("cbpp").assign(t=lambda f: f["size"].astype(float))
    res = GLMM("incidence ~ period + offset(log(t)) + (1 | herd)", d, family="poisson").fit()
    np.testing.assert_allclose(res.predict(), np.log(res.fitted()), rtol=1e-12)
    nd = d.head(4).assign(t=1.0)
    np.testing.assert_allclose(res.predict(nd), res.predict().head(4) - np.log(d["size"].head(4)), rtol=1e-12)


def test_batched_fits_equal_looped_fits(cbpp_model, cbpp_fit):
    """fit_many (one vmapped program) == one fit per response, to 1e-8; simulate's draws
    depend on the seed and replicate index only."""
    Y = cbpp_fit.simulate(8, seed=3)
    np.testing.assert_array_equal(Y[:2], cbpp_fit.simulate(2, seed=3))
    d = jaxhlm.datasets.load("cbpp")
    k = Y * d["size"].to_numpy()[None]
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    many = cbpp_model.fit_many(Y)
    assert many.converged.all() and "Laplace" in many.summary()
    for i in range(3):
        one = GLMM("y ~ period + (1 | herd)", d.assign(y=Y[i]), family="binomial", weights="size").fit()
        assert many.objective[i] == pytest.approx(one.objective, rel=1e-10)
        np.testing.assert_allclose(many.fixef[i], one.fixef.to_numpy(), atol=1e-8)
        np.testing.assert_allclose(many.theta[i], one.theta, atol=1e-8)
    table = many.coef_table()
    assert table.shape == (8 * 4, 4) and "z value" in table.columns
    assert "sigma" not in many.to_frame().columns


def test_bootstrap_refits_from_the_estimates(cbpp_fit):
    boot = cbpp_fit.bootstrap(8, seed=1)
    assert len(boot) == 8 and boot.converged.all()
    ci = boot.confint()
    assert list(ci.index) == list(cbpp_fit.fixef.index) + ["sd(herd:(Intercept))"]
    lo, hi = ci.loc["period[T.2]", ["percentile_lower", "percentile_upper"]]
    assert lo < hi


def test_binary_responses_are_drawn_at_their_probabilities():
    """One trial per row: the simulator draws 0/1 as u < mu (Binomial.sample with
    trials=None), lme4's distribution.  With theta = 0, each row's mean over 4,000
    replicates is its mu to 4.5 Monte Carlo SEs; with a random intercept (SD 2), a
    group's rows share their draw's b, so the group's mean varies more than independent
    rows' would."""
    from jaxhlm.glmm_batch import simulate

    rng = np.random.default_rng(1)
    d = pd.DataFrame({"g": np.repeat(list("abcdef"), 5), "x": rng.normal(size=30)})
    model = GLMM("y ~ x + (1 | g)", d.assign(y=rng.integers(0, 2, 30).astype(float)), family="binomial")
    beta = np.array([-0.3, 0.8])
    Y = simulate(model, beta, np.zeros(1), 4000, seed=2)
    assert set(np.unique(Y)) == {0.0, 1.0}
    mu = 1 / (1 + np.exp(-(beta[0] + beta[1] * d.x.to_numpy())))
    assert np.all(np.abs(Y.mean(axis=0) - mu) < 4.5 * np.sqrt(mu * (1 - mu) / 4000))
    group_means = simulate(model, beta, np.full(1, 2.0), 4000, seed=3).reshape(4000, 6, 5).mean(axis=2)
    assert np.var(group_means[:, 0]) > 2 * np.mean(mu[:5] * (1 - mu[:5])) / 5


def test_statuses_flag_separation_without_raising():
    """A covariate that separates a binary response: the fit warns and says SEPARATION;
    in a batch, that fit's status says so while the others converge."""
    from jaxhlm.optimize import Status

    rng = np.random.default_rng(0)
    d = pd.DataFrame({"g": np.repeat(list("abcdefgh"), 10), "x": rng.normal(size=80)})
    d["y"] = (d.x > 0).astype(float)
    with pytest.warns(UserWarning, match="separation"):
        res = GLMM("y ~ x + (1 | g)", d, family="binomial").fit()
    assert res.status == Status.SEPARATION
    model = GLMM("y ~ x + (1 | g)", d.assign(y=rng.integers(0, 2, 80).astype(float)), family="binomial")
    many = model.fit_many(np.stack([model.data.y, d.y.to_numpy()]))
    assert list(many.status) == [Status.CONVERGED, Status.SEPARATION]


@pytest.mark.parametrize("Y,message", [(np.zeros((2, 5)), r"Y must be \(B, 56\)"),
                                       (np.full((1, 56), 2.0), r"response 0 of Y.*must be in \[0, 1\]"),
                                       (np.full((1, 56), np.nan), "missing or infinite value")])
def test_fit_many_checks_the_responses(cbpp_model, Y, message):
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        cbpp_model.fit_many(Y)


def test_nuts_posterior_matches_stan():
    """GLMM.sample (NUTS, b explicit and non-centred) against Stan's NUTS on the same model
    and priors (``reference/glmm/cbpp_nuts.stan``, ``make_nuts.R``: rstan 2.21, 4 x 5000
    draws): posterior means within 4 combined Monte Carlo SEs, SDs within 10%."""
    r = ref("cbpp_nuts")
    model = GLMM(CBPP, jaxhlm.datasets.load("cbpp"), family="binomial")
    post = model.sample(num_warmup=500, num_samples=1000, num_chains=4, seed=2)
    s = post.summary().loc[list(model.frame.fixef_names) + ["sd(herd:(Intercept))"]]   # R's order
    assert post.divergences == 0 and (s["r_hat"] < 1.02).all()
    mcse = np.sqrt((s["sd"] / np.sqrt(s["ess"])) ** 2 + np.asarray(r["mcse"]) ** 2)
    assert (np.abs(s["mean"] - r["mean"]) < 4 * mcse).all(), (s["mean"], r["mean"], mcse)
    np.testing.assert_allclose(s["sd"], r["sd"], rtol=0.1)
    b = post.ranef()
    assert len(b) == 15 and np.isfinite(b["mean"]).all()
