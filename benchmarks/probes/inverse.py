"""Probe: (L L')^{-1} from a Cholesky factor, four ways, run time (median of 10) and first
call (compilation included), at the dense block sizes of the crossed benchmark (243) and
InstEval (1160):

- ``halves``: :func:`jaxhlm.linalg.inv_from_cholesky` (by halves, matrix products);
- ``halves128``: the same with halves down to 128 rows instead of ``HALVE_ABOVE``;
- ``identity``: a triangular solve with the identity, then one product (3 n^3 flops);
- ``dpotri``: LAPACK's dpotri on the host through ``jax.pure_callback`` (what jaxhlm
  used before; such a program cannot be stored).

    JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/inverse.py
"""
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxhlm  # noqa: F401  (float64)
from jaxhlm import linalg


def identity(l):
    li = lax.linalg.triangular_solve(l, jnp.eye(l.shape[-1], dtype=l.dtype), left_side=True, lower=True)
    return li.T @ li


def _potri_host(l):
    from scipy.linalg import lapack

    inv, _ = lapack.dpotri(np.asarray(l), lower=1)
    return np.tril(inv) + np.tril(inv, -1).T


def dpotri(l):
    return jax.pure_callback(_potri_host, jax.ShapeDtypeStruct(l.shape, l.dtype), l)


def halves128(l):
    saved, linalg.HALVE_ABOVE = linalg.HALVE_ABOVE, 128
    try:
        return linalg.inv_from_cholesky(l)
    finally:
        linalg.HALVE_ABOVE = saved


for n in (243, 1160):
    a = np.random.default_rng(0).normal(size=(n, n))
    a = a @ a.T + n * np.eye(n)
    l = jnp.asarray(np.linalg.cholesky(a))
    row = []
    for name, f in [("halves", linalg.inv_from_cholesky), ("halves128", halves128),
                    ("identity", identity), ("dpotri", dpotri)]:
        jf = jax.jit(f)
        t = time.perf_counter()
        out = jf(l).block_until_ready()
        first = time.perf_counter() - t
        err = float(np.max(np.abs(np.asarray(out) @ a - np.eye(n))))
        runs = []
        for _ in range(10):
            t = time.perf_counter()
            jf(l).block_until_ready()
            runs.append(time.perf_counter() - t)
        row.append(f"{name} {statistics.median(runs) * 1e3:.1f} ms (first {first:.2f} s, |AX-I| {err:.0e})")
    print(f"n={n} on {jax.devices()[0].device_kind}: " + " | ".join(row), flush=True)
