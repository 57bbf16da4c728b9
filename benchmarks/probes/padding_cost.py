"""Probe: what padding to the ladder costs (jaxhlm.padding).  For each model, in one
process: the warm single fit (median of 200) and a bootstrap of 4,096 refits (median of
3 after a warm-up), with padding off (``padding.ENABLED = False``) and on, alternating.

    python benchmarks/probes/padding_cost.py
"""
import statistics
import time

import jaxhlm
from jaxhlm import padding

sleep = jaxhlm.datasets.load("sleepstudy")
keep = sorted(sleep.Subject.astype(str).unique())[:17]
CASES = {
    "sleepstudy, 18 subjects (-> 20)": ("Reaction ~ Days + (Days | Subject)", sleep),
    "sleepstudy, 17 subjects (-> 20)": ("Reaction ~ Days + (Days | Subject)",
                                        sleep[sleep.Subject.astype(str).isin(keep)]),
    "Penicillin, 24 plates x 6 samples (as is)": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                                                  jaxhlm.datasets.load("Penicillin")),
    "Pastes, 30 samples (-> 32), 10 batches": ("strength ~ 1 + (1 | sample) + (1 | batch)",
                                               jaxhlm.datasets.load("Pastes")),
}


def median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


for name, (formula, df) in CASES.items():
    row = {}
    for enabled in (False, True, False, True):
        padding.ENABLED = enabled
        model = jaxhlm.LMM(formula, df)
        res = model.fit()
        for _ in range(20):
            model.fit()
        fit = median_time(model.fit, 200)
        res.bootstrap(4096, seed=0)
        boot = median_time(lambda: res.bootstrap(4096, seed=1), 3)
        row.setdefault(enabled, []).append((fit, boot))
    shape = jaxhlm.LMM(formula, df).bucketed.structure
    (f0, b0), (f1, b1) = [min(row[e]) for e in (False, True)]
    print(f"{name:<44} levels {[t.nlevels for t in shape.terms]}: warm fit {1e3 * f0:.2f} -> {1e3 * f1:.2f} ms "
          f"({f1 / f0:.2f}x), bootstrap 4096 {b0:.2f} -> {b1:.2f} s ({b1 / b0:.2f}x)")
