"""Probe: single fits of crossed designs on the host (jaxhlm.blocked_fit) against the compiled
program, warm in one process: InstEval's ML fit (when its CSV is given), the 60,000-row
design of ``benchmarks/crossed.py`` and two small crossed designs of 2,000 rows; medians of
3 fits after one, with each fit's evaluations and objective.

    python benchmarks/probes/blocked_fit.py [INSTEVAL.csv]

(``python -c "import jaxhlm; jaxhlm.datasets.load('InstEval').to_csv('InstEval.csv', index=False)"``.)
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import jaxhlm
from jaxhlm import Options, host_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossed import FORMULA, design  # noqa: E402


def cases():
    if len(sys.argv) > 1:
        df = pd.read_csv(sys.argv[1], dtype={c: str for c in ("s", "d", "dept", "service")})
        yield "InstEval ML", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", df, False
    yield "crossed 60,000 rows REML", FORMULA, design(500, 240, 120, 1), True
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.integers(0, 60, 2000).astype(str), "b": rng.integers(0, 60, 2000).astype(str),
                       "x": rng.normal(size=2000)})
    df["y"] = rng.normal(size=60)[df.a.astype(int)] + rng.normal(size=60)[df.b.astype(int)] + rng.normal(size=2000)
    yield "2,000 rows, 60 x 60 levels", "y ~ 1 + (1 | a) + (1 | b)", df, True
    yield "2,000 rows, 60 x 60 levels, slope", "y ~ x + (x | a) + (1 | b)", df, True


def timed(model, reml, options):
    model.fit(reml=reml, options=options)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        res = model.fit(reml=reml, options=options)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), res


for name, formula, df, reml in cases():
    host_fit.ENABLED = True
    host, h = timed(jaxhlm.LMM(formula, df), reml, Options())
    host_fit.ENABLED = False   # the compiled program of Options(method="auto")
    compiled, c = timed(jaxhlm.LMM(formula, df), reml, Options())
    print(f"{name:36s} host {host:.4f} s ({h.evaluations} evaluations, {h._fitted_by})   "
          f"compiled {compiled:.4f} s ({c.evaluations}, {c._method})   compiled / host {compiled / host:.2f}   "
          f"objectives {h.objective:.6f} {c.objective:.6f}")
