"""Satterthwaite and Kenward-Roger t and F tests of fixed effects against lmerTest 3.1-3 and
pbkrtest 0.5.2 (lme4 1.1-31, bobyqa), likelihood-ratio tests against lme4, and the
identities behind them.

References: ``tests/reference/inference/*.json``, made by ``../shared/tools/inference.R``
from ``manifest.tsv`` (Oats and Machines from nlme, Exam from mlmRev, saved under
``data/``; sleepstudy and Penicillin are bundled datasets).  Tolerances: estimates, SEs and
t values to 1e-4 relative (two optimisers' optima of the same criterion), df to 2e-3
relative (lmerTest differentiates numerically, numDeriv's Richardson extrapolation).
"""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.inference import deviance, varpar, vcov_beta

REF = Path(__file__).parent / "reference" / "inference"
CASES = ["sleepstudy_inference", "oats", "machines", "exam", "penicillin"]


def _data(name):
    bundled = {"sleepstudy": "sleepstudy", "Penicillin": "Penicillin"}
    if name in bundled:
        return jaxhlm.datasets.load(bundled[name])
    df = pd.read_csv(REF / "data" / f"{name}.csv.gz")
    for col in ("Block", "Variety", "Worker", "Machine", "school", "student", "schgend", "sex"):
        if col in df:
            df[col] = df[col].astype(str)
    return df


@functools.cache
def _fitted(name):
    ref = json.loads((REF / f"{name}.json").read_text())
    return ref, jaxhlm.LMM(ref["formula"], _data(ref["dataset"])).fit()


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return _fitted(request.param)


def _check_coef_table(table, want):
    # R's treatment-contrast names (VarietyVictory) for formulaic's (Variety[T.Victory])
    assert [n.replace("[T.", "").replace("]", "") for n in table.index] == list(want.index)
    want.index = table.index
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    for col in ("Estimate", "Std. Error", "t value"):
        np.testing.assert_allclose(table[col], want[col], rtol=1e-4, err_msg=col)
    np.testing.assert_allclose(table["df"], want["df"], rtol=2e-3, err_msg="df")
    # p-values follow from t and df; where df is large they barely move with it
    np.testing.assert_allclose(table["Pr(>|t|)"], want["Pr(>|t|)"], rtol=2e-2, atol=1e-300)


def test_satterthwaite_table_matches_lmertest(case):
    ref, res = case
    _check_coef_table(res.coef_table(ddf="satterthwaite"), pd.DataFrame(ref["satterthwaite"]).set_index("name"))


ANOVA_CASES = ["oats", "machines", "exam"]   # split-plot, nested, unbalanced with a slope


@pytest.mark.parametrize("name", CASES)
def test_kenward_roger_table_matches_pbkrtest(name):
    """SEs from the adjusted covariance Phi_A and df from pbkrtest's Lb_ddf, as lmerTest's
    summary(m, ddf = "Kenward-Roger"); pbkrtest's arithmetic is exact (no numerical
    derivatives), so df agree to the optimisers' 1e-6, far inside 2e-3."""
    ref, res = _fitted(name)
    _check_coef_table(res.coef_table(ddf="kenward-roger"), pd.DataFrame(ref["kenward_roger"]).set_index("name"))


