"""GLMM fits side by side with lme4's glmer (R): cbpp (binomial, 56 rows) and VerbAgg (7,584
Bernoulli responses, crossed (1 | id) + (1 | item)), Laplace; and cbpp's parametric bootstrap.

    python benchmarks/glmm.py [--reps 3] [--nsim 1000] [--r-refits 100]

Each side in fresh processes: the model built and fitted after import and reading the
data, compilation included (jaxhlm with an empty compilation cache, then again on the
cache the first run left), and a second fit in the same process (warm).  R: ``glmer`` with
``glmerControl(optimizer = "bobyqa")``, timed with ``system.time``.  Medians over
``--reps``; ratios R / jaxhlm.

Bootstrap: ``--nsim`` refits of cbpp's model to responses simulated from its fit.  jaxhlm:
``res.bootstrap(nsim)`` in a fresh process after the fit (first call: its compilation
included, empty compilation cache), then again with another seed (warm).  R: lme4's
``refit(m, newresp = simulate(m)[[1]])`` in a loop of ``--r-refits`` (what ``bootMer``
does per replicate), scaled to ``nsim``.  Writes ``benchmarks/results/glmm-DATE.json`` (or ``--out``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from side_by_side import reps_arguments, results_path, run_json

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "reference" / "glmm" / "data"
MODELS = {
    "cbpp": ("cbpp.csv.gz", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial",
             ["herd", "period"]),
    "VerbAgg": ("VerbAgg.csv.gz", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial",
                ["Gender", "btype", "situ", "id", "item"]),
}

JAXHLM = r"""
import sys, time, json
import jaxhlm, pandas as pd
path, formula, family, factors = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
d = pd.read_csv(path)
for c in factors:
    d[c] = pd.Categorical(d[c].astype(str))
t = time.perf_counter(); res = jaxhlm.GLMM(formula, d, family=family).fit(); first = time.perf_counter() - t
t = time.perf_counter(); jaxhlm.GLMM(formula, d, family=family).fit(); warm = time.perf_counter() - t
print(json.dumps({"fit": first, "warm": warm, "objective": res.objective}))
"""

R = r"""
suppressMessages(library(lme4))
a <- commandArgs(TRUE); d <- read.csv(gzfile(a[1]), stringsAsFactors = TRUE)
for (c in strsplit(a[4], ",")[[1]]) d[[c]] <- factor(d[[c]])
fam <- switch(a[3], binomial = binomial(), poisson = poisson())
f <- as.formula(a[2])
t1 <- system.time(m <- glmer(f, d, family = fam, control = glmerControl(optimizer = "bobyqa")))[["elapsed"]]
t2 <- system.time(glmer(f, d, family = fam, control = glmerControl(optimizer = "bobyqa")))[["elapsed"]]
cat(jsonlite::toJSON(list(fit = t1, warm = t2, objective = -2 * as.numeric(logLik(m))), auto_unbox = TRUE, digits = NA), "\n")
"""


JAXHLM_BOOT = r"""
import sys, time, json
import jaxhlm, pandas as pd
nsim = int(sys.argv[1])
d = jaxhlm.datasets.load("cbpp")
res = jaxhlm.GLMM("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial").fit()
t = time.perf_counter(); b = res.bootstrap(nsim, seed=1); first = time.perf_counter() - t
t = time.perf_counter(); b2 = res.bootstrap(nsim, seed=2); warm = time.perf_counter() - t
print(json.dumps({"first": first, "warm": warm, "converged": int(b.converged.sum() + b2.converged.sum())}))
"""

R_BOOT = r"""
suppressMessages(library(lme4))
k <- as.integer(commandArgs(TRUE)[1]); set.seed(1)
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial,
           control = glmerControl(optimizer = "bobyqa"))
ys <- simulate(m, k)
t <- system.time(for (i in seq_len(k)) refit(m, newresp = ys[[i]]))[["elapsed"]]
cat(jsonlite::toJSON(list(per_refit = t / k), auto_unbox = TRUE, digits = NA), "
")
"""


def bootstrap(args) -> dict:
    runs = {"jaxhlm": [], "R (refit loop)": []}
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, JAXHLM_COMPILATION_CACHE=cache)
            runs["jaxhlm"].append(run_json([sys.executable, "-c", JAXHLM_BOOT, str(args.nsim)], env))
        runs["R (refit loop)"].append(run_json(["Rscript", "-e", R_BOOT, str(args.r_refits)]))
    r = statistics.median(x["per_refit"] for x in runs["R (refit loop)"]) * args.nsim
    first = statistics.median(x["first"] for x in runs["jaxhlm"])
    warm = statistics.median(x["warm"] for x in runs["jaxhlm"])
    print(f"cbpp bootstrap, {args.nsim} refits: R refit loop {r:.1f} s (scaled from {args.r_refits}); jaxhlm "
          f"first {first:.2f} s ({r / first:.0f}x), warm {warm:.2f} s ({r / warm:.0f}x)")
    return {"nsim": args.nsim, "r_refits": args.r_refits, "runs": runs,
            "medians": {"R (refit loop), scaled": r, "jaxhlm first": first, "jaxhlm warm": warm}}


def main() -> None:
    args = reps_arguments(__doc__, nsim=1000, r_refits=100)
    results = {"bootstrap": bootstrap(args)}
    for name, (file, formula, family, factors) in MODELS.items():
        argv = [str(DATA / file), formula, family, ",".join(factors)]
        runs = {"R (glmer)": [], "jaxhlm, empty cache": [], "jaxhlm, stored programs": []}
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, JAXHLM_COMPILATION_CACHE=cache)
                runs["jaxhlm, empty cache"].append(run_json([sys.executable, "-c", JAXHLM, *argv], env))
                runs["jaxhlm, stored programs"].append(run_json([sys.executable, "-c", JAXHLM, *argv], env))
            runs["R (glmer)"].append(run_json(["Rscript", "-e", R, *argv]))
        med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
        results[name] = {"medians": med, "runs": runs}
        r = med["R (glmer)"]
        print(f"{name}: {formula}")
        for side, m in med.items():
            ratio = "" if side.startswith("R") else f"   R/jaxhlm first {r['fit'] / m['fit']:.2f}x, warm {r['warm'] / m['warm']:.1f}x"
            print(f"  {side:<26} first fit {m['fit']:8.3f} s   warm {m['warm']:8.4f} s   -2logL {m['objective']:.6f}{ratio}")
    path = results_path(args, "glmm")
    path.write_text(json.dumps({"reps": args.reps, "machine": platform.platform(), "cpus": os.cpu_count(),
                                "results": results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
