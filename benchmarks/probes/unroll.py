"""Probe: what writing out a single dense matrix's factorization costs and buys.  For
one model, its single fit and a vmapped chunk of 128 bootstrap refits (BFGS) are traced,
lowered and compiled by XLA, then run warm (medians), with ``jaxhlm.linalg.DENSE_UNROLL``
set to UNROLL (the size up to which a single dense matrix is factored written out rather
than by LAPACK) and XLA's CPU options OPTIONS (JSON, e.g.
'{"xla_cpu_use_fusion_emitters": false}').  Run each setting in a fresh process:

    JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/unroll.py MODEL UNROLL [OPTIONS]

MODEL: sleepstudy (a 3 x 3 rest's matrix), Penicillin (8 x 8), Pastes (12 x 12).
"""
import json
import sys
import time

import jax
import numpy as np

import jaxhlm
from jaxhlm import batch, fitting, linalg
from jaxhlm.blocks import response_axes, with_responses

MODELS = {"sleepstudy": "Reaction ~ Days + (Days | Subject)",
          "Penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
          "Pastes": "strength ~ 1 + (1 | batch) + (1 | cask:batch)"}
name, linalg.DENSE_UNROLL = sys.argv[1], int(sys.argv[2])
options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
model = jaxhlm.LMM(MODELS[name], jaxhlm.datasets.load(name))
padded = model.bucketed
st = padded.structure


def phases(jitted, args, static, reps):
    """trace+lower, XLA, and the warm run's median (seconds)."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, *static)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t)
    return t1 - t0, t2 - t1, float(np.median(runs[1:]))


def program(fun, static_argnums):
    return jax.jit(fun, static_argnums=static_argnums, **({"compiler_options": options} if options else {}))


single = phases(program(lambda b, t, st: fitting._fit_program(b, st, True, fitting.Options(), t), (2,)),
                (padded.blocks, np.asarray(st.theta_start(), float)), (st,), 41)
res = model.fit()
B = 128
many = padded.responses(with_responses(model.frame, model.structure, jax.device_get(model.blocks),
                                       res.simulate(B, seed=1)))
axes = tuple(response_axes(many))
chunk = phases(program(batch._fit_chunk_program, batch._STATIC_CHUNK),
               (many, np.broadcast_to(res.theta, (B, model.structure.ntheta)), np.int64(200), None),
               (st, True, jaxhlm.Options(method="bfgs"), axes), 21)
print(json.dumps({"model": name, "m": st.m, "dense_unroll": linalg.DENSE_UNROLL, "options": options,
                  "fit": dict(zip(("trace_lower_s", "xla_s", "warm_ms"), (*single[:2], 1e3 * single[2]))),
                  "chunk128": dict(zip(("trace_lower_s", "xla_s", "warm_ms"), (*chunk[:2], 1e3 * chunk[2])))}))
