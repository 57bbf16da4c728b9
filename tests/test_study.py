"""Simulation studies (``jaxhlm study``): the closed-form power check, reproducibility,
the tests' code paths, config errors, and the simulated design."""

from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import jaxhlm
from jaxhlm.tools import designs, study
from jaxhlm.cli import main
from jaxhlm.tools.configs import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "study"

TINY = """
name = "tiny"
formula = "y ~ condition + (1 | subject)"
nsim = 40
seed = {seed}
[truth]
fixef = {{ "(Intercept)" = 1.0 }}
theta = {{ "subject.(Intercept)" = 0.8 }}
sigma = 1.0
[test]
term = "condition"
method = "{method}"
nboot = 19
[grid]
effects = [0.0, 0.8]
groups = [8]
obs_per_group = [6]
"""


def _tiny(tmp_path, name="tiny.toml", seed=3, method="lrt") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(seed=seed, method=method))
    return path


def _known_variance_se(model, j: int, theta: float, sigma: float) -> float:
    """sqrt([(X' V^-1 X)^-1]_jj), V = sigma^2 (I + theta^2 Z Z'), Z the subject indicators:
    the GLS standard error of coefficient j with the variance components known (dense)."""
    X, codes = model.frame.X, model.frame.terms[0].codes
    Z = np.eye(codes.max() + 1)[codes]
    V = sigma**2 * (np.eye(len(codes)) + theta**2 * Z @ Z.T)
    return float(np.sqrt(np.linalg.inv(X.T @ np.linalg.solve(V, X))[j, j]))


def test_power_agrees_with_the_closed_form(tmp_path):
    """Balanced random intercept, condition within subject (configs/study/closed-form-wald.toml):
    with the variance components known, the Wald z test of delta has power
    Phi(delta/se - z) + Phi(-delta/se - z), z = Phi^-1(0.975), and se^2 = 4 sigma^2 / (n m)
    (the GLS estimator is the within-subject contrast).  The simulated power (2,000 data sets per
    cell, REML fits, estimated variances) must agree within 3.5 Monte Carlo SEs per cell (six
    cells: a false alarm about 0.3% of the time); estimating sigma on 180+ residual df moves the
    exact power (a noncentral t) by at most 0.0021 here, a fifth of one MCSE.  Bias and Wald
    coverage are checked the same way, against 0 and 0.95."""
    config = study.load_study(CONFIGS / "closed-form-wald.toml")
    cells, params = study.run(config, tmp_path, plots=False)
    assert len(cells) == 6 and (cells["n_used"] == config.nsim).all()
    sigma, theta = config.truth.sigma, config.truth.theta["subject.(Intercept)"]
    z = stats.norm.ppf(1 - config.test.level / 2)
    for (g, m), design in cells.groupby(["groups", "obs_per_group"]):
        model = jaxhlm.LMM(config.formula, designs.frame(g, m, 0, config.seed))
        se = _known_variance_se(model, model.frame.fixef_names.index("condition[T.b]"), theta, sigma)
        assert se == pytest.approx(2 * sigma / np.sqrt(g * m), rel=1e-10)
        for _, cell in design.iterrows():
            exact = stats.norm.cdf(cell.effect / se - z) + stats.norm.cdf(-cell.effect / se - z)
            mcse = np.sqrt(exact * (1 - exact) / cell.n_used)
            assert abs(cell.power - exact) <= 3.5 * mcse, (g, cell.effect, cell.power, exact)
            assert abs(cell.bias) <= 3.5 * cell.bias_mcse
            assert abs(cell.coverage - 0.95) <= 3.5 * np.sqrt(0.95 * 0.05 / cell.n_used)
    sd = params[params["parameter"] == "sd(subject:(Intercept))"]
    assert (sd["truth"] == theta * sigma).all()


