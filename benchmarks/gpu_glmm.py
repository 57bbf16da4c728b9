"""GLMM cells of ``benchmarks/gpu.sh``: fits and a bootstrap on JAX's default device.

    python benchmarks/gpu_glmm.py OUTDIR [--nsim 10000]

Steps, each timed (first call: compilation included; warm: a second call) and written to
OUTDIR/glmm.json as soon as done (a step killed by the deadline leaves the earlier ones):

1. cbpp, Laplace: -2 log L against lme4's with ``tolPwrss = 1e-13`` (184.052563743, to 1e-7);
2. VerbAgg (7,584 Bernoulli rows, crossed), Laplace: against the CPU's 8151.399720 (1e-6);
3. cbpp's parametric bootstrap, ``--nsim`` refits (chunks of jaxhlm's accelerator size).

Exit 0 when every finished comparison passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "reference" / "glmm" / "data"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"
EXPECTED = {"cbpp": (184.052563743, 1e-7), "VerbAgg": (8151.399720, 1e-6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--nsim", type=int, default=10_000)
    args = ap.parse_args()
    import jax
    import pandas as pd

    import jaxhlm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "steps": {}}
    ok = True

    def save():
        (out / "glmm.json").write_text(json.dumps(report, indent=1))

    def timed(fn):
        t = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - t

    verbagg = pd.read_csv(DATA / "VerbAgg.csv.gz")
    for c in ["Gender", "btype", "situ", "id", "item"]:
        verbagg[c] = pd.Categorical(verbagg[c].astype(str))
    cases = {"cbpp": (CBPP, jaxhlm.datasets.load("cbpp")), "VerbAgg": (VERBAGG, verbagg)}
    for name, (formula, data) in cases.items():
        res, first = timed(lambda: jaxhlm.GLMM(formula, data, family="binomial").fit())
        _, warm = timed(lambda: jaxhlm.GLMM(formula, data, family="binomial").fit())
        want, tol = EXPECTED[name]
        passed = abs(res.objective - want) <= tol * abs(want)
        ok &= passed
        report["steps"][name] = {"first_s": first, "warm_s": warm, "objective": res.objective,
                                 "expected": want, "pass": passed}
        print(f"{name}: first {first:.2f} s, warm {warm:.4f} s, -2logL {res.objective:.9f} "
              f"({'pass' if passed else 'FAIL'})", flush=True)
        save()
        if name == "cbpp":
            cbpp_fit = res
    boot, first = timed(lambda: cbpp_fit.bootstrap(args.nsim, seed=1))
    boot2, warm = timed(lambda: cbpp_fit.bootstrap(args.nsim, seed=2))
    report["steps"]["bootstrap"] = {"nsim": args.nsim, "first_s": first, "warm_s": warm,
                                    "converged": int(boot.converged.sum() + boot2.converged.sum())}
    print(f"cbpp bootstrap of {args.nsim}: first {first:.2f} s, warm {warm:.2f} s "
          f"({args.nsim / warm:,.0f} refits/s)", flush=True)
    save()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
