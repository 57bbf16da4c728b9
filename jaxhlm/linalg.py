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
    BLAS's ``trsm``; by blocks of columns from :data:`BLOCKED_INVERSE_FROM` rows), its lower
    triangle mirrored so that the result is exactly symmetric.
    No host callback: the program can be stored (:mod:`jaxhlm.precompiled`) and run on any
    backend.

    ``JAXHLM_COMPILATION_CACHE=0 python benchmarks/probes/inverse.py`` (2-core CPU,
    2026-12-04, median of 10; first call with compilation): at n = 1160 (InstEval's dense
    block) 38-41 ms (0.15 s) against 52 ms (0.55-0.58 s) by halves in matrix products
    (LAPACK's ``trtri`` and ``lauum`` written as blocks, jaxhlm's way before), 95-100 ms
    for one solve and a product, and 21-26 ms for LAPACK's ``dpotri`` through a host
    callback, which no stored program can hold.
    """
    n = l.shape[-1]
    eye = jnp.eye(n, dtype=l.dtype)
    edges = [round(k * n / INVERSE_BLOCKS) for k in range(INVERSE_BLOCKS + 1)] if n >= BLOCKED_INVERSE_FROM \
        else [0, n]
    columns = []
    for k0, k1 in zip(edges[:-1], edges[1:]):
        # columns k0:k1 of L^{-1} are 0 above row k0, and there they are L_22^{-1}'s, with
        # L_22 = L[k0:, k0:]; so are the rows k0: of (L L')^{-1}'s columns (L^{-T} upper)
        trailing = l[..., k0:, k0:]
        x = lax.linalg.triangular_solve(trailing, jnp.broadcast_to(eye[k0:, k0:k1], l.shape[:-2] + (n - k0, k1 - k0)),
                                        left_side=True, lower=True)
        x = lax.linalg.triangular_solve(trailing, x, left_side=True, lower=True, transpose_a=True)
        columns.append(jnp.concatenate([jnp.zeros(l.shape[:-2] + (k0, k1 - k0), l.dtype), x], axis=-2))
    x = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
    return jnp.tril(x) + jnp.swapaxes(jnp.tril(x, -1), -1, -2)


BLOCKED_INVERSE_FROM = 512
INVERSE_BLOCKS = 4
"""From ``BLOCKED_INVERSE_FROM`` rows, :func:`inv_from_cholesky` solves ``INVERSE_BLOCKS``
blocks of columns, each with the trailing factor alone: 0.94 n^3 flops instead of 2 n^3.
``/tmp`` probe (XLA level 1, median of 11, alternating, 2026-12-04): n = 512 6.35 -> 5.44 ms,
800 17.0 -> 13.2 ms, 1,160 39.2 -> 29.8 ms, 1,600 94.8 -> 89.3 ms; at n = 256 1.07 against
1.00 ms, so smaller blocks keep the two whole solves (a smaller program)."""
