"""Fitting as one pure, jit-compiled function of the blocks: theta-hat and everything given it.

``fit_blocks(blocks, st, reml)`` minimises the profiled objective
(:func:`jaxhlm.kernel.objective`) over theta with :func:`jaxhlm.optimize.minimize`
and evaluates the conditional estimates (:func:`jaxhlm.kernel.conditional`) at the
optimum, all in one compiled program.  Its arguments are arrays (the blocks) and a
hashable static structure, so it vmaps over responses and a model of the same
structure and shapes reuses the compilation; :func:`trace_count` counts compilations.
lme4's equivalent is ``optimizeLmer`` followed by ``mkMerMod``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .blocks import Blocks, Structure
from .kernel import Conditional, conditional, objective
from .optimize import Minimum, minimize


@dataclasses.dataclass(frozen=True)
class Options:
    """Optimiser settings (static: changing one recompiles).

    ``max_iter``: Newton iterations at most; ``ftol``: stop when the predicted decrease
    is below ftol (1 + |objective|); ``snap``: bounded theta elements this close to 0
    are set to 0 when that does not raise the objective (MixedModels.jl's rule).
    """

    max_iter: int = 100
    ftol: float = 1e-12
    snap: float = 1e-4


class FitArrays(NamedTuple):
    """The raw outcome of a fit: the optimiser's result and the conditional estimates."""

    opt: Minimum
    cond: Conditional


_TRACES = {"fit_blocks": 0}


def trace_count() -> int:
    """How many times :func:`fit_blocks` has been traced (compiled) in this process."""
    return _TRACES["fit_blocks"]


@functools.partial(jax.jit, static_argnames=("st", "reml", "options"))
def fit_blocks(blocks: Blocks, st: Structure, reml: bool, options: Options = Options()) -> FitArrays:
    """Fit one model given its blocks: minimise the profiled objective over theta (bounded
    below by 0 on the diagonals of lambda_k), then evaluate beta, sigma and b there."""
    _TRACES["fit_blocks"] += 1
    lower = jnp.asarray(st.theta_lower())
    x0 = jnp.asarray(st.theta_start())
    opt = minimize(lambda th: objective(th, blocks, st, reml), x0, lower,
                   max_iter=options.max_iter, ftol=options.ftol, snap=options.snap)
    return FitArrays(opt, conditional(opt.x, blocks, st, reml))
