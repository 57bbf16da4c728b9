"""A Gaussian LMM fitted on the host, group by group: nothing compiled, JAX not imported.

Most LMMs have rows that fall into small independent groups. These are models with one
grouping factor, factors nested in one, and AR(1) or compound-symmetric residuals within
a subject (:mod:`jaxhlm.independent_groups`). For them lme4's profiled criterion is a
sum over the groups of products of small dense matrices. An evaluation then takes
milliseconds in NumPy. Compiling the fit's program takes about a second
(:mod:`jaxhlm.fitting`), and importing JAX 0.3 s. So :meth:`jaxhlm.LMM.fit` uses this
module wherever it applies (``Options(method="auto")``, no prior,
:data:`jaxhlm.host_fit.ENABLED`). Other Gaussian LMMs, as crossed designs, are fitted on
the host by their blocked factor (:mod:`jaxhlm.blocked_fit`).

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

The gradient in the random terms' theta is in closed form (:meth:`GroupFit.evaluate`),
and in a residual structure's parameters it comes from central differences. The
optimiser is :mod:`jaxhlm.optimize.host_bfgs`: unconstrained steps, the end point folded
into lme4's half-space and snapped as MixedModels.jl. The fit equals the compiled one to
the optimisers' tolerances (``tests/test_group_fit.py``).

Many responses on one design (:meth:`GroupFit.responses`: ``fit_many``, the bootstrap's
refits, :mod:`jaxhlm.batch`) differ only in K_g's last row and column, y_g' W_g R_g, so
each response's K is the design's with those entries replaced, and every evaluation
above runs for all the fits still stepping at once, with a leading axis of fits on every
array: one set of NumPy calls per step, whatever the number of responses. The fit of one
response is that with one row.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import numpy as np

from .covariance import Diagonal, Unstructured
from .independent_groups import MAX_WORK, cross_products, design, grouping, weighted
from . import host_fit
from .host_fit import LOG_2PI, HostFit, cholesky, solve_lower
from .kernel import Conditional
from .residual import whiten


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
    """One evaluation's factors for m fits: K_g, L_g, P_g = L_g^{-1} Λ', T_g = P_g K_Z,[X y],
    Λ_g (m, G, ., .), the summed [X y] matrix (m, p + 1, p + 1), log|L_θ|^2, log|W| and
    the rows n (m,)."""

    K: np.ndarray
    L: np.ndarray
    P: np.ndarray
    T: np.ndarray
    Lam: np.ndarray
    M: np.ndarray
    logdet_theta: np.ndarray
    logw: np.ndarray
    nobs: np.ndarray


class _Fixed(NamedTuple):
    """β̂ (m, p), r^2 and log|F| (m,; NaN where F is not positive definite), and
    F = X'V^{-1}X (m, p, p; I there)."""

    beta: np.ndarray
    r2: np.ndarray
    logdet: np.ndarray
    F: np.ndarray


MISSING_CHUNK = 1 << 22
"""Products summed at once for responses with missing values (bounds the temporaries)."""

