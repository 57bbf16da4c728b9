"""GLMM fits side by side with lme4's glmer (R): cbpp (binomial, 56 rows) and VerbAgg (7,584
Bernoulli responses, crossed (1 | id) + (1 | item)), Laplace.

    python benchmarks/glmm.py [--reps 3]

Each side in fresh processes: the model built and fitted after import and reading the
data, compilation included (jaxhlm with an empty compilation cache, then again on the
cache the first run left), and a second fit in the same process (warm).  R: ``glmer`` with
``glmerControl(optimizer = "bobyqa")``, timed with ``system.time``.  Medians over
``--reps``; ratios R / jaxhlm.  Writes ``benchmarks/results/glmm-DATE.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from side_by_side import reps_arguments, run_json

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


def main() -> None:
    args = reps_arguments(__doc__)
    results = {}
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
    stamp = datetime.date.today().isoformat()
    path = HERE / "results" / f"glmm-{stamp}.json"
    path.write_text(json.dumps({"reps": args.reps, "machine": platform.platform(), "cpus": os.cpu_count(),
                                "results": results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
