"""Probe: (L L')^{-1} from a Cholesky factor, four ways, run time (median of 10) and first
call (compilation included), at the dense block sizes of the crossed benchmark (243) and
InstEval (1160):

- ``jaxhlm``: :func:`jaxhlm.linalg.inv_from_cholesky` (two triangular solves with the
  identity, since 2026-12-04);
- ``halves``: by halves in matrix products (LAPACK's trtri and lauum as blocks, down to
  256 rows: jaxhlm's way from 2026-12-02 to 2026-12-04, kept here to compare);
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


HALVE_ABOVE = 256


def _triangular_inverse(l):
    """L^{-1} by halves: [[A, 0], [B, C]]^{-1} = [[A^{-1}, 0], [-C^{-1} B A^{-1}, C^{-1}]]."""
    n = l.shape[-1]
    if n <= HALVE_ABOVE:
        return lax.linalg.triangular_solve(l, jnp.eye(n, dtype=l.dtype), left_side=True, lower=True)
    h = n // 2
    a, c = _triangular_inverse(l[:h, :h]), _triangular_inverse(l[h:, h:])
    b = -c @ (l[h:, :h] @ a)
    return jnp.block([[a, jnp.zeros((h, n - h), l.dtype)], [b, c]])


def _gram_lower(x):
    """X'X for lower-triangular X by halves: [[A'A + B'B, B'C], [C'B, C'C]]."""
    n = x.shape[-1]
    if n <= HALVE_ABOVE:
        return x.T @ x
    h = n // 2
    a, b, c = x[:h, :h], x[h:, :h], x[h:, h:]
    off = b.T @ c
    return jnp.block([[_gram_lower(a) + b.T @ b, off], [off.T, _gram_lower(c)]])


def halves(l):
    return _gram_lower(_triangular_inverse(l))


for n in (243, 1160):
    a = np.random.default_rng(0).normal(size=(n, n))
    a = a @ a.T + n * np.eye(n)
    l = jnp.asarray(np.linalg.cholesky(a))
    row = []
    for name, f in [("jaxhlm", linalg.inv_from_cholesky), ("halves", halves),
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
