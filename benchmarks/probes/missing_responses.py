"""Probe: fit_many of 2,000 responses with missing values (5% of values) on a 120-row
random-intercept design, on the host or compiled (``host_fit.ENABLED = False``); the first
call and the warm one (median of 3).

    JAXHLM_COMPILATION_CACHE=$(mktemp -d) python benchmarks/probes/missing_responses.py host|compiled
"""
import sys, time, json
import numpy as np, pandas as pd, jaxhlm
from jaxhlm import host_fit
if sys.argv[1] == "compiled":
    host_fit.ENABLED = False
k = 20; rng = np.random.default_rng(0)
df = pd.DataFrame({"donor": np.repeat([f"d{i}" for i in range(k)], 6), "cond": np.tile(["a", "b"], 3 * k)})
Y = rng.normal(size=(2000, len(df))) + rng.normal(size=(2000, k)).repeat(6, axis=1)
df["y"] = Y[0]
Y[rng.random(Y.shape) < 0.05] = np.nan
m = jaxhlm.LMM("y ~ cond + (1 | donor)", df)
t = time.perf_counter(); o = m.fit_many(Y); first = time.perf_counter() - t
w = []
for _ in range(3):
    t = time.perf_counter(); m.fit_many(Y); w.append(time.perf_counter() - t)
print(json.dumps({"case": sys.argv[1], "first": round(first, 3), "warm": round(sorted(w)[1], 3), "converged": float(o.converged.mean()), "objective_sum": float(np.nansum(o.objective))}))
