"""A crossed design of 60,000 rows, ``y ~ x + (x | subj) + (1 | item)`` by REML: the model
frame, blocks and fit (data already read), jaxhlm in fresh processes (an empty cache, and a
cache warmed by a process that fitted a data set about 5% smaller) against lme4's ``lmer``
in R, side by side; and the same with the library's load included (``import jaxhlm``,
R's ``library(lme4)``).  jaxhlm imports ``jax`` only when it compiles (:mod:`jaxhlm.lazy_jax`),
so on an empty cache that import is part of the fit's time.

    python benchmarks/crossed.py [--reps 3] [--subjects 500] [--items 240]

Each subject sees 120 items drawn at random; the smaller data set has 5% fewer subjects
and items (and rows).  Writes ``benchmarks/results/crossed-DATE.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from side_by_side import run_json

FORMULA = "y ~ x + (x | subj) + (1 | item)"

JAXHLM = r"""
import sys, time, json
t0 = time.perf_counter()
import jaxhlm
library = time.perf_counter() - t0
import pandas as pd
df = pd.read_csv(sys.argv[1], dtype={"subj": str, "item": str})
t = time.perf_counter()
res = jaxhlm.LMM(%r, df).fit()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "with_library": seconds + library, "objective": res.objective}))
""" % FORMULA

LME4 = r"""
lib_s <- system.time(suppressMessages(library(lme4)))[["elapsed"]]
df <- read.csv(commandArgs(TRUE)[1], colClasses = c(subj = "factor", item = "factor"))
t <- system.time(m <- lmer(%s, df))[["elapsed"]]
cat(sprintf('{"seconds": %%.4f, "with_library": %%.4f, "objective": %%.6f}\n', t, t + lib_s, REMLcrit(m)))
""" % FORMULA


def design(subjects: int, items: int, per: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(subjects), per)
    item = np.concatenate([rng.choice(items, per, replace=False) for _ in range(subjects)])
    x = rng.normal(size=subj.size)
    b0, b1, c = rng.normal(0, 1, subjects), rng.normal(0, 0.5, subjects), rng.normal(0, 0.7, items)
    y = 1 + 0.5 * x + b0[subj] + b1[subj] * x + c[item] + rng.normal(size=subj.size)
    return pd.DataFrame({"y": y, "x": x, "subj": [f"s{i}" for i in subj], "item": [f"i{i}" for i in item]})


def _run(cmd, cache=None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["JAXHLM_COMPILATION_CACHE"] = cache
    return run_json(cmd, env, timeout=1200)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--subjects", type=int, default=500)
    ap.add_argument("--items", type=int, default=240)
    ap.add_argument("--out", default=f"benchmarks/results/crossed-{datetime.date.today()}.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp())
    big, small = work / "big.csv", work / "small.csv"
    design(args.subjects, args.items, 120, 1).to_csv(big, index=False)
    design(round(args.subjects * 0.95), round(args.items * 0.95), 120, 2).to_csv(small, index=False)
    names = ["jaxhlm, empty cache", "jaxhlm, cache warmed by a 5% smaller data set", "lme4"]
    rows = {name + suffix: [] for suffix in ("", " (library load included)") for name in names}
    objective = {}

    def add(name, out):
        rows[name].append(out["seconds"])
        rows[name + " (library load included)"].append(out["with_library"])

    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as cache:
            out = _run([sys.executable, "-c", JAXHLM, str(big)], cache)
            add(names[0], out)
            objective["jaxhlm"] = out["objective"]
        with tempfile.TemporaryDirectory() as cache:
            _run([sys.executable, "-c", JAXHLM, str(small)], cache)
            add(names[1], _run([sys.executable, "-c", JAXHLM, str(big)], cache))
        if shutil.which("Rscript"):
            out = _run(["Rscript", "-e", LME4, str(big)])
            add(names[2], out)
            objective["lme4"] = out["objective"]
    table = {k: statistics.median(v) for k, v in rows.items() if v}
    for k, v in rows.items():
        if v:
            peer = "lme4" + k[len(k.split(" (")[0]):] if " (" in k else "lme4"
            ratio = f"  lme4/jaxhlm {table[peer] / table[k]:.2f}" if peer in table and k != peer else ""
            print(f"{k:<72} {table[k]:7.2f} s  {[round(x, 2) for x in v]}{ratio}")
    print("REML criterion:", objective)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "formula": FORMULA,
                                          "subjects": args.subjects, "items": args.items,
                                          "runs_s": rows, "median_s": table, "objective": objective}, indent=1))


if __name__ == "__main__":
    main()
