"""Probe: term 1's Schur complement by the pairs or densely (``jaxhlm.blocks.by_pairs``),
forced each way in one process: the warm criterion and its gradient (median of 10) on
sleepstudy, Penicillin, InstEval and the crossed design of ``benchmarks/crossed.py``, and
a bootstrap's refits per second (2,048 refits, median of 3) on the small ones.

    JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/schur.py
"""
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxhlm
from jaxhlm import blocks as _blocks
from jaxhlm.families.gaussian import objective

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossed import FORMULA, design

CASES = [("sleepstudy", "Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")),
         ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", jaxhlm.datasets.load("Penicillin")),
         ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", jaxhlm.datasets.load("InstEval")),
         ("crossed 500 x 240", FORMULA, design(500, 240, 120, 1))]


def median_time(f, reps):
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f())
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


for name, formula, df in CASES:
    model = jaxhlm.LMM(formula, df)
    st = model.structure
    theta = jnp.asarray(model.fit(reml=False).theta)
    chosen = "pairs" if model.blocks.pair_out.shape[0] else "dense"
    row = [f"{name} (m = {st.m}; by_pairs chooses {chosen}):"]
    for pairs in (True, False):
        b = _blocks.build(model.frame, pairs=pairs)[1]
        vg = jax.jit(jax.value_and_grad(lambda t, b=b, st=st: objective(t, b, st, False)))
        vg(theta)
        row.append(f"{'pairs' if pairs else 'dense'} {median_time(lambda vg=vg, theta=theta: vg(theta), 10) * 1e3:.2f} ms"
                   f" ({b.pair_out.shape[0]:,} pairs)")
        if st.m < 50:
            saved = _blocks.DENSE_SCHUR_RATIO
            _blocks.DENSE_SCHUR_RATIO = 0 if pairs else float("inf")
            res = jaxhlm.LMM(formula, df).fit()
            res.bootstrap(2048, seed=0)
            rate = 2048 / median_time(lambda res=res: res.bootstrap(2048, seed=1).objective, 3)
            _blocks.DENSE_SCHUR_RATIO = saved
            row.append(f"bootstrap {rate:,.0f} refits/s")
    print(" ".join(row), flush=True)
