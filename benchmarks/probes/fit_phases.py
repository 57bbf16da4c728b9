"""Probe: one process's phases for a single fit: import and read, the model frame and
blocks (``LMM(...)``), the padded blocks, the first fit (compiled, or loaded from the
cache) and a warm fit.  InstEval (ML) or the crossed design of ``benchmarks/crossed.py``
(REML, written by ``--write``):

    python benchmarks/probes/fit_phases.py InstEval
    python benchmarks/probes/fit_phases.py crossed [--write SUBJECTS ITEMS]
"""
import sys
import time

t0 = time.perf_counter()
import jax

import jaxhlm

CSV = "/tmp/jaxhlm-crossed.csv"
if sys.argv[1] == "crossed" and "--write" in sys.argv:
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from crossed import design
    subjects, items = (int(a) for a in sys.argv[sys.argv.index("--write") + 1:][:2])
    design(subjects, items, 120, 1).to_csv(CSV, index=False)
if sys.argv[1] == "InstEval":
    df, formula, reml = (jaxhlm.datasets.load("InstEval"),
                         "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", False)
else:
    import pandas as pd
    df, formula, reml = (pd.read_csv(CSV, dtype={"subj": str, "item": str}),
                         "y ~ x + (x | subj) + (1 | item)", True)
t1 = time.perf_counter()
model = jaxhlm.LMM(formula, df)
t2 = time.perf_counter()
jax.block_until_ready(model.bucketed.blocks)
t3 = time.perf_counter()
res = model.fit(reml=reml)
t4 = time.perf_counter()
model.fit(reml=reml)
t5 = time.perf_counter()
print(f"{sys.argv[1]}: import+read {t1 - t0:.2f} s, model {t2 - t1:.2f} s, padded blocks {t3 - t2:.2f} s, "
      f"first fit {t4 - t3:.2f} s, warm fit {t5 - t4:.2f} s; objective {res.objective:.6f}, "
      f"m = {model.structure.m}, pairs {model.blocks.pair_out.shape[0]:,}, evaluations {res.evaluations}")
