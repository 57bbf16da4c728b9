"""Probe: where the batched fit's compilation goes.  One chunk of 128 vmapped sleepstudy
refits (BFGS), traced, lowered and compiled by XLA; then the warm run of the chunk
(median of 15).  MODE replaces a part of the program to see its share:

- ``full``: the program as ``fit_many`` runs it (each fit probes its starting Hessian);
- ``objective-only``: only the vmapped criterion and its gradient, no optimiser;
- ``quadratic-objective``: the whole loop around a quadratic stand-in for the criterion;
- ``steepest``: BFGS's direction replaced by -g (no Cholesky solve, no eigendecomposition);
- ``no-eigh``: the probed starting Hessian taken as it is (no eigendecomposition);
- ``given-hessian``: BFGS from the fit's Hessian model, as the bootstrap's refits: no
  probing phases in the program.

``OPTIONS`` (JSON) are XLA compiler options, e.g. '{"xla_cpu_use_fusion_emitters": false}'.

    JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/compile_phases.py MODE [OPTIONS]
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxhlm
from jaxhlm import batch
from jaxhlm.blocks import with_responses, response_axes
from jaxhlm.families import gaussian
from jaxhlm.optimize import bfgs

mode = sys.argv[1] if len(sys.argv) > 1 else "full"
options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy"))
res = model.fit()
B = 128
padded = model.bucketed
many = padded.responses(with_responses(model.frame, model.structure, jax.device_get(model.blocks),
                                       res.simulate(B, seed=1)))
axes = tuple(response_axes(many))
starts = np.broadcast_to(res.theta, (B, model.structure.ntheta))
st = padded.structure

hessian0 = None
if mode == "objective-only":
    one = lambda th, b: jax.value_and_grad(lambda t: gaussian.objective(t, b, st, True))(th)  # noqa: E731
    program = jax.jit(jax.vmap(one, in_axes=(0, batch.Blocks(*axes))), compiler_options=options)
    args = (starts, many)
else:
    if mode == "quadratic-objective":
        gaussian.Gaussian.objective = staticmethod(
            lambda th, b, st, reml, penalty=None: jnp.sum((th - 1.0) ** 2) * b.Arr[-1, -1])
    elif mode == "steepest":
        bfgs.spd_direction = lambda g, H: (-g, jnp.dot(g, g))
    elif mode == "no-eigh":
        bfgs.positive = lambda H: H
    elif mode == "given-hessian":
        hessian0 = res._curvature
    elif mode != "full":
        sys.exit(f"unknown mode {mode!r}")
    jitted = jax.jit(batch._fit_chunk_program, static_argnums=batch._STATIC_CHUNK, compiler_options=options)
    program = lambda *a: jitted(*a, st, True, jaxhlm.Options(method="bfgs"), axes)  # noqa: E731
    program.lower = lambda *a: jitted.lower(*a, st, True, jaxhlm.Options(method="bfgs"), axes)
    args = (many, starts, np.int64(200), hessian0)

began = time.perf_counter()
lowered = program.lower(*args)
traced = time.perf_counter()
compiled = lowered.compile()
done = time.perf_counter()
run = []
for _ in range(16):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    run.append(time.perf_counter() - t)
print(f"{mode} {options or ''}: trace+lower {traced - began:.2f} s, XLA {done - traced:.2f} s, "
      f"warm chunk {1e3 * np.median(run[1:]):.1f} ms")
