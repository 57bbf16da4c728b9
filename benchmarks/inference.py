"""Inference on one fit side by side with lmerTest/pbkrtest (R): Exam (mlmRev, 4,059 students,
65 schools), ``normexam ~ standLRT + schgend + (standLRT | school)``, REML.

    python benchmarks/inference.py [--reps 3]

Each side runs in fresh processes: fit, then time each call in the same process after the
fit.  jaxhlm runs twice per repetition, with an empty compilation cache (every program
compiled: the first call a user ever makes) and again on the cache that run left (the
stored programs of :mod:`jaxhlm.precompiled`: every later process, any data set of the same
bucket).  R: ``summary(m, ddf = "Kenward-Roger")``, ``anova(m, ddf = "Kenward-Roger")``,
``summary(m)`` (Satterthwaite), ``anova(m)``, ``confint(m)`` (Wald, then profile: lme4's
ML refit included on both sides), each after the fit, timed with
``system.time``; lmerTest caches nothing between them except its Satterthwaite
derivatives, which ``lmer`` computes with the fit (timed with the fit).  Medians over
``--reps``; ratios are R / jaxhlm (above 1: jaxhlm faster).  Writes
``benchmarks/results/inference-DATE.json``.
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
DATA = HERE.parent / "tests" / "reference" / "inference" / "data" / "Exam.csv.gz"
FORMULA = "normexam ~ standLRT + schgend + (standLRT | school)"

JAXHLM = r"""
import sys, time, json
import jaxhlm, pandas as pd
df = pd.read_csv(sys.argv[1], dtype={"school": str, "schgend": str})
out = {}
t = time.perf_counter(); res = jaxhlm.LMM(%(formula)r, df).fit(); out["fit"] = time.perf_counter() - t
for key, call in [("kr_table", lambda: res.coef_table("kenward-roger")),
                  ("kr_anova", lambda: res.anova("kenward-roger")),
                  ("satterthwaite_table", lambda: res.coef_table("satterthwaite")),
                  ("satterthwaite_anova", lambda: res.anova("satterthwaite")),
                  ("wald_confint", lambda: res.confint("wald")),
                  ("profile_confint", lambda: res.confint("profile"))]:
    t = time.perf_counter(); call(); out[key] = time.perf_counter() - t
print(json.dumps(out))
""" % {"formula": FORMULA}

R = r"""
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest)})
d <- read.csv(gzfile(commandArgs(TRUE)[1]), stringsAsFactors = TRUE)
d$school <- factor(d$school)
tm <- function(expr) unname(system.time(expr)[["elapsed"]])
out <- list()
out$fit <- tm(m <- lmerTest::lmer(%(formula)s, data = d, REML = TRUE, control = lmerControl(optimizer = "bobyqa")))
out$kr_table <- tm(summary(m, ddf = "Kenward-Roger"))
out$kr_anova <- tm(anova(m, ddf = "Kenward-Roger"))
out$satterthwaite_table <- tm(summary(m))
out$satterthwaite_anova <- tm(anova(m))
out$wald_confint <- tm(confint(m, method = "Wald"))
out$profile_confint <- tm(suppressMessages(confint(as(m, "lmerMod"), method = "profile", oldNames = FALSE)))
cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
""" % {"formula": FORMULA}


def main() -> None:
    args = reps_arguments(__doc__)
    runs = {"R (lmerTest, pbkrtest)": [], "jaxhlm, empty cache": [], "jaxhlm, stored programs": []}
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, JAXHLM_COMPILATION_CACHE=cache)
            runs["jaxhlm, empty cache"].append(run_json([sys.executable, "-c", JAXHLM, str(DATA)], env))
            runs["jaxhlm, stored programs"].append(run_json([sys.executable, "-c", JAXHLM, str(DATA)], env))
        runs["R (lmerTest, pbkrtest)"].append(run_json(["Rscript", "-e", R, str(DATA)]))
    medians = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    r = medians["R (lmerTest, pbkrtest)"]
    keys = list(r)
    print(f"{'seconds (median of ' + str(args.reps) + ')':<28}" + "".join(f"{k:>21}" for k in keys))
    for side, m in medians.items():
        print(f"{side:<28}" + "".join(f"{m[k]:>21.3f}" for k in keys))
    for side in ("jaxhlm, empty cache", "jaxhlm, stored programs"):
        print(f"{'R / ' + side:<28}" + "".join(f"{r[k] / medians[side][k]:>20.1f}x" for k in keys))
    path = results_path(args, "inference")
    path.write_text(json.dumps({"formula": FORMULA, "reps": args.reps, "machine": platform.platform(),
                                "cpus": os.cpu_count(), "medians": medians, "runs": runs}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