@pytest.mark.parametrize("name", ANOVA_CASES)
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward-roger"])
def test_type3_anova_matches_lmertest(name, ddf):
    """anova(m, ddf = ...): per term F (scaled by Kenward-Roger's factor), NumDF, DenDF,
    and the mean squares; F and DenDF to 2e-3 relative, as the df."""
    ref, res = _fitted(name)
    table = res.anova(ddf)
    want = pd.DataFrame(ref["anova_" + ddf.replace("-", "_")]).set_index("name")
    assert list(table.index) == list(want.index)
    assert list(table.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    np.testing.assert_array_equal(table["NumDF"], want["NumDF"])
    for col in ("Sum Sq", "Mean Sq", "F value"):
        np.testing.assert_allclose(table[col], want[col], rtol=1e-4, err_msg=col)
    np.testing.assert_allclose(table["DenDF"], want["DenDF"], rtol=2e-3)
    np.testing.assert_allclose(table["Pr(>F)"], want["Pr(>F)"], rtol=2e-2, atol=1e-300)


def test_kenward_roger_df_are_exact_on_a_balanced_split_plot():
    """Oats is a balanced split-plot: nitro is tested within whole plots on 53 df
    (72 - 1 - 3 - 15), Variety between them on 10 (18 whole plots - 6 blocks - 2).
    Kenward-Roger's df reproduce these exactly (Kenward and Roger 1997, section 4)."""
    _ref, res = _fitted("oats")
    np.testing.assert_allclose(res.anova("kenward-roger")["DenDF"], [53.0, 10.0], rtol=1e-7)


def test_kenward_roger_at_a_boundary_fit_matches_pbkrtest():
    """A singular fit (the SD of (1 | g) is 0): pbkrtest's Sigma(gamma) is smooth there but
    chol is not, so the derivatives are taken with Cov_k floored at 1e-6 sigma^2 I
    (kenward_roger.BOUNDARY_FLOOR); SEs and df still agree with pbkrtest to 1e-5."""
    ref = json.loads((REF / "boundary.json").read_text())
    data = pd.read_csv(REF / "data" / "Boundary.csv.gz").astype({"g": str, "Subject": str})
    res = jaxhlm.LMM(ref["formula"], data).fit()
    assert res.singular
    for key, ddf in (("kenward_roger", "kenward-roger"), ("satterthwaite", "satterthwaite")):
        table = res.coef_table(ddf)
        want = pd.DataFrame(ref[key]).set_index("name")
        np.testing.assert_allclose(table["Std. Error"], want["Std. Error"], rtol=1e-5, err_msg=ddf)
        np.testing.assert_allclose(table["df"], want["df"], rtol=1e-5, err_msg=ddf)


def test_kenward_roger_needs_reml():
    ml = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit(reml=False)
    with pytest.raises(jaxhlm.JaxhlmError, match="only available for REML"):
        ml.coef_table(ddf="kenward-roger")


def test_autodiff_derivatives_equal_finite_differences():
    """The Hessian of the deviance and the Jacobian of vcov(beta) that Satterthwaite's df
    reads, by autodiff, against central differences of the functions themselves."""
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    res = model.fit()
    st, blocks = model.structure, model.blocks
    phi = np.asarray(varpar(res.theta, res.sigma, st))
    H = np.asarray(jax.jit(jax.hessian(deviance), static_argnums=(2, 3))(jnp.asarray(phi), blocks, st, True))
    J = np.asarray(jax.jit(jax.jacfwd(lambda p: jnp.diagonal(vcov_beta(p, blocks, st))))(jnp.asarray(phi)))
    h = 1e-4 * (1.0 + np.abs(phi))
    grad = jax.jit(jax.grad(deviance), static_argnums=(2, 3))
    variances = jax.jit(lambda p: jnp.diagonal(vcov_beta(p, blocks, st)))
    for a in range(phi.size):
        e = np.zeros_like(phi)
        e[a] = h[a]
        fd_h = (np.asarray(grad(phi + e, blocks, st, True)) - np.asarray(grad(phi - e, blocks, st, True))) / (2 * h[a])
        np.testing.assert_allclose(H[:, a], fd_h, rtol=1e-5, atol=1e-6 * np.abs(H).max())
        fd_j = (np.asarray(variances(phi + e)) - np.asarray(variances(phi - e))) / (2 * h[a])
        np.testing.assert_allclose(J[:, a], fd_j, rtol=1e-5, atol=1e-8 * np.abs(J).max())


def test_batched_tables_equal_looped_ones_at_the_same_estimates():
    """BatchResult.coef_table (each method's arrays vmapped over a chunk of fits) equals the
    single-fit programs run fit by fit at the batch's own estimates, to 1e-8."""
    from jaxhlm.inference.kenward_roger import KenwardRoger, adjusted, linear_parameters
    from jaxhlm.inference.satterthwaite import Satterthwaite, parts

    df = jaxhlm.datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    model = jaxhlm.LMM(formula, df)
    Y = model.fit().simulate(3, seed=4)
    many = model.fit_many(Y)
    tables = {ddf: many.coef_table(ddf) for ddf in ("satterthwaite", "kenward-roger")}
    one_parts, one_adjusted = jax.jit(parts, static_argnums=(2, 3)), jax.jit(adjusted, static_argnums=2)
    for b in range(len(many)):
        padded = jaxhlm.LMM(formula, df.assign(Reaction=Y[b])).bucketed
        st = padded.structure
        phi = varpar(many.theta[b], many.sigma[b], st)
        gamma = linear_parameters(many.sigma[b], [lam[b] for lam in many.lams], st)
        testers = {"satterthwaite": Satterthwaite(*one_parts(phi, padded.blocks, st, True), many.fixef[b]),
                   "kenward-roger": KenwardRoger(*one_adjusted(gamma, padded.blocks, st), many.fixef[b])}
        for ddf, tester in testers.items():
            var, dof = np.array([tester.t_test(l) for l in np.eye(2)]).T
            got = tables[ddf].loc[b]
            np.testing.assert_allclose(got["Std. Error"], np.sqrt(var), rtol=1e-8, err_msg=ddf)
            np.testing.assert_allclose(got["df"], dof, rtol=1e-8, err_msg=ddf)
    assert list(tables["satterthwaite"].index.names) == ["fit", "coefficient"]


def test_asymptotic_table_and_unknown_ddf():
    res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
    z = res.coef_table(ddf="asymptotic")
    assert list(z.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    np.testing.assert_allclose(z["z value"], res.fixef / res.fixef_se)
    with pytest.raises(jaxhlm.JaxhlmError, match="ddf='containment'.*'satterthwaite'"):
        res.coef_table(ddf="containment")
    with pytest.raises(jaxhlm.JaxhlmError, match="ddf='asymptotic'.*'kenward-roger'"):
        res.anova(ddf="asymptotic")


@pytest.mark.parametrize("name", ["sleepstudy_inference", "oats", "exam", "penicillin"])
def test_likelihood_ratio_test_matches_lme4(name):
    """anova(reduced, full): REML fits refitted by ML, chi-square to 1e-5 (relative, or 1e-5
    absolute for a chi-square near 0), deviances to 1e-7 relative.  (Machines, nested as
    Oats is, matches too; left out to keep the suite's time: its three refits compile
    three programs.)"""
    ref, res = _fitted(name)
    reduced = jaxhlm.LMM(ref["reduced_formula"], _data(ref["dataset"])).fit()
    table = jaxhlm.anova(reduced, res)
    want = ref["lrt"]
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
    assert table["deviance"].iloc[0] == pytest.approx(want["deviance_reduced_ml"], rel=1e-7)
    assert table["deviance"].iloc[1] == pytest.approx(want["deviance_full_ml"], rel=1e-7)
    assert table["Chisq"].iloc[1] == pytest.approx(want["chisq"], rel=1e-5, abs=1e-5)
    assert table["Df"].iloc[1] == want["df"]
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(want["p"], rel=1e-4, abs=1e-8)
    assert jaxhlm.anova(res, reduced).equals(table)          # either order


def test_likelihood_ratio_test_refuses_what_it_cannot_compare():
    df = jaxhlm.datasets.load("sleepstudy")
    full = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
    with pytest.raises(jaxhlm.JaxhlmError, match="different rows: 170 and 180"):
        jaxhlm.anova(jaxhlm.LMM("Reaction ~ 1 + (1 | Subject)", df.iloc[10:]).fit(), full)
    other = df.assign(x=np.arange(len(df)) % 3)
    with pytest.raises(jaxhlm.JaxhlmError, match=r"not nested.*\['x'\]"):
        jaxhlm.anova(jaxhlm.LMM("Reaction ~ x + (1 | Subject)", other).fit(), full)
    with pytest.raises(jaxhlm.JaxhlmError, match=r"not nested.*\(1 \| Days\)"):
        jaxhlm.anova(jaxhlm.LMM("Reaction ~ Days + (1 | Days)", df).fit(), full)


def _dense_kenward_roger(model, gamma):
    """pbkrtest's ``vcovAdj`` written out with the n x n Sigma (its own algorithm, dense
    NumPy): Phi, Phi_A, P_i, W from G_i = Z_k (I (x) E_i) Z_k' and G = I for sigma^2."""
    frame = model.frame
    n, X = frame.nobs, frame.X
    G = []
    for term in frame.terms:
        p, ell = term.spec.p, term.spec.nlevels
        Z = np.zeros((n, ell * p))
        Z[np.arange(n)[:, None], term.codes[:, None] * p + np.arange(p)] = term.Z
        for r, c in term.spec.covariance.linear_entries():
            E = np.zeros((p, p))
            E[r, c] = E[c, r] = 1.0
            G.append(Z @ np.kron(np.eye(ell), E) @ Z.T)
    G.append(np.eye(n))
    Sinv = np.linalg.inv(sum(g * Gi for g, Gi in zip(gamma, G)))
    Phi = np.linalg.inv(X.T @ Sinv @ X)
    P = [-(X.T @ Sinv @ Gi @ Sinv @ X) for Gi in G]
    Q = [[X.T @ Sinv @ Gi @ Sinv @ Gj @ Sinv @ X for Gj in G] for Gi in G]
    k = len(G)
    info = np.array([[np.sum((Gi @ Sinv).T * (Gj @ Sinv)) - 2 * np.sum(Phi * Q[i][j])
                      + np.sum((Phi @ P[i]) * (P[j] @ Phi)) for j, Gj in enumerate(G)]
                     for i, Gi in enumerate(G)])
    W = 2 * np.linalg.inv(info)
    U = sum(W[i, j] * (Q[i][j] - P[i] @ Phi @ P[j]) for i in range(k) for j in range(k))
    return Phi, Phi + 2 * Phi @ U @ Phi, np.stack(P), W


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)",
                                     "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"])
