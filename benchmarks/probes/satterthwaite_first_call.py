"""Probe: what ``coef_table(ddf="satterthwaite")`` costs after a sleepstudy fit: the first
call (compiled, or loaded from the store) and a warm one.  Run it twice with one cache: the
first process compiles and stores, the second loads.

    JAXHLM_COMPILATION_CACHE=/tmp/sat-cache python benchmarks/probes/satterthwaite_first_call.py
"""
import time

import jaxhlm

t = time.perf_counter()
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
t1 = time.perf_counter()
table = res.coef_table()
t2 = time.perf_counter()
res.coef_table()
t3 = time.perf_counter()
print(f"fit {t1 - t:.2f} s, first coef_table {t2 - t1:.2f} s, warm {1e3 * (t3 - t2):.1f} ms")
print(table)
