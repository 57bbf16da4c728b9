"""jaxhlm: linear mixed models (lme4's formulas and numbers) on JAX.

``LMM(formula, data).fit()`` fits by REML or ML; the objective is a pure, jit-compiled,
vmap-able function of theta on blocks precomputed once (:mod:`jaxhlm.kernel`).
jaxhlm enables float64 in JAX and a persistent compilation cache (:mod:`jaxhlm._config`)
as soon as JAX is imported; it imports JAX itself only when it first needs it, which a
process whose programs are stored never does (:mod:`jaxhlm.lazy_jax`, :mod:`jaxhlm.stored_run`).
"""

from .collector import paused as _paused

with _paused():   # the imports below (pandas, scipy) run 0.03 s faster without the collector
    from . import _config  # noqa: F401  (float64 and the compilation cache, first)
    from . import covariance, datasets, families, residual
    from ._config import enable_compilation_cache
    from .batch import BatchResult, fit_datasets
    from .bayes import priors
    from .bayes.priors import Priors
    from .errors import DataError, FormulaError, JaxhlmError
    from .fitting import Options
    from .model import LMM
    from .optimize import Status
    from .residual import AR1, CompoundSymmetry, VarIdent, VarPower
    from .results import LMMResult

__version__ = "0.1.0"

_LAZY = {"GLMM": ".glmm", "GLMMResult": ".glmm", "GLS": ".gls"}
"""Names whose modules load on first use (GLMMs, GLS): an LMM's process need not import them."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxhlm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def anova(reduced, full):
    """Likelihood-ratio test of two nested fits, as lme4's ``anova(m0, m)`` (REML fits
    refitted by ML): :func:`jaxhlm.inference.lrt.anova`."""
    from .inference import anova as _anova

    return _anova(reduced, full)


__all__ = ["LMM", "GLS", "GLMM", "GLMMResult", "AR1", "CompoundSymmetry", "VarIdent", "VarPower", "residual", "LMMResult", "BatchResult", "Options", "Priors", "Status", "covariance", "datasets",
           "families", "priors", "DataError", "FormulaError", "JaxhlmError", "enable_compilation_cache",
           "fit_datasets", "anova", "__version__"]
