"""Residual AR(1) side by side with nlme (R): a longitudinal design of 3,000 subjects x 8
visits, ``y ~ visit + treat + (1 | id)`` with AR(1) residuals within id, REML.

    python benchmarks/structures.py [--reps 3] [--refits 200] [--r-refits 5]

Data: simulated once per run (seed 1): b_i ~ N(0, 1), e AR(1) with phi = 0.6 and SD 1,
written to a temporary CSV that both sides read.  Each side runs in fresh processes.

- ``fit``: the model built and fitted in the process after import and reading the CSV
  (jaxhlm: ``LMM(..., correlation=AR1("id", "visit")).fit()``, compilation included;
  R: ``lme(y ~ visit + treat, random = ~ 1 | id, correlation = corAR1(form = ~ visit | id))``);
- ``refits``: jaxhlm's ``res.bootstrap(--refits)`` (simulate and refit, one vmapped program,
  compiled in the same process after the fit); R: a loop of ``lme`` refits of responses
  simulated from the fit (b and AR(1) e drawn with ``rnorm`` and ``filter``, not timed).
  nlme takes seconds per refit, so R times ``--r-refits`` of them and the figure is
  scaled to ``--refits`` (stated in the output);
- ``whole``: the jaxhlm process's wall time (import, read, fit) as the shell sees it.

jaxhlm runs with an empty compilation cache (a first-ever call) and again on the cache
that run left.  Medians over ``--reps``; ratios are R / jaxhlm.  Writes
``benchmarks/results/structures-DATE.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from side_by_side import run_json  # noqa: E402

JAXHLM = r"""
import sys, time, json
t0 = time.perf_counter()
import jaxhlm, pandas as pd
df = pd.read_csv(sys.argv[1], dtype={"id": str})
refits = int(sys.argv[2])
out = {"import_and_read": time.perf_counter() - t0}
t = time.perf_counter()
res = jaxhlm.LMM("y ~ visit + treat + (1 | id)", df, correlation=jaxhlm.AR1("id", "visit")).fit()
out["fit"] = time.perf_counter() - t
t = time.perf_counter(); boot = res.bootstrap(refits, seed=1); out["refits"] = time.perf_counter() - t
t = time.perf_counter(); res.bootstrap(refits, seed=2); out["refits_warm"] = time.perf_counter() - t
out["converged"] = int((boot.status == 0).sum())
out["objective"] = res.objective
out["phi"] = res.correlation_parameter
print(json.dumps(out))
"""

R = r"""
suppressMessages({library(nlme); library(jsonlite)})
args <- commandArgs(TRUE)
d <- read.csv(args[1]); d$id <- factor(d$id); k <- as.integer(args[2])
tm <- function(expr) unname(system.time(expr)[["elapsed"]])
out <- list()
out$fit <- tm(m <- lme(y ~ visit + treat, d, random = ~ 1 | id, correlation = corAR1(form = ~ visit | id), method = "REML"))
phi <- as.numeric(coef(m$modelStruct$corStruct, unconstrained = FALSE)); s <- m$sigma
sb <- as.numeric(VarCorr(m)[1, "StdDev"]); mu <- fitted(m, level = 0)
ids <- as.integer(d$id); n_id <- nlevels(d$id)
set.seed(1); total <- 0
for (r in seq_len(k)) {
  e <- unlist(lapply(split(seq_len(nrow(d)), d$id), function(rows)
    as.numeric(stats::filter(rnorm(length(rows), sd = s * sqrt(1 - phi^2)), phi, method = "recursive",
                             init = rnorm(1, sd = s) / phi))))
  d$ystar <- mu + rnorm(n_id, sd = sb)[ids] + e[order(order(d$id))]
  total <- total + tm(lme(ystar ~ visit + treat, d, random = ~ 1 | id, correlation = corAR1(form = ~ visit | id), method = "REML"))
}
out$refit_each <- total / k
out$objective <- -2 * as.numeric(logLik(m)); out$phi <- phi
cat(toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
"""


def simulate(path: Path, subjects: int = 3000, visits: int = 8, phi: float = 0.6, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    e = np.empty((subjects, visits))
    e[:, 0] = rng.normal(size=subjects)
    for t in range(1, visits):
        e[:, t] = phi * e[:, t - 1] + np.sqrt(1 - phi ** 2) * rng.normal(size=subjects)
    treat = np.repeat(rng.integers(0, 2, subjects), visits)
    visit = np.tile(np.arange(visits), subjects)
    y = 1 + 0.5 * visit + 0.3 * treat + np.repeat(rng.normal(size=subjects), visits) + e.reshape(-1)
    ids = np.repeat(np.arange(subjects), visits)
    with open(path, "w") as f:
        f.write("id,visit,treat,y\n")
        for i, v, t, value in zip(ids.tolist(), visit.tolist(), treat.tolist(), y.tolist()):
            f.write(f"{i},{v},{t},{value!r}\n")


def _run(cmd, env=None) -> tuple[dict, float]:
    t = time.perf_counter()
    out = run_json(cmd, env)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--refits", type=int, default=200)
    ap.add_argument("--r-refits", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON file to write (default benchmarks/results/structures-DATE.json)")
    args = ap.parse_args()
    runs = {"R (nlme)": [], "jaxhlm, empty cache": [], "jaxhlm, stored programs": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ar1.csv"
        simulate(data)
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, JAXHLM_COMPILATION_CACHE=cache)
                for side in ("jaxhlm, empty cache", "jaxhlm, stored programs"):
                    out, whole = _run([sys.executable, "-c", JAXHLM, str(data), str(args.refits)], env)
                    out["whole"] = whole - out["refits"] - out["refits_warm"]
                    runs[side].append(out)
            out, _ = _run(["Rscript", "-e", R, str(data), str(args.r_refits)])
            out["refits"] = out.pop("refit_each") * args.refits
            runs["R (nlme)"].append(out)
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    r = med["R (nlme)"]
    print(f"{'seconds (median of ' + str(args.reps) + ')':<28}{'fit':>10}{f'{args.refits} refits':>14}"
          f"{'refits warm':>13}{'whole':>10}")
    for side, m in med.items():
        print(f"{side:<28}{m['fit']:>10.3f}{m['refits']:>14.3f}{m.get('refits_warm', float('nan')):>13.3f}"
              f"{m.get('whole', float('nan')):>10.3f}")
    for side in ("jaxhlm, empty cache", "jaxhlm, stored programs"):
        print(f"{'R / ' + side:<28}" + "".join(f"{r[k] / med[side][k]:>{w}.1f}x" for k, w in (("fit", 9), ("refits", 13))))
    print(f"(R's refits: {args.r_refits} timed, scaled to {args.refits}; -2 log L R "
          f"{r['objective']:.4f}, jaxhlm {med['jaxhlm, empty cache']['objective']:.4f}; phi R "
          f"{r['phi']:.5f}, jaxhlm {med['jaxhlm, empty cache']['phi']:.5f})")
    stamp = datetime.date.today().isoformat()
    path = args.out or HERE / "results" / f"structures-{stamp}.json"
    path.write_text(json.dumps({"design": "3000 subjects x 8 visits, y ~ visit + treat + (1 | id), AR(1)",
                                "reps": args.reps, "refits": args.refits, "r_refits": args.r_refits,
                                "machine": platform.platform(), "cpus": os.cpu_count(),
                                "medians": med, "runs": runs}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
