"""Acceptance 2: the blocked kernel equals dense linear algebra, and its gradient is right.

On small problems, Z, Lambda and V = I + Z Lambda Lambda' Z' are formed densely (here
only, in the test) and compared with the kernel at arbitrary theta:

- ML: -2 x the multivariate-normal log-density of y at the profiled beta-hat and sigma-hat;
- REML: log|V| + log|X'V^{-1}X| + (n-p)(1 + log(2 pi r'V^{-1}r / (n-p))), lme4's REML
  criterion (-2 x the REML log-likelihood, without the constant log|X'X|);
- conditional modes b = Lambda Lambda' Z' V^{-1}(y - X beta) and covariances
  sigma^2 Lambda (Lambda'Z'Z Lambda + I)^{-1} Lambda'.

Both sides are float64 computations of the same quantity, so they agree to ~1e-10.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import jaxhlm
from jaxhlm.families.gaussian import conditional, objective
from jaxhlm.kernel import lambdas, variances_deferred


def _simulated(seed=0):
    """Crossed and nested factors, and a vector-valued term that is not the first one."""
    rng = np.random.default_rng(seed)
    n = 240
    df = pd.DataFrame({
        "g1": rng.integers(0, 30, n).astype(str),   # most levels: term 1
        "g2": rng.integers(0, 7, n).astype(str),    # (x | g2): p = 2, after term 1
        "g3": rng.integers(0, 4, n).astype(str),
        "x": rng.normal(size=n),
        "w": rng.normal(size=n),
    })
    df["y"] = 1 + 0.5 * df.x + rng.normal(size=n) + rng.normal(size=30)[df.g1.astype(int)]
    df["f"] = pd.Categorical(np.random.default_rng(seed + 1).integers(0, 3, n).astype(str))
    return df


MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", None),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", None),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", None),
    ("simulated", "y ~ x + w + (1 | g1) + (x | g2) + (0 + w | g3)", _simulated),
    ("simulated", "y ~ x + (x | g1) + (1 | g2:g3)", _simulated),
    # structured covariances (jaxhlm.covariance): term 1 and later terms
    ("simulated", "y ~ x + cs(0 + f | g1) + ar1(0 + f | g2) + homcs(0 + f | g3)", _simulated),
]


def _data(name, make):
    return make() if make else jaxhlm.datasets.load(name)


def dense_parts(model, theta):
    """Z (n x q), Lambda (q x q), X, y formed densely, in the kernel's term order."""
    frame, st = model.frame, model.structure
    lams = [np.asarray(l) for l in lambdas(jnp.asarray(theta), st)]
    Zs, Ls = [], []
    for term, lam in zip(frame.terms, lams):
        ell, p = term.spec.nlevels, term.spec.p
        Z = np.zeros((frame.nobs, ell * p))
        for c in range(p):
            Z[np.arange(frame.nobs), term.codes * p + c] = term.Z[:, c]
        Zs.append(Z)
        Ls.append(np.kron(np.eye(ell), lam))
    from scipy.linalg import block_diag

    return np.hstack(Zs), block_diag(*Ls), frame.X, frame.y


def dense_gls(model, theta):
    """V = I + Z Lambda Lambda' Z', its inverse, and the GLS fit beta-hat, r = y - X beta-hat."""
    Z, Lam, X, y = dense_parts(model, theta)
    V = np.eye(X.shape[0]) + Z @ Lam @ Lam.T @ Z.T
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    return Z, Lam, X, y, V, Vi, beta, y - X @ beta


def dense_criterion(model, theta, reml):
    Z, Lam, X, y, V, Vi, beta, r = dense_gls(model, theta)
    n, p = X.shape
    q = r @ Vi @ r
    if not reml:
        sigma2 = q / n
        return -2 * stats.multivariate_normal(X @ beta, sigma2 * V).logpdf(y)
    _, ld_v = np.linalg.slogdet(V)
    _, ld_x = np.linalg.slogdet(X.T @ Vi @ X)
    return ld_v + ld_x + (n - p) * (1 + np.log(2 * np.pi * q / (n - p)))


