"""jaxhlm: linear mixed models (lme4's formulas and numbers) on JAX.

``LMM(formula, data).fit()`` fits by REML or ML; the objective is a pure, jit-compiled,
vmap-able function of theta on blocks precomputed once (:mod:`jaxhlm.kernel`).
Importing jaxhlm enables float64 in JAX and a persistent compilation cache
(:mod:`jaxhlm._config`).
"""

from . import _config  # noqa: F401  (float64 and the compilation cache, first)
from . import datasets, priors
from ._config import enable_compilation_cache
from .batch import fit_datasets
from .errors import DataError, FormulaError, JaxhlmError
from .fitting import Options, trace_count
from .model import LMM
from .optimize import Status
from .priors import Priors
from .results import LMMResult

__version__ = "0.1.0"

__all__ = ["LMM", "LMMResult", "Options", "Priors", "Status", "datasets", "priors", "DataError", "FormulaError",
           "JaxhlmError", "enable_compilation_cache", "fit_datasets", "trace_count", "__version__"]
