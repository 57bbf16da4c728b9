"""Warm cost of bucket headroom (``jaxhlm/bucket_choice.py``): the same model padded to its
plain rungs (HEADROOM = REACH = 0) and to its headroom bucket (the defaults), alternating
in one process, medians of 5 (``benchmarks/README.md``, "Headroom and reach").

    JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/headroom_cost.py
"""
import statistics, sys, time
from pathlib import Path
import numpy as np, pandas as pd
import jaxhlm
from jaxhlm import bucket_choice
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import crossed

def many_design(k=20):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"donor": np.repeat([f"d{i}" for i in range(k)], 6),
                       "cond": np.tile(["a", "b"], 3 * k), "y": rng.normal(size=6 * k)})
    return df

def model(formula, df, headroom):
    bucket_choice._MEMORY.clear()
    bucket_choice.HEADROOM, bucket_choice.REACH = headroom, (1 + headroom) ** 2 - 1
    m = jaxhlm.LMM(formula, df)
    m.bucketed
    return m

def timed(f, reps):
    f()
    out = []
    for _ in range(reps):
        t = time.perf_counter(); f(); out.append(time.perf_counter() - t)
    return out

jobs = []
df = many_design()
Y = np.random.default_rng(1).normal(size=(2000, 120))
for h in (0.0, 0.1):
    m = model("y ~ cond + (1 | donor)", df, h)
    print("many", h, m.bucketed.structure.terms[0].nlevels, flush=True)
    jobs.append((f"fit_many 2000, 20 donors, headroom {h}", lambda m=m: m.fit_many(Y)))
sleep = jaxhlm.datasets.load("sleepstudy")
for h in (0.0, 0.1):
    m = model("Reaction ~ Days + (Days | Subject)", sleep, h)
    r = m.fit()
    print("sleep", h, m.bucketed.structure.terms[0].nlevels, flush=True)
    jobs.append((f"sleepstudy bootstrap 1000, headroom {h}", lambda r=r: r.bootstrap(1000, seed=1)))
cdf = crossed.design(500, 240, 120, 0)
for h in (0.0, 0.1):
    m = model(crossed.FORMULA, cdf, h)
    b = m.bucketed
    print("crossed", h, [t.nlevels for t in b.structure.terms], b.blocks.coo_row.shape, b.blocks.pair_out.shape, flush=True)
    jobs.append((f"crossed 60k fit, headroom {h}", lambda m=m: m.fit()))
res = {name: [] for name, _ in jobs}
for rnd in range(5):
    for name, f in jobs:
        res[name] += timed(f, 1)
for name, v in res.items():
    print(f"{name}: median {statistics.median(v)*1e3:.1f} ms  ({', '.join(f'{x*1e3:.1f}' for x in v)})")
