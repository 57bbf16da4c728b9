"""``LMM``: a linear mixed model from an lme4 formula and a DataFrame (lme4's ``lmer``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pandas as pd

from . import blocks as _blocks
from . import frame as _frame
from .fitting import Options, fit_blocks
from .kernel import objective
from .results import LMMResult


class LMM:
    """A linear mixed model ``y = X beta + Z b + e``, ``b ~ N(0, sigma^2 Lambda Lambda')``.

    ``LMM(formula, data)`` builds the model frame and the cross-product blocks once
    (lme4's ``lFormula`` and ``mkLmerDevfun``); :meth:`fit` optimises the profiled
    objective (lme4's ``lmer``).  Example::

        model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)
        res = model.fit(reml=True)
        print(res.summary())
    """

    def __init__(self, formula: str, data: pd.DataFrame):
        self.formula = formula
        self.frame = _frame.build(formula, data)
        self.structure, blocks = _blocks.build(self.frame)
        self.blocks = jax.device_put(blocks)  # one batched transfer of all the arrays

    @property
    def nobs(self) -> int:
        return self.frame.nobs

    def objective(self, theta, reml: bool = True) -> float:
        """The REML criterion (or ML deviance) at ``theta``, in lme4's order of theta."""
        return float(objective(jnp.asarray(theta, dtype=jnp.float64), self.blocks,
                               self.structure, reml))

    def fit(self, reml: bool = True, *, options: Options = Options()) -> LMMResult:
        """Fit by REML (default, as lme4) or by maximum likelihood (``reml=False``)."""
        out = fit_blocks(self.blocks, self.structure, bool(reml), options)
        return LMMResult.from_arrays(self, jax.device_get(out), bool(reml), options)

    def fit_many(self, Y, reml: bool = True, *, batch_size: int = 4096,
                 options: Options = Options(), progress: bool = False):
        """Fit many responses on this design at once (see :func:`jaxhlm.batch.fit_many`)."""
        from .batch import fit_many

        return fit_many(self, Y, reml, batch_size=batch_size, options=options, progress=progress)

    def __repr__(self) -> str:
        return f"LMM({self.formula!r}, nobs={self.nobs})"

