"""Probe: sleepstudy's ``bootstrap(1000)`` first call after the fit, and JAX's compilation
phases in it (``jax.monitoring``'s duration events, summed: tracing, lowering to MLIR, XLA).
Run it with an empty cache directory to see a first-ever call:

    JAXHLM_COMPILATION_CACHE=$(mktemp -d) python benchmarks/probes/bootstrap_first_call.py
"""
import collections
import time

import jax.monitoring

import jaxhlm

totals = collections.defaultdict(float)
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: totals.__setitem__(event, totals[event] + duration))
t = time.perf_counter()
res.bootstrap(1000, seed=1)
first = time.perf_counter() - t
t = time.perf_counter()
res.bootstrap(1000, seed=2)
warm = time.perf_counter() - t
print(f"bootstrap(1000): first {first:.2f} s, warm {warm:.2f} s")
for event in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration"):
    print(f"  {event}: {totals['/jax/core/compile/' + event]:.2f} s")
