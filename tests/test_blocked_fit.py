"""jaxhlm.blocked_fit: Gaussian LMMs of crossed designs fitted on the host by their blocked factor.

Pinned by exact identities and against the compiled programs: the host's criterion, its
closed-form gradient and its estimates at a given theta equal the compiled kernel's
(JAX's objective, its autodiff gradient, ``GAUSSIAN.conditional``) for the pairs' and the
dense Schur complement, REML and ML, weights, vector-valued and uncorrelated terms; the
starting curvature equals its formula evaluated with dense n x n matrices; and the fits
equal the compiled fits to the optimisers' tolerance.  Every lme4 reference fit, forced
through this path, matches lme4 at ``test_reference.py``'s tolerances (InstEval's is
there: its own test takes this path).
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from conftest import reference_names
from jaxhlm import Options, blocks as _blocks
from jaxhlm.blocked_fit import BlockedFit, _term1_columns
from jaxhlm.fitting import trace_count


def _crossed(seed=0, subjects=30, items=10, per=6):
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(subjects), per)
    item = np.concatenate([rng.choice(items, per, replace=False) for _ in range(subjects)])
    x, z = rng.normal(size=subj.size), rng.normal(size=subj.size)
    y = (1 + x + rng.normal(size=subjects)[subj] + rng.normal(size=items)[item] * (1 + 0.5 * x)
         + rng.normal(size=subj.size))
    return pd.DataFrame(dict(y=y, x=x, z=z, subj=[f"s{i}" for i in subj], item=[f"i{i}" for i in item],
                             w=rng.uniform(0.5, 2.0, subj.size)))


FORMULAS = {
    "scalar": ("y ~ x + (1 | subj) + (1 | item)", {}),
    "vector_rest": ("y ~ x + (1 | subj) + (x | item)", {}),
    "uncorrelated": ("y ~ x + (x | subj) + (x + z || item)", {}),
    "weights": ("y ~ x + (x | subj) + (1 | item)", {"weights": "w"}),
    "no_intercept": ("y ~ 0 + x + (1 | subj) + (1 | item)", {}),
    "one_term": ("y ~ x + (x | subj)", {}),          # no rest of random columns (m_rand = 0)
}
FITTED = [name for name in FORMULAS if name != "one_term"]   # (one term: the groups' fit, jaxhlm.group_fit)


def _host(model, pairs):
    st, blocks = _blocks.build(model.frame, pairs=pairs)
    return BlockedFit(blocks, st, None if blocks.pair_out.size else _term1_columns(blocks, st.m))


def _points(model, seed):
    rng = np.random.default_rng(seed)
    st = model.structure
    return [st.theta_start() * rng.uniform(0.4, 1.6, st.ntheta) + 0.2 * rng.normal(size=st.ntheta)
            for _ in range(2)]


@pytest.mark.parametrize("pairs", [True, False])
@pytest.mark.parametrize("name", list(FORMULAS))
def test_criterion_gradient_and_estimates_equal_the_kernels(name, pairs):
    import jax
    import jax.numpy as jnp
    from jaxhlm.families import GAUSSIAN

    formula, kw = FORMULAS[name]
    model = jaxhlm.LMM(formula, _crossed(), **kw)
    host = _host(model, pairs)
    for theta in _points(model, 1):
        for reml in (True, False):
            value, grad = host.evaluate(theta[None], [0], reml)
            assert value[0] == pytest.approx(model.objective(theta, reml), rel=1e-12)
            ref = jax.grad(lambda t: GAUSSIAN.objective(t, model.blocks, model.structure, reml))(jnp.asarray(theta))
            np.testing.assert_allclose(grad[0], np.asarray(ref), rtol=1e-9, atol=1e-9 * np.abs(ref).max())
            got = host.one_estimate(theta, reml, variances=True)
            want = jax.tree_util.tree_map(np.asarray, GAUSSIAN.conditional(jnp.asarray(theta), model.blocks,
                                                                           model.structure, reml))
            np.testing.assert_allclose(got.beta, want.beta, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got.vcov, want.vcov, rtol=1e-10, atol=1e-14)
            assert float(got.sigma) == pytest.approx(float(want.sigma), rel=1e-12)
            for a, b in zip(got.b + got.b_var, want.b + want.b_var):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def _dense_average_information(model, theta, reml):
    """The curvature's formula with dense n x n matrices: V = I + Z Λ Λ'Z' (relative),
    P = V^{-1} - V^{-1}X (X'V^{-1}X)^{-1} X'V^{-1}, ε = P y, w_s = Z D_s Z' ε and
    H_st = (dof / r^2) w_s'P w_t - (dof / r^4)(ε'w_s)(ε'w_t), D_s = ∂ΛΛ'/∂θ_s by central
    differences (exact: ΛΛ' is quadratic in θ); prior weights w scale the rows by √w."""
    frame, st = model.frame, model.structure
    n = frame.nobs
    Zs = []
    for term in frame.terms:
        Z = np.zeros((n, term.spec.q))
        for a in range(term.spec.p):
            Z[np.arange(n), term.codes * term.spec.p + a] = term.Z[:, a]
        Zs.append(Z)
    root = np.sqrt(np.ones(n) if frame.weights is None else np.asarray(frame.weights, dtype=float))[:, None]
    Z, X, y = np.hstack(Zs) * root, frame.X * root, frame.y * root[:, 0]

    def cov(th):
        blocks = [np.kron(np.eye(t.nlevels), lam @ lam.T) for t, lam in
                  zip(st.terms, [np.asarray(v) for v in st.lambdas(th)])]
        out = np.zeros((Z.shape[1],) * 2)
        at = 0
        for blk in blocks:
            out[at:at + blk.shape[0], at:at + blk.shape[0]] = blk
            at += blk.shape[0]
        return out

    V = np.eye(n) + Z @ cov(theta) @ Z.T
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
    eps = P @ y
    r2 = y @ P @ y
    W = []
    for s in range(theta.size):
        h = np.zeros(theta.size)
        h[s] = 1e-3
        W.append(Z @ ((cov(theta + h) - cov(theta - h)) / 2e-3) @ Z.T @ eps)
    W = np.array(W)
    dof = n - st.p * reml
    g = W @ eps
    return (dof / r2) * W @ P @ W.T - (dof / r2 ** 2) * np.outer(g, g)


@pytest.mark.parametrize("pairs", [True, False])
@pytest.mark.parametrize("name", ["scalar", "vector_rest", "uncorrelated", "weights", "one_term"])
def test_the_starting_curvature_is_the_average_information(name, pairs):
    formula, kw = FORMULAS[name]
    model = jaxhlm.LMM(formula, _crossed(1, subjects=12, items=5, per=4), **kw)
    host = _host(model, pairs)
    for theta in _points(model, 2):
        for reml in (True, False):
            want = _dense_average_information(model, theta, reml)
            np.testing.assert_allclose(host.curvature(theta, reml), want, rtol=1e-7, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("name", FITTED)
def test_host_fits_equal_compiled_fits(name, reml, fits_agree):
    formula, kw = FORMULAS[name]
    model = jaxhlm.LMM(formula, _crossed(2, subjects=300, items=12, per=4), **kw)   # one group too large
    assert isinstance(model._host_fit, BlockedFit)
    before = trace_count()
    host = model.fit(reml=reml)
    assert trace_count() == before          # nothing compiled
    ref = model.fit(reml=reml, options=Options(method="bfgs"))
    fits_agree(host, ref)
    for a, b in zip(host._b_var, ref._b_var):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    assert host._curvature.shape == (model.structure.ntheta,) * 2 and np.isfinite(host._curvature).all()


def test_a_degenerate_design_fails_with_a_status_not_an_error():
    df = _crossed(3).assign(y=1.0)                  # a constant response: r^2 = 0 at every θ
    res = jaxhlm.LMM("y ~ 1 + (1 | subj) + (1 | item)", df).fit()
    assert res.status != 0 and res.status_name != "converged"


def test_a_crossed_fit_its_conditional_variances_and_summary_import_no_jax(tmp_path):
    path = tmp_path / "crossed.csv"
    _crossed(4, subjects=600, items=40, per=10).to_csv(path, index=False)   # m_rand = 40: variances kept
    script = (
        "import json, sys, jaxhlm, pandas as pd\n"
        "from jaxhlm import kernel\n"
        "kernel.DEFER_VARIANCES_FROM = 8   # left to ranef, as a large fit's\n"
        f"df = pd.read_csv({str(path)!r}, dtype={{'subj': str, 'item': str}})\n"
        "r = jaxhlm.LMM('y ~ x + (x | subj) + (1 | item)', df).fit()\n"
        "deferred = len(r._cond.b_var) == 0\n"
        "ranef = r.ranef\n"
        "r.summary()   # Satterthwaite's table on the host too\n"
        "print(json.dumps({'jax': 'jax' in sys.modules, 'deferred': deferred, 'status': r.status,\n"
        "                  'by': r._fitted_by, 'rows': len(ranef), 'sd': bool((ranef.condsd > 0).all())}))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {"jax": False, "deferred": True, "status": 0, "by": "bfgs on the host", "rows": 2 * 600 + 40,
                   "sd": True}


def test_a_start_that_does_not_converge_is_retried_from_a_probed_curvature(monkeypatch):
    """A starting Hessian 1e9 times too large takes BFGS about 70 iterations; with 20 at
    most, that run stops short and the fit reruns from the probed Hessian, as the compiled
    fit starts."""
    model = jaxhlm.LMM("y ~ x + (x | subj) + (1 | item)", _crossed(2, subjects=300, items=12, per=4))
    ref = model.fit()
    monkeypatch.setattr(BlockedFit, "start_curvature", lambda self, x0, reml: 1e9 * np.eye(x0.shape[1]))
    res = jaxhlm.LMM(model.formula, _crossed(2, subjects=300, items=12, per=4)).fit(options=Options(max_iter=20))
    assert res.status_name == "converged" and res.evaluations > 20
    assert res.objective == pytest.approx(ref.objective, rel=1e-10)


@pytest.mark.parametrize("name", [n for n in reference_names() if n != "insteval_ml"])
def test_every_lme4_reference_through_the_blocked_factor(name, monkeypatch):
    """Every lme4 reference fit, forced through the blocked factor even where the groups'
    fit would take it (its starting curvature on one grouping factor, nested factors, a
    boundary fit), to the reference tests' tolerances."""
    from test_reference import _fit, check_against_lme4

    from jaxhlm import group_fit

    monkeypatch.setattr(group_fit.GroupFit, "of", classmethod(lambda cls, model: None))
    ref, res = _fit(name)
    assert isinstance(res._model._host_fit, BlockedFit)
    check_against_lme4(ref, res)


def test_a_model_of_one_term_and_no_fixed_effects():
    """``y ~ 0 + (1 | g)``: no rest and no X, so term 1 meets no COO entries; the compiled
    kernel, the blocked factor and the groups' fit give one criterion (the empty entries'
    sums are floats, not NumPy's integer bincount of nothing, which truncated Z_1'y)."""
    model = jaxhlm.LMM("y ~ 0 + (1 | subj)", _crossed(5))
    assert model._host_blocks.coo_val.dtype == np.float64
    host = _host(model, True)
    for theta in (np.array([0.7]), np.array([1.3])):
        for reml in (True, False):
            want = model.objective(theta, reml)
            assert host.criterion(theta, reml) == pytest.approx(want, rel=1e-12)
            assert model._group_fit.criterion(theta, reml) == pytest.approx(want, rel=1e-12)
    fits = [model.fit(reml=False), model.fit(reml=False, options=Options(method="bfgs"))]
    assert fits[0].objective == pytest.approx(fits[1].objective, rel=1e-9)


def test_an_inverse_that_lapack_calls_singular_is_a_missing_gradient_not_an_error(monkeypatch):
    """At an extreme θ NumPy's LU of a triangular block of the factor may call it singular;
    the criterion stays, its gradient is NaN (a status for the optimiser), no exception."""
    model = jaxhlm.LMM("y ~ x + (1 | subj) + (1 | item)", _crossed(6))
    host = _host(model, True)
    theta = np.array([0.8, 1.1])
    want = model.objective(theta, True)
    calls = []

    def singular(a):
        calls.append(a.shape)
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(np.linalg, "inv", singular)
    value, grad = host.evaluate(theta[None], [0], True)
    assert calls and value[0] == pytest.approx(want, rel=1e-12)
    assert np.isnan(grad).all()

