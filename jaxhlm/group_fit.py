"""A Gaussian LMM fitted on the host, group by group: nothing compiled, JAX not imported.

Most LMMs have rows that fall into small independent groups. These are models with one
grouping factor, factors nested in one, and AR(1) or compound-symmetric residuals within
a subject (:mod:`jaxhlm.independent_groups`). For them lme4's profiled criterion is a
sum over the groups of products of small dense matrices. An evaluation then takes
milliseconds in NumPy. Compiling the fit's program takes about a second
(:mod:`jaxhlm.fitting`), and importing JAX 0.3 s. So :meth:`jaxhlm.LMM.fit` uses this
module wherever it applies (``Options(method="auto")``, no prior, :data:`ENABLED`).
Elsewhere the compiled program fits, as for a large crossed design.

Group g has the cross-products K_g = R_g' W_g R_g of its rows R_g = [Z_g X_g y_g]. W is
the prior weights, or a residual structure's whitening at its parameters (below).
Λ_g is the block diagonal of each term's λ_k over the group's levels. Put
A = K_ZZ, B_g = Λ'AΛ + I = L_g L_g' and T_g = L_g^{-1} Λ' K_Z,[X y]. Then

    log|L_θ|^2 = Σ_g log|B_g|,
    Σ_g (K_[Xy][Xy] - T_g'T_g) = [[F, b], [b', yy]] = [X y]' V^{-1} [X y]
    (V = Z Λ Λ' Z' + W^{-1}, relative to σ^2),

β̂ = F^{-1} b, r^2 = yy - b'β̂ (lme4's pwrss), log|R_X|^2 = log|F|, and

    ML:   d(θ) = Σ_g log|B_g| + n (1 + log(2π r^2 / n)) - log|W|,
    REML: d(θ) = Σ_g log|B_g| + log|F| + (n - p)(1 + log(2π r^2 / (n - p))) - log|W|

(lme4's ``deviance`` and ``REMLcrit``, :mod:`jaxhlm.families.gaussian`). At the
optimum σ̂^2 = r^2 / (n or n - p) and vcov(β̂) = σ̂^2 F^{-1}. The conditional modes are
b_g = Λ L_g^{-T} T_g [-β̂; 1]. lme4's ``condVar`` is σ̂^2 Λ B_g^{-1} Λ', the diagonal
blocks of (L_g^{-1}Λ')'(L_g^{-1}Λ').

A residual structure whose whitened cross-products come from classes of rows
(:mod:`jaxhlm.residual.whiten`: AR(1), compound symmetry, variance functions) gives
K_g(φ) = Σ_s c_s(φ) K_g,s. Each class set s has its per-group products K_g,s, computed
once, and its coefficients c_s come from that module's own functions, here in NumPy.
log|W| is that module's Jacobian, and each row's partner (its predecessor, or its
group's mean) lies in the row's own group and levels.

The gradient in the random terms' theta is in closed form (:meth:`GroupFit.gradient`),
and in a residual structure's parameters it comes from central differences. The
optimiser is :mod:`jaxhlm.optimize.host_bfgs`: bounds at lme4's, snapping as
MixedModels.jl. The fit equals the compiled one to the optimisers' tolerances
(``tests/test_group_fit.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import NamedTuple

import numpy as np

from .covariance import Diagonal, Unstructured
from .independent_groups import MAX_WORK, cross_products, design, grouping, weighted
from .kernel import Conditional
from .optimize.host_bfgs import minimize
from .optimize.loop import Minimum
from .residual import whiten

ENABLED = os.environ.get("JAXHLM_GROUP_FIT", "1") != "0"
"""Whether :meth:`jaxhlm.LMM.fit` fits on the host where it can; ``JAXHLM_GROUP_FIT=0``
in the environment: always by the compiled program (tests of stored programs)."""

LOG_2PI = 1.8378770664093453


class _Classes(NamedTuple):
    """The residual structure's row classes (the fields
    :func:`jaxhlm.residual.whiten.class_coefficients` reads) and each set's class and kind."""

    key: np.ndarray
    count: np.ndarray
    var_at: tuple
    var_prev: tuple
    set_class: np.ndarray
    set_kind: np.ndarray


class _Parts(NamedTuple):
    """One evaluation's factors: K_g, L_g, P_g = L_g^{-1} Λ', T_g = P_g K_Z,[X y], Λ_g, the
    summed [X y] matrix, log|L_θ|^2, log|W|."""

    K: np.ndarray
    L: np.ndarray
    P: np.ndarray
    T: np.ndarray
    Lam: np.ndarray
    M: np.ndarray
    logdet_theta: float
    logw: float


