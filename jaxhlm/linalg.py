"""Cholesky factors and triangular solves over the last two axes.

Mixed models need many tiny factorizations (one p x p block per level of the first
grouping factor, p = 1 or 2 mostly) and one dense one.  For n <= :data:`UNROLL` the
factorization is written out element by element in jnp operations:
it batches over leading axes and under ``vmap`` as plain vectorised arithmetic, which is
far faster than a LAPACK call per block, and differentiates to any order.  Larger
matrices use ``jax.lax.linalg`` (LAPACK on CPU, cuSOLVER on GPU).  A single dense
matrix (``dense=True``: the rest's matrix after term 1, a Hessian) is written out only
up to :data:`DENSE_UNROLL`: written out, an n x n factor is O(n^3) operations in the program,
which XLA compiles slowly and which buys nothing when there is one matrix per fit.

A matrix that is not positive definite gives NaN (the square root of a negative
pivot), never an exception: callers turn NaN into a status code.
"""

from __future__ import annotations

from .lazy_jax import jnp, lax

UNROLL = 8
"""Blocks (one per level, on leading axes) up to this size are factored written out."""

DENSE_UNROLL = 3
"""A single dense matrix is factored written out only up to this size, else by LAPACK.
Penicillin's fit (an 8 x 8 rest's matrix), empty compilation cache, 2-core CPU: tracing
and lowering 1.9 -> 1.1 s, XLA 3.8 -> 1.6 s; its vmapped chunk of 128 refits: XLA
7.1-8.9 -> 2.0-2.9 s, the warm chunk unchanged (16.6-18.6 against 16.6-16.7 ms).  At
3 x 3 (sleepstudy) LAPACK saved no compilation and ran the chunk slower
(``benchmarks/probes/unroll.py``)."""

def _written_out(n: int, dense: bool) -> bool:
    return n <= (DENSE_UNROLL if dense else UNROLL)


def cholesky(a: jnp.ndarray, dense: bool = False) -> jnp.ndarray:
    """Lower Cholesky factor L of symmetric positive definite ``a`` (L L' = a); NumPy's
    ``np.linalg.cholesky``.  Only the lower triangle of ``a`` is read.  ``dense``: ``a``
    is one matrix per fit, not blocks (written out only up to :data:`DENSE_UNROLL`)."""
    n = a.shape[-1]
    if not _written_out(n, dense):
        return lax.linalg.cholesky(a, symmetrize_input=False)
    cols: list[list[jnp.ndarray]] = [[None] * n for _ in range(n)]
    for j in range(n):
        s = a[..., j, j] - sum((cols[j][k] ** 2 for k in range(j)), jnp.zeros_like(a[..., j, j]))
        cols[j][j] = jnp.sqrt(s)
        for i in range(j + 1, n):
            s = a[..., i, j] - sum((cols[i][k] * cols[j][k] for k in range(j)),
                                   jnp.zeros_like(a[..., i, j]))
            cols[i][j] = s / cols[j][j]
    zero = jnp.zeros_like(a[..., 0, 0])
    rows = [jnp.stack([cols[i][j] if j <= i else zero for j in range(n)], axis=-1) for i in range(n)]
    return jnp.stack(rows, axis=-2)


def solve_lower(l: jnp.ndarray, b: jnp.ndarray, dense: bool = False) -> jnp.ndarray:
    """Solve L x = b for lower-triangular L; ``b`` has shape (..., n, k)."""
    n = l.shape[-1]
    if not _written_out(n, dense):
        return lax.linalg.triangular_solve(l, b, left_side=True, lower=True)
    xs: list[jnp.ndarray] = []
    for i in range(n):
        s = b[..., i, :]
        for k in range(i):
            s = s - l[..., i, k, None] * xs[k]
        xs.append(s / l[..., i, i, None])
    return jnp.stack(xs, axis=-2)


def solve_upper_t(l: jnp.ndarray, b: jnp.ndarray, dense: bool = False) -> jnp.ndarray:
    """Solve L' x = b for lower-triangular L (back substitution); ``b``: (..., n, k)."""
    n = l.shape[-1]
    if not _written_out(n, dense):
        return lax.linalg.triangular_solve(l, b, left_side=True, lower=True, transpose_a=True)
    xs: list[jnp.ndarray] = [None] * n
    for i in reversed(range(n)):
        s = b[..., i, :]
        for k in range(i + 1, n):
            s = s - l[..., k, i, None] * xs[k]
        xs[i] = s / l[..., i, i, None]
    return jnp.stack(xs, axis=-2)


def log_diag_sum(l: jnp.ndarray) -> jnp.ndarray:
    """Sum of log of the diagonal over the last two axes (half the log-determinant of L L')."""
    return jnp.sum(jnp.log(jnp.diagonal(l, axis1=-2, axis2=-1)), axis=-1)


def inv_from_cholesky(l: jnp.ndarray) -> jnp.ndarray:
    """(L L')^{-1} from the lower Cholesky factor L (leading axes batch): two triangular
    solves with the identity, L^{-T} (L^{-1} I), as LAPACK's ``potrs`` (2 n^3 flops, in
    BLAS's ``trsm``), its lower triangle mirrored so that the result is exactly symmetric.
    No host callback: the program can be stored (:mod:`jaxhlm.precompiled`) and run on any
    backend.

    ``JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/inverse.py`` (2-core CPU,
    2026-12-04, median of 10; first call with compilation): at n = 1160 (InstEval's dense
    block) 38-41 ms (0.15 s) against 52 ms (0.55-0.58 s) by halves in matrix products
    (LAPACK's ``trtri`` and ``lauum`` written as blocks, jaxhlm's way before), 95-100 ms
    for one solve and a product, and 21-26 ms for LAPACK's ``dpotri`` through a host
    callback, which no stored program can hold.
    """
    eye = jnp.broadcast_to(jnp.eye(l.shape[-1], dtype=l.dtype), l.shape)
    x = lax.linalg.triangular_solve(l, eye, left_side=True, lower=True)
    x = lax.linalg.triangular_solve(l, x, left_side=True, lower=True, transpose_a=True)
    return jnp.tril(x) + jnp.swapaxes(jnp.tril(x, -1), -1, -2)
