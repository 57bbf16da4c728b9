"""Residual structures (nlme's ``correlation =`` and ``weights =``): Var e = sigma^2 D R D.

Each structure is one file (the protocol and the algebra: :mod:`jaxhlm.residual.base`;
the whitening that fits them: :mod:`jaxhlm.residual.whiten`):

| class | nlme | parameters (natural scale) |
| --- | --- | --- |
| :class:`AR1` ``(group, time)`` | ``corAR1(form = ~ time | group)`` | phi |
| :class:`CompoundSymmetry` ``(group)`` | ``corCompSymm(form = ~ 1 | group)`` | rho |
| :class:`VarIdent` ``(column)`` | ``varIdent(form = ~ 1 | column)`` | SD ratio per level |
| :class:`VarPower` ``(column)`` | ``varPower(form = ~ column)`` | power |

Pass them as ``LMM(..., correlation=..., variance=...)`` or ``GLS(...)``.  To add one,
subclass :class:`Correlation` or :class:`VarianceFunction` in a new file.
"""

from .ar1 import AR1
from .base import Correlation, Residual, VarianceFunction
from .compound_symmetry import CompoundSymmetry
from .var_ident import VarIdent
from .var_power import VarPower

__all__ = ["AR1", "CompoundSymmetry", "Correlation", "Residual", "VarIdent", "VarPower",
           "VarianceFunction"]
