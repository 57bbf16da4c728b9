"""A Gaussian LMM fitted on the host by its blocked Cholesky factor: crossed designs with
nothing compiled and JAX not imported.

Where the rows do not fall into small independent groups (:mod:`jaxhlm.group_fit`), as in
a crossed design, :mod:`jaxhlm.kernel` factors lme4's penalized least squares blockwise,
as MixedModels.jl does: term 1's ℓ_1 diagonal blocks, then one dense factor of the rest's
m x m matrix M (the other terms' columns, X, y). This module evaluates that same factor in
NumPy, with the criterion's gradient in closed form, so that a fit compiles nothing and
does not import JAX (a second or more of compilation, or 0.3 s to import JAX and load a
stored program, on a 2-core CPU). BFGS starts from the average-information matrix
(:meth:`BlockedFit.curvature`), a few solves with the factor, instead of probing the
Hessian by k more evaluations. InstEval's ML fit (m = 1,159): 4 evaluations, 0.43 s warm
against the compiled program's 7 and 0.61 s; a crossed design of 60,000 rows, 0.14 s
against 0.32 s (``benchmarks/README.md``, "Crossed designs on the host"). The same pass
with r^2's coefficient 0 and 1 gives the deviance's pieces that Satterthwaite's tests read
(:meth:`BlockedFit.deviance_pieces`, :func:`jaxhlm.inference.satterthwaite.host_parts`).

The forward pass (:mod:`jaxhlm.kernel`'s ``rest_matrix`` and ``dense_parts``): with
A_j = Z_1j'Z_1j, P_j = λ_1'A_jλ_1 + I = C_j C_j' and W_j = λ_1 P_j^{-1} λ_1',

    S = Σ_j A_r1^(j) W_j A_1r^(j),   M = Λ_r'(A_rr - S)Λ_r + [I 0; 0 0] = L L',

log|L_θ|^2 = Σ_j log|P_j| + log|M_RR|, log|R_X|^2 = log|M_RX| - log|M_RR| and
r^2 = L_yy^2 (R: the random rows of the rest; RX: those and X's), read by lme4's ML
deviance and REML criterion (:mod:`jaxhlm.families.gaussian`).

The gradient is that pass in reverse. The criterion's cotangent on M is

    G = c_R M_RR^{-1} (padded) + c_X (M_RX^{-1} - M_RR^{-1}) + (dof / r^2) v v',

with c_R = 1, c_X = 1 for REML (else 0) and v = [-M_RX^{-1} M_RX,y; 1], all from one
inverse of M_RX (:func:`_inverse`). Then with M_0 = A_rr - S and Ḡ = Λ_r G Λ_r':

- a later term k: ∂d/∂λ_k = 2 Σ_l [M_0 Λ_r G]_ll, the sum of its levels' diagonal blocks;
- term 1: S's cotangent is -Ḡ, so W_j's is -Q_j with Q_j = A_1r^(j) Ḡ A_r1^(j) (y's
  column included), and ∂d/∂λ_1 = 2 Σ_j [A_j - (I - A_j W_j) Q_j] λ_1 P_j^{-1}
  (log|P_j| gives the first part, d tr(Q W) = 2 tr(P^{-1}λ_1' Q (I - W A) dλ_1) the second);

and ∂d/∂θ_t = <E_t, ∂d/∂λ_k> for λ_k linear in θ (:class:`jaxhlm.host_fit.HostFit`).
Q_j and S are formed by the blocks' pairs of entries that share a level of term 1
(:mod:`jaxhlm.blocks`), or densely from term 1's columns where the blocks have none.

The estimates at θ̂ are :func:`jaxhlm.kernel.estimates`' (β̂, σ̂, vcov, the modes and
lme4's ``condVar``), in NumPy; they and the starting curvature reuse the last θ's factor
and inverse. The fit equals the compiled one to the optimisers' tolerances, and the
criterion, gradient and estimates equal the kernel's (``tests/test_blocked_fit.py``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from . import host_fit
from .blocks import Blocks, _segment_sum
from .covariance import Diagonal, Unstructured
from .host_fit import LOG_2PI, HostFit, cholesky, solve_lower
from .kernel import Conditional, variances_deferred
from .structure import Structure

MAX_REST = 4096
"""The largest rest (m) fitted on the host: its dense factor and inverse cost about
m^3 / 3 multiply-adds each per evaluation (InstEval's m = 1,159: 20 ms and 25 ms here),
as in the compiled program; beyond this the compiled program's parallel BLAS is left to it."""

INVERSE_BLOCK = 96
"""Triangular blocks up to this size are inverted by LAPACK (``np.linalg.inv``); larger
ones by halves in matrix products (:func:`_lower_inverse`)."""


def _lower_inverse(L):
    """L^{-1} for lower-triangular L, by halves: [[A, 0], [B, C]]^{-1} =
    [[A^{-1}, 0], [-C^{-1} B A^{-1}, C^{-1}]], so that the work is in matrix products
    (m^3 / 3 multiply-adds; NumPy has no triangular inverse, and its general ``inv``
    costs 4x as much)."""
    n = L.shape[0]
    if n <= INVERSE_BLOCK:
        return np.tril(np.linalg.inv(L))
    h = n // 2
    A, C = _lower_inverse(L[:h, :h]), _lower_inverse(L[h:, h:])
    out = np.zeros_like(L)
    out[:h, :h], out[h:, h:] = A, C
    out[h:, :h] = -C @ (L[h:, :h] @ A)
    return out


def _gram_lower(Li):
    """Li' Li (symmetric) for lower-triangular Li, by halves (LAPACK's ``lauum``): with
    Li = [[A, 0], [B, C]], Li'Li = [[A'A + B'B, B'C], [C'B, C'C]]."""
    n = Li.shape[0]
    if n <= INVERSE_BLOCK:
        return Li.T @ Li
    h = n // 2
    A, B, C = Li[:h, :h], Li[h:, :h], Li[h:, h:]
    out = np.empty_like(Li)
    out[:h, :h] = _gram_lower(A) + B.T @ B
    out[h:, :h] = C.T @ B
    out[:h, h:] = out[h:, :h].T
    out[h:, h:] = _gram_lower(C)
    return out


@dataclasses.dataclass
class _Parts:
    """One evaluation's forward pass at θ: the terms' λ_k, term 1's C_j, P_j^{-1} and W_j
    (ℓ_1, p_1, p_1), the rest's M_0 = A_rr - S and the factor L of M (m, m), and the
    criterion's pieces."""

    lams: list
    C: np.ndarray
    P_inv: np.ndarray
    W: np.ndarray
    M0: np.ndarray
    L: np.ndarray
    logdet_theta: float
    logdet_x: float
    r2: float


@dataclasses.dataclass
class BlockedFit(HostFit):
    """A model's blocks (NumPy, :mod:`jaxhlm.blocks`), ready for :meth:`fit`; ``columns``:
    term 1's dense columns A_1r^(j) with Z_1j'y last (ℓ_1, p_1, m), where the blocks have no
    pairs."""

    blocks: Blocks
    structure: Structure
    columns: np.ndarray | None
    _last: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, model) -> "BlockedFit | None":
        """The model's blocked factor for a fit on the host, or None where the compiled
        program fits it: a known σ, a residual structure, a term of another covariance
        than lme4's unstructured or diagonal ones, or a rest larger than :data:`MAX_REST`."""
        frame, st = model.frame, model.structure
        if (not host_fit.ENABLED or frame.sigma is not None or not st.builtin or st.residual is not None
                or not all(isinstance(t.covariance, (Unstructured, Diagonal)) for t in st.terms)
                or st.m > MAX_REST):
            return None
        blocks = model._host_blocks
        return cls(blocks, st, None if blocks.pair_out.size else _term1_columns(blocks, st.m))

    # ------------------------------------------------------------ Λ_r on the rest
    @functools.cached_property
    def _rest_rows(self) -> list:
        """Per later term, (its first row in the rest, ℓ_k, p_k)."""
        out, offset = [], 0
        for t in self.structure.rest_terms:
            out.append((offset, t.nlevels, t.p))
            offset += t.q
        return out

    def _scales(self, lams):
        """Λ_r's diagonal (m,) where every later term is scalar (p_k = 1: λ_k on its rows, 1
        on X's and y's), else None."""
        if any(p > 1 for _, _, p in self._rest_rows):
            return None
        s = np.ones(self.structure.m)
        for (start, ell, _), lam in zip(self._rest_rows, lams[1:]):
            s[start:start + ell] = lam[0, 0]
        return s

    def _right(self, D, lams, transpose: bool = False):
        """D Λ_r (or D Λ_r' with ``transpose``) for D (., m) (or its first m_rand columns):
        each later term's columns mixed within its levels by λ_k; X's and y's as they are."""
        D = D.copy()
        for (start, ell, p), lam in zip(self._rest_rows, lams[1:]):
            cols = slice(start, start + ell * p)
            block = D[:, cols].reshape(D.shape[0], ell, p)
            D[:, cols] = (block @ (lam.T if transpose else lam)).reshape(D.shape[0], -1)
        return D

    def _sandwich(self, D, lams, transpose: bool = False):
        """Λ_r' D Λ_r (or Λ_r D Λ_r' with ``transpose``) for a symmetric D (m, m)."""
        s = self._scales(lams)
        if s is not None:
            return np.multiply(D * s[:, None], s)
        return self._right(self._right(D, lams, transpose).T, lams, transpose)

    # ------------------------------------------------------------ term 1's Schur complement
    @functools.cached_property
    def _pairs(self) -> dict:
        """The pairs' data, arranged once: by their place in the rest's matrix (sorted:
        ``starts`` of each place's run, ``place`` its flat index in (m, m)), and per pair the
        flat index ``at`` of its entry of an (m, m) matrix and ``sym`` = a_a a_b' + a_b a_a'
        off the diagonal (a_a a_a' on it)."""
        b, m = self.blocks, self.structure.m
        mm = m - 1
        out = b.pair_out.astype(np.intp)
        ra, rb = out // mm, out % mm
        at = ra * m + rb
        starts = np.flatnonzero(np.r_[True, out[1:] != out[:-1]])
        val = b.pair_val.reshape(out.size, -1)
        off = ra != rb
        if val.shape[1] == 1:
            sym = val[:, 0] * np.where(off, 2.0, 1.0)
        else:
            sym = (b.pair_val + np.where(off[:, None, None], np.swapaxes(b.pair_val, 1, 2), 0.0)).reshape(out.size, -1)
        return dict(level=b.pair_level.astype(np.intp), val=val, starts=starts, place=at[starts], at=at, sym=sym)

    def _schur(self, W, C_inv, lam1):
        """S = Σ_j A_r1^(j) W_j A_1r^(j) (m, m), y's column included."""
        b, m = self.blocks, self.structure.m
        if self.columns is not None:
            T = C_inv @ lam1.T   # (T_j'T_j = W_j)
            B = np.einsum("jab,jbm->jam", T, self.columns).reshape(-1, m)
            return B.T @ B
        pairs = self._pairs
        ell = W.shape[0]
        Wf = W.reshape(ell, -1)
        pv = Wf[:, 0][pairs["level"]] * pairs["val"][:, 0] if Wf.shape[1] == 1 else \
            np.einsum("ea,ea->e", Wf[pairs["level"]], pairs["val"])
        Su = np.zeros(m * m)
        Su[pairs["place"]] = np.add.reduceat(pv, pairs["starts"])
        Su = Su.reshape(m, m)
        S = Su + Su.T
        mm = m - 1
        S[np.arange(mm), np.arange(mm)] -= np.diagonal(Su)[:mm]
        Wc = np.einsum("jab,jb->ja", W, b.zy1)
        sy = np.bincount(b.coo_row, np.einsum("ea,ea->e", b.coo_val, Wc[b.coo_level]), minlength=mm)
        S[:mm, -1] = S[-1, :mm] = sy
        S[-1, -1] = np.sum(b.zy1 * Wc)
        return S

    def _quadratic(self, G):
        """Q_j = A_1r^(j) G A_r1^(j) (ℓ_1, p_1, p_1) for a symmetric G (m, m), y's column
        included: S's cotangent carried to the W_j."""
        b, m = self.blocks, self.structure.m
        ell, p1 = b.A11.shape[:2]
        if self.columns is not None:
            B = self.columns.reshape(-1, m)
            return np.einsum("jan,jbn->jab", (B @ G).reshape(ell, p1, m), self.columns)
        pairs = self._pairs
        g = G.ravel().take(pairs["at"])
        Q = (np.bincount(pairs["level"], g * pairs["sym"], minlength=ell) if p1 == 1 else
             _segment_sum(np, g[:, None] * pairs["sym"], pairs["level"], ell)).reshape(ell, p1, p1)
        ay = _segment_sum(np, b.coo_val * G[b.coo_row, -1][:, None], b.coo_level, ell)   # Σ_a G[r_a, y] a_a
        cross = ay[:, :, None] * b.zy1[:, None, :]
        return Q + cross + np.swapaxes(cross, 1, 2) + G[-1, -1] * b.zy1[:, :, None] * b.zy1[:, None, :]

    # ------------------------------------------------------------ one evaluation
    def parts(self, theta) -> _Parts | None:
        """The forward pass at theta (k,) (the module docstring); None where a factor is
        not defined (M or a P_j not positive definite)."""
        st, b = self.structure, self.blocks
        lams = [lam[0] for lam in self._lambdas(np.asarray(theta, dtype=float)[None])]
        lam1 = lams[0]
        p1 = lam1.shape[0]
        P = np.einsum("ai,jab,bk->jik", lam1, b.A11, lam1) + np.eye(p1)
        C, ok = cholesky(P[None])
        if not ok[0]:
            return None
        C = C[0]
        C_inv = solve_lower(C, np.broadcast_to(np.eye(p1), C.shape))
        P_inv = np.swapaxes(C_inv, 1, 2) @ C_inv
        W = lam1 @ P_inv @ lam1.T
        M0 = b.Arr - self._schur(W, C_inv, lam1)
        M = self._sandwich(M0, lams)
        rand = np.arange(st.m_rand)
        M[rand, rand] += 1.0
        try:
            L = np.linalg.cholesky(M)
        except np.linalg.LinAlgError:
            return None
        log_d = 2.0 * np.log(np.diagonal(L))
        mr, p = st.m_rand, st.p
        logdet_theta = 2.0 * np.log(np.diagonal(C, axis1=1, axis2=2)).sum() + log_d[:mr].sum()
        return _Parts(lams, C, P_inv, W, M0, L, logdet_theta, log_d[mr:mr + p].sum(), L[-1, -1] ** 2)

    def _dof(self, reml: bool) -> float:
        return float(self.blocks.nobs) - self.structure.p * reml

    def _value(self, f: _Parts | None, reml: bool) -> float:
        if f is None or not f.r2 > 0:
            return np.inf
        dof = self._dof(reml)
        value = (f.logdet_theta + (f.logdet_x if reml else 0.0) - float(self.blocks.logw)
                 + dof * (1.0 + LOG_2PI + np.log(f.r2 / dof)))
        return value if np.isfinite(value) else np.inf

    def _inverse(self, f: _Parts):
        """(M_RX^{-1} (m - 1, m - 1), M_RX^{-1} M_RX,y): one triangular inverse of L's
        leading block and its Gram product (LAPACK's ``potri``), kept for the last θ
        factored (:meth:`_at`)."""
        if self._last.get("parts") is f and "inverse" in self._last:
            return self._last["inverse"]
        k = self.structure.m - 1
        if k == 0:
            return np.zeros((0, 0)), np.zeros(0)
        try:
            Li = _lower_inverse(f.L[:k, :k])
        except np.linalg.LinAlgError:   # (a block LAPACK's LU calls singular, at an extreme θ: no gradient there)
            Li = np.full((k, k), np.nan)
        out = _gram_lower(Li), Li.T @ f.L[k, :k]
        if self._last.get("parts") is f:
            self._last["inverse"] = out
        return out

    def _at(self, theta) -> _Parts | None:
        """:meth:`parts` at theta (k,), kept for the next call at the same θ (the fit's end
        point's estimates, a starting curvature's factor)."""
        key = np.asarray(theta, dtype=float).tobytes()
        if self._last.get("key") != key:
            self._last.clear()
            self._last.update(key=key, parts=self.parts(theta))
        return self._last["parts"]

    def _rest_inverse(self, N):
        """M_RR^{-1} from N = M_RX^{-1}: N_RR - N_RX N_XX^{-1} N_XR."""
        mr = self.structure.m_rand
        if mr == N.shape[0]:
            return N
        return N[:mr, :mr] - N[:mr, mr:] @ np.linalg.solve(N[mr:, mr:], N[mr:, :mr])

    def criteria(self, theta, fits, reml: bool) -> np.ndarray:
        """lme4's ML deviance or REML criterion (m,) at the rows of theta; +inf where it is
        not defined (``fits``: the model's own response, numbered 0)."""
        with np.errstate(all="ignore"):
            return np.array([self._value(self.parts(th), reml) for th in np.asarray(theta, dtype=float)])

    def evaluate(self, theta, fits, reml: bool):
        """(:meth:`criteria`, their gradients (m, k)) at the rows of theta: the gradient in
        closed form (the module docstring); NaN where the criterion is not finite."""
        theta = np.asarray(theta, dtype=float)
        values, grads = np.empty(theta.shape[0]), np.full(theta.shape, np.nan)
        with np.errstate(all="ignore"):
            for i, th in enumerate(theta):
                f = self._at(th)
                values[i] = self._value(f, reml)
                if np.isfinite(values[i]):
                    grads[i] = self._gradient(f, reml)
        return values, grads

    def _gradient(self, f: _Parts, reml: bool) -> np.ndarray:
        """The criterion's gradient (k,) at the forward pass ``f`` (the module docstring)."""
        return self._pull(f, reml, self._dof(reml) / f.r2)

    def deviance_pieces(self, theta, reml: bool):
        """(∇ of log|L_θ|^2 [+ log|R_X|^2 for REML] (k,), ∇r^2 (k,), r^2, F^{-1} (p, p), dof) at
        theta (k,), F = X'V^{-1}X relative to σ^2: what the deviance -2 log L(θ, σ), σ not
        profiled, and vcov(β̂) = σ^2 F^{-1} read (:func:`jaxhlm.inference.satterthwaite.host_parts`).
        The two gradients are the pass in reverse with r^2's coefficient 0 and 1."""
        st = self.structure
        mr, p = st.m_rand, st.p
        with np.errstate(all="ignore"):
            f = self._at(theta)
            if f is None:
                return None
            logdets = self._pull(f, reml, 0.0)
            Li = np.linalg.inv(f.L[mr:mr + p, mr:mr + p])
            return logdets, self._pull(f, reml, 1.0) - logdets, f.r2, Li.T @ Li, self._dof(reml)

    def _pull(self, f: _Parts, reml: bool, c_pw: float) -> np.ndarray:
        """∂/∂θ of log|L_θ|^2 [+ log|R_X|^2 for REML] + c_pw r^2 (k,) at the forward pass ``f``."""
        st, b = self.structure, self.blocks
        m, mr = st.m, st.m_rand
        G = np.zeros((m, m))
        if m > 1:
            N, x = self._inverse(f)
            G[:m - 1, :m - 1] = N if reml else 0.0
            G[:mr, :mr] += self._rest_inverse(N) * (1.0 - reml)
            v = np.append(-x, 1.0)
        else:   # M is r^2 itself
            v = np.ones(1)
        G += c_pw * np.outer(v, v)
        grads = [None] * len(f.lams)
        lam1 = f.lams[0]
        if mr:   # later terms: 2 Σ_l [M_0 Λ_r G]_ll
            s = self._scales(f.lams)
            if s is not None:
                diag = np.einsum("ij,ij,j->i", f.M0, G, s)
            else:
                Y = self._right(f.M0, f.lams)
            for k, (start, ell, p) in enumerate(self._rest_rows, start=1):
                rows = slice(start, start + ell * p)
                D = (diag[rows].sum().reshape(1, 1) if s is not None else
                     np.einsum("lam,lbm->ab", Y[rows].reshape(ell, p, m), G[rows].reshape(ell, p, m)))
                grads[k] = 2.0 * D
        Q = self._quadratic(self._sandwich(G, f.lams, transpose=True))
        A = b.A11
        inner = A - (np.eye(lam1.shape[0]) - A @ f.W) @ Q
        grads[0] = 2.0 * np.einsum("jab,bc,jcd->ad", inner, lam1, f.P_inv)
        return self._theta_gradient([g[None] for g in grads])[0]

    def _modes(self, f: _Parts, x):
        """The conditional modes b_1 (ℓ_1, p_1) and b_rest (m_rand,) given the rest's
        solution x = [u_rest; β̂] (:func:`jaxhlm.kernel.term1_mode`):
        b_1j = λ_1 P_j^{-1} λ_1' (Z_1j'y - Σ_{a in j} a_a w[row_a]), w = [Λ_r u_rest; β̂]."""
        b, mr = self.blocks, self.structure.m_rand
        b_rest = self._right(x[None, :mr], f.lams, transpose=True)[0]
        w = np.concatenate([b_rest, x[mr:]])
        h = b.zy1 - _segment_sum(np, b.coo_val * w[b.coo_row][:, None], b.coo_level, b.A11.shape[0])
        return np.einsum("jab,jb->ja", f.W, h), b_rest

    def curvature(self, theta, reml: bool) -> np.ndarray:
        """The average-information matrix at theta (k, k): a starting Hessian for BFGS that
        costs a few solves with the factor, where probing one costs k evaluations.

        With V = I + ZΛΛ'Z' (relative to σ^2; with prior weights, of the √w-scaled rows),
        P the projection that profiles β, ε = Py the conditional residual, V_s = ∂V/∂θ_s =
        Z D_s Z' and w_s = V_s ε, the Hessian of the profiled criterion is approximated as
        REML's average information does (Gilmour, Thompson and Cullis 1995, Biometrics 51):
        its trace terms, tr(P V_s P V_t) and those of V_st, are replaced by the quadratic
        forms in y whose expectations they are (σ^2 = r^2 / dof per unit), which leaves

            H_st = (dof / r^2) w_s' P w_t - (dof / r^4) (ε'w_s)(ε'w_t).

        For ML the same matrix stands in (its log|V| term has V^{-1} where REML's has P: a
        difference of O(p / n)); it is a starting point for BFGS, not the Hessian itself.

        In the random effects' space: ε'w_s = r_q' D_s r_q with r_q = Z'ε, and
        w_s'Pw_t = c_s'Z'Z c_t - h_s'Ω^{-1}h_t with c_s = D_s r_q, h_s = [ZΛ X]'Z c_s and Ω
        Henderson's mixed-model matrix [ZΛ X]'[ZΛ X] + diag(I, 0), whose blocked factor the
        criterion has (term 1's P_j, then M_RX)."""
        st, b = self.structure, self.blocks
        mr, k = st.m_rand, st.m - 1
        with np.errstate(all="ignore"):
            f = self._at(theta)
            if f is None:
                return np.full((st.ntheta, st.ntheta), np.nan)
            N, x = self._inverse(f)
            lams, lam1 = f.lams, f.lams[0]
            ell, p1 = b.A11.shape[:2]
            b1, b_rest = self._modes(f, x)
            w = np.concatenate([b_rest, x[mr:]])
            coo_w = _segment_sum(np, b.coo_val * w[b.coo_row][:, None], b.coo_level, ell)
            r1 = b.zy1 - coo_w - np.einsum("jab,jb->ja", b.A11, b1)
            rr = (b.Arr[:mr, -1] - b.Arr[:mr, :k] @ w
                  - np.bincount(b.coo_row, np.einsum("ea,ea->e", b.coo_val, b1[b.coo_level]), minlength=k)[:mr])
            # c_s = D_s r_q, one row per θ_s: term 1's part (n, ℓ_1, p_1), the rest's (n, m_rand)
            n = st.ntheta
            c1, cr = np.zeros((n, ell, p1)), np.zeros((n, mr))
            for term, (cols, basis, lam) in enumerate(zip(self._columns, self._bases, lams)):
                for i, E in zip(range(cols.start, cols.stop), basis):
                    D = E @ lam.T + lam @ E.T
                    if term == 0:
                        c1[i] = r1 @ D
                    else:
                        start, nlev, pk = self._rest_rows[term - 1]
                        rows = slice(start, start + nlev * pk)
                        cr[i, rows] = (rr[rows].reshape(nlev, pk) @ D).reshape(-1)
            g = np.einsum("ja,sja->s", r1, c1) + cr @ rr
            # a = Z'Z c: term 1's (n, ℓ_1, p_1), then the rest's and X's (n, k)
            coo_c = _coo_rows(b, c1, k)                                    # A_r1 c_1 (rest and X rows)
            a1 = np.einsum("jab,sjb->sja", b.A11, c1) + _coo_levels(b, cr, mr, ell)
            ar = coo_c + cr @ b.Arr[:mr, :k]
            cAc = np.einsum("sja,tja->st", c1, a1) + cr @ ar[:, :mr].T
            # h = [ZΛ X]'Z c and h'Ω^{-1}h by the blocked factor
            h1 = a1 @ lam1
            hr = self._right(ar, lams)
            z1 = np.einsum("jab,sjb->sja", f.P_inv, h1)
            hr2 = hr - self._right(_coo_rows(b, z1 @ lam1.T, k), lams)
            xr = hr2 @ N
            back = _coo_levels(b, self._right(xr, lams, transpose=True), k, ell) @ lam1
            x1 = z1 - np.einsum("jab,sjb->sja", f.P_inv, back)
            hOh = np.einsum("sja,tja->st", h1, x1) + hr @ xr.T
            dof = self._dof(reml)
            H = (dof / f.r2) * (cAc - hOh) - (dof / f.r2 ** 2) * np.outer(g, g)
        return 0.5 * (H + H.T)

    def conditional_variances(self, theta, reml: bool) -> list:
        """b's conditional covariances per term at theta (lme4's ``condVar``), which a
        large fit leaves to their first use (:func:`jaxhlm.kernel.variances_deferred`)."""
        try:
            return self.one_estimate(np.asarray(theta, dtype=float), reml, variances=True).b_var
        finally:
            self._last.clear()

    def fit_all(self, reml: bool, options, theta0, hessian0=None, modes: bool = False):
        """:meth:`jaxhlm.host_fit.HostFit.fit_all`, then the last θ's factor let go (three
        m x m arrays: 32 MB for InstEval)."""
        try:
            return super().fit_all(reml, options, theta0, hessian0, modes)
        finally:
            self._last.clear()

    def start_curvature(self, x0, reml: bool):
        """BFGS's starting Hessian for the fit from the row of x0 (1, k): :meth:`curvature`
        there (None where it is not finite: the optimiser probes one)."""
        H = self.curvature(x0[0], reml)
        return H if np.isfinite(H).all() else None

    # ------------------------------------------------------------ the estimates
    def estimates(self, theta, fits, reml: bool, modes: bool = True) -> Conditional:
        """:meth:`one_estimate` at each row of theta, stacked (fits on the first axis)."""
        each = [self.one_estimate(th, reml, modes) for th in np.asarray(theta, dtype=float)]
        return Conditional(*(np.stack([e[i] for e in each]) for i in range(3)),
                           [np.stack(t) for t in zip(*(e.b for e in each))],
                           [np.stack(t) for t in zip(*(e.b_var for e in each))])

    def one_estimate(self, theta, reml: bool, modes: bool = True, variances: bool | None = None) -> Conditional:
        """β̂, σ̂, vcov(β̂), and with ``modes`` the conditional modes of b per term and
        (``variances``; by default unless :func:`jaxhlm.kernel.variances_deferred`) their
        covariances (lme4's ``condVar``), at theta (k,): :func:`jaxhlm.kernel.estimates`."""
        st = self.structure
        m, mr, p = st.m, st.m_rand, st.p
        with np.errstate(all="ignore"):
            f = self._at(theta)
            if f is None:
                return _missing(st, modes)
            s2 = f.r2 / self._dof(reml)
            Lx_inv = np.linalg.inv(f.L[mr:mr + p, mr:mr + p])
            vcov = s2 * Lx_inv.T @ Lx_inv
            N, x = self._inverse(f)
            out = Conditional(x[mr:], np.sqrt(s2), vcov, [], [])
            if not modes:
                return out
            lams, lam1 = f.lams, f.lams[0]
            b1, b_rest = self._modes(f, x)
            out.b.append(b1)
            out.b.extend(b_rest[start:start + ell * p_k].reshape(ell, p_k) for start, ell, p_k in self._rest_rows)
            if variances is None:
                variances = not variances_deferred(st)
            if not variances:
                return out
            K = f.P_inv
            V = K
            rest_var = []
            if mr:
                G = np.zeros((m, m))
                G[:mr, :mr] = self._rest_inverse(N)
                Q = self._quadratic(self._sandwich(G, lams, transpose=True))
                V = K + K @ lam1.T @ Q @ lam1 @ K
                for (start, ell, p_k), lam in zip(self._rest_rows, lams[1:]):
                    rows = np.arange(start, start + ell * p_k).reshape(ell, p_k)
                    Gk = G[rows[:, :, None], rows[:, None, :]]
                    rest_var.append(s2 * lam @ Gk @ lam.T)
            out.b_var.append(s2 * lam1 @ V @ lam1.T)
            out.b_var.extend(rest_var)
        return out


