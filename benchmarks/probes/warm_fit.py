"""Probe: warm single-fit times, ``model.fit()`` and ``LMM(f, df).fit()`` on sleepstudy, 300
calls each (median, min); with a second argument, a cProfile of the latter.  Run it with
``PYTHONPATH=OTHER_CHECKOUT`` to compare two versions in alternating processes.

    python benchmarks/probes/warm_fit.py NAME [profile]
"""
import cProfile, pstats, sys, time, statistics
import jaxhlm
df = jaxhlm.datasets.load("sleepstudy")
m = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
for _ in range(20): m.fit()
ts = []
for _ in range(300):
    t = time.perf_counter(); m.fit(); ts.append(time.perf_counter() - t)
ts2 = []
for _ in range(300):
    t = time.perf_counter(); jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit(); ts2.append(time.perf_counter() - t)
print(sys.argv[1], "model.fit median %.3f ms min %.3f" % (1e3*statistics.median(ts), 1e3*min(ts)), "LMM().fit median %.3f ms min %.3f" % (1e3*statistics.median(ts2), 1e3*min(ts2)))
if len(sys.argv) > 2:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(300): jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25)