def test_kenward_roger_by_derivatives_equals_pbkrtests_dense_algorithm(formula):
    """The blocked factor's derivatives give pbkrtest's Phi, Phi_A, P_i and W, computed here
    by its own dense n x n algorithm, to 1e-8 (sleepstudy: n = 180)."""
    from jaxhlm.inference.kenward_roger import adjusted, linear_parameters

    model = jaxhlm.LMM(formula, jaxhlm.datasets.load("sleepstudy"))
    res = model.fit()
    gamma = linear_parameters(res.sigma, res._lams, model.structure)
    ours = jax.jit(adjusted, static_argnums=2)(gamma, model.blocks, model.structure)
    for name, a, b in zip(("Phi", "Phi_A", "P", "W"), ours, _dense_kenward_roger(model, gamma)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * np.abs(b).max(), err_msg=name)


def _independent_groups_cases():
    ss = jaxhlm.datasets.load("sleepstudy")
    boundary = pd.read_csv(REF / "data" / "Boundary.csv.gz").astype({"g": str, "Subject": str})
    yield "sleepstudy", jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", ss)
    yield "uncorrelated", jaxhlm.LMM("Reaction ~ Days + (Days || Subject)", ss)
    yield "weights", jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", ss.assign(w=1.0 + np.arange(len(ss)) % 3),
                                weights="w")
    for name in ("oats", "machines", "penicillin"):   # nested; nested with a slope-free term; crossed
        yield name, _fitted(name)[1]._model
    yield "boundary", jaxhlm.LMM(json.loads((REF / "boundary.json").read_text())["formula"], boundary)


