"""Full posteriors by NUTS (jaxhlm.bayes.posterior) against answers known exactly or from Stan.

Monte Carlo tolerances: a posterior mean is compared within 4.5 combined Monte Carlo
standard errors, sqrt(sd^2 / ess + mcse_ref^2) (|z| > 4.5 has probability 7e-6 per
comparison); a posterior SD within 4.5 of its relative Monte Carlo error,
sqrt((kurtosis - 1) / (4 ess)) (1 / sqrt(2 ess) for Gaussian draws), combined with the
reference's.
"""

import json

import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

import jaxhlm
from conftest import REFERENCE
from test_kernel import dense_parts

Z_TOL = 4.5


def _check_mean_sd(post, summary, name, mean, sd, mcse_mean_ref=0.0, mcse_sd_ref=0.0):
    row = summary.loc[name]
    se = np.sqrt(row["sd"] ** 2 / row["ess"] + mcse_mean_ref ** 2)
    assert abs(row["mean"] - mean) < Z_TOL * se, (name, row["mean"], mean, se)
    kurtosis = stats.kurtosis(post.samples[name].reshape(-1), fisher=False)
    rel = np.sqrt((kurtosis - 1) / (4 * row["ess"]) + (mcse_sd_ref / sd) ** 2)
    assert abs(row["sd"] / sd - 1) < Z_TOL * rel, (name, row["sd"], sd, rel)


def _fixed_covariance_sites(res):
    """Site values that fix sigma, the SDs and the correlation factor at a fit's estimates."""
    vc = res.varcorr
    sds = {f"sd(Subject:{r.var1})": r.sdcor for r in vc.itertuples()
           if r.grp == "Subject" and not isinstance(r.var2, str)}
    rho = vc[vc.var2.map(lambda v: isinstance(v, str))].sdcor.iloc[0]
    L = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    return {"sigma": res.sigma, **sds, "L_corr(Subject)": L}


def test_conjugate_fixed_effects():
    """Acceptance 1: with sigma and theta fixed, beta | y is Gaussian with precision
    X'V^{-1}X + S0^{-1} and mean P^{-1}(X'V^{-1}y + S0^{-1} mu0), V = sigma^2 (I + Z Lambda Lambda'Z')."""
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    res = model.fit()
    mu0, s0 = np.array([240.0, 5.0]), np.array([10.0, 3.0])  # informative: the posterior moves
    priors = jaxhlm.Priors(fixef={"(Intercept)": dist.Normal(mu0[0], s0[0]),
                                  "Days": dist.Normal(mu0[1], s0[1])})
    post = model.sample(priors, num_warmup=500, num_samples=1000, num_chains=4, seed=1,
                        fixed=_fixed_covariance_sites(res))
    Z, Lam, X, y = dense_parts(model, res.theta)
    Vi = np.linalg.inv(res.sigma ** 2 * (np.eye(len(y)) + Z @ Lam @ Lam.T @ Z.T))
    P = X.T @ Vi @ X + np.diag(1 / s0 ** 2)
    cov = np.linalg.inv(P)
    mean = cov @ (X.T @ Vi @ y + mu0 / s0 ** 2)
    summary = post.summary()
    for j, name in enumerate(["(Intercept)", "Days"]):
        _check_mean_sd(post, summary, name, mean[j], np.sqrt(cov[j, j]))
    draws = np.stack([post.samples[n].reshape(-1) for n in ["(Intercept)", "Days"]])
    rho = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    ess = summary["ess"].min()
    assert abs(np.corrcoef(draws)[0, 1] - rho) < Z_TOL * (1 - rho ** 2) / np.sqrt(ess)
    assert post.divergences == 0


def _eight_schools_quadrature(y, s2, m0, s0, tau_prior):
    """Posterior means and SDs of mu and tau by quadrature (Gelman et al., BDA3, 5.4):
    mu integrates out analytically given tau, then a fine grid in tau."""
    tau = np.linspace(0.0, 300.0, 300_001)
    prec = 1 / (s2[None, :] + tau[:, None] ** 2)
    P = prec.sum(1) + 1 / s0 ** 2
    mu_hat = ((prec * y).sum(1) + m0 / s0 ** 2) / P
    # log p(y | tau) with mu integrated against N(m0, s0^2), up to a constant
    logp = (0.5 * np.log(prec).sum(1) - 0.5 * np.log(P)
            - 0.5 * ((prec * (y - mu_hat[:, None]) ** 2).sum(1) + (mu_hat - m0) ** 2 / s0 ** 2))
    logp += tau_prior.logpdf(tau)
    w = np.exp(logp - logp.max())
    w /= np.trapezoid(w, tau)
    e = lambda f: np.trapezoid(w * f, tau)  # noqa: E731
    tau_mean = e(tau)
    mu_mean = e(mu_hat)
    return {"(Intercept)": (mu_mean, np.sqrt(e(1 / P + mu_hat ** 2) - mu_mean ** 2)),
            "sd(school:(Intercept))": (tau_mean, np.sqrt(e(tau ** 2) - tau_mean ** 2))}


