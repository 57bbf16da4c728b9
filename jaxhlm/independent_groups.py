"""Kenward-Roger's matrices and the profile's deviances on the host, group by group of the
marginal covariance, for models whose Sigma falls into small independent blocks: nothing
to compile.

:func:`jaxhlm.inference.kenward_roger.adjusted` differentiates the blocked factor twice, a
program that took 0.8-0.9 s to trace and compile on a 2-core CPU (Exam), against 3 s for
pbkrtest's whole computation; the numbers themselves take milliseconds.  Where the rows
fall into independent groups (rows sharing a level of any term are in one group: one
grouping factor, terms on the same factor, factors nested in an outer one; a small crossed
design is one group), Sigma = blockdiag_g Sigma_g, and what Kenward and Roger's adjustment
and lme4's profile need is a sum over the groups of products of small matrices, here in
closed form (Sigma's Woodbury form), batched over the groups with NumPy.

Group g has its rows' design R_g = [Z_g X_g y_g] (Z_g: the q_g columns of the
random-effects levels it holds), the data's cross-products K_g = R_g' W_g R_g, and the
relative covariance c_g = blockdiag(Cov_k / sigma^2 per level), so that
Sigma_g = sigma^2 (Z_g c_g Z_g' + W_g^{-1}).  With A = K_ZZ and Y = c (A c + I)^{-1}
(= Lambda (Lambda' A Lambda + I)^{-1} Lambda', defined at a singular c too), Woodbury gives
S = Sigma_g^{-1} = sigma^-2 W Pi with Pi = I - Z Y Z' W, and Pi R = R M with
M = I - [Y K_Z. ; 0], so that

    Gamma_k = R' S (W^{-1} S)^(k-1) R = sigma^(-2k) K M^k      (k = 1, 2, 3).

The parameters are pbkrtest's gamma (:func:`jaxhlm.inference.kenward_roger.linear_parameters`):
each term's free covariance elements (G_i = Z E_i Z', E_i their 0/1 pattern on the levels),
then sigma^2 (G = W^{-1}).  Sums over the groups of

    P_i = -Gamma1_XZ E_i Gamma1_ZX,      P_sigma = -Gamma2_XX,
    Q_ij = Gamma1_XZ E_i Gamma1_ZZ E_j Gamma1_ZX,   Q_i,sigma = Gamma1_XZ E_i Gamma2_ZX,
    Q_sigma,sigma = Gamma3_XX,
    tr(S G_i S G_j) = tr(E_i Gamma1_ZZ E_j Gamma1_ZZ),   tr(S G_i S W^{-1}) = tr(E_i Gamma2_ZZ),
    tr(S W^{-1} S W^{-1}) = sigma^-4 (n_g - 2 tr(Y A) + tr(Y A Y A))

give F = X'Sigma^{-1}X = sum Gamma1_XX and the expected information
I_ij = tr(S G_i S G_j) - 2 tr(Phi Q_ji) + tr(Phi P_i Phi P_j) (:meth:`Groups.kenward_roger`).
The ML deviance with beta at its generalised least squares estimate (lme4's ``devfun2``),

    D = n log sigma^2 - sum log w_i + sum_g log|I + c_g A_g| + r' Sigma^{-1} r + n log 2 pi,

r' Sigma^{-1} r = Gamma1_yy - Gamma1_yX beta-hat, has the gradient
dD/dgamma_i = tr(Sigma^{-1} G_i) - r' Sigma^{-1} G_i Sigma^{-1} r: sum_g tr(E_i Gamma1_ZZ) - u'E_i u
with u = Z'Sigma^{-1} r, and sigma^-2 (n - sum tr(Y A)) - r'S W^{-1} S r for sigma^2
(:meth:`Groups.deviance`).  Tested against the compiled paths and pbkrtest's dense n x n
algorithm.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .errors import JaxhlmError

MAX_BLOCK = 64
"""The most random-effects columns (q_g) a group may hold: beyond, the groups' dense
q_g x q_g matrices would cost more than the compiled programs (a crossed design is one
group of all its levels)."""

MAX_WORK = 20_000_000
"""The most elements (groups x (q_g + p + 1)^2 x parameters) the batched products may hold."""

CHUNK_ROWS = 65_536
"""Rows whose cross-products are summed at once (bounds the temporary arrays)."""

PASSES = 16
"""Passes of the grouping's label propagation before a design counts as not falling into
independent groups (a nested design settles in two or three)."""


def group_of_rows(frame) -> np.ndarray | None:
    """Each row's independent group (0 .. G-1; rows sharing a level of any random term are in
    one group), or None where the labels do not settle in :data:`PASSES` passes."""
    label = np.asarray(frame.terms[0].codes, dtype=np.int64)
    for _ in range(PASSES):
        before = label
        for term in frame.terms:
            level = np.full(term.spec.nlevels, np.iinfo(np.int64).max)
            np.minimum.at(level, term.codes, label)
            label = level[term.codes]
        if np.array_equal(label, before):
            return np.unique(label, return_inverse=True)[1]
    return None


def _level_groups(term, group: np.ndarray) -> np.ndarray:
    """Each level's group (-1 for a level without rows)."""
    out = np.full(term.spec.nlevels, -1, dtype=np.int64)
    out[term.codes] = group
    return out


