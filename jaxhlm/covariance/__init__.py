"""Random-effects covariance structures: the extension point for ``keyword(x | g)`` terms.

Each structure is one file (the protocol: :mod:`jaxhlm.covariance.base`):

| keyword | structure | lme4 / glmmTMB |
| --- | --- | --- |
| ``us`` (and plain ``(x | g)``) | :class:`Unstructured`: lambda lower triangular | ``(x | g)``, ``us(x | g)`` |
| ``diag`` | :class:`Diagonal`: lambda = diag(theta) | ``diag(x | g)``; ``(x || g)`` splits into scalar terms |

:func:`register` adds a structure under a formula keyword (a class whose constructor
takes the term's dimension p, or any callable p -> :class:`Covariance`).
"""

from __future__ import annotations

from typing import Callable

from ..errors import FormulaError
from .base import Covariance
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


def for_term(keyword: str | None, p: int, term: str) -> Covariance:
    """The covariance of a term with p columns written ``keyword(... | g)`` (None: ``(... | g)``)."""
    if keyword is None:
        return Unstructured(p)
    try:
        factory = _REGISTRY[keyword]
    except KeyError:
        raise FormulaError(f"unknown covariance structure '{keyword}' in random term {term}; "
                           f"known: {', '.join(keywords())}") from None
    cov = factory(p)
    if not isinstance(cov, Covariance) or cov.p != p:
        raise FormulaError(f"covariance structure '{keyword}' gave {cov!r} for random term {term}, "
                           f"which has {p} columns; it must give a Covariance with p = {p}")
    return cov


for _cls in (Unstructured, Diagonal):
    register(_cls.keyword, _cls)

__all__ = ["Covariance", "Diagonal", "Unstructured", "for_term", "keywords", "register"]
