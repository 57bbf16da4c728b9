"""The blocked Cholesky factor of a linear mixed model's penalized least squares, given theta.

The model (Bates, Maechler, Bolker and Walker 2015, "Fitting linear mixed-effects
models using lme4", J. Stat. Softw. 67(1), section 3) is

    y = X beta + Z b + e,   b = Lambda_theta u,   u ~ N(0, sigma^2 I),   e ~ N(0, sigma^2 I),

with Lambda_theta block diagonal: I_{ell_k} (x) lambda_k for term k, lambda_k the
term's relative covariance factor (:mod:`jaxhlm.covariance`: for lme4's ``(x | g)``
lower triangular with theta, column-major, as its elements).  Factor

    L L' = [Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y]
           [X'Z Lambda              X'X          X'y       ]
           [y'Z Lambda              y'X          y'y       ]

blockwise, as MixedModels.jl does: term 1 stays block diagonal (ell_1 factors C_j of
lambda_1' Z_1j'Z_1j lambda_1 + I), its Schur complement on the rest is the segment
sum of :mod:`jaxhlm.blocks`, and the rest is one dense Cholesky factor L_rr.  The
factor gives r_yy^2 (the penalised residual sum of squares, the last diagonal element
of L squared), log|L_theta|^2 (the log-determinant of Lambda'Z'Z Lambda + I) and
log|R_X|^2 (that of X'V^{-1}X / sigma^2), from which the response's family
(:mod:`jaxhlm.families`) reads its criterion, and, given sigma^2, the estimates of
beta and b (:func:`estimates`).  Every function here is jit-compiled, differentiable
and vmap-able over theta and over the blocks (several responses).
"""

from __future__ import annotations

from typing import NamedTuple

import functools

from .lazy_jax import jax, jnp, lax

from .blocks import Blocks
from .linalg import cholesky, inv_from_cholesky, log_diag_sum, solve_lower, solve_upper_t
from .structure import Structure


def lambdas(theta: jnp.ndarray, st: Structure) -> list[jnp.ndarray]:
    """The relative covariance factor lambda_k (p_k x p_k) of each term at theta."""
    return st.lambdas(theta)


def _scale_rows(d: jnp.ndarray, lams: list[jnp.ndarray], st: Structure, transpose: bool) -> jnp.ndarray:
    """Multiply the rows of vector-valued rest terms (p_k > 1) by Lambda_k' (or Lambda_k if
    ``transpose``); every other row as it is."""
    parts, offset = [], 0
    for t, lam in zip(st.rest_terms, lams):
        block = d[offset:offset + t.q]
        if t.p > 1:
            lam_t = lam if transpose else lam.T
            block = jnp.einsum("ac,lcm->lam", lam_t, block.reshape(t.nlevels, t.p, -1)).reshape(t.q, -1)
        parts.append(block)
        offset += t.q
    parts.append(d[offset:])
    return jnp.concatenate(parts, axis=0)


def _scalar_scales(lams: list[jnp.ndarray], st: Structure, dtype) -> jnp.ndarray:
    """Per rest column: lambda_k for a scalar term (p_k = 1), 1 for vector terms, X and y."""
    pieces = [jnp.full(t.q, lam[0, 0], dtype) if t.p == 1 else jnp.ones(t.q, dtype)
              for t, lam in zip(st.rest_terms, lams)]
    return jnp.concatenate(pieces + [jnp.ones(st.p + 1, dtype)])


def scale_rest(d: jnp.ndarray, lams: list[jnp.ndarray], st: Structure, transpose: bool = False) -> jnp.ndarray:
    """Lambda_rest' d Lambda_rest (or Lambda d Lambda' if ``transpose``) for a symmetric (m, m) d.

    Scalar terms (p_k = 1, the common case) scale entries elementwise, d_ij s_i s_j;
    vector-valued terms mix the p_k rows and columns of each level with lambda_k.
    """
    s = _scalar_scales(lams, st, d.dtype)
    d = d * s[:, None] * s[None, :]
    if any(t.p > 1 for t in st.rest_terms):
        d = _scale_rows(_scale_rows(d, lams, st, transpose).T, lams, st, transpose).T
    return d