@dataclasses.dataclass
class GroupFit(HostFit):
    """A model's groups, ready for :meth:`fit`: ``K`` (R, S, G, d, d) the cross-products of
    R responses (the model's own: R = 1; :meth:`responses`), S = 1 without a residual
    structure, else one per class set; ``classes`` (None without one), where each term's
    levels sit, the sizes, and the rows (each row's group, columns and weighted entries of
    [Z X y], :func:`jaxhlm.independent_groups.design`) that make the products of other
    responses."""

    K: np.ndarray
    classes: _Classes | None
    nobs: np.ndarray
    logw: np.ndarray
    qmax: int
    p: int
    level_group: list
    slots: list
    structure: object
    rows: tuple = dataclasses.field(default=(), repr=False)

    @classmethod
    def of(cls, model) -> "GroupFit | None":
        """The groups of ``model`` (an LMM), or None where it does not qualify (the module
        docstring): random terms of lme4's unstructured or diagonal covariances, rows in
        small independent groups, σ estimated, and a residual structure (if any) of jaxhlm's
        own with row classes inside the groups."""
        frame, st = model.frame, model.structure
        if (not host_fit.ENABLED or frame.sigma is not None or not st.builtin
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
            root = np.sqrt(np.ones(frame.nobs) if frame.weights is None else np.asarray(frame.weights, dtype=float))
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
        K = cross_products(group, cols, sets, G, d)[None]
        return cls(K, classes, np.array([nobs]), np.array([logw]), qmax, p, gr.level_group, gr.slots, st,
                   rows=(group, cols, vals, root) if res is None else ())

    def responses(self, Y) -> "GroupFit":
        """The same design with the responses Y (R, n) instead (without a residual
        structure): their entries in K_g's last row and column, y_g' W_g [Z_g X_g y_g]. A
        response with missing values (NaN) is fitted on its observed rows: its own K from
        those rows, its own n and log|W| (lme4's fit of the data without those rows)."""
        order, starts, at, entries, root = self._response_rows
        Y = np.asarray(Y, dtype=float)
        missing = np.isnan(Y)
        Yw = np.where(missing, 0.0, Y) * root
        R, G, d = Yw.shape[0], self.K.shape[2], self.K.shape[3]
        ky = np.zeros((R, G * d))
        ky[:, at] = np.add.reduceat(Yw[:, order] * entries, starts, axis=1)
        K = np.repeat(self.K[:1], R, axis=0)
        K[:, 0, :, :, -1] = ky.reshape(R, G, d)
        K[:, 0, :, -1, :] = ky.reshape(R, G, d)
        by_group, group_starts = self._group_rows
        K[:, 0, :, -1, -1] = np.add.reduceat((Yw * Yw)[:, by_group], group_starts, axis=1)
        nobs, logw = np.repeat(self.nobs[:1], R), np.repeat(self.logw[:1], R)
        incomplete = np.flatnonzero(missing.any(axis=1))
        if incomplete.size:   # their own rows' products
            group, cols, vals, _ = self.rows
            n, width = cols.shape
            # (independent_groups.cross_products, with one bincount for a chunk of responses:
            # 2,000 per-response bincounts cost 0.05 s more; for a design's few class sets
            # over many rows its loop is the faster)
            place = (group[:, None, None] * d + cols[:, :, None]) * d + cols[:, None, :]
            step = max(1, MISSING_CHUNK // place.size)
            for lo in range(0, incomplete.size, step):
                at = incomplete[lo:lo + step]
                rows = np.concatenate([np.broadcast_to(vals[:, :-1], (at.size, n, width - 1)), Yw[at, :, None]],
                                      axis=2) * ~missing[at, :, None]
                index = np.arange(at.size)[:, None, None, None] * (G * d * d) + place
                K[at, 0] = np.bincount(index.ravel(), (rows[..., :, None] * rows[..., None, :]).ravel(),
                                       minlength=at.size * G * d * d).reshape(at.size, G, d, d)
            w = root * root
            kept = ~missing[incomplete] & (w > 0)
            nobs[incomplete] = kept.sum(axis=1)
            logw[incomplete] = np.where(kept, np.log(np.where(w > 0, w, 1.0)), 0.0).sum(axis=1)
        return dataclasses.replace(self, K=K, nobs=nobs, logw=logw)

    @functools.cached_property
    def _response_rows(self):
        """The design's entries y_i multiplies in K's last column (those of [Z X]), ordered by
        their place (group, column): (their rows, where each place's run starts, the
        places, the entries, sqrt(w))."""
        group, cols, vals, root = self.rows
        place = (group[:, None] * self.K.shape[3] + cols[:, :-1]).ravel()
        order = np.argsort(place, kind="stable")
        place = place[order]
        starts = np.flatnonzero(np.r_[True, place[1:] != place[:-1]])
        return (order // (cols.shape[1] - 1), starts, place[starts], vals[:, :-1].ravel()[order], root)

    @functools.cached_property
    def _group_rows(self):
        """(the rows ordered by group, where each group's run starts)."""
        group = self.rows[0]
        order = np.argsort(group, kind="stable")
        return order, np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])

    # ------------------------------------------------------------ one evaluation
    @functools.cached_property
    def _places(self) -> list:
        """Per term, the (group, row, column) indices of its levels' blocks in Λ_g."""
        out = []
        for t, lg, slot in zip(self.structure.terms, self.level_group, self.slots):
            g, s = lg[lg >= 0], slot[lg >= 0]
            r = s[:, None] + np.arange(t.p)
            out.append((slice(None), g[:, None, None], r[:, :, None], r[:, None, :]))
        return out

    def _lambda(self, lams) -> np.ndarray:
        """Λ_g (m, G, qmax, qmax) of the terms' λ_k."""
        Lam = np.zeros((lams[0].shape[0], self.K.shape[2], self.qmax, self.qmax))
        for lam, place in zip(lams, self._places):
            Lam[place] = lam[:, None]
        return Lam

    def _products(self, theta, fits):
        """(K_g at the residual parameters (m, G, d, d), log|W| (m,)) of the fits numbered
        ``fits``."""
        if self.classes is None:
            everyone = len(fits) == self.K.shape[0]   # (fits are distinct and in order)
            return self.K[:, 0] if everyone else self.K[fits, 0], self.logw[fits]
        st = self.structure
        res = st.residual
        coef, logw = [], []
        for th in theta:
            pc, pv = res.split(np.asarray(th[st.ntheta_random:], dtype=float))
            alpha, beta, log_scale = whiten.class_coefficients(pc, pv, self.classes, res, xp=np)
            coef.append(whiten.set_coefficients(alpha, beta, self.classes.set_class, self.classes.set_kind, xp=np))
            logw.append(-2.0 * np.sum(self.classes.count * log_scale))
        return np.einsum("ms,msgij->mgij", np.asarray(coef), self.K[fits]), np.asarray(logw, dtype=float)

    def parts(self, theta, fits) -> _Parts:
        """The factors at the rows of theta (m, k) of the fits numbered ``fits`` (m,)."""
        theta = np.asarray(theta, dtype=float)
        K, logw = self._products(theta, fits)
        Lam = self._lambda(self._lambdas(theta))
        q = self.qmax
        LamT = np.swapaxes(Lam, -1, -2)
        L, _ = cholesky(LamT @ K[..., :q, :q] @ Lam + np.eye(q))
        P = solve_lower(L, LamT)
        T = P @ K[..., :q, q:]
        Tm = T.reshape(T.shape[0], -1, T.shape[-1])
        M = K[..., q:, q:].sum(1) - np.swapaxes(Tm, 1, 2) @ Tm
        logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum((1, 2))
        return _Parts(K, L, P, T, Lam, M, logdet, logw, self.nobs[fits])

    def _dof(self, parts: _Parts, reml: bool) -> np.ndarray:
        return parts.nobs - self.p * reml

    def _fixed(self, M) -> _Fixed:
        """β̂, r^2 and log|F| from the summed [X y] matrices (m, p + 1, p + 1)."""
        p = self.p
        F, b = M[:, :p, :p], M[:, :p, p]
        C, ok = cholesky(F)
        F = np.where(ok[:, None, None], F, np.eye(p))   # (a fit without F's factor: its NaN says so)
        beta = np.linalg.solve(F, b[..., None])[..., 0]
        r2 = M[:, p, p] - np.einsum("mi,mi->m", b, beta)
        return _Fixed(beta, r2, 2.0 * np.log(np.diagonal(C, axis1=1, axis2=2)).sum(1), F)

    def _value(self, parts: _Parts, fixed: _Fixed, reml: bool) -> np.ndarray:
        dof = self._dof(parts, reml)
        value = (parts.logdet_theta + (fixed.logdet if reml else 0.0) - parts.logw
                 + dof * (1.0 + LOG_2PI + np.log(fixed.r2 / dof)))
        return np.where(np.isfinite(value) & (fixed.r2 > 0), value, np.inf)

    def criteria(self, theta, fits, reml: bool) -> np.ndarray:
        """lme4's ML deviance or REML criterion (m,) of the fits numbered ``fits`` at the
        rows of theta (the module docstring); +inf where it is not defined."""
        with np.errstate(all="ignore"):   # a value that is not finite is the answer's +inf
            parts = self.parts(np.asarray(theta, dtype=float), fits)
            return self._value(parts, self._fixed(parts.M), reml)

    def evaluate(self, theta, fits, reml: bool):
        """(:meth:`criteria`, their gradients (m, k)) from one factorisation: the gradient in
        the random terms' theta in closed form, in the residual structure's parameters by
        central differences (steps 1e-5); NaN where the criterion is not finite.

        With c_g = Λ_g Λ_g', Ã = Λ B^{-1} Λ' = P'P, (I + A c)^{-1} = I - A Ã and
        U_g = (I - A Ã) K_Z,[X y], u_g = U_g [-β̂; 1]:

            d log|B_g| = tr(W_g dc_g),  W_g = A (I + c A)^{-1} = A - A Ã A,
            d[X y]'V^{-1}[X y] = -Σ_g U_g' dc_g U_g,

        so (β̂ at its optimum for r^2) d d = Σ_g tr(H_g dc_g) with
        H_g = W_g - (dof / r^2) u_g u_g' - [REML] U_gX F^{-1} U_gX', and for λ_k linear in
        its parameters, ∂d/∂θ_t = 2 <E_t, S_k λ_k>, E_t = λ_k(e_t) and S_k the sum of H_g's
        diagonal blocks over term k's levels."""
        theta = np.asarray(theta, dtype=float)
        with np.errstate(all="ignore"):
            parts = self.parts(theta, fits)
            fixed = self._fixed(parts.M)
            value = self._value(parts, fixed, reml)
            logdets, uu = self._pieces(parts, fixed, reml)
            out = self._projected(theta, logdets + (self._dof(parts, reml) / fixed.r2)[:, None, None, None] * uu)
            for i in range(self.structure.ntheta_random, theta.shape[1]):   # the residual structure's parameters
                h = np.zeros(theta.shape)
                h[:, i] = 1e-5 * np.maximum(1.0, np.abs(theta[:, i]))
                out[:, i] = (self.criteria(theta + h, fits, reml) - self.criteria(theta - h, fits, reml)) / (2.0 * h[:, i])
        return value, np.where(np.isfinite(value)[:, None], out, np.nan)

    def _pieces(self, parts: _Parts, fixed: _Fixed, reml: bool):
        """:meth:`evaluate`'s H_g without, and with only, its u_g u_g' part (each (m, G, q, q)):
        the matrices whose :meth:`_projected` are the gradients of Σ_g log|B_g| [+ log|F|
        for REML] and of r^2."""
        q, p = self.qmax, self.p
        F_inv = np.linalg.inv(fixed.F)
        A, KZR = parts.K[..., :q, :q], parts.K[..., :q, q:]
        AAt = A @ (np.swapaxes(parts.P, -1, -2) @ parts.P)
        U = KZR - AAt @ KZR
        u = np.einsum("mgij,mj->mgi", U, np.concatenate([-fixed.beta, np.ones((len(fixed.beta), 1))], axis=1))
        UX = U[..., :p]
        H = A - AAt @ A - (UX @ F_inv[:, None] @ np.swapaxes(UX, -1, -2) if reml else 0.0)
        return H, -u[..., :, None] * u[..., None, :]

    def _projected(self, theta, H) -> np.ndarray:
        """The gradient (m, k) of Σ_g tr(H_g dc_g) in theta: 2 <E_t, S_k λ_k>, S_k the sum of
        H_g's diagonal blocks over term k's levels; the residual structure's columns 0."""
        return self._theta_gradient([2.0 * H[place].sum(1) @ lam
                                     for lam, place in zip(self._lambdas(theta), self._places)])

    def deviance_pieces(self, theta, reml: bool):
        """(∇ of log|L_θ|^2 [+ log|R_X|^2 for REML] (k,), ∇r^2 (k,), r^2, F^{-1} (p, p), dof) at
        theta (k,) for the model's own response without a residual structure (else None):
        :meth:`jaxhlm.blocked_fit.BlockedFit.deviance_pieces`."""
        if self.classes is not None:
            return None
        theta = np.asarray(theta, dtype=float)[None]
        with np.errstate(all="ignore"):
            parts = self.parts(theta, [0])
            fixed = self._fixed(parts.M)
            logdets, r2 = (self._projected(theta, H)[0] for H in self._pieces(parts, fixed, reml))
            return logdets, r2, fixed.r2[0], np.linalg.inv(fixed.F[0]), self._dof(parts, reml)[0]

    def estimates(self, theta, fits, reml: bool, modes: bool = True) -> Conditional:
        """β̂ (m, p), σ̂ (m,), vcov(β̂) (m, p, p), and with ``modes`` per term the conditional
        modes (m, ℓ_k, p_k) and covariances (m, ℓ_k, p_k, p_k) of b (lme4's ``ranef`` and
        ``condVar``); NaN for a fit whose criterion is not finite there."""
        with np.errstate(all="ignore"):
            parts = self.parts(theta, fits)
            fixed = self._fixed(parts.M)
            s2 = fixed.r2 / self._dof(parts, reml)
            vcov = s2[:, None, None] * np.linalg.inv(fixed.F)
            out = Conditional(fixed.beta, np.sqrt(s2), vcov, [], [])
            if not modes:
                return out
            a = np.concatenate([-fixed.beta, np.ones((len(fits), 1))], axis=1)
            u = solve_lower(parts.L, np.einsum("mgij,mj->mgi", parts.T, a)[..., None], transposed=True)
            b = (parts.Lam @ u)[..., 0]
            V = s2[:, None, None, None] * np.swapaxes(parts.P, -1, -2) @ parts.P   # σ^2 Λ B^{-1} Λ'
            for t, lg, slot in zip(self.structure.terms, self.level_group, self.slots):
                r = slot[:, None] + np.arange(t.p)
                g = np.maximum(lg, 0)[:, None]
                out.b.append(np.where(lg[:, None] >= 0, b[:, g, r], 0.0))
                out.b_var.append(np.where(lg[:, None, None] >= 0, V[:, g[:, :, None], r[:, :, None], r[:, None, :]], 0.0))
        return out
