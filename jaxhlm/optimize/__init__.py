"""Minimisation inside jit and vmap: one loop, pluggable curvature strategies.

| file | what | lme4 / MixedModels.jl |
| --- | --- | --- |
| ``loop.py`` | :func:`minimize`: the ``lax.while_loop`` (line search, fold, snap, :class:`Status`) | ``optimizeLmer``; ``fit!`` |
| ``base.py`` | the strategy protocol; eigenvalue-safe directions | |
| ``newton.py`` | :class:`Newton`: a finite-difference Hessian at every iterate | |
| ``bfgs.py`` | :class:`BFGS`: a probed starting Hessian, then BFGS updates | Optim.jl's BFGS |
| ``lbfgs.py`` | :class:`LBFGS`: optax's limited-memory direction, for a large theta | Optim.jl's L-BFGS |

``Options(method=...)`` (:mod:`jaxhlm.fitting`) takes a name of :data:`STRATEGIES` or a
strategy instance.
"""

from .bfgs import BFGS
from .lbfgs import LBFGS
from .loop import STRATEGIES, Minimum, Status, minimize
from .newton import Newton

__all__ = ["BFGS", "LBFGS", "Minimum", "Newton", "STRATEGIES", "Status", "minimize"]
