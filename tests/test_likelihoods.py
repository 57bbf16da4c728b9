"""The kernel's other likelihoods: prior weights, known residual variances, and the
marginal likelihood p(y | beta, sigma, theta) that NUTS samples, each against dense
linear algebra (V formed densely, here only) or lme4; and draws of b against lme4's
conditional modes and variances.

Identities (float64 on both sides, so ~1e-10):

- weights w_i: y ~ N(X beta, sigma^2 (Z Lambda Lambda'Z' + W^{-1})); lme4's criterion
  subtracts sum log w_i;
- known residual variances s_i^2 (sigma = 1, w_i = 1 / s_i^2): the ML deviance is
  log|V| + n log 2 pi + r'V^{-1}r at the GLS beta-hat, V = Z Lambda Lambda'Z' + S, and
  REML adds log|X'V^{-1}X| with (n - p) log 2 pi;
- marginal: log N(y; X beta, sigma^2 (I + Z Lambda Lambda'Z')) at any (theta, beta, sigma).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from test_kernel import MODELS, _data, dense_parts

import jaxhlm
from conftest import REFERENCE
from jaxhlm.families.gaussian import draw_ranef, marginal_loglik

import json

LOG_2PI = np.log(2 * np.pi)


def _weighted_reference(name):
    return json.loads((REFERENCE / "weighted" / f"{name}.json").read_text())


def _sleepstudy_weights(df):
    return 1.0 + (df["Days"].to_numpy() % 3)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_weights_match_lme4(reml):
    """lmer(..., weights = w) (tests/reference/weighted/make_weighted_refs.R)."""
    ref = _weighted_reference(f"sleepstudy_weighted_{'reml' if reml else 'ml'}")
    df = jaxhlm.datasets.load("sleepstudy")
    res = jaxhlm.LMM(ref["formula"], df, weights=_sleepstudy_weights(df)).fit(reml=reml)
    assert res.objective <= ref["objective"] * (1 + 1e-6)
    assert res.objective == pytest.approx(ref["objective"], rel=1e-6)
    np.testing.assert_allclose(res.fixef.to_numpy(), ref["fixef"], rtol=1e-5)
    np.testing.assert_allclose(res.fixef_se.to_numpy(), ref["fixef_se"], rtol=1e-4)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    np.testing.assert_allclose(res.theta, ref["theta"], rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_weighted_objective_equals_dense(reml):
    df = jaxhlm.datasets.load("sleepstudy")
    w = _sleepstudy_weights(df)
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df, weights=w)
    theta = np.array([0.7, 0.1, 0.3])
    Z, Lam, X, y = dense_parts(model, theta)
    V = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    n, p = X.shape
    dof = n - p if reml else n
    dense = (np.linalg.slogdet(V)[1] + dof * (1 + np.log(2 * np.pi * (r @ Vi @ r) / dof))
             + (np.linalg.slogdet(X.T @ Vi @ X)[1] if reml else 0.0))
    assert model.objective(theta, reml=reml) == pytest.approx(dense, rel=1e-10)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_known_variances_objective_equals_dense(reml):
    df = jaxhlm.datasets.load("eight_schools")
    model = jaxhlm.LMM("y ~ 1 + (1 | school)", df, residual_variance="se2")
    y, s2 = df["y"].to_numpy(), df["se2"].to_numpy()
    X = np.ones((8, 1))
    for tau in (0.5, 3.0, 12.0):
        V = tau ** 2 * np.eye(8) + np.diag(s2)
        Vi = np.linalg.inv(V)
        beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
        r = y - X @ beta
        dof = 7 if reml else 8
        dense = (np.linalg.slogdet(V)[1] + dof * LOG_2PI + r @ Vi @ r
                 + (np.linalg.slogdet(X.T @ Vi @ X)[1] if reml else 0.0))
        assert model.objective([tau], reml=reml) == pytest.approx(dense, rel=1e-10)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_eight_schools_fit(reml):
    """The data are under-dispersed (Q = 4.6 on 7 df), so tau-hat = 0 by ML and REML, and
    mu-hat is the precision-weighted mean 7.69 (SE 4.07; Gelman et al., BDA3, section 5.5)."""
    df = jaxhlm.datasets.load("eight_schools")
    res = jaxhlm.LMM("y ~ 1 + (1 | school)", df, residual_variance="se2").fit(reml=reml)
    w = 1.0 / df["se2"].to_numpy()
    assert res.theta[0] == 0.0 and res.singular and res.converged
    assert res.fixef.iloc[0] == pytest.approx((w * df["y"]).sum() / w.sum(), rel=1e-10)
    assert res.fixef_se.iloc[0] == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-8)
    assert res.sigma == 1.0
    assert res.npar == 2   # mu and tau: sigma is known


def test_eight_schools_needs_known_variances():
    """One observation per school identifies tau only when the residual variances are known."""
    df = jaxhlm.datasets.load("eight_schools")
    with pytest.raises(jaxhlm.DataError, match="number of levels"):
        jaxhlm.LMM("y ~ 1 + (1 | school)", df)


@pytest.mark.parametrize("bad, match", [
    ({"weights": "nope"}, "weights column 'nope' is not a column"),
    ({"weights": np.ones(3)}, "one value per row"),
    ({"residual_variance": "school"}, "must be numeric"),
    ({"weights": "y"}, r"must be positive and finite; row 2 has -3\.0"),
    ({"weights": "se2", "residual_variance": "se2"}, "not both"),
])
def test_weights_errors(bad, match):
    df = jaxhlm.datasets.load("eight_schools")
    with pytest.raises(jaxhlm.DataError, match=match):
        jaxhlm.LMM("y ~ 1 + (1 | school)", df, **bad)


@pytest.mark.parametrize("name, formula, make", MODELS[:4], ids=lambda v: v if isinstance(v, str) else "")
def test_marginal_loglik_equals_dense(name, formula, make):
    model = jaxhlm.LMM(formula, _data(name, make))
    rng = np.random.default_rng(3)
    theta = model.structure.theta_start() * rng.uniform(0.3, 1.5, model.structure.ntheta) + \
        (model.structure.theta_lower() < 0) * 0.2
    Z, Lam, X, y = dense_parts(model, theta)
    beta = np.linalg.lstsq(X, y, rcond=None)[0] + rng.normal(size=X.shape[1])
    sigma = 0.8 * np.std(y)
    V = sigma ** 2 * (np.eye(len(y)) + Z @ Lam @ Lam.T @ Z.T)
    dense = stats.multivariate_normal(X @ beta, V).logpdf(y)
    got = marginal_loglik(jnp.asarray(theta), jnp.asarray(beta), jnp.asarray(sigma),
                          model.blocks, model.structure)
    assert float(got) == pytest.approx(dense, rel=1e-10)


def test_marginal_loglik_gradient():
    """Autodiff through the custom adjoint (with beta moved into the response) against
    central differences, in theta, beta and log sigma.  h = 1e-4: the truncation error
    (h^2 f'(3) / 6) and the rounding error (about 1e-12 relative on |f| = 173, over h)
    both stay below 1e-7."""
    model = jaxhlm.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)", jaxhlm.datasets.load("Penicillin"))
    st, blocks = model.structure, model.blocks

    def f(v):
        return marginal_loglik(v[:2], v[2:3], jnp.exp(v[3]), blocks, st)

    v = jnp.array([0.9, 2.1, 22.5, np.log(0.6)])
    g = jax.grad(f)(v)
    h = 1e-4
    fd = [(f(v.at[i].add(h)) - f(v.at[i].add(-h))) / (2 * h) for i in range(4)]
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, formula", [
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),   # crossed: a rest term is drawn
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),          # a vector-valued term 1
])
def test_draw_ranef_matches_condvar(name, formula):
    """Draws of b given (theta-hat, beta-hat, sigma-hat) have lme4's conditional modes as
    their mean and condVar's SDs as their SDs.  20,000 draws: the mean is within 5
    Monte Carlo SEs, the SD within 3% (its relative Monte Carlo SE is 1/sqrt(2 N) = 0.5%)."""
    model = jaxhlm.LMM(formula, jaxhlm.datasets.load(name))
    res = model.fit()
    st, blocks = model.structure, model.blocks
    theta, beta = jnp.asarray(res.theta), jnp.asarray(res.fixef.to_numpy())
    N = 20_000
    keys = jax.random.split(jax.random.key(0), N)
    draws = jax.vmap(lambda k: draw_ranef(k, theta, beta, jnp.asarray(res.sigma), blocks, st))(keys)
    # ranef's rows: per term, per column, per level (as lme4's as.data.frame(ranef))
    got = [np.asarray(d) for d in draws]
    got_mean = np.concatenate([d.mean(0).T.reshape(-1) for d in got])
    got_sd = np.concatenate([d.std(0).T.reshape(-1) for d in got])
    ranef = res.ranef
    np.testing.assert_array_less(np.abs(got_mean - ranef.condval.to_numpy()),
                                 5 * ranef.condsd.to_numpy() / np.sqrt(N))
    np.testing.assert_allclose(got_sd, ranef.condsd.to_numpy(), rtol=0.03)