class CentredNormal(dist.Normal):
    """A user's distribution, N(0, width^2), whose ``width`` is not among NumPyro's pytree
    fields (flattening it as a jit argument would lose it)."""

    def __init__(self, width):
        self.width = width
        super().__init__(0.0, width)

    def log_prob(self, value):
        return dist.Normal(0.0, self.width).log_prob(value)


def test_eight_schools_posterior():
    """Acceptance 5: known residual variances sampled by NUTS, with no divergences (b is
    integrated out, so there is no funnel), against quadrature of the exact posterior.
    The fixed effect's prior is a user's class: its chains are not stored and keep the
    priors in their closure."""
    df = jaxhlm.datasets.load("eight_schools")
    model = jaxhlm.LMM("y ~ 1 + (1 | school)", df, residual_variance="se2")
    priors = jaxhlm.Priors(fixef=CentredNormal(20.0), sd=dist.HalfCauchy(5.0))
    post = model.sample(priors, num_warmup=1000, num_samples=2000, num_chains=4, seed=0)
    assert post.divergences == 0
    exact = _eight_schools_quadrature(df["y"].to_numpy(), df["se2"].to_numpy(), 0.0, 20.0,
                                      stats.halfcauchy(scale=5.0))
    summary = post.summary()
    for name, (mean, sd) in exact.items():
        _check_mean_sd(post, summary, name, mean, sd)
    assert (summary["r_hat"] < 1.01).all()
    ranef = post.ranef()
    assert list(ranef["grp"]) == list("ABCDEFGH")
    # school A's effect is shrunk from y = 28 towards mu (BDA3 table 5.3: about 10-11)
    assert 5 < ranef["mean"].iloc[0] + summary.loc["(Intercept)", "mean"] < 16


STAN = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)",
                   jaxhlm.Priors(fixef=dist.Normal(0, 1000), sigma=dist.HalfNormal(100),
                                 sd=dist.HalfNormal(100), lkj=2.0)),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                   jaxhlm.Priors(fixef=dist.Normal(0, 100), sigma=dist.HalfNormal(10),
                                 sd=dist.HalfNormal(10))),
}


def _stan_name(row):
    if row["kind"] == "fixef":
        return row["name"]
    if row["kind"] == "sigma":
        return "sigma"
    if row["kind"] == "sd":
        return f"sd({row['group']}:{row['var1']})"
    return f"corr({row['group']}:{row['var1']},{row['var2']})"


@pytest.mark.parametrize("name", sorted(STAN))
def test_matches_stan(name):
    """Acceptance 2: the same model and priors in Stan, with explicit non-centred random
    effects (tests/reference/stan/*.stan, 4 x 5,000 draws), give the same posterior
    means and SDs of beta, sigma, the SDs and the correlation."""
    ref = json.loads((REFERENCE / "stan" / f"{name}.json").read_text())
    formula, priors = STAN[name]
    model = jaxhlm.LMM(formula, jaxhlm.datasets.load(ref["dataset"]))
    post = model.sample(priors, num_warmup=1000, num_samples=2000, num_chains=4, seed=2)
    summary = post.summary()
    assert post.divergences == 0
    assert (summary["r_hat"] < 1.01).all()
    assert sorted(_stan_name(r) for r in ref["rows"]) == sorted(summary.index)
    for row in ref["rows"]:
        _check_mean_sd(post, summary, _stan_name(row), row["mean"], row["sd"],
                       row["mcse_mean"], row["mcse_sd"])


def test_ranef_draws_and_arviz(monkeypatch):
    """post.ranef(summary=False) gives one b draw per posterior draw; to_arviz gives the
    draws and the sampler's statistics to ArviZ (a test extra), and says what to install
    when arviz is missing."""
    import sys

    import arviz as az   # a test extra: CI must have it
    df = jaxhlm.datasets.load("eight_schools")
    model = jaxhlm.LMM("y ~ 1 + (1 | school)", df, residual_variance="se2")
    post = model.sample(num_warmup=200, num_samples=100, num_chains=2, seed=3)
    draws = post.ranef(summary=False)["school"]
    assert draws.shape == (2, 100, 8, 1)
    assert post.samples["(Intercept)"].shape == (2, 100)
    idata = post.to_arviz()
    assert sorted(idata.posterior.data_vars) == sorted(post.samples)
    assert dict(idata.posterior.sizes) == {"chain": 2, "draw": 100}
    np.testing.assert_array_equal(idata.posterior["(Intercept)"].values, post.samples["(Intercept)"])
    assert int(idata.sample_stats["diverging"].sum()) == post.divergences
    ours = post.summary()
    theirs = az.summary(idata, var_names=["(Intercept)"], kind="stats")
    assert theirs.loc["(Intercept)", "mean"] == pytest.approx(ours.loc["(Intercept)", "mean"], abs=1e-3)
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(jaxhlm.JaxhlmError, match="pip install"):
        post.to_arviz()
