"""What a first call that compiles nothing would cost: the REML criterion of a model with one
random-effects term evaluated by NumPy on jaxhlm's blocks (the same blocked factor as
:mod:`jaxhlm.kernel`, written with NumPy's batched linear algebra), minimised by scipy's
L-BFGS-B with a finite-difference gradient, in a process that never imports JAX; then,
for comparison, jaxhlm's own first fit (compilation included, empty cache) and its criterion
at the NumPy optimum.  Evidence for a design decision (issues 12, 13 and 15: first calls on
an empty cache), not a feature.

    JAXHLM_COMPILATION_CACHE=$(mktemp -d) python benchmarks/probes/numpy_first_call.py

The criterion (Bates et al. 2015, J. Stat. Softw. 67(1), eq. 41): for term 1's levels j,
C_j = chol(lambda' A11_j lambda + I) and B_j = C_j^{-1} lambda' [A_1r^(j)  Z_1j'y]; the rest's
matrix S = [X y]'[X y] - sum_j B_j' B_j has the Cholesky factor whose leading p x p block
gives log|R_X|^2 and whose last diagonal element squared is r_yy^2; log|L_theta|^2 =
2 sum_j log|C_j|.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2]
MODELS = [("Exam", "normexam ~ standLRT + schgend + (standLRT | school)",
           HERE / "tests" / "reference" / "inference" / "data" / "Exam.csv.gz", {"school": str, "schgend": str}),
          ("sleepstudy", "Reaction ~ Days + (Days | Subject)", None, None)]


def reml_criterion(theta, lam_of, A11, A1r, Arr, n, p):
    """The REML criterion at theta from the blocks (module docstring); NumPy only."""
    lam = lam_of(theta)
    q = lam.shape[0]
    C = np.linalg.cholesky(np.einsum("ba,jbc,cd->jad", lam, A11, lam) + np.eye(q))
    B = np.linalg.solve(C, np.einsum("ba,jbm->jam", lam, A1r))      # C_j^{-1} lambda' A_1r^(j)
    S = Arr - np.einsum("jam,jan->mn", B, B)
    L = np.linalg.cholesky(S)
    d = np.log(np.diagonal(L))
    logdet_theta = 2.0 * np.sum(np.log(np.diagonal(C, axis1=1, axis2=2)))
    pwrss = L[-1, -1] ** 2
    dof = n - p
    return logdet_theta + 2.0 * np.sum(d[:p]) + dof * (1.0 + np.log(2.0 * np.pi * pwrss / dof))


def main() -> None:
    t0 = time.perf_counter()
    import jaxhlm
    import pandas as pd
    from scipy import optimize

    for name, formula, path, dtype in MODELS:
        df = jaxhlm.datasets.load(name) if path is None else pd.read_csv(path, dtype=dtype)
        t = time.perf_counter()
        model = jaxhlm.LMM(formula, df)
        b, st = model.blocks, model.structure
        (term,) = st.terms
        ell, q, m = term.nlevels, term.p, st.m
        A1r = np.zeros((ell, q, m))   # the COO entries densely, y's column last
        np.add.at(A1r, (b.coo_level, slice(None), b.coo_row), b.coo_val)
        A1r[:, :, m - 1] = b.zy1
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))   # theta: lambda's lower triangle column by column (lme4's)
        tri = (rows[order], cols[order])

        def lam_of(theta):
            lam = np.zeros((q, q))
            lam[tri] = theta
            return lam

        def crit(theta):
            return reml_criterion(theta, lam_of, b.A11, A1r, b.Arr, float(b.nobs), st.p)

        build = time.perf_counter() - t
        theta0 = np.asarray(model.theta_start)
        evals = []
        for _ in range(200):
            s = time.perf_counter()
            crit(theta0)
            evals.append(time.perf_counter() - s)
        t = time.perf_counter()
        lower = [0.0 if r == c else None for r, c in zip(*tri)]
        res = optimize.minimize(crit, theta0, method="L-BFGS-B", bounds=list(zip(lower, [None] * len(lower))),
                                options={"ftol": 1e-15, "gtol": 1e-8, "maxiter": 500})
        fit = time.perf_counter() - t
        jax_loaded = "jax" in sys.modules
        t = time.perf_counter()
        ours = model.fit()
        jaxhlm_fit = time.perf_counter() - t
        at_numpy = model.objective(res.x)
        print(f"{name}: build {build:.3f} s; NumPy criterion {1e6 * np.median(evals):.0f} us per evaluation; "
              f"NumPy fit {fit * 1000:.1f} ms ({res.nfev} evaluations, JAX imported: {jax_loaded}), "
              f"criterion {res.fun:.10f}; jaxhlm's criterion there {at_numpy:.10f}, its fit "
              f"{ours.objective:.10f} in {jaxhlm_fit:.3f} s (compilation included on an empty cache)")
    print(f"process {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
