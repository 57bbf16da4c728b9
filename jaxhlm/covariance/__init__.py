"""Random-effects covariance structures: the extension point for ``keyword(x | g)`` terms.

Each structure is one file (the protocol: :mod:`jaxhlm.covariance.base`):

| keyword | structure | lme4 / glmmTMB |
| --- | --- | --- |
| ``us`` (and plain ``(x | g)``) | :class:`Unstructured`: lambda lower triangular | ``(x | g)``, ``us(x | g)`` |
| ``diag`` | :class:`Diagonal`: lambda = diag(theta) | ``diag(x | g)``; ``(x || g)`` splits into scalar terms |
| ``cs`` | :class:`CompoundSymmetry`: an SD per column, one correlation | glmmTMB ``cs(x | g)`` |
| ``homcs`` (``cs(..., hom = TRUE)``) | :class:`HomogeneousCompoundSymmetry`: one SD, one correlation | nlme ``pdCompSymm``; glmmTMB ``homcs`` |
| ``ar1`` | :class:`AR1`: one SD, correlation rho^abs(i-j) | glmmTMB ``ar1(0 + time | g)`` |

:func:`register` adds a structure under a formula keyword (a class whose constructor
takes the term's dimension p, or any callable p -> :class:`Covariance`).  Options
written after the grouping factor, ``cs(x | g, hom = TRUE)``, are passed to it as
keyword arguments (R's TRUE/FALSE and numbers are read as Python values).
"""

from __future__ import annotations

from typing import Callable

from ..errors import FormulaError
from .absent import Absent
from .ar1 import AR1
from .base import Covariance
from .compound_symmetry import CompoundSymmetry, HomogeneousCompoundSymmetry
from .diagonal import Diagonal
from .unstructured import Unstructured

_REGISTRY: dict[str, Callable[[int], Covariance]] = {}


def register(keyword: str, factory: Callable[[int], Covariance]) -> None:
    """Make ``keyword(x | g)`` in a formula use ``factory(p)`` as the term's covariance."""
    if not keyword.isidentifier():
        raise ValueError(f"a covariance keyword must be an identifier; got {keyword!r}")
    _REGISTRY[keyword] = factory


def keywords() -> list[str]:
    """The registered formula keywords."""
    return sorted(_REGISTRY)


def for_term(keyword: str | None, p: int, term: str, options: tuple = ()) -> Covariance:
    """The covariance of a term with p columns written ``keyword(... | g, name = value, ...)``
    (None: ``(... | g)``); ``options`` are the (name, value) pairs."""
    if keyword is None:
        return Unstructured(p)
    try:
        factory = _REGISTRY[keyword]
    except KeyError:
        raise FormulaError(f"unknown covariance structure '{keyword}' in random term {term}; "
                           f"known: {', '.join(keywords())}") from None
    try:
        cov = factory(p, **dict(options))
    except TypeError as e:
        raise FormulaError(f"covariance structure '{keyword}' in random term {term} does not take "
                           f"the options {', '.join(k for k, _ in options)}: {e}") from None
    except FormulaError as e:
        raise FormulaError(f"random term {term}: {e}") from None
    if not isinstance(cov, Covariance) or cov.p != p:
        raise FormulaError(f"covariance structure '{keyword}' gave {cov!r} for random term {term}, "
                           f"which has {p} columns; it must give a Covariance with p = {p}")
    return cov


for _cls in (Unstructured, Diagonal, CompoundSymmetry, HomogeneousCompoundSymmetry, AR1):
    register(_cls.keyword, _cls)

__all__ = ["AR1", "Absent", "CompoundSymmetry", "Covariance", "Diagonal", "HomogeneousCompoundSymmetry", "Unstructured", "for_term", "keywords", "register"]