def test_results_are_reproducible_from_config_and_seed(tmp_path):
    """The same config and seed give the same tables, bit for bit; another seed does not."""
    path = _tiny(tmp_path)
    for out in ("a", "b"):
        assert main(["study", str(path), "--out-dir", str(tmp_path / out), "--no-plots"]) == 0
    for table in ("study-tiny.csv", "study-tiny-parameters.csv"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
    cells = pd.read_csv(tmp_path / "a" / "study-tiny.csv")
    other, _ = study.run(study.load_study(_tiny(tmp_path, "seed4.toml", seed=4)), tmp_path / "c",
                         plots=False)
    assert not np.allclose(cells["bias"], other["bias"])
    # common random numbers: one design's effects share their draws, so the estimator's
    # error (linear in y) is the same in every cell of the design
    assert cells["bias"].iloc[0] == pytest.approx(cells["bias"].iloc[1], abs=1e-6)
    assert cells["power"].iloc[1] > cells["power"].iloc[0]


def test_lrt_matches_a_direct_fit_and_bootstrap_gives_valid_p_values(tmp_path):
    """The LR statistic is the ML deviance difference of single fits; the bootstrap test runs
    (nsim x nboot refits) and rejects no more often than the LRT does by much at effect 0."""
    config = study.load_study(_tiny(tmp_path))
    df = designs.frame(8, 6, 0, config.seed)
    full = jaxhlm.LMM(config.formula, df)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 0), 0)
    Y = designs.simulate(full, [1.0, 0.8], [0.8], 1.0, key, np.arange(3))
    one = jaxhlm.LMM(config.formula, df.assign(y=Y[2])).fit(reml=False)
    null = jaxhlm.LMM(config.null_formula, df.assign(y=Y[2])).fit(reml=False)
    assert null.fixef.index.tolist() == ["(Intercept)"]
    fit, reject, usable = study._test(config, full, jaxhlm.LMM(config.null_formula, df), 1, Y, key,
                                      lambda n: None)
    assert fit.objective[2] == pytest.approx(one.objective, rel=1e-8)
    assert reject[2] == (null.objective - one.objective > stats.chi2.ppf(0.95, 1))

    boot = study.load_study(_tiny(tmp_path, "boot.toml", method="bootstrap"))
    cells, _ = study.run(boot, tmp_path / "boot", plots=False)
    assert (cells["n_used"] >= 38).all() and cells["power"].between(0, 1).all()
    assert cells["power"].iloc[1] > cells["power"].iloc[0]


def test_simulate_reproduces_the_fitted_models_simulate(sleepstudy, monkeypatch):
    """designs.simulate with a fit's parameters and fold_in(key(seed), i) draws what
    res.simulate(nsim, seed) draws (the same simulator and keys), chunked or not, and any index
    subset: equal to rounding (the two programs fuse X beta + ... differently: 1 ulp seen)."""
    res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    want = res.simulate(7, seed=5)
    got = designs.simulate(res._model, res.fixef.to_numpy(), res.theta, res.sigma,
                           jax.random.key(5), np.arange(7))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    from jaxhlm import batch as batch_module

    monkeypatch.setattr(batch_module, "SIMULATE_ELEMENTS", 6 * res.nobs)  # chunks of 2-3 responses, the last padded
    np.testing.assert_allclose(designs.simulate(res._model, res.fixef.to_numpy(), res.theta,
                                                res.sigma, jax.random.key(5), [6, 2]), want[[6, 2]],
                               rtol=1e-14)


def test_design_is_balanced_and_crossed():
    df = designs.frame(4, 6, items=6, seed=0)
    assert len(df) == 24 and list(df.columns) == ["subject", "item", "condition", "arm", "time", "x", "y"]
    assert (df.groupby("subject")["arm"].nunique() == 1).all()               # arms between subjects
    assert (df.groupby("subject")["condition"].value_counts() == 3).all()    # within subject
    assert (df.groupby("item")["condition"].value_counts() == 2).all()       # within item
    assert (df.groupby("subject")["item"].nunique() == 6).all()              # fully crossed
    np.testing.assert_array_equal(designs.frame(4, 6, seed=0)["x"], df["x"])  # x from the seed