def _coo_rows(b: Blocks, v1, k: int):
    """A_r1 v_1 over the rest's and X's rows (n, k) for v_1 (n, ℓ_1, p_1): each COO entry
    a_a adds a_a'v_1[level_a] to its row."""
    vals = np.einsum("ea,sea->se", b.coo_val, v1[:, b.coo_level])
    return np.stack([np.bincount(b.coo_row, row, minlength=k) for row in vals])


def _coo_levels(b: Blocks, vr, rows: int, ell: int):
    """A_1r v_r (n, ℓ_1, p_1) for v_r (n, ≥ rows) over the first ``rows`` rows of the rest:
    each COO entry a_a adds a_a v_r[row_a] to its level."""
    keep = b.coo_row < rows
    row, level, val = b.coo_row[keep], b.coo_level[keep], b.coo_val[keep]
    return np.stack([_segment_sum(np, val * v[row][:, None], level, ell) for v in vr])


def _term1_columns(blocks: Blocks, m: int) -> np.ndarray:
    """The dense (ℓ_1, p_1, m) array of A_1r^(j), with Z_1j'y as its last column
    (:func:`jaxhlm.kernel._term1_columns`)."""
    ell1, p1 = blocks.A11.shape[:2]
    B = np.zeros((ell1, m, p1))
    np.add.at(B, (blocks.coo_level, blocks.coo_row), blocks.coo_val)
    B[:, m - 1] = blocks.zy1
    return np.swapaxes(B, 1, 2)


def _missing(st: Structure, modes: bool) -> Conditional:
    """NaN estimates (a criterion that is not finite at θ)."""
    p = st.p
    nan = np.full((p,), np.nan)
    out = Conditional(nan, np.float64(np.nan), np.full((p, p), np.nan), [], [])
    if modes:
        for t in st.terms:
            out.b.append(np.full((t.nlevels, t.p), np.nan))
            out.b_var.append(np.full((t.nlevels, t.p, t.p), np.nan))
    return out
