"""What the fits on the host share: θ's map to the terms' λ_k, lme4's half-space, small
NumPy factorisations, and the fit itself (:mod:`jaxhlm.optimize.host_bfgs`).

A host fit evaluates lme4's profiled criterion and its gradient in NumPy, so nothing is
compiled and JAX is not imported. Two ways of factoring the model do that:

- :mod:`jaxhlm.group_fit`: rows in small independent groups (one grouping factor,
  nested factors, residual structures within them); a sum over the groups;
- :mod:`jaxhlm.blocked_fit`: any other Gaussian LMM (crossed factors), through the
  blocked Cholesky factor of :mod:`jaxhlm.kernel` (term 1 block diagonal, a dense rest).

A subclass gives the model's ``structure``, ``evaluate(theta, fits, reml)`` (the criterion
and its gradient at the rows of theta) and ``estimates(theta, fits, reml, modes)``.
Their terms are lme4's unstructured or diagonal ones, whose λ_k are linear in θ.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .kernel import Conditional
from .optimize.host_bfgs import minimize_many
from .optimize.loop import Minimum, Status
from .pages import small_pages

ENABLED = os.environ.get("JAXHLM_HOST_FIT", "1") != "0"
"""Whether :meth:`jaxhlm.LMM.fit` (and ``fit_many``, the bootstrap) fit on the host where
they can; ``JAXHLM_HOST_FIT=0`` in the environment: always by the compiled programs
(tests of stored programs, ``benchmarks/gpu.sh``)."""

LOG_2PI = 1.8378770664093453

SMALL = 4
"""Matrices up to this size, 64 or more of them, are factored by explicit formulas over
the batch: NumPy's batched LAPACK call costs about 30 ns per matrix (1.3 ms for 40,000 of
size 1), the formulas a few microseconds per call."""


def solve_lower(L, B, transposed: bool = False):
    """L^{-1} B (or L^{-T} B) for lower-triangular L (..., q, q) and B (..., q, k), by
    substitution over q (NumPy's batched ``solve`` costs an LU per group: 5x more for
    3,000 groups of q = 1)."""
    q = L.shape[-1]
    X = np.empty(np.broadcast_shapes(L.shape[:-2], B.shape[:-2]) + B.shape[-2:])
    order = range(q - 1, -1, -1) if transposed else range(q)
    for i in order:
        done = slice(i + 1, q) if transposed else slice(0, i)
        coef = L[..., done, i] if transposed else L[..., i, done]
        X[..., i, :] = (B[..., i, :] - np.einsum("...j,...jk->...k", coef, X[..., done, :])) / L[..., i, i, None]
    return X


def cholesky(A):
    """(the Cholesky factors of A (m, ..., q, q), whether each fit's are all defined (m,)):
    a fit whose matrices are not positive definite gets NaN, not an error for the batch."""
    m, q = A.shape[0], A.shape[-1]
    if q <= SMALL and A.size >= 64 * q * q:
        L = np.zeros(A.shape)
        with np.errstate(all="ignore"):
            for j in range(q):
                L[..., j, j] = np.sqrt(A[..., j, j] - (L[..., j, :j] ** 2).sum(-1))
                for i in range(j + 1, q):
                    L[..., i, j] = (A[..., i, j] - (L[..., i, :j] * L[..., j, :j]).sum(-1)) / L[..., j, j]
        diag = np.diagonal(L, axis1=-2, axis2=-1).reshape(m, -1)
        return L, (diag > 0).all(1) & np.isfinite(diag).all(1)
    try:
        return np.linalg.cholesky(A), np.ones(m, dtype=bool)
    except np.linalg.LinAlgError:
        L, ok = np.full(A.shape, np.nan), np.zeros(m, dtype=bool)
        for i, a in enumerate(A):
            try:
                L[i], ok[i] = np.linalg.cholesky(a), True
            except np.linalg.LinAlgError:
                pass
        return L, ok


class HostFit:
    """The fit on the host of a model whose terms' λ_k are linear in θ (the module docstring)."""

    structure: object

    @functools.cached_property
    def _bases(self) -> list:
        """Per term, λ_k at each unit vector of its parameters, E_t (n_k, p_k, p_k); λ_k is
        linear in them (lme4's unstructured and diagonal terms)."""
        return [np.stack([np.asarray(t.covariance.lam(e), dtype=float) for e in np.eye(t.ntheta)])
                for t in self.structure.terms]

    @functools.cached_property
    def _columns(self) -> list:
        """Per term, its parameters' columns of theta."""
        ends = np.cumsum([t.ntheta for t in self.structure.terms])
        return [slice(e - t.ntheta, e) for t, e in zip(self.structure.terms, ends)]

    def _lambdas(self, theta) -> list:
        """Each term's λ_k (m, p_k, p_k) at the rows of theta (m, k)."""
        return [(theta[:, cols] @ basis.reshape(basis.shape[0], -1)).reshape((-1,) + basis.shape[1:])
                for cols, basis in zip(self._columns, self._bases)]

    def _theta_gradient(self, grad_lams) -> np.ndarray:
        """∂d/∂θ (m, k) from each term's ∂d/∂λ_k (m, p_k, p_k) and the model's residual
        parameters' columns left at 0: ∂d/∂θ_t = <E_t, ∂d/∂λ_k>."""
        k = self.structure.ntheta
        out = np.zeros((grad_lams[0].shape[0], k))
        for cols, basis, G in zip(self._columns, self._bases, grad_lams):
            out[:, cols] = np.einsum("tab,mab->mt", basis, G)
        return out

    def canonical(self, theta) -> np.ndarray:
        """The rows of theta (m, k) in lme4's half-space, the same points of the model: each
        λ_k's columns with a negative diagonal negated (:meth:`jaxhlm.structure.Structure.canonical`)."""
        out = np.array(theta, dtype=float)
        for cols, lam, basis in zip(self._columns, self._lambdas(out), self._bases):
            sign = np.where(np.diagonal(lam, axis1=1, axis2=2) < 0, -1.0, 1.0)
            out[:, cols] = np.einsum("tab,mab->mt", basis, lam * sign[:, None, :])
        return out

    # ------------------------------------------------------------ one response
    def criterion(self, theta, reml: bool) -> float:
        """lme4's criterion of the model's own response at theta (k,)."""
        return float(self.evaluate(np.asarray(theta, dtype=float)[None], [0], reml)[0][0])

    def gradient(self, theta, reml: bool) -> np.ndarray:
        """Its gradient (``evaluate``) at theta (k,)."""
        return self.evaluate(np.asarray(theta, dtype=float)[None], [0], reml)[1][0]

    def conditional(self, theta, reml: bool) -> Conditional:
        """``estimates`` of the model's own response at theta (k,)."""
        out = self.estimates(np.asarray(theta, dtype=float)[None], [0], reml)
        return Conditional(out.beta[0], out.sigma[0], out.vcov[0], [b[0] for b in out.b],
                           [v[0] for v in out.b_var])

    def conditional_variances(self, theta, reml: bool) -> list:
        """b's conditional covariances per term at theta (lme4's ``condVar``)."""
        return self.conditional(theta, reml).b_var

    # ------------------------------------------------------------ the fit
    def start_curvature(self, x0, reml: bool):
        """BFGS's starting Hessian (k, k) for the fits from the rows of x0, or None: the
        optimiser probes each fit's by differences of its gradient (as it does where a fit
        from the given one does not converge)."""
        return None

    @small_pages()   # each evaluation's fresh arrays: huge pages' first touch stalls (jaxhlm.pages)
    def fit_all(self, reml: bool, options, theta0, hessian0=None, modes: bool = False):
        """:class:`jaxhlm.fitting.FitArrays` of the fits of every response from the rows of
        ``theta0`` (R, k) (their scales floored at 0.01, as the compiled fit's), the fits on
        the first axis of each field, with :class:`jaxhlm.optimize.Minimum`'s fields."""
        from .fitting import FitArrays

        st = self.structure
        scales = st.scales()
        x0 = np.where(scales, np.maximum(np.abs(theta0), 0.01), theta0)
        def minimize(start):
            return minimize_many(lambda th, fits: self.evaluate(th, fits, reml), x0, max_iter=options.max_iter,
                                 ftol=options.ftol, canonical=self.canonical, snap_mask=scales, snap=options.snap,
                                 hessian0=start)

        curvature = self.start_curvature(x0, reml) if hessian0 is None else None
        found = minimize(hessian0 if curvature is None else curvature)
        evaluations = 0
        if curvature is not None and not (found.status == Status.CONVERGED).all():
            evaluations = found.evaluations   # (counted too) the probed start, as the compiled fit's
            found = minimize(None)
        opt = Minimum(found.x, found.fun, found.grad, found.iterations.astype(np.int32),
                      (found.evaluations + evaluations).astype(np.int32), found.status.astype(np.int32),
                      curvature=found.curvature)
        cond = self.estimates(found.x, np.arange(found.x.shape[0]), reml, modes)
        bad = ~np.isfinite(found.fun)   # no estimates where the criterion is not finite (the status says so)
        cond = Conditional(*(_nan_at(a, bad) for a in cond[:3]), [_nan_at(b, bad) for b in cond.b],
                           [_nan_at(v, bad) for v in cond.b_var])
        return FitArrays(opt, cond, tuple(self._lambdas(found.x)))

    def fit(self, reml: bool, options, theta0):
        """:meth:`fit_all` of the model's own response from theta0 (k,), with its conditional
        modes."""
        out = self.fit_all(reml, options, np.asarray(theta0, dtype=float)[None], modes=True)
        return type(out)(*(_first(part) for part in out))


def _nan_at(a, bad):
    """a with NaN at the fits ``bad`` (on the first axis)."""
    return np.where(bad.reshape((-1,) + (1,) * (a.ndim - 1)), np.nan, a)


def _first(tree):
    """The first fit of every array in a (nested) tuple, a NamedTuple kept as one."""
    if isinstance(tree, np.ndarray):
        return tree[0]
    parts = [_first(a) for a in tree]
    return type(tree)(*parts) if hasattr(tree, "_fields") else type(tree)(parts)
