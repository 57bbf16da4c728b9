"""Probe: the optimiser strategies side by side (Newton, BFGS, optax's L-BFGS) on single
fits: objective reached, iterations, gradient evaluations, warm time (median of
``--reps`` calls, ``block_until_ready``), first call (compilation included).

    python benchmarks/probes/optimizers.py [--reps 5] [--insteval]
"""

import argparse
import statistics
import time

import jaxhlm  # noqa: I001  (first: it quiets XLA's log before jax loads)

import jax
import numpy as np
import pandas as pd
from jaxhlm.fitting import Options, fit_blocks


def _wide(p: int, groups: int = 60, per: int = 20, seed: int = 0) -> tuple[str, pd.DataFrame]:
    """A random-slopes model with p - 1 covariates: theta has p (p + 1) / 2 elements."""
    rng = np.random.default_rng(seed)
    n = groups * per
    g = np.repeat(np.arange(groups), per)
    X = rng.normal(size=(n, p - 1))
    L = np.tril(rng.normal(scale=0.4, size=(p, p))) + np.eye(p)
    b = rng.normal(size=(groups, p)) @ L.T
    Z = np.column_stack([np.ones(n), X])
    y = Z @ np.ones(p) + np.sum(Z * b[g], axis=1) + rng.normal(size=n)
    names = [f"x{j}" for j in range(1, p)]
    df = pd.DataFrame(X, columns=names).assign(y=y, g=g)
    rhs = " + ".join(names)
    return f"y ~ {rhs} + ({rhs} | g)", df


def cases(insteval: bool):
    out = [("sleepstudy", "Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")),
           ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", jaxhlm.datasets.load("Penicillin"))]
    for p in (4, 8):
        formula, df = _wide(p)
        out.append((f"random slopes, p = {p}", formula, df))
    if insteval:
        out.append(("InstEval ML", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
                    jaxhlm.datasets.load("InstEval")))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--insteval", action="store_true")
    args = ap.parse_args()
    print(f"device: {jax.devices()[0]}, jax {jax.__version__}")
    for name, formula, df in cases(args.insteval):
        model = jaxhlm.LMM(formula, df)
        reml = not name.endswith("ML")
        print(f"\n{name}: {formula} (ntheta = {model.structure.ntheta})")
        for method in ("newton", "bfgs", "lbfgs"):
            opts = Options(method=method)
            began = time.perf_counter()
            out = jax.block_until_ready(fit_blocks(model.blocks, model.structure, reml, opts, model.theta_start))
            first = time.perf_counter() - began
            times = []
            for _ in range(args.reps):
                began = time.perf_counter()
                jax.block_until_ready(fit_blocks(model.blocks, model.structure, reml, opts, model.theta_start))
                times.append(time.perf_counter() - began)
            o = out.opt
            print(f"  {method:7s} objective {float(o.fun):.10f}  {jaxhlm.Status(int(o.status)).name.lower():>14s}  "
                  f"iterations {int(o.iterations):3d}  gradients {int(o.evaluations):4d}  "
                  f"warm {1e3 * statistics.median(times):8.2f} ms  first {first:6.2f} s")


if __name__ == "__main__":
    main()