def _thetas(st, rng, k=3):
    lower = st.theta_lower()
    out = []
    for _ in range(k):
        t = rng.uniform(0.1, 1.5, lower.size)
        t = np.where(lower == 0, t, rng.normal(0, 0.5, lower.size))
        out.append(t)
    return out


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("name,formula,make", MODELS)
def test_objective_equals_dense_density(name, formula, make, reml):
    model = jaxhlm.LMM(formula, _data(name, make))
    rng = np.random.default_rng(1)
    for theta in _thetas(model.structure, rng):
        ours = model.objective(theta, reml=reml)
        assert ours == pytest.approx(dense_criterion(model, theta, reml), rel=1e-10)


@pytest.mark.parametrize("name,formula,make", MODELS)
def test_conditional_modes_equal_dense(name, formula, make):
    model = jaxhlm.LMM(formula, _data(name, make))
    theta = _thetas(model.structure, np.random.default_rng(2), 1)[0]
    Z, Lam, X, y, V, Vi, beta, r = dense_gls(model, theta)
    n, p = X.shape
    sigma2 = r @ Vi @ r / (n - p)
    b = Lam @ Lam.T @ Z.T @ Vi @ r
    P = Lam.T @ Z.T @ Z @ Lam + np.eye(Lam.shape[0])
    bvar = sigma2 * Lam @ np.linalg.inv(P) @ Lam.T
    cond = conditional(jnp.asarray(theta), model.blocks, model.structure, True)
    np.testing.assert_allclose(cond.beta, beta, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cond.sigma ** 2, sigma2, rtol=1e-9)
    np.testing.assert_allclose(cond.vcov, sigma2 * np.linalg.inv(X.T @ Vi @ X), rtol=1e-8, atol=1e-12)
    ours_b = np.concatenate([np.asarray(bk).reshape(-1) for bk in cond.b])
    np.testing.assert_allclose(ours_b, b, rtol=1e-8, atol=1e-9 * np.abs(b).max())
    ours_var = np.concatenate([np.asarray(v)[:, np.arange(v.shape[1]), np.arange(v.shape[1])].reshape(-1)
                               for v in cond.b_var])
    np.testing.assert_allclose(ours_var, np.diag(bvar), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("name,formula,make", MODELS)
def test_gradient_matches_finite_differences(name, formula, make, reml):
    """Autodiff gradient (custom adjoint of the dense step included) vs central differences.

    With h = 1e-5 the central difference's error is O(h^2 f''') + O(eps f / h), about
    1e-7 relative here; the tolerance is 1e-5 relative to (1 + |g|).
    """
    model = jaxhlm.LMM(formula, _data(name, make))
    st = model.structure
    fun = jax.jit(lambda t: objective(t, model.blocks, st, reml))
    theta = jnp.asarray(_thetas(st, np.random.default_rng(3), 1)[0])
    g = np.asarray(jax.grad(fun)(theta))
    h = 1e-5
    fd = np.array([(fun(theta.at[i].add(h)) - fun(theta.at[i].add(-h))) / (2 * h)
                   for i in range(theta.size)])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)


def test_objective_vmaps_over_theta(sleepstudy):
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)
    thetas = np.stack(_thetas(model.structure, np.random.default_rng(4), 5))
    batched = jax.vmap(lambda t: objective(t, model.blocks, model.structure, True))(jnp.asarray(thetas))
    looped = [model.objective(t) for t in thetas]
    np.testing.assert_allclose(batched, looped, rtol=1e-13)


