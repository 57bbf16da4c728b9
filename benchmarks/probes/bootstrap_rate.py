"""Probe: parametric-bootstrap refits per second (10,000 replicates, median of 3 after one
warm-up) for sleepstudy or Penicillin, in one process; run it with ``PYTHONPATH=OTHER_CHECKOUT``
to compare two versions in alternating processes.

    python benchmarks/probes/bootstrap_rate.py sleepstudy|Penicillin NAME
"""
import sys, time, statistics
import jaxhlm
df = jaxhlm.datasets.load(sys.argv[1])
formula = {"sleepstudy": "Reaction ~ Days + (Days | Subject)", "Penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)"}[sys.argv[1]]
res = jaxhlm.LMM(formula, df).fit()
res.bootstrap(10000, seed=0)
ts = []
for s in range(3):
    t = time.perf_counter(); b = res.bootstrap(10000, seed=s + 1); ts.append(time.perf_counter() - t)
print(sys.argv[2], sys.argv[1], f"{10000 / statistics.median(ts):,.0f} refits/s", [round(x, 2) for x in ts], jaxhlm.__file__)
