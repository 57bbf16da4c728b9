"""Probe: an LMM's batched fit on a CPU at XLA's default backend level and at level 1
(``precompiled.level_one``), and with chunks of 128 (the CPU default) or one chunk of the
whole batch (the GPU grid's ``chunk_size``), each in a fresh process with an empty cache:
the random-slope design of ``configs/bench/gpu.toml`` (18 subjects x 10, 1,000 responses).

    JAX_PLATFORMS=cpu python benchmarks/probes/cpu_batch_levels.py
"""
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd
import jaxhlm
from jaxhlm import batch
level, chunk = sys.argv[1], int(sys.argv[2])
if level == "default":
    batch._FIT_CHUNK.level = None
rng = np.random.default_rng(1)
g, per, B = 18, 10, 1000
df = pd.DataFrame({"subject": np.repeat([f"s{i}" for i in range(g)], per), "time": np.tile(np.arange(per, dtype=float), g)})
b0, b1 = rng.normal(0, 1, (B, g)), rng.normal(0, 0.3, (B, g))
Y = 1 + 0.5 * df.time.to_numpy() + b0[:, np.repeat(np.arange(g), per)] + b1[:, np.repeat(np.arange(g), per)] * df.time.to_numpy() + rng.normal(size=(B, g * per))
df["y"] = Y[0]
m = jaxhlm.LMM("y ~ time + (time | subject)", df)
t = time.perf_counter(); r = m.fit_many(Y, batch_size=chunk); first = time.perf_counter() - t
warm = []
for _ in range(3):
    t = time.perf_counter(); m.fit_many(Y, batch_size=chunk); warm.append(time.perf_counter() - t)
import jax
print(json.dumps({"level": level, "chunk": chunk, "first_s": first, "warm_s": sorted(warm)[1],
                  "converged": float(r.converged.mean()), "jax": jax.__version__}))
"""

if __name__ == "__main__":
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE="0", JAX_PLATFORMS="cpu")
    for chunk in (128, 65536):
        for level in ("default", "1"):
            out = subprocess.run([sys.executable, "-c", CHILD, level, str(chunk)], capture_output=True,
                                 text=True, env=env, timeout=300)
            line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr[-500:]
            print(line, flush=True)