@pytest.mark.parametrize("name,model", list(_independent_groups_cases()), ids=lambda x: x if isinstance(x, str) else "")
def test_independent_groups_give_the_compiled_kenward_roger_matrices(name, model):
    """Kenward-Roger's Phi, Phi_A, P_i and W on the host, group by group of Sigma
    (:mod:`jaxhlm.independent_groups`), equal the compiled path's derivatives of
    the blocked factor to 1e-9 and, unweighted, pbkrtest's dense n x n algorithm (at the
    boundary fit both paths floor Cov_k at 1e-6 sigma^2 I, where the compiled path's
    derivatives of chol lose digits: 1e-6 there)."""
    from jaxhlm.inference.kenward_roger import BOUNDARY_FLOOR, adjusted, adjustment, linear_parameters

    res = model.fit()
    groups = model.independent_groups
    assert groups is not None
    gamma = linear_parameters(res.sigma, res._lams, model.structure)
    host = adjustment(*groups.kenward_roger(gamma, BOUNDARY_FLOOR))
    compiled = jax.jit(adjusted, static_argnums=2)(gamma, model.blocks, model.structure)
    tol = 1e-6 if name == "boundary" else 1e-9
    for what, a, b in zip(("Phi", "Phi_A", "P", "W"), host, compiled):
        assert np.max(np.abs(a - np.asarray(b))) <= tol * np.max(np.abs(b)), what
    if name not in ("weights", "boundary"):
        for what, a, b in zip(("Phi", "Phi_A", "P", "W"), host, _dense_kenward_roger(model, gamma)):
            assert np.max(np.abs(a - b)) <= 1e-9 * np.max(np.abs(b)), what


