"""Probe: one criterion value and gradient of a model with a residual structure, its blocks
combined from the precomputed row classes against recomputed from the rows
(:mod:`jaxhlm.residual.whiten`).  3,000 groups x 8 rows, ``y ~ x + (1 | g)`` with compound
symmetry (``cs``) or AR(1) (``ar1``) residuals within g; jit, warm, median of 30.

    python benchmarks/probes/residual_classes.py cs|ar1
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import jaxhlm
from jaxhlm.families import gaussian

kind = sys.argv[1] if len(sys.argv) > 1 else "cs"
rng = np.random.default_rng(1)
groups, size = 3000, 8
g = np.repeat(np.arange(groups), size)
x = rng.normal(size=g.size)
y = 1 + 0.5 * x + rng.normal(size=groups)[g] + rng.normal(size=g.size)
df = pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "t": np.tile(np.arange(size), groups)})
correlation = jaxhlm.CompoundSymmetry() if kind == "cs" else jaxhlm.AR1(time="t")
model = jaxhlm.LMM("y ~ x + (1 | g)", df, correlation=correlation)
st, rows = model.structure, model._host_blocks
theta = jnp.asarray([0.8, 0.3])
vg = jax.jit(jax.value_and_grad(lambda t, d: gaussian.objective(t, d, st, True)))
for name, data in (("classes", rows), ("rows", rows._replace(sets=None))):
    value = float(vg(theta, data)[0])
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        jax.block_until_ready(vg(theta, data))
        times.append(time.perf_counter() - t0)
    print(f"{kind} {name}: criterion {value:.10f}, value and gradient {1e3 * np.median(times):.3f} ms")