def test_no_dense_first_term_matrices():
    """No array of the blocks grows like n x q or q_1 x q_1 (InstEval-sized check on sizes)."""
    model = jaxhlm.LMM("y ~ x + w + (1 | g1) + (x | g2) + (0 + w | g3)", _simulated())
    q1 = model.structure.terms[0].q
    for name, arr in model.blocks._asdict().items():
        assert arr.size < model.nobs * q1 or name.startswith("pair"), name
    assert model.blocks.Arr.shape == (model.structure.m,) * 2
    assert model.structure.m == 7 * 2 + 4 + 3 + 1


@pytest.mark.parametrize("n", [5, 40, 300, 515, 600])   # by blocks of columns from 512
def test_inverse_from_cholesky_equals_numpy(n):
    """(L L')^{-1} (linalg.inv_from_cholesky: the dense block's inverse in the gradient and
    the conditional covariances) equals NumPy's inverse, batched too, and is exactly
    symmetric."""
    from jaxhlm.linalg import inv_from_cholesky

    rng = np.random.default_rng(n)
    a = rng.normal(size=(2, n, n))
    a = a @ np.swapaxes(a, 1, 2) + n * np.eye(n)
    got = jax.jit(inv_from_cholesky)(jnp.asarray(np.linalg.cholesky(a)))
    np.testing.assert_allclose(got, np.linalg.inv(a), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(got, np.swapaxes(got, 1, 2))


def test_written_out_and_lapack_factors_agree():
    """The factor and solves written out (blocks, n <= UNROLL) equal LAPACK's (one dense
    matrix above DENSE_UNROLL), batched, for every size where the two paths differ; a
    matrix that is not positive definite gives NaN either way."""
    from jaxhlm import linalg

    rng = np.random.default_rng(7)
    for n in range(linalg.DENSE_UNROLL + 1, linalg.UNROLL + 1):
        a = rng.normal(size=(3, n, n))
        a = a @ np.swapaxes(a, 1, 2) + np.eye(n)
        b = rng.normal(size=(3, n, 2))
        for fn, args in ((linalg.cholesky, (a,)), (linalg.solve_lower, (np.linalg.cholesky(a), b)),
                         (linalg.solve_upper_t, (np.linalg.cholesky(a), b))):
            written = fn(*map(jnp.asarray, args))
            lapack = fn(*map(jnp.asarray, args), dense=True)
            np.testing.assert_allclose(written, lapack, rtol=1e-10, atol=1e-12)
        bad = -np.eye(n)
        assert np.isnan(linalg.cholesky(jnp.asarray(bad))).any()
        assert np.isnan(linalg.cholesky(jnp.asarray(bad), dense=True)).any()


def test_a_large_fit_leaves_conditional_variances_to_ranef():
    """A fit whose rest has ``DEFER_VARIANCES_FROM`` random rows or more leaves b's
    conditional covariances out of its program; ``ranef`` computes them on first use, equal
    to the dense sigma^2 Lambda (Lambda'Z'Z Lambda + I)^{-1} Lambda' (lme4's condVar)."""
    rng = np.random.default_rng(5)
    n = 2400
    df = pd.DataFrame({"g1": rng.integers(0, 600, n).astype(str), "g2": rng.integers(0, 540, n).astype(str),
                       "x": rng.normal(size=n)})
    df["y"] = (1 + 0.5 * df.x + rng.normal(size=600)[df.g1.astype(int)]
               + 0.7 * rng.normal(size=540)[df.g2.astype(int)] + rng.normal(size=n))
    model = jaxhlm.LMM("y ~ x + (1 | g1) + (1 | g2)", df)
    assert variances_deferred(model.bucketed.structure)
    res = model.fit()
    assert res._cond.b_var == [] and len(res._cond.b) == 2
    Z, Lam, X, y = dense_parts(model, res.theta)
    P = Lam.T @ Z.T @ Z @ Lam + np.eye(Lam.shape[0])
    bvar = res.sigma ** 2 * Lam @ np.linalg.inv(P) @ Lam.T
    np.testing.assert_allclose(res.ranef.condsd.to_numpy() ** 2, np.diag(bvar), rtol=1e-8)
