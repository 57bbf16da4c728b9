#!/usr/bin/env python
"""Batch throughput of jaxhlm against lme4's refit loop, side by side in ONE run.

    python benchmarks/batch.py [--nsim 10000] [--out benchmarks/results/batch-DATE.json]

1. sleepstudy ``Reaction ~ Days + (Days | Subject)`` REML parametric bootstrap (and the
   same for Penicillin, crossed, and Pastes, nested, against lme4's refit loops on them):
   ``res.bootstrap(nsim)`` (simulate + refit every replicate); refits per second with
   compilation excluded (a warm-up bootstrap of the same batch shape first; median of 3)
   and, separately, the first call with compilation.  Warm means after ``LMM.warmup``:
   a first batch on a design in small independent groups runs on the host until the host
   has spent ``jaxhlm.batch.HOST_BUDGET`` seconds on it, so repeated calls would
   otherwise time the host (``benchmarks/first_calls.py`` times those).  lme4: ``refit()`` over
   ``simulate(fm, 200)`` (``peers.time_lme4("sleepstudy_refit")``; note that lme4 1.1-31's
   refit of this REML model optimises a slightly wrong criterion, see
   tests/test_batch.py; its speed is what is compared).  MixedModels.jl's published
   figure (~3,300 refits/s threaded on a bigger machine, MixedModels.jl PR #288) is
   quoted from shared/ANCHORS.md, not measured here.
2. One design, many responses: 120 observations (12 donors x 10, ``condition`` a
   two-level factor, 5 rows of each per donor), ``y ~ condition + (1 | donor)``,
   2,000 responses drawn from that model; ``model.fit_many(Y)``.  lme4: a ``refit()``
   loop and a plain ``lmer()`` loop on its own draws from the same model
   (``peers.time_lme4("one_design_many")``).
Ratios are jaxhlm fits/s over lme4 fits/s.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
from jaxhlm.tools import peers  # noqa: E402

import jaxhlm  # noqa: E402  first: it sets XLA's log level before jax loads
import jax  # noqa: E402


def _rate(fn, n, reps=3):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times), times


BOOTSTRAPS = {  # name: (bundled data set, formula, lme4_timing.R case)
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "sleepstudy_refit"),
    "penicillin (crossed)": ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin_refit"),
    "pastes (nested)": ("pastes", "strength ~ 1 + (1 | batch/cask)", "pastes_refit"),
}


def bootstrap_case(nsim: int, dataset: str, formula: str) -> dict:
    df = jaxhlm.datasets.load(dataset)
    t = time.perf_counter()
    res = jaxhlm.LMM(formula, df).fit()
    first = res.bootstrap(nsim, seed=0)                     # compiles (the host fits a first share)
    with_compile = time.perf_counter() - t
    res._model.warmup(nsim=nsim)                            # the compiled program from here on
    rate, times = _rate(lambda: res.bootstrap(nsim, seed=1), nsim)
    boot = res.bootstrap(nsim, seed=2)
    return {"nsim": nsim, "refits_per_second": rate, "times_seconds": times,
            "first_call_seconds_with_compile": with_compile,
            "converged_fraction": float(boot.converged.mean()),
            "singular_fraction": float(boot.singular.mean()),
            "max_iterations": int(boot.iterations.max()), "first_converged": float(first.converged.mean())}


def one_design_case(nresp: int) -> dict:
    rng = np.random.default_rng(1)
    donor = np.repeat([f"d{i:02d}" for i in range(12)], 10)
    condition = np.tile(["a"] * 5 + ["b"] * 5, 12)
    df = pd.DataFrame({"donor": donor, "condition": condition})
    u = rng.normal(0.0, 1.0, (nresp, 12))
    Y = 0.5 * (condition == "b")[None, :] + np.repeat(u, 10, axis=1) + rng.normal(0.0, 1.0, (nresp, 120))
    df["y"] = Y[0]
    model = jaxhlm.LMM("y ~ condition + (1 | donor)", df)
    t = time.perf_counter()
    model.fit_many(Y)                                      # on the host (jaxhlm.batch.HOST_BUDGET)
    with_compile = time.perf_counter() - t
    model.warmup(responses=nresp)                          # the compiled program from here on
    rate, times = _rate(lambda: model.fit_many(Y), nresp)
    out = model.fit_many(Y)
    return {"responses": nresp, "fits_per_second": rate, "times_seconds": times,
            "first_call_seconds_with_compile": with_compile,
            "converged_fraction": float(out.converged.mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nsim", type=int, default=10_000)
    ap.add_argument("--responses", type=int, default=2_000)
    ap.add_argument("--datadir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / f"batch-{_dt.date.today()}.json"))
    args = ap.parse_args(argv)

    lme4_refits = {name: peers.time_lme4(case, None, args.datadir) for name, (_, _, case) in BOOTSTRAPS.items()}
    lme4_refit = lme4_refits["sleepstudy"]
    lme4_many = peers.time_lme4("one_design_many", None, args.datadir)
    boots = {name: bootstrap_case(args.nsim, dataset, formula) for name, (dataset, formula, _) in BOOTSTRAPS.items()}
    boot = boots["sleepstudy"]
    many = one_design_case(args.responses)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    result = {"date": str(_dt.date.today()), "devices": [str(d) for d in jax.devices()], "cpu": cpu,
              "versions": {"jax": jax.__version__, "jaxhlm": jaxhlm.__version__},
              "bootstrap_sleepstudy": boot, "one_design_many": many,
              "lme4_sleepstudy_refit": lme4_refit, "lme4_one_design_many": lme4_many,
              "bootstraps": {name: {"formula": BOOTSTRAPS[name][1], "jaxhlm": boots[name], "lme4_refit": lme4_refits[name]}
                             for name in BOOTSTRAPS}}

    print(f"jaxhlm batch benchmark {result['date']}  {cpu}  devices {result['devices']}")
    r = lme4_refit["fits_per_second"] if lme4_refit else None
    print(f"1. sleepstudy bootstrap, {args.nsim:,} replicates: {boot['refits_per_second']:,.0f} refits/s "
          f"(first call with compilation {boot['first_call_seconds_with_compile']:.2f} s); "
          f"lme4 refit loop {r:,.1f} refits/s -> {boot['refits_per_second'] / r:,.0f}x"
          if r else "; lme4 not available")
    print("   MixedModels.jl (published, threaded, bigger machine): ~3,300 refits/s")
    for name in list(BOOTSTRAPS)[1:]:
        b, r = boots[name], lme4_refits[name]
        print(f"   {name} bootstrap, {args.nsim:,} replicates: {b['refits_per_second']:,.0f} refits/s "
              f"(max iterations {b['max_iterations']}, converged {b['converged_fraction']:.4f})"
              + (f"; lme4 refit loop {r['fits_per_second']:,.1f}/s -> {b['refits_per_second'] / r['fits_per_second']:,.0f}x"
                 if r else "; lme4 not available"))
    m = lme4_many
    if m:
        print(f"2. one design, {args.responses:,} responses of 120 obs: {many['fits_per_second']:,.0f} fits/s; "
              f"lme4 refit loop {m['fits_per_second']:,.1f}/s -> {many['fits_per_second'] / m['fits_per_second']:,.0f}x, "
              f"lmer loop {m['lmer_fits_per_second']:,.1f}/s -> "
              f"{many['fits_per_second'] / m['lmer_fits_per_second']:,.0f}x")
    else:
        print(f"2. one design: {many['fits_per_second']:,.0f} fits/s; lme4 not available")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
