"""Wall-clock timings of statsmodels MixedLM fits, for side-by-side comparison with jaxhlm.

Usage: python statsmodels_timing.py DATADIR CASE [REPS]

CASE
  sleepstudy_reml  MixedLM.from_formula("Reaction ~ Days", groups=Subject, re_formula="~Days")
                   .fit(reml=True) on sleepstudy: REPS timed calls (default 50) of model building + fit
                   after 3 warm-ups, data already loaded.
  one_design_many  the design of lme4_timing.R (120 obs: 12 donors x 10, condition a 2-level factor,
                   5 rows of each per donor), REPS responses (default 200) drawn from
                   y ~ condition + (1|donor) with beta = (0, 0.5), donor sd 1, residual sd 1, by
                   numpy.random.default_rng(1). Same model and parameters as the R script but NOT the
                   same draws. Times a loop of REML fits (model built from arrays once per fit).
  cell             any model with ONE random-effects term (expr | g) on any data: DATADIR holds
                   cell.json (formula in lme4's syntax, reml, response, responses: K response columns,
                   factors) and cell.csv, as jaxhlm's bench writes them. Builds the model once, fits the
                   first response (untimed warm-up), then times REPS (default 10, at most K) refits
                   MixedLM(y_i, exog, groups, exog_re).fit(reml=...). A formula statsmodels cannot fit
                   this way (several terms, crossed, or ||) gives {"skipped": reason}.

Each call is timed with time.perf_counter(). Prints ONE JSON object on stdout, including the
objective reached (-2 * llf; the REML criterion when reml=True, comparable with lme4's REMLcrit)
and how many fits warned or did not report convergence.
"""
import json
import re
import sys
import time
import warnings

import numpy as np
import pandas as pd
import statsmodels
from statsmodels.regression.mixed_linear_model import MixedLM

DEFAULT_REPS = {"sleepstudy_reml": 50, "one_design_many": 200, "cell": 10}


def one_term(formula):
    """lme4's ``y ~ fixed + (expr | g)`` as (fixed formula, re_formula, g); a reason string if
    MixedLM cannot fit it with ``groups`` and ``re_formula``."""
    terms = re.findall(r"\(([^()|]*)(\|\|?)([^()]*)\)", formula)
    if len(terms) != 1 or terms[0][1] == "||" or not re.fullmatch(r"\s*\w+\s*", terms[0][2]):
        return f"MixedLM takes one grouping factor with one correlated term; formula {formula!r} has other random effects"
    expr, _, group = terms[0]
    fixed = re.sub(r"\+?\s*\([^()|]*\|[^()]*\)", "", formula)
    fixed = re.sub(r"~\s*\+", "~", fixed).strip()
    if fixed.endswith("~"):
        fixed += " 1"
    return fixed, "~" + expr.strip(), group.strip()


def time_each(n, f):
    """Per-call times of f(i) for i < n, the whole loop's wall time, and the last result."""
    times, t_loop, res = [], time.perf_counter(), None
    for i in range(n):
        t0 = time.perf_counter()
        res = f(i)
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - t_loop, res


def main(datadir, case, reps=None):
    reps = DEFAULT_REPS[case] if reps is None else reps
    fits = []  # every fitted result, to count convergence failures
    n_warn = 0
    reml = True

    def fit(model):
        nonlocal n_warn
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = model.fit(reml=reml)
        n_warn += len(w)
        fits.append(r)
        return r

    if case == "sleepstudy_reml":
        ss = pd.read_csv(f"{datadir}/sleepstudy.csv", dtype={"Subject": str})

        def one(i):
            return fit(MixedLM.from_formula("Reaction ~ Days", ss, groups=ss["Subject"], re_formula="~Days"))

        for i in range(3):
            one(i)
        fits.clear(); n_warn = 0
    elif case == "one_design_many":
        rng = np.random.default_rng(1)
        donor = np.repeat(np.arange(12), 10)
        cond = np.tile(np.repeat([0.0, 1.0], 5), 12)
        X = np.column_stack([np.ones(120), cond])
        Y = 0.5 * cond + rng.standard_normal((reps, 12))[:, donor] + rng.standard_normal((reps, 120))

        def one(i):
            return fit(MixedLM(Y[i], X, groups=donor))
    elif case == "cell":
        with open(f"{datadir}/cell.json") as fh:
            spec = json.load(fh)
        parts = one_term(spec["formula"])
        if isinstance(parts, str):
            return {"case": case, "peer": "statsmodels", "skipped": parts}
        fixed, re_formula, group = parts
        reml = bool(spec["reml"])
        d = pd.read_csv(f"{datadir}/cell.csv", dtype={f: str for f in spec["factors"]})
        ys = d[spec["responses"]].to_numpy(dtype=float).T
        reps = min(reps, ys.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = MixedLM.from_formula(fixed, d, groups=d[group], re_formula=re_formula)

        def one(i):
            return fit(MixedLM(ys[i], base.exog, groups=base.groups, exog_re=base.exog_re))

        one(0)
        fits.clear(); n_warn = 0
    else:
        raise SystemExit(f"unknown CASE: {case}")

    times, loop, res = time_each(reps, one)
    objectives = [-2 * r.llf for r in fits]
    return {
        "case": case, "peer": "statsmodels", "statsmodels_version": statsmodels.__version__,
        "python_version": sys.version.split()[0], "numpy_version": np.__version__, "reps": reps,
        "method": f"MixedLM.fit(reml={reml}), default optimizer settings",
        "median_seconds": float(np.median(times)), "min_seconds": min(times), "loop_seconds": loop,
        "fits_per_second": reps / loop, "times_seconds": times,
        "objective": objectives[-1], "objective_median": float(np.median(objectives)),
        "n_not_converged": sum(not r.converged for r in fits), "n_warnings": n_warn,
        "fe_params_last": [float(v) for v in np.asarray(res.fe_params)],
    }


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out = main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
    print(json.dumps(out))
