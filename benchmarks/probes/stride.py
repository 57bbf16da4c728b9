"""Probe: a vmapped scatter and segment sum over n levels, for n a multiple of a large
power of 2 and for n + 8 (why jaxhlm.padding.ladder skews its rungs by 8 from 64 on).
128 fits, 3 COO entries per level, medians of 25 warm calls, milliseconds.

    python benchmarks/probes/stride.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
B, M = 128, 4


def median_ms(f, *a):
    jax.block_until_ready(f(*a))
    ts = []
    for _ in range(25):
        t = time.perf_counter()
        jax.block_until_ready(f(*a))
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


print(f"{jax.devices()[0]}; {B} fits: n levels -> scatter (n, {M}, 1) / segment sum (n,), ms")
for base in (64, 128, 256, 512, 1024, 2048, 3072):
    nnz = 3 * base - 30
    level = np.repeat(np.arange(nnz // 3 + 1), 3)[:nnz].astype(np.int32)
    row = np.tile(np.arange(3), nnz)[:nnz].astype(np.int32)
    val = jnp.asarray(np.random.default_rng(0).random((B, nnz, 1)))
    cells = []
    for n in (base, base + 8):
        scatter = jax.jit(jax.vmap(lambda v, n=n: jnp.zeros((n, M, 1)).at[level, row].add(v)))
        segsum = jax.jit(jax.vmap(lambda v, n=n: jax.ops.segment_sum(v[:, 0], level, num_segments=n)))
        cells.append(f"n = {n}: {median_ms(scatter, val):.2f} / {median_ms(segsum, val):.2f}")
    print("   ".join(cells), flush=True)