class Factor(NamedTuple):
    """The blocked Cholesky factor at theta and what the objective reads off it."""

    C: jnp.ndarray          # (ell_1, p_1, p_1): factors of term 1's diagonal blocks
    T: jnp.ndarray          # (ell_1, p_1, p_1): C_j^{-1} lambda_1'
    L: jnp.ndarray          # (m, m): dense factor of the rest
    logdet_theta: jnp.ndarray  # log|L_theta|^2
    logdet_x: jnp.ndarray   # log|R_X|^2
    pwrss: jnp.ndarray      # r_yy^2


def _schur_term1(T: jnp.ndarray, blocks: Blocks, m: int, smooth: bool = False) -> jnp.ndarray:
    """S = sum_j A_r1^(j) W_j A_1r^(j) (m x m), with W_j = T_j' T_j = lambda_1 (C_j C_j')^{-1} lambda_1'.

    By the pairs (:mod:`jaxhlm.blocks`): the design part is one segment sum over the
    pairs (upper triangle, then mirrored); y's column is a segment sum over the COO
    entries, since it pairs each entry with Z_1j'y alone.  Without pairs: densely.
    """
    if not blocks.pair_out.shape[0]:
        return _schur_dense(T, blocks, m, smooth)
    W = jnp.einsum("jca,jcb->jab", T, T)
    mm = m - 1
    pv = jnp.einsum("eab,eab->e", W[blocks.pair_level], blocks.pair_val)
    Su = jax.ops.segment_sum(pv, blocks.pair_out, num_segments=mm * mm,
                             indices_are_sorted=True).reshape(mm, mm)
    diag = jnp.arange(mm)
    Sd = (Su + Su.T).at[diag, diag].add(-jnp.diagonal(Su))  # 1-d indices: no m x m constant
    Wc = jnp.einsum("jab,jb->ja", W, blocks.zy1)
    sy = jax.ops.segment_sum(jnp.sum(blocks.coo_val * Wc[blocks.coo_level], axis=-1),
                             blocks.coo_row, num_segments=mm)
    syy = jnp.sum(blocks.zy1 * Wc)
    return jnp.block([[Sd, sy[:, None]], [sy[None, :], syy[None, None]]])