def solve_lower(L, B, transposed: bool = False):
    """L^{-1} B (or L^{-T} B) for lower-triangular L (G, q, q) and B (G, q, k), by
    substitution over q (NumPy's batched ``solve`` costs an LU per group: 5x more for
    3,000 groups of q = 1)."""
    q = L.shape[-1]
    X = np.empty(np.broadcast_shapes(L.shape[:-2], B.shape[:-2]) + B.shape[-2:])
    order = range(q - 1, -1, -1) if transposed else range(q)
    for i in order:
        done = slice(i + 1, q) if transposed else slice(0, i)
        coef = L[:, done, i] if transposed else L[:, i, done]
        X[:, i] = (B[:, i] - np.einsum("gj,gjk->gk", coef, X[:, done])) / L[:, i, i, None]
    return X


@dataclasses.dataclass
class GroupFit:
    """A model's groups, ready for :meth:`fit`: ``K`` (S, G, d, d) the cross-products
    (S = 1 without a residual structure, else one per class set), ``classes`` (None
    without one), where each term's levels sit, and the sizes."""

    K: np.ndarray
    classes: _Classes | None
    nobs: float
    logw: float
    qmax: int
    p: int
    level_group: list
    slots: list
    structure: object

    @classmethod
    def of(cls, model) -> "GroupFit | None":
        """The groups of ``model`` (an LMM), or None where it does not qualify (the module
        docstring): random terms of lme4's unstructured or diagonal covariances, rows in
        small independent groups, σ estimated, and a residual structure (if any) of jaxhlm's
        own with row classes inside the groups."""
        frame, st = model.frame, model.structure
        if (not ENABLED or frame.sigma is not None or not st.builtin
                or not all(isinstance(t.covariance, (Unstructured, Diagonal)) for t in st.terms)):
            return None
        gr = grouping(frame)
        if gr is None or gr.G * gr.d ** 3 > MAX_WORK:
            return None
        group, G, qmax, d, p = gr.group, gr.G, gr.qmax, gr.d, frame.X.shape[1]
        cols, vals = design(frame, gr.slots, qmax)
        res = st.residual
        if res is None:
            vals, nobs, logw = weighted(frame, vals)
            sets, classes = [vals], None
        else:
            rows = model._host_blocks
            found = whiten.class_rows(res, {"correlation": rows.correlation, "variance": rows.variance},
                                       frame.nobs)
            if found is None:
                return None
            partner, key, row_class, first = found
            if not (np.array_equal(partner(group.astype(float)), group)
                    and np.array_equal(partner(cols.astype(float)), cols)):
                return None
            sets, set_class, set_kind = [], [], []
            for c, rep in enumerate(first):
                for kind in (whiten.SELF, whiten.PREV, whiten.SUM) if key[rep] > 0 else (whiten.SELF,):
                    sets.append(whiten.kind_rows(vals, partner, kind) * (row_class == c)[:, None])
                    set_class.append(c)
                    set_kind.append(kind)
            variance = rows.variance
            classes = _Classes(key[first].astype(np.int64),
                               np.bincount(row_class[row_class >= 0], minlength=first.size).astype(float),
                               tuple(np.asarray(a)[first] for a in variance),
                               tuple(partner(np.asarray(a))[first] for a in variance),
                               np.asarray(set_class), np.asarray(set_kind))
            nobs, logw = float(frame.nobs), 0.0
        if len(sets) * G * d ** 3 > MAX_WORK:
            return None
        K = cross_products(group, cols, sets, G, d)
        return cls(K, classes, nobs, logw, qmax, p, gr.level_group, gr.slots, st)

    # ------------------------------------------------------------ one evaluation
    @functools.cached_property
    def _places(self) -> list:
        """Per term, the (group, row, column) indices of its levels' blocks in Λ_g."""
        out = []
        for t, lg, slot in zip(self.structure.terms, self.level_group, self.slots):
            g, s = lg[lg >= 0], slot[lg >= 0]
            r = s[:, None] + np.arange(t.p)
            out.append((g[:, None, None], r[:, :, None], r[:, None, :]))
        return out

    @functools.cached_property
    def _bases(self) -> list:
        """Per term, λ_k at each unit vector of its parameters, E_t (n_k, p_k, p_k)."""
        return [np.stack([np.asarray(t.covariance.lam(e), dtype=float) for e in np.eye(t.ntheta)])
                for t in self.structure.terms]

    def _lambda(self, theta) -> np.ndarray:
        """Λ_g (G, qmax, qmax) at the random terms' theta."""
        Lam = np.zeros(self.K.shape[1:2] + (self.qmax, self.qmax))
        for t, par, place in zip(self.structure.terms, self.structure.split(theta), self._places):
            Lam[place] = np.asarray(t.covariance.lam(par), dtype=float)
        return Lam

    def _products(self, theta):
        """(K_g at the residual parameters, log|W|)."""
        if self.classes is None:
            return self.K[0], self.logw
        st = self.structure
        res = st.residual
        pc, pv = res.split(np.asarray(theta[st.ntheta_random:], dtype=float))
        alpha, beta, log_scale = whiten.class_coefficients(pc, pv, self.classes, res, xp=np)
        coef = whiten.set_coefficients(alpha, beta, self.classes.set_class, self.classes.set_kind, xp=np)
        return np.tensordot(coef, self.K, axes=1), float(-2.0 * np.sum(self.classes.count * log_scale))

    def parts(self, theta) -> _Parts:
        theta = np.asarray(theta, dtype=float)
        K, logw = self._products(theta)
        Lam = self._lambda(theta)
        q = self.qmax
        LamT = np.swapaxes(Lam, 1, 2)
        B = LamT @ K[:, :q, :q] @ Lam + np.eye(q)
        L = np.linalg.cholesky(B)
        P = solve_lower(L, LamT)
        T = P @ K[:, :q, q:]
        M = (K[:, q:, q:] - np.swapaxes(T, 1, 2) @ T).sum(0)
        logdet = 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
        return _Parts(K, L, P, T, Lam, M, logdet, logw)

    def _dof(self, reml: bool) -> float:
        return self.nobs - self.p * reml

    def _fixed(self, M):
        """(β̂, r^2, log|F|) from the summed [X y] matrix."""
        p = self.p
        F, b = M[:p, :p], M[:p, p]
        C = np.linalg.cholesky(F)
        beta = np.linalg.solve(F, b)
        return beta, float(M[p, p] - b @ beta), 2.0 * float(np.log(np.diagonal(C)).sum())

    def criterion(self, theta, reml: bool) -> float:
        """lme4's ML deviance or REML criterion at theta (the module docstring); +inf where
        it is not defined."""
        with np.errstate(all="ignore"):   # a value that is not finite is the answer's +inf
            try:
                parts = self.parts(theta)
                _, r2, logdet_x = self._fixed(parts.M)
            except np.linalg.LinAlgError:
                return np.inf
            dof = self._dof(reml)
            if not r2 > 0:
                return np.inf
            value = (parts.logdet_theta + (logdet_x if reml else 0.0) - parts.logw
                     + dof * (1.0 + LOG_2PI + np.log(r2 / dof)))
        return value if np.isfinite(value) else np.inf

    def gradient(self, theta, reml: bool) -> np.ndarray:
        """The criterion's gradient: in the random terms' theta in closed form, in the
        residual structure's parameters by central differences (steps 1e-5).

        With c_g = Λ_g Λ_g', Ã = Λ B^{-1} Λ' = P'P, (I + A c)^{-1} = I - A Ã and
        U_g = (I - A Ã) K_Z,[X y], u_g = U_g [-β̂; 1]:

            d log|B_g| = tr(W_g dc_g),  W_g = A (I + c A)^{-1} = A - A Ã A,
            d[X y]'V^{-1}[X y] = -Σ_g U_g' dc_g U_g,

        so (β̂ at its optimum for r^2) d d = Σ_g tr(H_g dc_g) with
        H_g = W_g - (dof / r^2) u_g u_g' - [REML] U_gX F^{-1} U_gX', and for λ_k linear in
        its parameters, ∂d/∂θ_t = 2 <E_t, S_k λ_k>, E_t = λ_k(e_t) and S_k the sum of H_g's
        diagonal blocks over term k's levels.  Not finite where the criterion is not."""
        theta = np.asarray(theta, dtype=float)
        st, q, p = self.structure, self.qmax, self.p
        with np.errstate(all="ignore"):
            try:
                parts = self.parts(theta)
                beta, r2, _ = self._fixed(parts.M)
                F_inv = np.linalg.inv(parts.M[:p, :p])
            except np.linalg.LinAlgError:
                return np.full(theta.size, np.nan)
            A, KZR = parts.K[:, :q, :q], parts.K[:, :q, q:]
            AAt = A @ (np.swapaxes(parts.P, 1, 2) @ parts.P)
            U = KZR - AAt @ KZR
            u = U @ np.concatenate([-beta, [1.0]])
            UX = U[:, :, :p]
            H = (A - AAt @ A - (self._dof(reml) / r2) * u[:, :, None] * u[:, None, :]
                 - (UX @ F_inv @ np.swapaxes(UX, 1, 2) if reml else 0.0))
            out = np.empty(theta.size)
            k = 0
            for t, par, place, basis in zip(st.terms, st.split(theta), self._places, self._bases):
                SL = H[place].sum(0) @ np.asarray(t.covariance.lam(par), dtype=float)
                out[k:k + t.ntheta] = 2.0 * np.einsum("tab,ab->t", basis, SL)
                k += t.ntheta
            for i in range(k, theta.size):   # the residual structure's parameters
                h = np.zeros(theta.size)
                h[i] = 1e-5 * max(1.0, abs(theta[i]))
                out[i] = (self.criterion(theta + h, reml) - self.criterion(theta - h, reml)) / (2.0 * h[i])
        return out

    # ------------------------------------------------------------ the fit
    def conditional(self, theta, reml: bool) -> Conditional:
        """β̂, σ̂, vcov(β̂), and per term the conditional modes (ℓ_k, p_k) and covariances
        (ℓ_k, p_k, p_k) of b (lme4's ``ranef`` and ``condVar``)."""
        parts = self.parts(theta)
        beta, r2, _ = self._fixed(parts.M)
        F_inv = np.linalg.inv(parts.M[:self.p, :self.p])
        s2 = r2 / self._dof(reml)
        a = np.concatenate([-beta, [1.0]])
        u = solve_lower(parts.L, (parts.T @ a)[..., None], transposed=True)
        b = (parts.Lam @ u)[..., 0]
        V = s2 * np.swapaxes(parts.P, 1, 2) @ parts.P      # σ^2 Λ B^{-1} Λ', P = L^{-1} Λ'
        modes, variances = [], []
        for t, lg, slot in zip(self.structure.terms, self.level_group, self.slots):
            r = slot[:, None] + np.arange(t.p)
            g = np.maximum(lg, 0)[:, None]
            modes.append(np.where(lg[:, None] >= 0, b[g, r], 0.0))
            variances.append(np.where(lg[:, None, None] >= 0, V[g[:, :, None], r[:, :, None], r[:, None, :]], 0.0))
        return Conditional(beta, np.sqrt(s2), s2 * F_inv, modes, variances)

    def fit(self, reml: bool, options, theta0):
        """:class:`jaxhlm.fitting.FitArrays` of the fit from ``theta0`` (its scales floored
        at 0.01, as the compiled fit's), with :class:`jaxhlm.optimize.Minimum`'s fields."""
        from .fitting import FitArrays

        st = self.structure
        scales = st.scales()
        x0 = np.where(scales, np.maximum(np.abs(theta0), 0.01), theta0)
        found = minimize(lambda th: self.criterion(th, reml), x0, st.theta_lower(),
                         grad=lambda th: self.gradient(th, reml), max_iter=options.max_iter,
                         ftol=options.ftol, snap_mask=scales, snap=options.snap)
        opt = Minimum(found.x, np.float64(found.fun), found.grad, np.int32(found.iterations),
                      np.int32(found.evaluations), np.int32(found.status), curvature=found.curvature)
        try:
            with np.errstate(all="ignore"):
                cond = self.conditional(found.x, reml) if np.isfinite(found.fun) else None
        except np.linalg.LinAlgError:
            cond = None
        if cond is None:   # no estimates where the criterion is not finite (a failed fit's status says so)
            cond = Conditional(np.full(self.p, np.nan), np.float64(np.nan), np.full((self.p, self.p), np.nan),
                               [np.full((t.nlevels, t.p), np.nan) for t in st.terms],
                               [np.full((t.nlevels, t.p, t.p), np.nan) for t in st.terms])
        lams = tuple(np.asarray(t.covariance.lam(par), dtype=float)
                     for t, par in zip(st.terms, st.split(found.x)))
        return FitArrays(opt, cond, lams)
