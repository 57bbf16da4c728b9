"""Cholesky factors and triangular solves over the last two axes.

Mixed models need many tiny factorizations (one p x p block per level of the first
grouping factor, p = 1 or 2 mostly) and one dense one.  For n <= ``UNROLL`` the
factorization is written out element by element in jnp operations: it batches over
leading axes and under ``vmap`` as plain vectorised arithmetic, which is far faster
than a LAPACK call per block, and differentiates to any order.  Larger matrices use
``jax.lax.linalg`` (LAPACK on CPU, cuSOLVER on GPU).

A matrix that is not positive definite gives NaN (the square root of a negative
pivot), never an exception: callers turn NaN into a status code.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

UNROLL = 8


def cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor L of symmetric positive definite ``a`` (L L' = a); NumPy's
    ``np.linalg.cholesky``.  Only the lower triangle of ``a`` is read."""
    n = a.shape[-1]
    if n > UNROLL:
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


def solve_lower(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve L x = b for lower-triangular L; ``b`` has shape (..., n, k)."""
    n = l.shape[-1]
    if n > UNROLL:
        return lax.linalg.triangular_solve(l, b, left_side=True, lower=True)
    xs: list[jnp.ndarray] = []
    for i in range(n):
        s = b[..., i, :]
        for k in range(i):
            s = s - l[..., i, k, None] * xs[k]
        xs.append(s / l[..., i, i, None])
    return jnp.stack(xs, axis=-2)


def solve_upper_t(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve L' x = b for lower-triangular L (back substitution); ``b``: (..., n, k)."""
    n = l.shape[-1]
    if n > UNROLL:
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


def _tri_solve_right(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve X L = b for lower-triangular L."""
    return lax.linalg.triangular_solve(l, b, left_side=False, lower=True)


def inv_lower(l: jnp.ndarray, leaf: int = 128) -> jnp.ndarray:
    """Inverse of a lower-triangular matrix (LAPACK's ``trtri``), by recursive halving.

    inv([A 0; B C]) = [A^-1 0; -C^-1 B A^-1  C^-1], with both products as triangular
    solves: about n^3/3 flops, against n^3 for a triangular solve with the identity.
    """
    n = l.shape[-1]
    if n <= leaf:
        return solve_lower(l, jnp.broadcast_to(jnp.eye(n, dtype=l.dtype), l.shape))
    h = n // 2
    a, b, c = l[..., :h, :h], l[..., h:, :h], l[..., h:, h:]
    ai, ci = inv_lower(a, leaf), inv_lower(c, leaf)
    off = -lax.linalg.triangular_solve(c, _tri_solve_right(a, b), left_side=True, lower=True)
    top = jnp.concatenate([ai, jnp.zeros(a.shape[:-1] + (n - h,), l.dtype)], axis=-1)
    return jnp.concatenate([top, jnp.concatenate([off, ci], axis=-1)], axis=-2)


def gram_lower(k: jnp.ndarray, leaf: int = 128) -> jnp.ndarray:
    """K' K for lower-triangular K (LAPACK's ``lauum``), by recursive halving.

    With K = [P 0; Q R]: K'K = [P'P + Q'Q  Q'R; R'Q  R'R].  For K = L^-1 this is
    (L L')^-1, the inverse of a matrix from its Cholesky factor.
    """
    n = k.shape[-1]
    if n <= leaf:
        return jnp.swapaxes(k, -1, -2) @ k
    h = n // 2
    p, q, r = k[..., :h, :h], k[..., h:, :h], k[..., h:, h:]
    qt = jnp.swapaxes(q, -1, -2)
    tl = gram_lower(p, leaf) + qt @ q
    tr = qt @ r
    br = gram_lower(r, leaf)
    return jnp.concatenate([jnp.concatenate([tl, tr], axis=-1),
                            jnp.concatenate([jnp.swapaxes(tr, -1, -2), br], axis=-1)], axis=-2)


def inv_from_cholesky(l: jnp.ndarray) -> jnp.ndarray:
    """(L L')^{-1} from the lower Cholesky factor L (LAPACK's ``potri``)."""
    return gram_lower(inv_lower(l))