def _term1_columns(blocks: Blocks, m: int, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """The dense (ell_1, p_1, m) array of A_1r^(j) (the COO entries of level j, one column
    per row of the rest), with ``y`` (ell_1, p_1), when given, as its last column.  Padded
    entries (value 0) add nothing.  It depends on the data alone (no scatter depends on
    theta; XLA may hoist it out of an optimiser's loop)."""
    ell1 = blocks.A11.shape[0]
    val = blocks.coo_val
    B = jnp.zeros((ell1, m, val.shape[-1]), val.dtype).at[blocks.coo_level, blocks.coo_row].add(val)
    if y is not None:
        B = B.at[:, m - 1].set(y)
    return jnp.swapaxes(B, 1, 2)


def _schur_dense(T: jnp.ndarray, blocks: Blocks, m: int, smooth: bool = False) -> jnp.ndarray:
    """S = B'B with B the (ell_1 p_1) x m matrix of B_j = T_j [A_1r^(j)  Z_1j'y]: one matrix
    product instead of the pairs, for designs whose levels of term 1 meet much of the rest.
    B_j is T_j times the data's dense columns (:func:`_term1_columns`), so that no scatter
    depends on theta.  ``smooth``: differentiable in forward mode and to any order; else
    by :func:`_gram`, whose gradient is one matrix product."""
    B = jnp.einsum("jab,jbm->jam", T, _term1_columns(blocks, m, blocks.zy1)).reshape(-1, m)
    return B.T @ B if smooth else _gram()(B)


@functools.cache
def _gram():
    """``B -> B'B`` as a ``jax.custom_vjp`` whose gradient is B (C + C') for the cotangent
    C: one matrix product, where JAX's own transpose of B'B makes two (B C and B C'; the
    crossed design of ``benchmarks/crossed.py``: 2.6 ms each of a 12-15 ms evaluation).
    Reverse mode only (built on first use, :mod:`jaxhlm.lazy_jax`)."""
    gram = jax.custom_vjp(lambda B: B.T @ B)
    gram.defvjp(lambda B: (B.T @ B, B), lambda B, ct: (B @ (ct + ct.T),))
    return gram


def dense_parts(M: jnp.ndarray, mr: int, p: int):
    """(L, log|M_RR|, log|M_RX| - log|M_RR|, pwrss) from the rest's matrix M = L L'.

    R indexes the first ``mr`` rows (random terms), X the next ``p``, y the last.  The
    three scalars are what the criterion needs; their gradient with respect to M is
    written out (JAX's generic Cholesky adjoint costs about ten Cholesky factorizations):

        d log|M_RR| = M_RR^{-1},   d pwrss = v v' with v = [-M_RX^{-1} M_RX,y; 1].

    Both inverses come from one triangular inverse of L's leading (m-1) block: with
    N = M_RX^{-1}, M_RR^{-1} = N_RR - N_RX N_XX^{-1} N_XR.  L itself carries no gradient.
    """
    return _dense_parts_with_vjp()(M, mr, p)


@functools.cache
def _dense_parts_with_vjp():
    """:func:`dense_parts` as a ``jax.custom_vjp``, built on first use (:mod:`jaxhlm.lazy_jax`)."""
    parts = jax.custom_vjp(lambda M, mr, p: _dense_fwd(M, mr, p)[0], nondiff_argnums=(1, 2))
    parts.defvjp(_dense_fwd, _dense_bwd)
    return parts


def _dense_fwd(M, mr, p):
    L = cholesky(M, dense=True)
    m = M.shape[0]
    log_d = jnp.log(jnp.diagonal(L))
    out = (lax.stop_gradient(L), 2.0 * jnp.sum(log_d[:mr]), 2.0 * jnp.sum(log_d[mr:mr + p]),
           L[m - 1, m - 1] ** 2)
    return out, L


def _dense_bwd(mr, p, L, cts):
    _, c_r, c_x, c_pw = cts
    m = L.shape[0]
    k = m - 1
    if k == 0:  # M is r^2 itself (no random rows after term 1, no X)
        return (jnp.reshape(c_pw, (1, 1)).astype(L.dtype),)
    Lk = L[:k, :k]
    N = inv_from_cholesky(Lk)                           # M_RX^{-1}
    x = solve_upper_t(Lk, L[k, :k, None], dense=True)[:, 0]   # M_RX^{-1} M_RX,y
    if p:   # (c_r - c_x) M_RR^{-1} (padded with zeros) + c_x N, in one elementwise pass
        corr = N[:, mr:] @ jnp.linalg.solve(N[mr:, mr:], N[mr:, :])
        rand = jnp.arange(k) < mr
        Gk = jnp.where(rand[:, None] & rand[None, :], (c_r - c_x) * (N - corr), 0.0) + c_x * N
    else:   # M_RR^{-1} = N
        Gk = c_r * N
    v = jnp.concatenate([-x, jnp.ones(1, L.dtype)])
    return (jnp.pad(Gk, ((0, 1), (0, 1))) + c_pw * jnp.outer(v, v),)


def rest_matrix(theta: jnp.ndarray, blocks: Blocks, st: Structure):
    """Term 1's factors and the rest's matrix after eliminating term 1.

    Term 1: C_j C_j' = lambda_1' A11_j lambda_1 + I.  Eliminating it subtracts
    S = sum_j A_r1^(j) W_j A_1r^(j) from the rest's cross-products, with
    W_j = T_j' T_j, T_j = C_j^{-1} lambda_1' (:func:`_schur_term1`); the rest's matrix is
    M = Lambda_rest' (Arr - S) Lambda_rest + [I 0; 0 0] (random rows, then X, then y).
    """
    return rest_matrix_at(lambdas(theta, st), blocks, st)


def rest_matrix_at(lams: list[jnp.ndarray], blocks: Blocks, st: Structure, smooth: bool = False):
    """:func:`rest_matrix` given the terms' factors lambda_k themselves (any square roots
    of the relative covariances: the kernel uses them only through products).
    ``smooth``: differentiable in forward mode and to any order (:func:`_schur_dense`);
    else reverse mode's first derivative alone, as :func:`factorize`'s."""
    lam1 = lams[0]
    p1 = lam1.shape[0]
    P1 = jnp.einsum("ai,jab,bk->jik", lam1, blocks.A11, lam1) + jnp.eye(p1, dtype=lam1.dtype)[None]
    C = cholesky(P1)
    T = solve_lower(C, jnp.broadcast_to(lam1.T, C.shape))
    M = scale_rest(blocks.Arr - _schur_term1(T, blocks, st.m, smooth), lams[1:], st)
    rand = jnp.arange(st.m_rand)
    return C, T, M.at[rand, rand].add(1.0)


def smooth_parts(lams: list[jnp.ndarray], blocks: Blocks, st: Structure):
    """(log|L_theta|^2, log|R_X|^2, r_yy^2, R_X) at the terms' factors ``lams``, through
    JAX's own Cholesky factor of the rest's matrix: differentiable to any order (unlike
    :func:`dense_parts`, whose written-out gradient is first order), for the second
    derivatives of inference (:mod:`jaxhlm.inference`).  R_X (p x p, lower triangular)
    gives X'V^{-1}X = R_X R_X' / sigma^2."""
    C, _, M = rest_matrix_at(lams, blocks, st, smooth=True)
    L = lax.linalg.cholesky(M)
    log_d = 2.0 * jnp.log(jnp.diagonal(L))
    mr, p = st.m_rand, st.p
    logdet_theta = 2.0 * jnp.sum(log_diag_sum(C)) + jnp.sum(log_d[:mr])
    return logdet_theta, jnp.sum(log_d[mr:mr + p]), L[-1, -1] ** 2, L[mr:mr + p, mr:mr + p]


def factorize(theta: jnp.ndarray, blocks: Blocks, st: Structure) -> Factor:
    """Update the blocked Cholesky factor for theta: MixedModels.jl's ``updateL!``.

    Term 1's diagonal blocks C_j, then L_rr L_rr' = M, the rest's matrix after
    eliminating term 1 (:func:`rest_matrix`).
    """
    return factorize_at(lambdas(theta, st), blocks, st)


def factorize_at(lams: list[jnp.ndarray], blocks: Blocks, st: Structure) -> Factor:
    """:func:`factorize` given the terms' factors lambda_k themselves."""
    C, T, M = rest_matrix_at(lams, blocks, st)
    L, logdet_r, logdet_x, pwrss = dense_parts(M, st.m_rand, st.p)
    logdet_theta = 2.0 * jnp.sum(log_diag_sum(C)) + logdet_r
    return Factor(C, T, L, logdet_theta, logdet_x, pwrss)


def factorize_smooth(theta: jnp.ndarray, blocks: Blocks, st: Structure) -> Factor:
    """:func:`factorize` through JAX's own Cholesky factor of the rest's matrix (as
    :func:`smooth_parts`): differentiable in forward mode and to any order, for PIRLS's
    modes (:mod:`jaxhlm.pirls`), which are differentiated through their loop."""
    C, T, M = rest_matrix_at(lambdas(theta, st), blocks, st, smooth=True)
    L = lax.linalg.cholesky(M)
    log_d = 2.0 * jnp.log(jnp.diagonal(L))
    mr, p = st.m_rand, st.p
    return Factor(C, T, L, 2.0 * jnp.sum(log_diag_sum(C)) + jnp.sum(log_d[:mr]),
                  jnp.sum(log_d[mr:mr + p]), L[-1, -1] ** 2)


class Conditional(NamedTuple):
    """Estimates given theta: fixed effects, sigma, and the conditional modes of b."""

    beta: jnp.ndarray        # (p,)
    sigma: jnp.ndarray       # ()
    vcov: jnp.ndarray        # (p, p): sigma^2 (X'V^{-1}X)^{-1}
    b: list[jnp.ndarray]     # per term (ell_k, p_k): conditional modes (lme4's ranef)
    b_var: list[jnp.ndarray]  # per term (ell_k, p_k, p_k): conditional covariances


def estimates(f: Factor, theta: jnp.ndarray, blocks: Blocks, st: Structure,
              sigma2: jnp.ndarray, modes: bool = True, variances: bool = True) -> Conditional:
    """beta-hat, vcov(beta) and the conditional modes and covariances of b from the factor
    at theta, given the residual variance sigma^2 (the family's, :mod:`jaxhlm.families`);
    ``modes=False``: beta-hat, sigma and vcov(beta) alone (b and its covariances empty), for
    a batch, which keeps no modes: a smaller program to trace and compile (sleepstudy's
    chunk of 128 fits: 0.3-0.4 s less of each); ``variances=False``: the modes b without their
    covariances (``b_var`` empty; a large fit's, :func:`variances_deferred`).

    From the factor: [u_rest; beta] solves L_rr[:-1,:-1]' x = L_rr[-1, :-1]; then
    u_1j = (C_j C_j')^{-1} lambda_1' (Z_1j'y - sum_{a in j} a_a w[row_a]) with
    w = [Lambda_rest u_rest; beta]; b = Lambda u.  Conditional covariances are
    lme4's ``condVar``: sigma^2 Lambda (Lambda'Z'Z Lambda + I)^{-1} Lambda' (diagonal
    blocks), with beta held at its estimate.
    """
    lams = lambdas(theta, st)
    m, mr, p = st.m, st.m_rand, st.p
    L = f.L
    Lx = L[mr:mr + p, mr:mr + p]
    Lx_inv = solve_lower(Lx, jnp.eye(p, dtype=L.dtype), dense=True) if p else Lx
    vcov = sigma2 * Lx_inv.T @ Lx_inv
    if not modes:
        return Conditional(_rest_solution(f, st)[1], jnp.sqrt(sigma2), vcov, [], [])
    beta, b1, b_rest = _modes(f, lams, blocks, st)
    lam1 = lams[0]
    b = [b1]
    if not variances:
        return Conditional(beta, jnp.sqrt(sigma2), vcov, b + split_rest(b_rest, st), [])

    # Term 1: V_j = K_j + K_j lambda_1' (sum_pairs a_a G~[r_a, r_b] a_b') lambda_1 K_j,
    # K_j = (C_j C_j')^{-1}; G~ = Lambda_rest (L_RR L_RR')^{-1} Lambda_rest'.
    Cinv = solve_lower(f.C, jnp.broadcast_to(jnp.eye(lam1.shape[0], dtype=L.dtype), f.C.shape))
    K = jnp.einsum("jba,jbc->jac", Cinv, Cinv)
    V = K
    b_var_rest = []
    if mr:
        G = inv_from_cholesky(L[:mr, :mr])
        Gt = scale_rest(jnp.pad(G, ((0, m - mr), (0, m - mr))), lams[1:], st, transpose=True)
        Q = _term1_quadratic(Gt, blocks, st)
        V = K + jnp.einsum("jab,bc,jcd,ed,jef->jaf", K, lam1.T, Q, lam1.T, K)
        offset = 0
        for t, lam in zip(st.rest_terms, lams[1:]):
            Gk = G[offset:offset + t.q, offset:offset + t.q].reshape(t.nlevels, t.p, t.nlevels, t.p)
            diag_blocks = jnp.einsum("lalb->lab", Gk)
            b_var_rest.append(sigma2 * jnp.einsum("ac,lcd,bd->lab", lam, diag_blocks, lam))
            offset += t.q
    b += split_rest(b_rest, st)
    b_var = [sigma2 * jnp.einsum("ac,jcd,bd->jab", lam1, V, lam1)] + b_var_rest
    return Conditional(beta, jnp.sqrt(sigma2), vcov, b, b_var)


def variances_deferred(st: Structure) -> bool:
    """Whether a single fit leaves b's conditional covariances to their first use (a
    result's ``ranef``; lme4's ``ranef(condVar = TRUE)`` and MixedModels.jl's ``condVar``
    compute them on demand too): where the rest has ``DEFER_VARIANCES_FROM`` random rows
    or more, they need the inverse of its dense factor, as much work as a gradient
    evaluation (InstEval, m_rand = 1,156: 77 ms of a 0.7 s fit).  Smaller fits keep them,
    so that ``ranef`` needs no program of its own."""
    return st.m_rand >= DEFER_VARIANCES_FROM


DEFER_VARIANCES_FROM = 512


def _modes(f: Factor, lams, blocks: Blocks, st: Structure):
    """beta-hat, term 1's modes b_1 (ell_1, p_1) and the rest's b (flat) from the factor."""
    beta, u1, u_rest, b_rest = _spherical_modes(f, lams, blocks, st)
    return beta, u1 @ lams[0].T, b_rest


def _rest_solution(f: Factor, st: Structure):
    """The rest's spherical modes u_rest (flat) and beta-hat: L_rr[:-1,:-1]' x = L_rr[-1, :-1]."""
    m, mr = st.m, st.m_rand
    L = f.L
    x = (solve_upper_t(L[:m - 1, :m - 1], L[m - 1, :m - 1, None], dense=True)[:, 0] if m > 1
         else jnp.zeros((0,), L.dtype))      # nothing but term 1 and y (a GLMM's beta given)
    return x[:mr], x[mr:]


def _spherical_modes(f: Factor, lams, blocks: Blocks, st: Structure):
    """beta-hat, the spherical modes u_1 (ell_1, p_1) and u_rest (flat), and b_rest."""
    u_rest, beta = _rest_solution(f, st)
    b_rest = rest_b(u_rest, lams, st)
    u1 = term1_mode(f.C, f.T, jnp.concatenate([b_rest, beta]), blocks)
    return beta, u1, u_rest, b_rest


def modes(f: Factor, theta: jnp.ndarray, blocks: Blocks, st: Structure):
    """beta-hat, the conditional modes b per term (ell_k, p_k) and the spherical modes u
    (flat: term 1's, then the rest's) from the factor: the part of :func:`estimates` that
    PIRLS's iterations need (:mod:`jaxhlm.pirls`)."""
    lams = lambdas(theta, st)
    beta, u1, u_rest, b_rest = _spherical_modes(f, lams, blocks, st)
    return beta, [u1 @ lams[0].T] + split_rest(b_rest, st), jnp.concatenate([u1.ravel(), u_rest])


def _term1_quadratic(G: jnp.ndarray, blocks: Blocks, st: Structure) -> jnp.ndarray:
    """Q_j = A_1r^(j) G A_r1^(j) (ell_1, p_1, p_1) over the random rows (G: m x m, zero
    outside them), by the pairs or, without them, densely."""
    m, mr = st.m, st.m_rand
    if not blocks.pair_out.shape[0]:
        A = _term1_columns(blocks, m)[:, :, :mr]
        return jnp.einsum("jam,mn,jbn->jab", A, G[:mr, :mr], A)
    # Ordered pairs (a, b) and (b, a) both count: mirror the off-diagonal ones.
    ra, rb = blocks.pair_out // (m - 1), blocks.pair_out % (m - 1)
    g = jnp.where(blocks.pair_rand, G[ra, rb], 0.0)
    val = blocks.pair_val
    sym = val + jnp.where((ra != rb)[:, None, None], jnp.swapaxes(val, 1, 2), 0.0)
    return jax.ops.segment_sum(g[:, None, None] * sym, blocks.pair_level,
                               num_segments=blocks.A11.shape[0])


def rest_b(u_rest: jnp.ndarray, lams: list[jnp.ndarray], st: Structure) -> jnp.ndarray:
    """b = Lambda u for the terms after the first (their q columns, level-major)."""
    if not st.m_rand:
        return u_rest
    return (_scale_rows(u_rest[:, None], lams[1:], st, transpose=True)[:, 0]
            * _scalar_scales(lams[1:], st, u_rest.dtype)[:st.m_rand])


def split_rest(b_rest: jnp.ndarray, st: Structure) -> list[jnp.ndarray]:
    """The rest's b per term, each (ell_k, p_k)."""
    out, offset = [], 0
    for t in st.rest_terms:
        out.append(b_rest[offset:offset + t.q].reshape(t.nlevels, t.p))
        offset += t.q
    return out


def term1_mode(C: jnp.ndarray, T: jnp.ndarray, w: jnp.ndarray, blocks: Blocks) -> jnp.ndarray:
    """u_1 given w = [b_rest; beta]: u_1j = (C_j C_j')^{-1} lambda_1' (Z_1j'y - sum_{a in j} a_a w[row_a]).

    Term 1's levels are conditionally independent given the rest, so this is exact
    per level (the mode, and the mean of u_1's Gaussian conditional)."""
    h = jax.ops.segment_sum(blocks.coo_val * w[blocks.coo_row][:, None], blocks.coo_level,
                            num_segments=C.shape[0]) - blocks.zy1
    th = jnp.einsum("jab,jb->ja", T, h)
    return -solve_upper_t(C, th[..., None])[..., 0]