def test_independent_groups_sum_their_rows_in_chunks(monkeypatch):
    """The groups' cross-products, summed a chunk of rows at a time, equal one sum."""
    from jaxhlm import independent_groups

    model = _fitted("machines")[1]._model
    whole = independent_groups.Groups.of(model.frame, model.structure).K
    monkeypatch.setattr(independent_groups, "CHUNK_ROWS", 7)
    np.testing.assert_allclose(independent_groups.Groups.of(model.frame, model.structure).K, whole,
                               rtol=1e-14, atol=1e-12 * np.abs(whole).max())


def test_which_models_fall_into_independent_groups():
    """Oats' plots are nested in its blocks: six groups; a crossed design is one group, taken
    while it is small; a large one, a residual structure or a covariance that is not linear in
    its parameters leaves Kenward-Roger and the profile to their compiled programs."""
    from jaxhlm import independent_groups

    oats = _fitted("oats")[1]._model
    assert independent_groups.group_of_rows(oats.frame).max() == 5
    assert oats.independent_groups.qmax == 1 + 3   # a block and its three plots
    assert _fitted("penicillin")[1]._model.independent_groups.K.shape[0] == 1
    rng = np.random.default_rng(0)
    crossed = pd.DataFrame({"a": rng.integers(0, 60, 600).astype(str), "b": rng.integers(0, 60, 600).astype(str),
                            "y": rng.normal(size=600)})
    assert jaxhlm.LMM("y ~ 1 + (1 | a) + (1 | b)", crossed).independent_groups is None
    ss = jaxhlm.datasets.load("sleepstudy")
    assert jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", ss,
                      correlation=jaxhlm.AR1(group="Subject", time="Days")).independent_groups is None
    assert jaxhlm.LMM("Reaction ~ Days + cs(1 + Days | Subject)", ss).independent_groups is None


def _crossed_for_satterthwaite():
    rng = np.random.default_rng(7)
    subj = np.repeat(np.arange(300), 4)
    item = np.concatenate([rng.choice(12, 4, replace=False) for _ in range(300)])
    x = rng.normal(size=subj.size)
    y = 1 + x + rng.normal(size=300)[subj] + rng.normal(size=12)[item] * (1 + 0.5 * x) + rng.normal(size=subj.size)
    return pd.DataFrame({"y": y, "x": x, "subj": subj.astype(str), "item": item.astype(str)})


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("case", ["sleepstudy", "exam", "crossed"])
def test_satterthwaite_on_the_host_equals_the_compiled_parts(case, reml):
    """A fit on the host (jaxhlm.host_fit: the groups' fit, or the blocked factor for the
    crossed design) reads Satterthwaite's C, J and A from central differences of its
    closed-form deviance gradient: equal to the compiled program's autodiff to the
    differences' truncation (1e-7 relative), so the df to 1e-6."""
    from jaxhlm.inference.satterthwaite import Satterthwaite, host_parts, parts

    if case == "crossed":
        model = jaxhlm.LMM("y ~ x + (1 | subj) + (x | item)", _crossed_for_satterthwaite())
    elif case == "sleepstudy":
        model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy"))
    else:
        ref = json.loads((REF / "exam.json").read_text())
        model = jaxhlm.LMM(ref["formula"], _data(ref["dataset"]))
    res = model.fit(reml=reml)
    assert res._fitted_by == "bfgs on the host"
    st = model.structure
    host = host_parts(model._host_fit, res.theta, res.sigma, reml)
    want = [np.asarray(a) for a in parts(np.asarray(varpar(res.theta, res.sigma, st)), model.blocks, st, reml)]
    for got, ref_, tol in zip(host, want, (1e-10, 1e-7, 1e-7)):
        np.testing.assert_allclose(got, ref_, rtol=tol, atol=tol * np.abs(ref_).max())
    beta = res.fixef.to_numpy()
    for l in np.eye(st.p):
        np.testing.assert_allclose(Satterthwaite(*host, beta).t_test(l), Satterthwaite(*want, beta).t_test(l),
                                   rtol=1e-6)
    assert Satterthwaite.of(res).C == pytest.approx(host[0], rel=1e-12)