def layout(frame, group: np.ndarray):
    """(each level's group and its first column within the group, per term (ell_k,) each;
    q_g per group): a group's columns are its levels of term 1 (p_1 columns each, in level
    order), then its levels of term 2, ..."""
    G = int(group.max()) + 1
    used = np.zeros(G, dtype=np.int64)
    groups, slots = [], []
    for term in frame.terms:
        p, level_group = term.spec.p, _level_groups(term, group)
        levels = np.flatnonzero(level_group >= 0)
        order = levels[np.argsort(level_group[levels], kind="stable")]
        counts = np.bincount(level_group[levels], minlength=G)
        rank = np.zeros(term.spec.nlevels, dtype=np.int64)
        rank[order] = np.arange(order.size) - (np.cumsum(counts) - counts)[level_group[order]]
        slot = np.zeros(term.spec.nlevels, dtype=np.int64)
        slot[levels] = used[level_group[levels]] + p * rank[levels]
        groups.append(level_group)
        slots.append(slot)
        used = used + p * counts
    return groups, slots, used


class Grouping(NamedTuple):
    """Each row's group, each term's levels' groups and slots (:func:`layout`), the number
    of groups G, the most random columns of a group qmax, and d = qmax + p + 1."""

    group: np.ndarray
    level_group: list
    slots: list
    G: int
    qmax: int
    d: int


def grouping(frame) -> Grouping | None:
    """The model's rows in independent groups of at most :data:`MAX_BLOCK` random columns,
    or None."""
    if not frame.terms:
        return None
    group = group_of_rows(frame)
    if group is None:
        return None
    level_group, slots, q = layout(frame, group)
    qmax = int(q.max())
    if qmax > MAX_BLOCK:
        return None
    return Grouping(group, level_group, slots, q.size, qmax, qmax + frame.X.shape[1] + 1)


def weighted(frame, vals):
    """(the rows ``vals`` times sqrt(w_i), the rows of positive weight, sum log w_i) for the
    prior weights w (1 without)."""
    w = np.ones(frame.nobs) if frame.weights is None else np.asarray(frame.weights, dtype=float)
    return vals * np.sqrt(w)[:, None], float((w > 0).sum()), float(np.log(w[w > 0]).sum())


def design(frame, slots, qmax: int):
    """Each row's entries of [Z X y] (n, d) and their columns within its group's
    (qmax + p + 1) columns: its levels' slots, then X and y after the qmax random ones."""
    n, d = frame.nobs, qmax + frame.X.shape[1] + 1
    cols = [slot[term.codes][:, None] + np.arange(term.spec.p) for term, slot in zip(frame.terms, slots)]
    cols += [np.broadcast_to(qmax + np.arange(d - qmax), (n, d - qmax))]
    vals = np.concatenate([term.Z for term in frame.terms] + [frame.X, frame.y[:, None]], axis=1)
    return np.concatenate(cols, axis=1), vals


def cross_products(group, cols, vals, G: int, d: int) -> np.ndarray:
    """(S, G, d, d): for each of the S row arrays ``vals`` (S, n, k), each group's sum of
    its rows' outer products (the values at ``cols``), a chunk of :data:`CHUNK_ROWS` rows
    at a time."""
    K = np.zeros((len(vals), G * d * d))
    for rows in range(0, group.shape[0], CHUNK_ROWS):
        g, cc = group[rows:rows + CHUNK_ROWS], cols[rows:rows + CHUNK_ROWS]
        index = ((g[:, None, None] * d + cc[:, :, None]) * d + cc[:, None, :]).ravel()
        for s, v in enumerate(vals):
            vv = v[rows:rows + CHUNK_ROWS]
            K[s] += np.bincount(index, (vv[:, :, None] * vv[:, None, :]).ravel(), minlength=G * d * d)
    return K.reshape(len(vals), G, d, d)


