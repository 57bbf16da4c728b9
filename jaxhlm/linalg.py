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

import jax.numpy as jnp
from jax import lax

UNROLL = 8
"""Blocks (one per level, on leading axes) up to this size are factored written out."""

DENSE_UNROLL = 3
"""A single dense matrix is factored written out only up to this size, else by LAPACK.
Penicillin's fit (an 8 x 8 rest's matrix), empty compilation cache, 2-core CPU: tracing
and lowering 1.9 -> 1.1 s, XLA 3.8 -> 1.6 s; its vmapped chunk of 128 refits: XLA
7.1-8.9 -> 2.0-2.9 s, the warm chunk unchanged (16.6-18.6 against 16.6-16.7 ms).  At
3 x 3 (sleepstudy) LAPACK saved no compilation and ran the chunk slower
(``benchmarks/probes/unroll.py``)."""

HALVE_ABOVE = 256


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


def _triangular_inverse(l: jnp.ndarray) -> jnp.ndarray:
    """L^{-1} for lower-triangular L, by halves: [[A, 0], [B, C]]^{-1} =
    [[A^{-1}, 0], [-C^{-1} B A^{-1}, C^{-1}]], down to blocks of ``HALVE_ABOVE`` rows
    (a triangular solve with the identity)."""
    n = l.shape[-1]
    if n <= HALVE_ABOVE:
        return solve_lower(l, jnp.broadcast_to(jnp.eye(n, dtype=l.dtype), l.shape), dense=True)
    h = n // 2
    a = _triangular_inverse(l[..., :h, :h])
    c = _triangular_inverse(l[..., h:, h:])
    b = -c @ (l[..., h:, :h] @ a)
    zero = jnp.zeros(l.shape[:-2] + (h, n - h), l.dtype)
    return jnp.concatenate([jnp.concatenate([a, zero], -1), jnp.concatenate([b, c], -1)], -2)


def _gram_lower(x: jnp.ndarray) -> jnp.ndarray:
    """X'X for lower-triangular X, by halves (LAPACK's ``lauum``): with X = [[A, 0], [B, C]],
    X'X = [[A'A + B'B, B'C], [C'B, C'C]]."""
    n = x.shape[-1]
    xt = jnp.swapaxes(x, -1, -2)
    if n <= HALVE_ABOVE:
        return xt @ x
    h = n // 2
    a, b, c = x[..., :h, :h], x[..., h:, :h], x[..., h:, h:]
    bt = jnp.swapaxes(b, -1, -2)
    off = bt @ c
    top = jnp.concatenate([_gram_lower(a) + bt @ b, off], -1)
    return jnp.concatenate([top, jnp.concatenate([jnp.swapaxes(off, -1, -2), _gram_lower(c)], -1)], -2)


def inv_from_cholesky(l: jnp.ndarray) -> jnp.ndarray:
    """(L L')^{-1} from the lower Cholesky factor L: LAPACK's ``potri`` (``trtri``, then
    ``lauum``), in jnp operations so that the program can be stored
    (:mod:`jaxhlm.precompiled`) and run on any backend.

    Both steps go by halves (:func:`_triangular_inverse`, :func:`_gram_lower`) down to
    blocks of at most ``HALVE_ABOVE`` rows, so nearly all the work is matrix products:
    about 4 n^3 / 3 flops against potri's 2 n^3 / 3, at matrix-product speed.  On this
    2-core CPU at n = 1160 (InstEval's dense block): 61-72 ms, against 30-42 ms for LAPACK's
    dpotri through a host callback (which no stored program can hold) and 93-106 ms for
    a triangular solve with the identity and one product (3 n^3 flops); smaller halves
    (64, 128 rows) ran no faster and compiled 1.5-2.5 times longer
    (``benchmarks/probes/inverse.py``).
    """
    return _gram_lower(_triangular_inverse(l))