@pytest.mark.parametrize("edit,message", [
    (("nsim = 40", "nsim = \"many\""), "'nsim' must be an integer, got 'many' (a string)"),
    (("nboot = 19", "nbot = 19"), "unknown key 'test.nbot' (did you mean 'nboot'?)"),
    (("method = \"lrt\"", "method = \"score\""), "'test.method' must be one of 'wald', 'satterthwaite', 'kenward-roger', 'lrt', 'bootstrap'"),
    (("groups = [8]", "groups = 8"), "'grid.groups' must be an array of integers, got 8"),
    (("groups = [8]", "groups = [1]"), "'grid.groups' must be at least 2, got 1"),
    (("\"(Intercept)\" = 1.0", "Intercept = 1.0"), "truth.fixef: unknown 'Intercept'; missing '(Intercept)'"),
    (("theta = { \"subject.(Intercept)\" = 0.8 }", "theta = { }"), "truth.theta: missing 'subject.(Intercept)'"),
    (("term = \"condition\"", "term = \"x\""), "test.term 'x' must be a fixed-effect term of the formula"),
    (("sigma = 1.0", "sigma = 1.0\nfixef2 = 1"), "unknown key 'truth.fixef2'"),
    (("effects = [0.0, 0.8]", "effects = []"), "'grid.effects' must not be empty"),
    (("effects = [0.0, 0.8]", "effects = [0.0, true]"), "'grid.effects[1]' must be a number, got True (a boolean)"),
    (("(1 | subject)", "(1 | site)"), "does not fit the simulated design with items = 0 (columns: subject, item"),
])
def test_config_errors_name_the_key(tmp_path, capsys, edit, message):
    path = _tiny(tmp_path)
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as err:
        study.load_study(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert main(["study", str(path), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhlm: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


BINARY = """
name = "crt"
formula = "y ~ arm + (1 | subject)"
nsim = 8
seed = 2
[truth]
family = "binomial"
fixef = { "(Intercept)" = -0.5 }
theta = { "subject.(Intercept)" = 0.6 }
[test]
term = "arm"
method = "wald"
[grid]
effects = [0.7]
groups = [10]
obs_per_group = [8]
"""


def test_binary_outcome_study_fits_glmms(tmp_path):
    """family = "binomial": data sets drawn as lme4's simulate draws them (0/1), fitted by
    GLMM.fit_many (batched == looped is pinned in test_glmm.py); Wald z rejections, no sigma row."""
    path = tmp_path / "crt.toml"
    path.write_text(BINARY)
    config = study.load_study(path)
    cells, params = study.run(config, tmp_path / "out", plots=False)
    assert cells["n_used"].iloc[0] == 8 and "sigma" not in set(params["parameter"])
    df = designs.frame(10, 8, 0, config.seed)
    full = study._model(config, config.formula, df)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 0), 0)
    Y = study._simulate(full, [-0.5, 0.7], [0.6], 1.0, key, np.arange(8))
    assert set(np.unique(Y)) <= {0.0, 1.0}
    fit, reject, _ = study._test(config, full, None, 1, Y, key, lambda n: None)
    np.testing.assert_array_equal(reject, np.abs(fit.fixef[:, 1] / fit.fixef_se[:, 1]) > stats.norm.ppf(0.975))
    row = params[params.parameter == "arm[T.treated]"].iloc[0]
    assert row["truth"] == 0.7 and row["mean"] == pytest.approx(fit.fixef[:, 1].mean())
    for edit, message in [(("method = \"wald\"", "method = \"satterthwaite\""), "a t test for Gaussian models"),
                          (("family = \"binomial\"", "family = \"binomial\"\nlink = \"logistic\""),
                           "truth.link 'logistic' is not one of")]:
        path.write_text(BINARY.replace(*edit))
        with pytest.raises(ConfigError, match=message):
            study.load_study(path)


def test_shipped_study_configs_load():
    for path in sorted(CONFIGS.glob("*.toml")):
        assert study.load_study(path).nsim >= 1000


def test_kenward_roger_t_test_study_and_clopper_pearson_intervals(tmp_path):
    """method = "kenward-roger": each data set's t test as lmerTest's summary gives it (the
    batch's p-value of data set 0 equals a single fit's), and each cell's power carries its
    exact binomial interval (scipy's binomtest, Clopper-Pearson)."""
    config = study.load_study(_tiny(tmp_path, method="kenward-roger"))
    df = designs.frame(8, 6, 0, config.seed)
    full = jaxhlm.LMM(config.formula, df)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 0), 0)
    Y = designs.simulate(full, [1.0, 0.8], [0.8], 1.0, key, np.arange(2))
    fit, reject, usable = study._test(config, full, None, 1, Y, key, lambda n: None)
    one = jaxhlm.LMM(config.formula, df.assign(y=Y[0])).fit().coef_table("kenward-roger")
    p = fit.coef_table("kenward-roger")["Pr(>|t|)"].to_numpy().reshape(2, -1)[0, 1]
    assert p == pytest.approx(one["Pr(>|t|)"].iloc[1], rel=1e-4) and reject[0] == (p <= 0.05)
    cells, _ = study.run(config, tmp_path / "kr", plots=False)
    assert cells["power"].iloc[1] > cells["power"].iloc[0]
    for _, cell in cells.iterrows():
        k = round(cell.power * cell.n_used)
        ci = stats.binomtest(k, int(cell.n_used)).proportion_ci(0.95, method="exact")
        assert (cell.power_lower, cell.power_upper) == pytest.approx((ci.low, ci.high), rel=1e-9)