@dataclasses.dataclass
class Groups:
    """A model's independent groups: ``K`` (G, d, d) the cross-products of [Z_g X_g y_g]
    (d = qmax + p + 1), ``nobs`` the rows of positive weight, ``logw`` sum log w_i,
    ``E`` (k, G, qmax, qmax) each free covariance element's pattern, and where each term's
    levels sit (``level_group``, ``slots``)."""

    K: np.ndarray
    nobs: float
    logw: float
    E: np.ndarray
    qmax: int
    level_group: list
    slots: list
    structure: object

    @classmethod
    def of(cls, frame, st) -> "Groups | None":
        """The groups of a model with random terms of linear covariances and no residual
        structure, or None where its rows do not fall into small independent groups."""
        if not frame.terms or st.residual is not None:
            return None
        try:
            nparams = sum(len(t.covariance.linear_entries()) for t in st.terms) + 1
        except JaxhlmError:   # a covariance not linear in its parameters
            return None
        gr = grouping(frame)
        if gr is None or gr.G * gr.d * gr.d * max(nparams, gr.d) > MAX_WORK:
            return None
        G, qmax, d = gr.G, gr.qmax, gr.d
        cols, vals = design(frame, gr.slots, qmax)
        vals, nobs, logw = weighted(frame, vals)
        K = cross_products(gr.group, cols, [vals], G, d)[0]
        E = []
        for t, lg, slot in zip(st.terms, gr.level_group, gr.slots):
            g, s = lg[lg >= 0], slot[lg >= 0]
            for r, c in t.covariance.linear_entries():
                e = np.zeros((G, qmax, qmax))
                e[g, s + r, s + c] = e[g, s + c, s + r] = 1.0
                E.append(e)
        return cls(K, nobs, logw, np.stack(E), qmax, gr.level_group, gr.slots, st)

    # ------------------------------------------------------------ the covariances
    def relative(self, gamma, floor: float | None = None) -> np.ndarray | None:
        """c_g (G, qmax, qmax) at gamma; with ``floor``, each term's Cov_k / sigma^2 plus
        floor I where its smallest eigenvalue is below it (the compiled Kenward-Roger's
        boundary rule); without, None where a Cov_k is not positive semi-definite."""
        c = np.zeros((self.K.shape[0], self.qmax, self.qmax))
        k = 0
        for t, lg, slot in zip(self.structure.terms, self.level_group, self.slots):
            rows, cols = (np.array(a, dtype=int) for a in zip(*t.covariance.linear_entries()))
            rel = np.zeros((t.p, t.p))
            rel[rows, cols] = rel[cols, rows] = gamma[k:k + rows.size] / gamma[-1]
            k += rows.size
            smallest = np.linalg.eigvalsh(rel)[0]
            if floor is not None and smallest < floor:
                rel = rel + floor * np.eye(t.p)
            elif floor is None and smallest < -1e-12 * max(np.abs(rel).max(), 1.0):
                return None
            idx = slot[lg >= 0][:, None] + np.arange(t.p)
            c[lg[lg >= 0][:, None, None], idx[:, :, None], idx[:, None, :]] = rel
        return c

    def _gammas(self, c, s2: float, K=None, powers: int = 1):
        """(Y, A, Gamma_1 .. Gamma_powers) of every group (the module docstring)."""
        K = self.K if K is None else K
        q = self.qmax
        A = K[:, :q, :q]
        Y = np.swapaxes(np.linalg.solve(np.swapaxes(A @ c + np.eye(q), 1, 2), np.swapaxes(c, 1, 2)), 1, 2)
        Y = 0.5 * (Y + np.swapaxes(Y, 1, 2))
        M = np.broadcast_to(np.eye(K.shape[1]), K.shape).copy()
        M[:, :q, :] -= Y @ K[:, :q, :]
        out, KM = [], K
        for k in range(1, powers + 1):
            KM = KM @ M
            out.append(KM / s2 ** k)
        return Y, A, out

    # ------------------------------------------------------------ Kenward and Roger
    def kenward_roger(self, gamma, floor: float):
        """(F, P (k, p, p), Q_ij + Q_ji (k, k, p, p), I (k, k)) at gamma (the module
        docstring), the last parameter sigma^2."""
        gamma = np.asarray(gamma, dtype=float)
        s2, q, E = float(gamma[-1]), self.qmax, self.E
        Y, A, (g1, g2, g3) = self._gammas(self.relative(gamma, floor), s2, powers=3)
        Z, X = slice(0, q), slice(q, self.K.shape[1] - 1)
        U1 = g1[:, Z, X]
        V = np.einsum("igqr,grb->igqb", E, U1)                # E_i Gamma1_ZX
        H = np.einsum("igqr,grs->igqs", E, g1[:, Z, Z])        # E_i Gamma1_ZZ
        k, p = E.shape[0] + 1, U1.shape[-1]
        P = np.empty((k, p, p))
        P[:-1] = -np.einsum("gqa,igqb->iab", U1, V)
        P[-1] = -g2[:, X, X].sum(0)
        Q = np.empty((k, k, p, p))
        Q[:-1, :-1] = np.einsum("igqa,gqr,jgrb->ijab", V, g1[:, Z, Z], V)
        Q[:-1, -1] = np.einsum("igqa,gqb->iab", V, g2[:, Z, X])
        Q[-1, :-1] = np.swapaxes(Q[:-1, -1], 1, 2)
        Q[-1, -1] = g3[:, X, X].sum(0)
        T = np.empty((k, k))                                   # tr(S G_i S G_j)
        T[:-1, :-1] = np.einsum("igab,jgba->ij", H, H)
        T[:-1, -1] = T[-1, :-1] = np.einsum("igab,gba->i", E, g2[:, Z, Z])
        YA = Y @ A
        T[-1, -1] = (self.nobs - 2.0 * np.trace(YA, axis1=1, axis2=2).sum() + np.einsum("gab,gba->", YA, YA)) / s2 ** 2
        F = g1[:, X, X].sum(0)
        Phi = np.linalg.inv(F)
        info = T - 2.0 * np.einsum("ab,jiba->ij", Phi, Q) + np.einsum("ab,ibc,cd,jda->ij", Phi, P, Phi, P)
        return F, P, Q + np.swapaxes(Q, 0, 1), 0.5 * (info + info.T)

    # ------------------------------------------------------------ the ML deviance
    def holding(self, j: int, f: float) -> np.ndarray:
        """K with fixed effect j held at f: x_j's column dropped, y - f x_j for y."""
        d, xj = self.K.shape[1], self.qmax + j
        T = np.delete(np.eye(d), xj, axis=1)
        T[xj, -1] = -f
        return T.T @ self.K @ T

    def deviance(self, gamma, K=None):
        """(the ML deviance with beta at its estimate, its gradient in gamma), or
        (nan, nan) where a covariance is not positive semi-definite (the module docstring);
        ``K`` as :meth:`holding` gives it for a fixed effect held."""
        gamma = np.asarray(gamma, dtype=float)
        c = self.relative(gamma)
        if c is None or not gamma[-1] > 0:
            return np.nan, np.full(gamma.size, np.nan)
        s2, q = float(gamma[-1]), self.qmax
        K = self.K if K is None else K
        Y, A, (g1, g2) = self._gammas(c, s2, K, powers=2)
        sign, logdet = np.linalg.slogdet(np.eye(q) + c @ A)
        if np.any(sign <= 0):
            return np.nan, np.full(gamma.size, np.nan)
        X, y = slice(q, K.shape[1] - 1), K.shape[1] - 1
        F, b = g1[:, X, X].sum(0), g1[:, X, y].sum(0)
        beta = np.linalg.solve(F, b) if b.size else b
        a = np.concatenate([-beta, [1.0]])
        value = (self.nobs * (np.log(s2) + np.log(2.0 * np.pi)) - self.logw + logdet.sum()
                 + g1[:, y, y].sum() - b @ beta)
        u = g1[:, :q, q:] @ a                                   # Z' Sigma^{-1} r, per group
        grad = np.empty(gamma.size)
        grad[:-1] = (np.einsum("igab,gba->i", self.E, g1[:, :q, :q])
                     - np.einsum("ga,igab,gb->i", u, self.E, u))
        grad[-1] = ((self.nobs - np.trace(Y @ A, axis1=1, axis2=2).sum()) / s2
                    - a @ g2[:, q:, q:].sum(0) @ a)
        return value, grad
