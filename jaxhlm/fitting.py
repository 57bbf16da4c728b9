"""Fitting as one pure, jit-compiled function of the blocks: theta-hat and everything given it.

``fit_blocks(blocks, st, reml)`` minimises the family's objective (for the Gaussian,
the profiled criterion :func:`jaxhlm.families.gaussian.objective`) over theta with
:func:`jaxhlm.optimize.minimize` and evaluates the conditional estimates
(:func:`jaxhlm.families.gaussian.conditional`) at the optimum, all in one compiled
program.  Its arguments are arrays (the blocks) and a
hashable static structure, so it vmaps over responses and a model of the same
structure and shapes reuses the compilation; :func:`trace_count` counts compilations.
lme4's equivalent is ``optimizeLmer`` followed by ``mkMerMod``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from .lazy_jax import is_traced, jnp
import numpy as np

from .blocks import Blocks
from .families import GAUSSIAN
from .kernel import Conditional, variances_deferred
from .optimize import Minimum, minimize
from .precompiled import OLDER_EMITTERS, Precompiled, by_size
from .structure import Structure


@dataclasses.dataclass(frozen=True)
class Options:
    """Optimiser settings (static: changing one recompiles).

    ``method``: a strategy of :mod:`jaxhlm.optimize`, by name or as an instance:
    ``"newton"`` (finite-difference Hessian of the gradient every iteration),
    ``"bfgs"`` (that Hessian once, then BFGS updates: one gradient per iteration),
    ``"lbfgs"`` (optax's L-BFGS: no Hessian kept, for a theta of hundreds), or
    ``"auto"``: L-BFGS from ``LBFGS_FROM`` elements of theta (a 4 x 4 unstructured
    term has 10), else Newton unless the dense block after the first term is large
    (m > ``BFGS_ABOVE``), where a gradient costs several factorizations
    (``benchmarks/README.md``, "Optimiser strategies");
    ``max_iter``: iterations at most; ``ftol``: stop when the predicted decrease is
    below ftol (1 + |objective|); ``snap``: diagonal theta elements this close to 0 (1e-3) are
    set to 0 when that does not raise the objective (MixedModels.jl's rule).
    """

    method: Any = "auto"
    max_iter: int = 200
    ftol: float = 1e-12
    snap: float = 1e-3

    def resolve(self, st: Structure):
        """The strategy's name (or the strategy given) for a model of structure ``st``."""
        if self.method != "auto":
            return self.method
        if st.ntheta >= LBFGS_FROM:
            return "lbfgs"
        return "bfgs" if st.m > BFGS_ABOVE else "newton"


BFGS_ABOVE = 200
LBFGS_FROM = 10


class FitArrays(NamedTuple):
    """The raw outcome of a fit: the optimiser's result, the conditional estimates and
    each term's relative covariance factor lambda_k at the optimum."""

    opt: Minimum
    cond: Conditional
    lams: tuple


_TRACES = {"fit_blocks": 0}


def trace_count() -> int:
    """How many times :func:`fit_blocks` has been traced (compiled) in this process."""
    return _TRACES["fit_blocks"]


def fit_blocks(blocks: Blocks, st: Structure, reml: bool, options: Options = Options(),
               theta0=None, penalty=None, family=GAUSSIAN, max_iter=None, hessian0=None,
               modes: bool = True) -> FitArrays:
    """Fit one model given its blocks: minimise the profiled objective over theta (the
    diagonals of lambda_k end >= 0, exactly 0 on a boundary fit), then evaluate beta,
    sigma and b there.

    ``theta0`` is the starting point (default lme4's: lambda_k = I); refits of simulated
    responses start at the original estimate, as lme4's ``refit`` does, with diagonal
    elements floored at 0.01 (at exactly 0 the even objective has no gradient there).
    ``penalty``: a prior's -2 log-density added to the objective (a posterior mode, as
    blme's ``blmer``; :mod:`jaxhlm.bayes.priors`).  ``family``: the response's
    (:mod:`jaxhlm.families`).
    Arguments are normalised before the jitted call (jit keys its cache on how they are
    passed).  ``reml`` is an argument of the program, not part of its key: a REML fit and
    an ML fit of one model share a compiled program.
    Without a penalty, the compiled program is also kept on disk
    (:mod:`jaxhlm.precompiled`), so a new process need not trace it again.
    ``max_iter``: the iteration limit as an array (a batch's passes share one program),
    instead of ``options.max_iter``.  ``hessian0``: BFGS's starting Hessian (a refit's: the
    original fit's ``Minimum.curvature``), so that the program holds no probing phases
    (:func:`jaxhlm.optimize.minimize`'s ``probe=False``); None: probed at the start.
    ``modes=False``: no conditional modes of b (``cond.b`` and ``cond.b_var`` empty), as a
    batch needs them.  A large fit leaves ``cond.b_var`` empty
    (:func:`jaxhlm.kernel.variances_deferred`; :func:`conditional_variances` on first use).
    """
    start = st.theta_start() if theta0 is None else theta0
    args = (blocks, st, reml if is_traced(reml) else np.bool_(reml), options)
    if is_traced((blocks, start, reml)):
        # inside vmap or another transformation: traced into the caller's program
        return _fit_program(*args, jnp.asarray(start, dtype=jnp.float64), penalty, family, max_iter,
                            hessian0, modes)
    start = np.asarray(start, dtype=np.float64)
    program = _PRECOMPILED if storable(st, options, penalty, family) else _PRECOMPILED.jitted
    return program(*args, start, penalty, family, max_iter, hessian0, bool(modes))


def storable(st: Structure, options: Options, penalty=None, family=GAUSSIAN) -> bool:
    """Whether a fit's program can be kept on disk (:mod:`jaxhlm.precompiled`): its key
    is jaxhlm's source and the static arguments' ``repr``, which do not pin down a prior,
    a user's covariance structure or optimiser strategy, or a family of another module."""
    return (penalty is None and st.builtin and isinstance(options.method, str)
            and type(family).__module__.startswith("jaxhlm."))


def _fit_program(blocks: Blocks, st: Structure, reml, options: Options, theta0,
                 penalty=None, family=GAUSSIAN, max_iter=None, hessian0=None,
                 modes: bool = True) -> FitArrays:
    _TRACES["fit_blocks"] += 1
    scales = st.scales()
    theta0 = jnp.where(jnp.asarray(scales), jnp.maximum(jnp.abs(theta0), 0.01), theta0)
    opt = minimize(lambda th: family.objective(th, blocks, st, reml, penalty), theta0,
                   canonical=st.canonical, snap_mask=scales, method=options.resolve(st),
                   max_iter=options.max_iter if max_iter is None else max_iter,
                   ftol=options.ftol, snap=options.snap, hessian0=hessian0, probe=hessian0 is None)
    cond = family.conditional(opt.x, blocks, st, reml, penalty, modes, variances=not variances_deferred(st))
    return FitArrays(opt, cond, tuple(st.lambdas(opt.x)))


_STATIC = (1, 3, 5, 6, 9)
_PRECOMPILED = Precompiled(_fit_program, _STATIC, "fit_blocks", cpu_options=OLDER_EMITTERS, level=by_size,
                           without_jax=True)
"""A single fit, stored (for a process without ``jax`` too: :mod:`jaxhlm.stored_run`); a
small one compiled without LLVM's optimisations (:func:`jaxhlm.precompiled.by_size`)."""


def conditional_variances(blocks: Blocks, st: Structure, theta, reml) -> list:
    """b's conditional covariances per term at ``theta`` (lme4's ``condVar``), by a stored
    program of their own: what a large fit left out (:func:`jaxhlm.kernel.variances_deferred`)."""
    program = _VARIANCES if st.builtin else _VARIANCES.jitted
    return program(blocks, st, np.asarray(theta, dtype=np.float64), np.bool_(reml))


def _variances_program(blocks: Blocks, st: Structure, theta, reml) -> list:
    return GAUSSIAN.conditional(theta, blocks, st, reml).b_var


_VARIANCES = Precompiled(_variances_program, (1,), "conditional_variances", cpu_options=OLDER_EMITTERS,
                         level=by_size, without_jax=True)
